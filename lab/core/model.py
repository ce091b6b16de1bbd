"""The lab's shared vocabulary: what a run is asked to do and what it saw.

Like ``concurrent.futures._base``, this is the contract every other module
speaks. The runner builds a :class:`Result`; the renderer reads it; nothing
else passes between them. All tallies are properties derived from the buyers'
receipts and the final file, so there is exactly one place that defines
"oversold" or "lost update".
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from lab.core.contracts import Failure, Ledger, Step, Verdict

__all__ = [
    "MAX_TICKETS",
    "BuyerEvent",
    "Conflict",
    "EventKind",
    "Failure",
    "Latency",
    "Ledger",
    "Outcome",
    "Receipt",
    "Result",
    "Scenario",
    "Verdict",
]

#: What a buyer reports, in order: the count it saw when it searched (查票), the
#: count it read before buying (再次确认票), then exactly one outcome.
EventKind = Literal[
    "search", "read", "bought", "sold_out", "error", "lockstep_broken", "said",
    "acquired", "released", "crash", "retried", "gave_up",
]  # fmt: skip
#: ``unknown``: the buyer vanished (killed, or the run was interrupted) before
#: reporting an outcome, so it may or may not have bought.
#: ``gave_up``: an optimistic loser that stopped without buying, tickets left or not.
Outcome = Literal["bought", "sold_out", "error", "unknown", "gave_up"]

OUTCOMES: tuple[Outcome, ...] = ("bought", "sold_out", "error", "unknown", "gave_up")

_LATENCY = re.compile(r"^\s*(?P<low>[0-9]*\.?[0-9]+)\s*(?:-\s*(?P<high>[0-9]*\.?[0-9]+))?\s*s?\s*$")
#: One simulated network wait longer than this is a typo, not a lesson.
MAX_LATENCY_S = 3600.0
#: A count above this is a corrupt or hostile store, not a ticket sale (every store checks it).
MAX_TICKETS = 1_000_000_000
#: The one variant whose buyers run the learner's own program. Read only where a caller
#: has not said so itself (``Result(own_program=None)``, ``run_header`` given a name):
#: once the runner and the CLI pass it, this goes.
OWN_PROGRAM_VARIANT = "custom"


@dataclass(frozen=True)
class Latency:
    """The simulated network latency each buyer waits between reading and writing.

    The notes use ``time.sleep(random.randint(1, 3))``; the lab draws a float
    uniformly from ``[low, high]`` so that short demos (``0.05-0.2``) work too.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 <= self.low <= self.high <= MAX_LATENCY_S):
            raise ValueError(f"latency must satisfy 0 <= low <= high <= {MAX_LATENCY_S:g} s")

    @classmethod
    def parse(cls, spec: str) -> Latency:
        """Parse ``"0"``, ``"0.2"``, ``"0.05-0.2"`` or ``"1-3s"`` (seconds)."""
        match = _LATENCY.match(spec)
        if match is None:
            raise ValueError(f"expected seconds like 0, 0.2 or 0.05-0.2, got {spec!r}")
        low = float(match["low"])
        high = float(match["high"]) if match["high"] is not None else low
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"latency must be finite, got {spec!r}")
        if low > high:
            raise ValueError(f"the low end must not exceed the high end, got {spec!r}")
        if high > MAX_LATENCY_S:
            raise ValueError(f"at most {MAX_LATENCY_S:g} s, got {spec!r}")
        return cls(low, high)

    def __str__(self) -> str:
        if self.low == self.high:
            return f"{self.low:g} s"
        return f"{self.low:g}–{self.high:g} s"


