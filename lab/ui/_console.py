"""The lab's one console: rich's, with every print shielded from a mid-print interrupt.

A ``KeyboardInterrupt`` raised inside ``Console.print`` can leave the console
buffering for good, and an interrupted run's tally then never reaches the
screen (``lab.core.interrupts`` tells the story). Each print here runs under
:data:`~lab.core.interrupts.held`: a Ctrl-C that arrives mid-print is raised
right after it.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console

from lab.core.interrupts import held

__all__ = ["HeldConsole"]


class HeldConsole(Console):
    """``rich.console.Console`` whose ``print`` is never cut in half by Ctrl-C or SIGTERM."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        with held:
            super().print(*objects, **kwargs)
