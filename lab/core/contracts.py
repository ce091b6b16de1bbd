"""Typed contracts that cross layers: steps, crash sites, ledgers, what a variant says.

These used to travel as strings ("holding the lock" parsed out of a crash
detail, a ledger as an untyped dict, attributes read with ``getattr``). Here
each is a type, so a typo is a mypy error and not a silently wrong report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any, Protocol

from lab.core.errors import StoreCorrupted, TornRead

__all__ = [
    "CRASH_STEPS",
    "Expectation",
    "Failure",
    "Ledger",
    "RunsVerdict",
    "Step",
    "VariantInfo",
    "Verdict",
]


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


class Verdict(StrEnum):
    """What one run shows, in the order it is decided: the first that applies wins.

    :attr:`lab.core.model.Result.verdict` decides it; the renderers only map
    each member to words and a colour.
    """

    INTERRUPTED = "interrupted"  # Ctrl-C/SIGTERM cut the run short: the tally is partial
    STALLED = "stalled"  # the runner saw no progress (e.g. a lock holder died) and stopped it
    #: data.json went down by more than the reported sales and the vanished buyers explain
    MISMATCH = "mismatch"
    OVERSOLD = "oversold"  # more sales than tickets
    UNREADABLE = "unreadable"  # data.json could not be read at the end: nothing can be said
    LOST_UPDATES = "lost-updates"  # confirmed sales data.json does not show
    ERRORS = "errors"  # buyers failed (a torn read, a dead seller, a refused connection)
    UNKNOWN = "unknown"  # buyers vanished before reporting, and --crash did not kill them
    HELD_DESPITE_KILLS = "held-despite-kills"  # consistent, though --crash killed buyers
    #: consistent, but tickets stayed unsold although buyers who wanted one gave up
    #: (an optimistic compare-and-set without retry): neither "holds" nor "races"
    UNDERSOLD = "undersold"
    HOLDS = "holds"  # consistent: every sale a different ticket, the books balance

    @property
    def held(self) -> bool:
        """The run held (with or without buyers killed by ``--crash``)."""
        return self in (Verdict.HOLDS, Verdict.HELD_DESPITE_KILLS)

    @property
    def never_oversold(self) -> bool:
        """The books are right, whatever else: what ``--check`` asks of an underselling variant."""
        return self.held or self is Verdict.UNDERSOLD


class RunsVerdict(StrEnum):
    """What many runs of one variant show (``lab compare``, ``--repeat``)."""

    HOLDS = "holds"  # every finished run consistent and race-free
    RACES = "races"  # some run oversold, lost an update or double-sold a ticket
    HANGS = "hangs"  # no race, but some run stalled
    FAILS = "fails"  # no race, no stall, but buyers errored or the books did not balance


class Expectation(StrEnum):
    """What a variant is expected to do, as ``lab variants`` and ``lab compare`` say it."""

    RACES = "races"
    HOLDS = "holds"
    #: holds, at a cost the caveat names (``naive-joined``: one buyer at a time)
    HOLDS_SLOW = "holds (slow)"
    #: the learner's own program (``custom``): the tally judges it
    YOURS = "yours"
    #: never oversells, but losers give up while tickets are left (no retry)
    UNDERSELLS = "undersells"
    #: every buyer fails with an error the lesson is about (CROSSSLOT in a cluster)
    FAILS = "fails"

    @classmethod
    def of(
        cls, safe: bool, caveat: str, undersells: bool = False, fails: bool = False
    ) -> Expectation:
        """A safe variant with a caveat holds slowly; an unsafe one with one is the learner's."""
        if fails:
            return cls.FAILS
        if safe and undersells:
            return cls.UNDERSELLS
        if safe:
            return cls.HOLDS_SLOW if caveat else cls.HOLDS
        return cls.YOURS if caveat else cls.RACES

    @property
    def safe(self) -> bool:
        return self in (Expectation.HOLDS, Expectation.HOLDS_SLOW, Expectation.UNDERSELLS)


class Failure(StrEnum):
    """Why a buyer failed, as its ``error`` report carries it (:attr:`BuyerEvent.failure`)."""

    #: data.json was empty when read: another writer had truncated it and not yet written
    TORN_READ = "torn-read"
    #: data.json held something that is not ``{"ticket_num": N}``
    CORRUPT = "corrupt"
    #: anything else: a dead seller, a refused connection, the learner's own exception
    OTHER = "other"

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """Classify a buyer's exception (what :meth:`lab.buyer.Buyer.failed` should send).

        An exception that relays someone else's failure (a server's refusal) may say
        which in a ``failure`` attribute.
        """
        carried = getattr(exc, "failure", None)
        if isinstance(carried, Failure):
            return carried
        if isinstance(exc, TornRead):
            return cls.TORN_READ
        if isinstance(exc, StoreCorrupted):
            return cls.CORRUPT
        return cls.OTHER

    @classmethod
    def of_detail(cls, detail: str) -> Failure:
        """Classify an error report that carries no :class:`Failure`, by the exception's
        type name that ``Buyer.failed`` writes first (``"TornRead: ..."``), never by its message.
        """
        name = detail.partition(":")[0].strip()
        if name == TornRead.__name__:
            return cls.TORN_READ
        if name == StoreCorrupted.__name__:
            return cls.CORRUPT
        return cls.OTHER


@dataclass(frozen=True)
class Ledger(Mapping[str, Any]):
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

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> Ledger:
        """The ledger from its dict form (what a variant puts in ``Stage.extra["ledger"]``).

        Unknown keys are ignored, and so is a ``lost_updates`` key: it is derived
        here, from ``sold`` and the file before and after.
        """

        def count(key: str) -> int | None:
            value = stats.get(key)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def text(key: str) -> str | None:
            value = stats.get(key)
            return None if value is None else str(value)

        return cls(
            server=str(stats.get("server") or ""),
            external=bool(stats.get("external", False)),
            mode=text("mode"),
            data=text("data"),
            tickets_before=count("tickets_before"),
            remaining=count("remaining"),
            problem=text("problem"),
            sold=count("sold") or 0,
            sold_out=count("sold_out") or 0,
            errors=count("errors") or 0,
            searches=count("searches") or 0,
            requests=count("requests") or 0,
            unauthorized=count("unauthorized") or 0,
            connections=count("connections") or 0,
            peak_connections=count("peak_connections"),
            lockstep_broken=count("lockstep_broken"),
            error=text("error"),
        )

    # -- the dict view (``ledger["sold"]``, ``dict(ledger)``, ``--json``) ------------------

    def _keys(self) -> tuple[str, ...]:
        if self.error is not None:
            # the counts are not the run's: the dict form carried none
            return ("server", "external", "error")
        names = [f.name for f in fields(self) if f.name != "error"]
        return (*names, "lost_updates")

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


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
    #: it runs only under the fork start method (a pool forked from the buyers' process)
    needs_fork: bool
    #: where the tickets are kept: a backend of ``lab.stores.BACKENDS`` ("json": data.json)
    store: str
    #: safe, but a loser gives up instead of retrying: it may leave tickets unsold
    undersells: bool
    #: every buyer is expected to fail with the error the lesson shows (CROSSSLOT)
    fails: bool
    #: for a variant that races: what would fix it, in one sentence ("" if it holds)
    fix: str
    #: the variant that shows that fix (``lab run NAME``), if there is one
    fixed_by: str | None
