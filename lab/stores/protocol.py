"""The Store contract: the only way the runner reaches the tickets.

A backend is one module that implements :class:`TicketStore` (data.json in
``jsonfile`` is the first). The runner never asks which backend it holds: it
claims the store, seeds it, fires the gun, and at the end takes one
:class:`Snapshot`, which is all the tally needs. Adding a backend (SQLite,
PostgreSQL, Redis) means adding a module; no runner code changes.

::

    runner ──claim()──▶ store        one run per store at a time
           ──seed(n)──▶ store        --tickets, or keep its count (read())
    buyers ──their own ops──▶ store  (the variant's program: the race or the fix)
    runner ──discard(leftovers)──▶   what killed writers left (exact names only)
           ◀──snapshot()──           remaining count, raw text, the engine's own orders
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["Holding", "SharedSale", "Snapshot", "StorePlace", "TicketStore", "ledger_snapshot"]


@dataclass(frozen=True)
class StorePlace:
    """Where a run keeps its tickets: what the runner tells a backend's ``open_store``."""

    #: a directory the lab created for this run: a database file or a private
    #: server's data lives here (None only for data.json given with --data)
    run_dir: Path | None
    #: data.json given with --data (the JSON backend only)
    data: Path | None = None
    #: the user's own server (--dsn, --redis-url): the lab then creates and
    #: removes only its own table or key prefix there. None: a private server
    url: str | None = None
    #: the longest any wait on the store (a lock, a busy database) may block
    timeout: float = 60.0


@dataclass(frozen=True)
class Snapshot:
    """The store after the run, as the tally needs it."""

    #: the count left (``None``: the store could not be read; ``problem`` says why)
    remaining: int | None
    #: what the store holds, verbatim, for "what does it say now?" (data.json's text)
    text: str = ""
    #: why the count could not be read, if it could not
    problem: str | None = None
    #: how the report names the store: a path, or a server and table
    where: str = ""
    #: the count the sale began with, when the store knows it better than the
    #: runner (a server that owns its own count); ``None``: the runner's seed stands
    tickets: int | None = None
    #: the engine's own orders ledger: (buyer index, ticket number) per sale it
    #: recorded. ``None`` when the store keeps no ledger (data.json holds only a count).
    orders: tuple[tuple[int, int], ...] | None = None
    #: tickets the ledger records for other runs that sold from the same sale at
    #: the same time (``--join``, perhaps on other machines)
    orders_elsewhere: tuple[int, ...] = ()


def ledger_snapshot(
    *,
    remaining: int,
    text: str,
    where: str,
    seeded: int | None,
    ledger: Sequence[tuple[str, int, int]],
    run: str,
) -> Snapshot:
    """A shared-sale engine's snapshot: its ledger's ``(run, buyer, ticket)`` rows split
    into this run's orders and the tickets other runs (``--join``) recorded."""
    orders = tuple((int(b), int(t)) for r, b, t in ledger if r == run)
    elsewhere = tuple(int(t) for r, _, t in ledger if r != run)
    if elsewhere:
        text += f" ({len(elsewhere)} of them by other runs)"
    return Snapshot(
        remaining=remaining,
        text=text,
        where=where,
        tickets=seeded,
        orders=orders,
        orders_elsewhere=elsewhere,
    )


class Holding(Protocol):
    """Something held for the run and let go at its end (a claim, a run directory)."""

    def close(self) -> None: ...


class TicketStore(Protocol):
    """What every backend offers the runner."""

    #: the exact name of a half-made file a writer killed now would leave (data.json's
    #: atomic write); None for engines, whose transactions roll back by themselves
    temp_in_flight: str | None

    def claim(self) -> Holding:
        """Take the store for one run; refuse (``DataFileBusy``) if another run has it.

        Buyers the runner forks inherit the claim: it lasts until the last is gone.
        """
        ...

    def seed(self, tickets: int) -> None:
        """Put ``tickets`` tickets in the store and clear its orders (``--tickets``)."""
        ...

    def read(self) -> int:
        """The count now (``StoreCorrupted`` if it cannot be read)."""
        ...

    def discard(self, leftovers: Sequence[str]) -> None:
        """Remove what killed writers left half-made, by the exact names they reported."""
        ...

    def snapshot(self) -> Snapshot:
        """The store at the end of the run; never raises for an unreadable count."""
        ...

    def for_buyer(self, step: Callable[[str], None]) -> TicketStore:
        """The store as one buyer process uses it (its own connection, opened after
        the fork), calling ``step`` at the store's own crash points ("mid-write")."""
        ...


@runtime_checkable
class SharedSale(Protocol):
    """A store on a server that several labs may sell from at once (``--join``).

    One run seeds the sale under the sole claim, then :meth:`share` lets others
    in; a joining run takes a shared claim with :meth:`join` and never seeds.
    Every order carries the run's own tag (:attr:`run`), so each run's tally
    tells its buyers' orders from the others' in the engine's one ledger::

        machine A: claim() -> seed(n) -> share(claim) ---- buyers ---- wait_for_others -> snapshot
        machine B:                 join() --------------- buyers ---- wait_for_others -> snapshot
    """

    #: this run's tag on its orders (set by the runner before the buyers start)
    run: str

    def share(self, claim: Holding) -> None:
        """Turn the sole claim (taken to seed) into a shared one: ``--join`` may come in."""
        ...

    def join(self) -> Holding:
        """A shared claim on the sale already on the server.

        Raises ``DataFileBusy`` while another run holds the sole claim (seeding),
        and ``UsageError`` when no sale was ever seeded there.
        """
        ...

    def wait_for_others(self, claim: Holding, timeout: float) -> bool:
        """Say this run's buyers are done, then wait until no other run's buyers still
        sell (their runs may still hold the claim, to read their tallies); False if
        some still did at ``timeout``."""
        ...
