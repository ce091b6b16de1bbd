"""Scenario presets: TOML files in ``scenarios/`` (read with ``tomllib``).

A scenario file may set ``description``, ``buyers``, ``tickets``, ``latency``
(``"0.05-0.2"`` or a number of seconds), ``arrival`` (seconds between buyers'
arrivals), ``seed``, ``lockstep`` and ``lock``.
Any other key, or a value of the wrong kind, is a :class:`ScenarioError`
naming the field, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from lab.errors import ScenarioError
from lab.model import Latency, Scenario
from lab.store import MAX_TICKETS

__all__ = ["MAX_BUYERS", "available", "directory", "load", "scenario_from_mapping"]

#: The most buyers a run accepts. Variants that give each buyer its own process
#: stop at runner.PROCESS_PER_BUYER_MAX; the server variants seat many per process.
MAX_BUYERS = 20_000


def directory() -> Path:
    """Where the presets live: inside an installed wheel, else the repo's ``scenarios/``."""
    packaged = Path(__file__).with_name("scenarios")
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "scenarios"


def available() -> list[Scenario]:
    """Every preset, by name."""
    return [load(p.stem) for p in sorted(directory().glob("*.toml"))]


def _int(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioError(f"{field} must be a whole number from {low} to {high}, got {value!r}")
    return value


def scenario_from_mapping(name: str, data: dict[str, Any], origin: str) -> Scenario:
    """Validate one scenario table; every error names ``origin`` and the field."""
    known = {"description", "buyers", "tickets", "latency", "arrival", "seed", "lockstep", "lock"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(
            f"{origin}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})"
        )
    kwargs: dict[str, Any] = {"name": name}
    try:
        if "description" in data:
            if not isinstance(data["description"], str):
                raise ScenarioError("description must be text")
            kwargs["description"] = " ".join(data["description"].split())
        if "buyers" in data:
            kwargs["buyers"] = _int("buyers", data["buyers"], 1, MAX_BUYERS)
        if "tickets" in data:
            kwargs["tickets"] = _int("tickets", data["tickets"], 0, MAX_TICKETS)
        if "seed" in data:
            kwargs["seed"] = _int("seed", data["seed"], 0, 2**63 - 1)
        if "latency" in data:
            value = data["latency"]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise ScenarioError(
                    f'latency must be text like "0.05-0.2" or seconds, got {value!r}'
                )
            try:
                kwargs["latency"] = Latency.parse(str(value))
            except ValueError as exc:
                raise ScenarioError(f"latency: {exc}") from None
        if "arrival" in data:
            value = data["arrival"]
            is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not is_number or not 0 <= value <= 60:
                raise ScenarioError(f"arrival must be seconds from 0 to 60, got {value!r}")
            kwargs["arrival"] = float(value)
        if "lockstep" in data:
            if not isinstance(data["lockstep"], bool):
                raise ScenarioError(f"lockstep must be true or false, got {data['lockstep']!r}")
            kwargs["lockstep"] = data["lockstep"]
        if "lock" in data:
            if data["lock"] not in ("file", "mp"):
                raise ScenarioError(f'lock must be "file" or "mp", got {data["lock"]!r}')
            kwargs["lock"] = data["lock"]
    except ScenarioError as exc:
        raise ScenarioError(f"{origin}: {exc}") from None
    return Scenario(**kwargs)


def load(name_or_path: str) -> Scenario:
    """Load a preset by name (``notes``) or a TOML file by path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file() or "/" in name_or_path:
        path = candidate
    else:
        path = directory() / f"{name_or_path}.toml"
        if not path.is_file():
            names = ", ".join(sorted(p.stem for p in directory().glob("*.toml")))
            raise ScenarioError(
                f"--scenario: no scenario named {name_or_path!r} (choose from: {names})"
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"--scenario: {path} does not exist") from None
    except IsADirectoryError:
        raise ScenarioError(f"--scenario: {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"--scenario: cannot read {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML ({exc})") from None
    return scenario_from_mapping(path.stem, data, str(path))
