"""What ``lab explore`` found: every schedule it ran and what each one's tally said.

Plain data in the core, so the renderers can show an exploration without
importing the explorer that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Exploration", "Outcome"]


@dataclass(frozen=True)
class Outcome:
    """One explored schedule and what its tally said."""

    steps: tuple[str, ...]
    oversold: int
    lost_updates: int
    errors: int
    hang: bool

    @property
    def failed(self) -> bool:
        return bool(self.oversold or self.lost_updates or self.hang)


@dataclass(frozen=True)
class Exploration:
    """What :func:`explore` found."""

    variant: str
    buyers: int
    tickets: int
    mode: str  # "exhaustive" or "sampled"
    complete: bool
    seed: int | None
    outcomes: tuple[Outcome, ...]
    elapsed_s: float

    @property
    def explored(self) -> int:
        return len(self.outcomes)

    @property
    def oversold(self) -> int:
        return sum(1 for o in self.outcomes if o.oversold)

    @property
    def lost_update(self) -> int:
        return sum(1 for o in self.outcomes if o.lost_updates)

    @property
    def deadlocked(self) -> int:
        return sum(1 for o in self.outcomes if o.hang)

    @property
    def errored(self) -> int:
        return sum(1 for o in self.outcomes if o.errors)

    @property
    def failing(self) -> int:
        return sum(1 for o in self.outcomes if o.failed)

    @property
    def shortest_failing(self) -> Outcome | None:
        failing = [o for o in self.outcomes if o.failed]
        return min(failing, key=lambda o: len(o.steps)) if failing else None

    def to_json(self) -> dict[str, Any]:
        shortest = self.shortest_failing
        return {
            "variant": self.variant,
            "buyers": self.buyers,
            "tickets": self.tickets,
            "mode": self.mode,
            "complete": self.complete,
            "seed": self.seed,
            "explored": self.explored,
            "oversold": self.oversold,
            "lost_update": self.lost_update,
            "deadlocked": self.deadlocked,
            "errors": self.errored,
            "failing": self.failing,
            "shortest_failing": " ".join(shortest.steps) if shortest else None,
            "elapsed_s": round(self.elapsed_s, 3),
            "per_schedule_ms": round(1000 * self.elapsed_s / max(1, self.explored), 3),
        }
