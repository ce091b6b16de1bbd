"""Argument types shared by every ``lab`` subcommand (``run``, ``compare``, ``serve`` ...).

Each raises ``argparse.ArgumentTypeError`` with the bad text, so the parser's
one-line error names both the option and the value.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from lab.core.model import Latency

__all__ = ["fraction", "latency", "seconds", "whole"]


def whole(low: int, high: int, what: str) -> Callable[[str], int]:
    """A whole number in ``[low, high]``; ``what`` completes "expected ..." in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {_short(text)}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {_short(text)}")
        return value

    return parse


def seconds(low: float, high: float) -> Callable[[str], float]:
    """A finite number of seconds in ``[low, high]``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected seconds, got {_short(text)}") from None
        if not (math.isfinite(value) and low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"expected seconds from {low:g} to {high:g}, got {_short(text)}"
            )
        return value

    return parse


def latency(text: str) -> Latency:
    """``0``, ``0.2`` or ``0.05-0.2`` seconds."""
    try:
        return Latency.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def fraction(text: str) -> float:
    """A number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a fraction from 0 to 1, got {_short(text)}"
        ) from None
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise argparse.ArgumentTypeError(f"expected a fraction from 0 to 1, got {_short(text)}")
    return value


def _short(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error line, cut so a huge argument stays one short line."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} chars)"
