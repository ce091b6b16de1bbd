"""One row of ``lab matrix``: an engine, a mechanism, and what running it showed.

The matrix is Hermitage's table for the ticket grab, built by running: each
row is one engine variant, with the isolation level it runs at, the anomalies
its runs showed and its throughput as a fraction of what that engine can do at
all (its *ceiling*, measured in the same run). The harness fills the rows
(``lab.harness.matrix``); the pure renderer draws them (``lab.ui.matrix_view``).
Plain data, so both can import it from the core.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lab.core.contracts import Expectation

__all__ = ["MatrixRow"]


@dataclass(frozen=True)
class MatrixRow:
    """One (engine, mechanism) of the matrix, tallied over all of its runs."""

    #: the variant's store: "sqlite", "postgres", "redis" or "redis-cluster"
    engine: str
    #: the registry's name, ``lab run NAME``
    variant: str
    #: the isolation level it runs at ("READ COMMITTED", ...), "n/a" where there is none
    isolation: str
    #: what the registry expects: an :class:`~lab.core.contracts.Expectation` value
    expected: str
    #: sales beyond the tickets that existed, over all runs of the row
    oversold: int
    #: decrements one write overwrote, over all runs (those a kill hid included)
    lost_updates: int
    #: tickets left although buyers who wanted them gave up
    undersold: int
    #: attempts aborted and tried again (40001, a lost compare-and-set, a WatchError)
    retries: int
    #: buyers that failed
    errors: int
    #: real tickets sold per second in the throughput runs (median)
    tickets_per_s: float
    #: the engine's bare-loop ceiling, tickets per second, measured in the same matrix
    ceiling_per_s: float
    #: ``tickets_per_s / ceiling_per_s`` (0 when there is no ceiling)
    ratio: float
    #: every run was consistent: no oversell, lost update, error, stall or ledger mismatch
    held: bool
    #: the registry's one sentence on why it races or holds
    why: str = ""

    @property
    def expected_safe(self) -> bool:
        """Expected never to oversell, lose an update or fail (holds, holds slowly, undersells)."""
        try:
            return Expectation(self.expected).safe
        except ValueError:
            return False

    @property
    def failed_check(self) -> bool:
        """Expected to hold, yet some run oversold, lost an update, failed or disagreed
        with the engine's ledger. Underselling never fails a row that is expected to."""
        if not self.expected_safe:
            return False
        return not self.held or self.oversold > 0 or self.lost_updates > 0 or self.errors > 0

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.variant}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failed_check": self.failed_check}