@dataclass(frozen=True)
class Scenario:
    """What one run is asked to do. Loaded from ``scenarios/*.toml``; CLI flags override fields."""

    #: "flags" when the run was described by command-line flags alone
    name: str = "flags"
    description: str = ""
    buyers: int = 10
    #: tickets to put in data.json before the start gun. ``None`` keeps the
    #: count already in a ``--data`` file (and means 1 for a fresh file).
    tickets: int | None = None
    latency: Latency = field(default_factory=lambda: Latency(1.0, 3.0))
    #: seeds the latency draws; the runner picks and reports one when it is None
    seed: int | None = None
    #: hold every buyer in the race window until all have arrived, so that an
    #: unprotected read-check-write races in every run, not "usually"
    lockstep: bool = False
    #: which mutex the ``locked`` variant uses: "file" (filelock) or "mp" (multiprocessing.Lock)
    lock: str = "file"
    #: seconds between buyers' arrivals: buyer i starts i x arrival after the gun.
    #: Spaced-out buyers rarely overlap, so a racy program looks correct.
    arrival: float = 0.0
    #: for the server variants: drive an external server at "HOST:PORT" instead of starting one
    connect: str | None = None
    #: for the server variants: the shared secret every request carries
    token: str | None = None
    #: ``--crash``: the fraction of buyers SIGKILLed at a random step of their purchase
    crash: float = 0.0
    #: for ``custom``: the learner's buyer, ``FILE.py:FUNC``
    buyer_program: str | None = None
    #: for ``custom``: a purchase counts when the buyer's output matches this
    success_regex: str | None = None
    #: for the engine variants: the user's own server (``--dsn``, ``--redis-url``); the
    #: lab then uses only its own table or key prefix there. None: a private server
    store_url: str | None = None
    #: ``--join``: sell from the sale already on ``store_url`` (seeded by another run,
    #: perhaps on another machine) alongside any run selling there now; never re-seed
    join: bool = False


@dataclass(frozen=True)
class BuyerEvent:
    """One thing one buyer saw or did, stamped in seconds since the start gun."""

    buyer: int
    kind: EventKind
    t: float
    count: int | None = None
    detail: str = ""
    #: for an ``error``: why the buyer failed, as a type (None: the report did not say;
    #: :attr:`Receipt.failure` then reads the exception's type name from ``detail``)
    failure: Failure | None = None


@dataclass(frozen=True)
class Receipt:
    """Everything one buyer saw and did, folded from its events."""

    buyer: int
    name: str
    events: tuple[BuyerEvent, ...] = ()

    def _last(self, *kinds: EventKind) -> BuyerEvent | None:
        found = [e for e in self.events if e.kind in kinds]
        return found[-1] if found else None

    @property
    def outcome(self) -> Outcome:
        last = self._last("bought", "sold_out", "error", "gave_up")
        return "unknown" if last is None else last.kind  # type: ignore[return-value]

    @property
    def retries(self) -> int:
        """Attempts aborted and tried again (a serialization failure, a lost compare-and-set)."""
        return sum(1 for e in self.events if e.kind == "retried")

    @property
    def searched(self) -> int | None:
        """The ``ticket_num`` this buyer saw when it searched (查票)."""
        event = self._last("search")
        return None if event is None else event.count

    @property
    def read(self) -> int | None:
        """The ``ticket_num`` this buyer read right before deciding to buy."""
        event = self._last("read")
        return None if event is None else event.count

    @property
    def ticket(self) -> int | None:
        """The ticket it took: the count it decremented from (``None`` unless bought)."""
        event = self._last("bought")
        return None if event is None else event.count

    @property
    def error(self) -> str | None:
        event = self._last("error")
        return None if event is None else event.detail

    @property
    def failure(self) -> Failure | None:
        """Why this buyer failed (``None`` unless its outcome is an error)."""
        event = self._last("error")
        if event is None:
            return None
        return event.failure if event.failure is not None else Failure.of_detail(event.detail)

    @property
    def torn_read(self) -> bool:
        """It failed reading data.json mid-write: another writer had emptied it."""
        return self.outcome == "error" and self.failure is Failure.TORN_READ

    @property
    def t_read(self) -> float | None:
        event = self._last("read")
        return None if event is None else event.t

    @property
    def t_done(self) -> float | None:
        event = self._last("bought", "sold_out", "error")
        return None if event is None else event.t

    @property
    def lockstep_broken(self) -> bool:
        return self._last("lockstep_broken") is not None

    @property
    def crash_step(self) -> Step | None:
        """The step at which ``--crash`` killed this buyer, if it did (a crash report's detail)."""
        event = self._last("crash")
        if event is None:
            return None
        try:
            return Step(event.detail)
        except ValueError:  # a report from an older buyer: "window, holding the lock"
            return Step(event.detail.split(",", 1)[0])

    @property
    def crashed_holding(self) -> bool:
        """Killed while holding the variant's lock: inside the critical section.

        A crash report's ``count`` is 1 when its buyer held the lock (``Buyer.step``).
        """
        event = self._last("crash")
        return event is not None and event.count == 1

    @property
    def crashed_at(self) -> str | None:
        """Where ``--crash`` killed this buyer, in words (``"window, holding the lock"``)."""
        step = self.crash_step
        if step is None:
            return None
        return f"{step.value}, holding the lock" if self.crashed_holding else step.value

    def to_json(self) -> dict[str, Any]:
        return {
            "buyer": self.buyer,
            "name": self.name,
            "outcome": self.outcome,
            "searched": self.searched,
            "read": self.read,
            "ticket": self.ticket,
            "error": self.error,
            "crashed_at": self.crashed_at,
            "t_read": self.t_read,
            "t_done": self.t_done,
            "events": [
                {"kind": e.kind, "t": round(e.t, 6), "count": e.count, "detail": e.detail}
                for e in self.events
            ],
        }


