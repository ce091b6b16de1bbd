"""The tickets in SQLite (the standard library's ``sqlite3``): the embedded engine.

Two tables, both the lab's own (``lab_tickets`` and ``lab_orders``), in a
database file the lab creates in the run directory::

    lab_tickets(id = 1, ticket_num, version)   the count, and a version for
                                               optimistic compare-and-set
    lab_orders(buyer, ticket)                  the engine's own ledger: one row
                                               per sale it recorded

The ledger has no unique index on purpose: a double sale must be *visible*
in it (two rows for one ticket), not turned into an error.

Each buyer process opens its own connection after the fork (a connection
must never cross a fork), in autocommit mode (``isolation_level=None``): the
variants say ``BEGIN``/``COMMIT`` themselves, so the SQL on the page is all
the SQL that runs. WAL lets readers go on while a writer holds the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lab.core.errors import DataFileBusy, StoreCorrupted, UsageError
from lab.core.model import MAX_TICKETS
from lab.stores.protocol import Holding, Snapshot, StorePlace

__all__ = ["ORDERS", "TICKETS", "SqliteStore", "open_store"]

TICKETS = "lab_tickets"
ORDERS = "lab_orders"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TICKETS} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ticket_num INTEGER NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS {ORDERS} (
    buyer INTEGER NOT NULL,
    ticket INTEGER NOT NULL
);
"""


class _Claim:
    """An inherited ``flock`` beside the database: one run per database at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        # Only this process's descriptor: forked buyers keep the claim until they exit.
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SqliteStore:
    """``lab_tickets`` and ``lab_orders`` in the database file at ``path``."""

    kind = "sqlite"
    #: a half-made file a killed writer leaves: never, here (a transaction rolls back)
    temp_in_flight: str | None = None

    def __init__(
        self, path: Path, *, busy_timeout_s: float = 60.0, step: Callable[[str], None] | None = None
    ) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        #: a buyer's ``--crash`` hook, called at "mid-write" inside a transaction
        self.step = step or (lambda _name: None)
        self._conn: sqlite3.Connection | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, object]:
        # A connection never crosses a process boundary; each process opens its own.
        return {"path": self.path, "busy_timeout_s": self.busy_timeout_s}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["path"], busy_timeout_s=state["busy_timeout_s"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @property
    def where(self) -> str:
        return f"{self.path} (SQLite, tables {TICKETS} and {ORDERS})"

    def for_buyer(self, step: Callable[[str], None]) -> SqliteStore:
        """This store as one buyer uses it: its own connection, and its crash hook."""
        return SqliteStore(self.path, busy_timeout_s=self.busy_timeout_s, step=step)

    def db(self) -> sqlite3.Connection:
        """This process's connection (opened on first use, after any fork)."""
        if self._conn is None or self._pid != os.getpid():
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # A throw-away database: durability is not the lesson, and fsyncs would
            # make every run wait on the disk. The locking is unchanged.
            conn.execute("PRAGMA synchronous=OFF")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    # -- the TicketStore contract ------------------------------------------------

    def claim(self) -> Holding:
        lock = self.path.with_name(self.path.name + ".run.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataFileBusy(f"{self.path}: another lab run is using this database") from None
        os.set_inheritable(fd, True)
        return _Claim(fd)

    def seed(self, tickets: int) -> None:
        if not 0 <= tickets <= MAX_TICKETS:
            raise ValueError(f"tickets must be 0..{MAX_TICKETS}, got {tickets}")
        db = self.db()
        db.executescript(_SCHEMA)
        with _transaction(db):
            db.execute(f"DELETE FROM {ORDERS}")
            db.execute(
                f"INSERT INTO {TICKETS}(id, ticket_num, version) VALUES (1, ?, 0) "
                "ON CONFLICT(id) DO UPDATE SET ticket_num = excluded.ticket_num, version = 0",
                (tickets,),
            )

    def read(self) -> int:
        try:
            row = self.db().execute(f"SELECT ticket_num FROM {TICKETS} WHERE id = 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreCorrupted(str(self.path), f"cannot be read: {exc}") from None
        if row is None:
            raise StoreCorrupted(str(self.path), f"has no row in {TICKETS}")
        return int(row[0])

    def discard(self, leftovers: Sequence[str]) -> None:
        """Nothing to discard: a killed buyer's open transaction rolls back by itself."""

    def snapshot(self) -> Snapshot:
        try:
            count = self.read()
            rows = self.db().execute(f"SELECT buyer, ticket FROM {ORDERS} ORDER BY rowid")
            orders = tuple((int(buyer), int(ticket)) for buyer, ticket in rows)
        except StoreCorrupted as exc:
            return Snapshot(remaining=None, problem=exc.problem, where=self.where)
        finally:
            self.close()
        text = f"{TICKETS}.ticket_num = {count}; {ORDERS}: {len(orders)} rows"
        return Snapshot(remaining=count, text=text, where=self.where, orders=orders)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextlib.contextmanager
def open_store(place: StorePlace) -> Iterator[SqliteStore]:
    """A database file the lab creates in the run directory (SQLite needs no server)."""
    if place.url is not None:
        raise UsageError("--dsn: SQLite keeps its database in the run directory; it takes no --dsn")
    assert place.run_dir is not None, "SQLite needs a run directory"
    store = SqliteStore(place.run_dir / "tickets.sqlite3", busy_timeout_s=place.timeout)
    try:
        yield store
    finally:
        store.close()
