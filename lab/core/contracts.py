"""Typed contracts that cross layers: steps, crash sites, ledgers, what a variant says.

These used to travel as strings ("holding the lock" parsed out of a crash
detail, a ledger as an untyped dict, attributes read with ``getattr``). Here
each is a type, so a typo is a mypy error and not a silently wrong report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

__all__ = ["CRASH_STEPS", "Ledger", "Step", "VariantInfo"]


class Step(StrEnum):
    """A point in a purchase where a buyer can be paused (``lab explore``) or killed (``--crash``).

    The values are what a schedule names (``b0.read``) and what the reports carry.
    """

    SEARCH = "search"  # 查票: the count seen before deciding to buy
    WANT_LOCK = "want-lock"  # about to take the variant's lock
    ACQUIRED = "acquired"  # the lock is held
    READ = "read"  # 再次确认票: the count the decision is based on
    WINDOW = "window"  # 模拟网络延迟 is over: the write comes next
    MID_WRITE = "mid-write"  # inside an atomic write: the new count is only in the temp file
    TORN = "torn"  # inside the notes' write: data.json is truncated and still empty
    BOUGHT = "bought"  # written, not yet reported: the sale's fate is unknown


#: Where ``--crash`` may kill a buyer (``torn`` counts as ``mid-write`` for the notes' write).
CRASH_STEPS: tuple[Step, ...] = (
    Step.SEARCH,
    Step.ACQUIRED,
    Step.READ,
    Step.WINDOW,
    Step.MID_WRITE,
    Step.BOUGHT,
)


@dataclass(frozen=True)
class Ledger:
    """A server's (or seller's) own account of one run, next to what the buyers reported.

    The count lives with the server, so a ``--connect`` run is tallied against
    this, not against a local file. ``error`` is set, and the counts are None,
    when the account could not be read at all.
    """

    #: where the server listens ("127.0.0.1:8000")
    server: str
    #: True for ``--connect`` (somebody else's server); False for the run's own
    external: bool = False
    #: "naive" or "safe"
    mode: str | None = None
    #: the server's data file (the run itself has none)
    data: str | None = None
    tickets_before: int | None = None
    remaining: int | None = None
    #: why the server could not read its data file, if it could not
    problem: str | None = None
    sold: int = 0
    sold_out: int = 0
    errors: int = 0
    searches: int = 0
    requests: int = 0
    unauthorized: int = 0
    connections: int = 0
    peak_connections: int | None = None
    lockstep_broken: int | None = None
    #: why the account could not be read (then the counts above are not the run's)
    error: str | None = None

    @property
    def lost_updates(self) -> int | None:
        """Confirmed sales the file does not show: ``sold - (before - after)``, never negative."""
        if self.tickets_before is None or self.remaining is None:
            return None
        return max(0, self.sold - (self.tickets_before - self.remaining))


class VariantInfo(Protocol):
    """What a variant says of itself: everything the CLI, compare, explore and the
    renderers may read about it (the core half of ``lab.variants.protocol.Variant``)."""

    #: the name on the command line: ``lab run NAME``
    name: str
    #: one line for ``lab variants``
    summary: str
    #: whether it is expected never to oversell, lose an update or fail
    safe: bool
    #: one sentence on why it races or holds, for the README table and the report
    why: str
    #: the mutex kinds it can use (``--lock``); empty if it has no lock
    locks: tuple[str, ...]
    #: a short qualifier shown beside "holds" or "races" ("slowly", "yours to judge"), or ""
    caveat: str
    #: an option it cannot run without ("--buyer"), or None
    requires: str | None
    #: whether ``lab explore`` can pause it at every step (False: a seller or server
    #: process decides in code the explorer cannot gate)
    explorable: bool
    #: whether a buyer killed at any step leaves data.json whole and the books balanced
    crash_safe: bool
    #: whether its buyers share processes (each on a thread): only socket clients do
    many_buyers_per_process: bool