@dataclass(frozen=True)
class Conflict:
    """One ticket handed to several buyers: the evidence behind a double sale.

    ``buyers`` are in the order their writes landed, so each one after the
    first overwrote the write before it (a lost update).
    """

    ticket: int
    buyers: tuple[int, ...]
    #: True when every one of them had read the count before the first of them wrote
    all_read_before_first_write: bool


@dataclass(frozen=True)
class Result:
    """One finished (or interrupted) run: the receipts, the file at the end, and the tallies."""

    variant: str
    scenario: Scenario
    #: ``ticket_num`` in data.json when the start gun fired
    tickets: int
    #: ``ticket_num`` in data.json after every buyer finished (``None``: unreadable)
    remaining: int | None
    receipts: tuple[Receipt, ...]
    elapsed_s: float
    data_path: str
    seed: int
    start_method: str
    expected_safe: bool
    #: what data.json held at the end, verbatim (for "what does the file say now?")
    final_text: str = ""
    #: why the final file could not be read, if it could not
    final_problem: str | None = None
    #: the mutex the run used, for variants that have one
    lock: str | None = None
    interrupted: bool = False
    #: the stall the runner detected (e.g. a lock holder died), if any
    stalled: str | None = None
    #: the seller's or server's own account of the run, when the variant keeps one
    #: (its dict form, ``Stage.extra["ledger"]``, is accepted and converted)
    ledger: Ledger | None = None
    #: the buyers run the learner's own program (``custom``): its latency is its own, it
    #: may report no ticket numbers, and only the tally judges it. None: decided from
    #: ``variant`` (until every caller says it)
    own_program: bool | None = None
    #: the buyers ran on gated threads in an order a schedule chose (``lab explore``,
    #: ``lab replay``): the interleaving, not the clock, decided. None: decided from
    #: ``start_method`` (until every caller says it)
    schedule_driven: bool | None = None
    #: the engine's own orders ledger, (buyer, ticket) per sale it recorded; None when
    #: the store keeps none (data.json holds only a count)
    orders: tuple[tuple[int, int], ...] | None = None
    #: tickets the ledger records for *other* runs selling from the same engine at
    #: once (``--join``: buyers on other machines). Their sales are in ``tickets -
    #: remaining`` too, so the books and the double-sale check count them.
    orders_elsewhere: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        ledger: object = self.ledger
        if ledger is not None and not isinstance(ledger, Ledger):
            if not isinstance(ledger, Mapping):
                raise TypeError(
                    f"ledger must be a Ledger or a mapping, not {type(ledger).__name__}"
                )
            object.__setattr__(self, "ledger", Ledger.from_stats(ledger))
        if self.own_program is None:
            object.__setattr__(self, "own_program", self.variant == OWN_PROGRAM_VARIANT)
        if self.schedule_driven is None:
            object.__setattr__(self, "schedule_driven", self.start_method.startswith("threads"))

    # -- tallies: every number the lab reports is derived here, once ----------------

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.receipts if r.outcome == outcome)

    @property
    def buyers(self) -> int:
        return len(self.receipts)

    @property
    def sold(self) -> int:
        """Buyers who were told they bought (买票成功)."""
        return self.count("bought")

    @property
    def sold_out(self) -> int:
        return self.count("sold_out")

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def unknown(self) -> int:
        return self.count("unknown")

    @property
    def gave_up(self) -> int:
        """Optimistic losers that stopped without buying."""
        return self.count("gave_up")

    @property
    def retries(self) -> int:
        """Attempts aborted and tried again, over all buyers."""
        return sum(r.retries for r in self.receipts)

    @property
    def undersold(self) -> int:
        """Tickets left unsold although that many buyers who wanted one gave up."""
        if self.remaining is None:
            return 0
        return min(max(0, self.remaining), self.gave_up)

    @property
    def ledger_double_sold(self) -> int:
        """Tickets the engine's own orders ledger records more than once."""
        if self.orders is None:
            return 0
        tickets = [t for _, t in self.orders] + list(self.orders_elsewhere)
        return sum(1 for n in Counter(tickets).values() if n > 1)

    @property
    def ledger_agrees(self) -> bool:
        """The engine's orders agree with the count and the buyers (True without a ledger).

        One order per ticket the count went down by; every confirmed sale has its
        order; every order belongs to a confirmed sale or to a buyer whose outcome
        is unknown (killed after the commit, before it reported).
        """
        if self.orders is None:
            return True
        if self.visible_sales is None or len(self.orders) != self.visible_sales:
            return False
        ordered = Counter(b for b, _ in self.orders)
        for r in self.receipts:
            if r.outcome == "bought" and ordered[r.buyer] != 1:
                return False
            if r.outcome not in ("bought", "unknown") and ordered[r.buyer]:
                return False
        return True

    @property
    def vanished(self) -> int:
        """Buyers whose outcome is unknown though ``--crash`` did not kill them, at least 0.

        They were cut off (an interrupt, a stall) after the gun and before reporting.
        """
        return max(0, self.unknown - self.killed)

    @property
    def sold_elsewhere(self) -> int:
        """Sales the engine's ledger records for other runs sharing the sale (``--join``)."""
        return len(self.orders_elsewhere)

    @property
    def oversold(self) -> int:
        """Sales beyond the tickets that existed: ``max(0, sold + sold_elsewhere - tickets)``."""
        return max(0, self.sold + self.sold_elsewhere - self.tickets)

    @property
    def visible_sales(self) -> int | None:
        """This run's sales the store shows: ``tickets - remaining - sold_elsewhere``.

        ``None`` if the store is unreadable. Other runs' sales (``--join``) are
        taken from the engine's ledger, so a lost update anywhere still shows.
        """
        if self.remaining is None:
            return None
        return self.tickets - self.remaining - self.sold_elsewhere

    @property
    def lost_updates(self) -> int | None:
        """Decrements that vanished: ``sold - (tickets - remaining)``, at least 0.

        Non-zero even when nothing is oversold (100 tickets, 10 buyers, file
        says 99): the "phantom inventory" a later sale will oversell.
        ``None`` when the final file is unreadable, so nothing can be said.
        """
        if self.visible_sales is None:
            return None
        return max(0, self.sold - self.visible_sales)

    @property
    def unknown_consumed(self) -> int:
        """Sales the file shows but no buyer confirmed: ``(tickets - remaining) - sold``, >= 0.

        Only a buyer that vanished (killed, or cut off by an interrupt) after
        writing and before reporting can cause these. ``sold`` counts only
        confirmed sales; these are reported beside it, never added to it.
        """
        visible = self.visible_sales
        return 0 if visible is None else max(0, visible - self.sold)

    @property
    def killed(self) -> int:
        """Buyers ``--crash`` killed."""
        return sum(1 for r in self.receipts if r.crashed_at is not None)

    @property
    def killed_in_critical_section(self) -> int:
        return sum(1 for r in self.receipts if r.crashed_holding)

    @property
    def hidden_lost_updates(self) -> int:
        """Lost updates a kill may hide from ``lost_updates``.

        A buyer killed after its write but before its report (step ``bought``)
        read some count c and wrote c - 1. If another buyer also sold from c,
        two writes of c - 1 landed and one overwrote the other, yet the books
        can still balance (one confirmed sale, one unknown). Each such extra
        sale from the same count is counted here.
        """
        wrote_unreported = [
            r.read for r in self.receipts
            if r.read is not None and r.crash_step is Step.BOUGHT
        ]  # fmt: skip
        confirmed = Counter(r.ticket for r in self.receipts if r.ticket is not None)
        hidden = 0
        for count, n in Counter(wrote_unreported).items():
            hidden += n if confirmed[count] else n - 1
        return hidden

    @property
    def accounted(self) -> bool:
        """The books balance: ``sold + sold_elsewhere + remaining + unknown_consumed == tickets``.

        That holds when no confirmed sale is missing from the file (no lost
        update among confirmed sales), and every sale the file shows but no
        buyer confirmed belongs to a buyer whose outcome is unknown
        (``unknown_consumed <= unknown``). A kill can still hide a lost update
        inside the unknowns: see :attr:`hidden_lost_updates`.
        """
        if self.remaining is None or self.remaining < 0:
            return False  # a count below zero never balances (DECR without its INCR)
        balance = (
            self.sold + self.sold_elsewhere + self.remaining + self.unknown_consumed == self.tickets
        )
        return balance and self.unknown_consumed <= self.unknown and self.ledger_agrees

    @cached_property
    def conflicts(self) -> tuple[Conflict, ...]:
        """Tickets sold to more than one buyer, each with its buyers in write order."""
        by_ticket: dict[int, list[Receipt]] = defaultdict(list)
        for receipt in self.receipts:
            if receipt.ticket is not None:
                by_ticket[receipt.ticket].append(receipt)
        found = []
        for ticket, holders in sorted(by_ticket.items(), reverse=True):
            if len(holders) < 2:
                continue
            holders.sort(key=lambda r: (r.t_done or 0.0, r.buyer))
            first_write = min(r.t_done or 0.0 for r in holders)
            reads = [r.t_read for r in holders if r.t_read is not None]
            found.append(
                Conflict(
                    ticket=ticket,
                    buyers=tuple(r.buyer for r in holders),
                    all_read_before_first_write=bool(reads) and max(reads) <= first_write,
                )
            )
        return tuple(found)

    @property
    def double_sold(self) -> int:
        """Ticket numbers handed to more than one buyer."""
        return len(self.conflicts)

    @property
    def torn_reads(self) -> int:
        """Errors from reading data.json mid-write (a subset of ``errors``)."""
        return sum(1 for r in self.receipts if r.torn_read)

    @property
    def lockstep_broken(self) -> bool:
        return any(r.lockstep_broken for r in self.receipts)

    @property
    def consistent(self) -> bool:
        """No oversell, no lost update, no double sale in the engine's ledger, no
        error, no stall, a readable file whose books balance, and no buyer
        vanished unless ``--crash`` killed it.
        """
        return (
            self.oversold == 0
            and self.lost_updates == 0
            and self.errors == 0
            and self.stalled is None
            and self.accounted
            and self.hidden_lost_updates == 0
            and self.ledger_double_sold == 0
            and self.unknown == self.killed
        )

    @property
    def raced(self) -> bool:
        """The race left a mark: an oversell, a lost update (counting those a kill
        hid, :attr:`hidden_lost_updates`), or a double sale.
        """
        return (
            self.oversold > 0
            or (self.lost_updates or 0) > 0
            or self.hidden_lost_updates > 0
            or self.double_sold > 0
            or self.ledger_double_sold > 0
        )

    @property
    def verdict(self) -> Verdict:
        """The run in one word; the first that applies wins (see :class:`Verdict`).

        Interrupted and stalled runs say so before anything else: their tallies
        are partial. A file that went down by more than the sales and the
        vanished buyers explain is a mismatch before it is anything else.
        """
        if self.interrupted:
            return Verdict.INTERRUPTED
        if self.stalled:
            return Verdict.STALLED
        unexplained = self.unknown_consumed > self.unknown
        if self.remaining is not None and not self.lost_updates and unexplained:
            return Verdict.MISMATCH
        if self.oversold:
            return Verdict.OVERSOLD
        if self.lost_updates is None:
            return Verdict.UNREADABLE
        if self.lost_updates > 0:
            return Verdict.LOST_UPDATES
        if self.ledger_double_sold or not self.ledger_agrees or (self.remaining or 0) < 0:
            return Verdict.MISMATCH
        if self.errors:
            return Verdict.ERRORS
        if self.vanished:
            return Verdict.UNKNOWN
        if self.undersold:
            return Verdict.UNDERSOLD
        if self.killed:
            return Verdict.HELD_DESPITE_KILLS
        return Verdict.HOLDS

    def to_json(self) -> dict[str, Any]:
        """The machine-readable run, as ``lab run --json`` prints it."""
        return {
            "variant": self.variant,
            "scenario": self.scenario.name,
            "expected_safe": self.expected_safe,
            "lock": self.lock,
            "buyers": self.buyers,
            "tickets": self.tickets,
            "latency": {"low": self.scenario.latency.low, "high": self.scenario.latency.high},
            "lockstep": self.scenario.lockstep,
            "seed": self.seed,
            "start_method": self.start_method,
            "sold": self.sold,
            "sold_out": self.sold_out,
            "remaining": self.remaining,
            "oversold": self.oversold,
            "lost_updates": self.lost_updates,
            "double_sold": self.double_sold,
            "errors": self.errors,
            "unknown": self.unknown,
            "unknown_consumed": self.unknown_consumed,
            "hidden_lost_updates": self.hidden_lost_updates,
            "gave_up": self.gave_up,
            "undersold": self.undersold,
            "retries": self.retries,
            "orders": None if self.orders is None else [list(o) for o in self.orders],
            "orders_elsewhere": list(self.orders_elsewhere),
            "ledger_agrees": self.ledger_agrees,
            "verdict": self.verdict.value,
            "killed": self.killed,
            "killed_in_critical_section": self.killed_in_critical_section,
            "accounted": self.accounted,
            "consistent": self.consistent,
            "interrupted": self.interrupted,
            "stalled": self.stalled,
            "ledger": dict(self.ledger) if self.ledger is not None else None,
            "elapsed_s": round(self.elapsed_s, 6),
            "data_path": self.data_path,
            "final_text": self.final_text,
            "conflicts": [{"ticket": c.ticket, "buyers": list(c.buyers)} for c in self.conflicts],
            "receipts": [r.to_json() for r in self.receipts],
        }


def receipts_from_events(
    names: Mapping[int, str], events: Iterable[BuyerEvent]
) -> tuple[Receipt, ...]:
    """Fold a run's event stream into one receipt per buyer (buyers with no events included)."""
    per_buyer: dict[int, list[BuyerEvent]] = {i: [] for i in names}
    for event in events:
        per_buyer.setdefault(event.buyer, []).append(event)
    return tuple(
        Receipt(buyer=i, name=names.get(i, f"buyer {i}"), events=tuple(per_buyer[i]))
        for i in sorted(per_buyer)
    )
