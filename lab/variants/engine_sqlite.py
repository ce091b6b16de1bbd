"""The ticket grab on SQLite: the notes' race in SQL, and the standard fixes.

The race is the notes' own, moved into a database: read the count, wait,
write count-1. In Adya's and Hermitage's terms it is a *lost update* (P4):
two buyers read 1, both write 0, and both are sold ticket 1.

SQLite has one writer at a time for the whole database, so the only way to
lose an update is to read *outside* a write transaction: in autocommit mode
every statement is its own transaction, and the SELECT and the UPDATE are
two of them. (A deferred ``BEGIN`` … ``COMMIT`` around both does not lose it:
the second writer's upgrade fails with SQLITE_BUSY instead.)

===================  ==========================================================
variant              what the buyer runs (``?`` = the count it read)
===================  ==========================================================
sqlite-naive         SELECT; wait; UPDATE SET ticket_num = ?-1  (two autocommits)
sqlite-conditional   wait; UPDATE … SET ticket_num = ticket_num-1 WHERE ticket_num > 0
                     RETURNING — the engine decides, and the row count says who won
sqlite-immediate     BEGIN IMMEDIATE (the write lock first); SELECT; wait; UPDATE; COMMIT
sqlite-version       SELECT ticket_num, version; wait; UPDATE … WHERE version = v;
                     0 rows: someone else sold first, so read again and retry
sqlite-version-once  the same compare-and-set, without the retry: it never oversells,
                     but a loser gives up while tickets are left (it *undersells*)
===================  ==========================================================

Every sale also inserts a row in ``lab_orders`` in the same transaction, so
the engine's own ledger shows a double sale as two rows for one ticket.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.stores.sqlitedb import ORDERS, TICKETS, SqliteStore
from lab.variants.protocol import RunEnv, Stage, Variant, VariantBase

__all__ = [
    "SQLITE_VARIANTS",
    "SqliteConditional",
    "SqliteImmediate",
    "SqliteNaive",
    "SqliteVersion",
    "SqliteVersionOnce",
]


def _db(me: Buyer) -> sqlite3.Connection:
    store = me.store
    assert isinstance(store, SqliteStore)
    return store.db()


def search(me: Buyer) -> None:
    """查票: read the count (harmless on its own)."""
    (count,) = _db(me).execute(f"SELECT ticket_num FROM {TICKETS}").fetchone()
    me.searched(count)


def _record(db: sqlite3.Connection, me: Buyer, ticket: int) -> None:
    """The order row, the engine's own record of this sale."""
    db.execute(f"INSERT INTO {ORDERS}(buyer, ticket) VALUES (?, ?)", (me.index, ticket))


def naive(me: Buyer) -> None:
    """The notes' buy in SQL, each statement its own autocommit transaction: it races."""
    db = _db(me)
    search(me)
    (count,) = db.execute(f"SELECT ticket_num FROM {TICKETS}").fetchone()
    me.read(count)
    me.network_latency()  # the count read above is already stale while this lasts
    if count > 0:
        db.execute(f"UPDATE {TICKETS} SET ticket_num = ?", (count - 1,))  # blind write
        me.step("mid-write")
        _record(db, me, count)
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def conditional(me: Buyer) -> None:
    """The fix most flash-sale systems use: let the engine check and decrement in one step."""
    db = _db(me)
    search(me)
    me.network_latency()
    db.execute("BEGIN IMMEDIATE")  # the UPDATE and the order row commit together
    try:
        row = db.execute(
            f"UPDATE {TICKETS} SET ticket_num = ticket_num - 1 "
            "WHERE ticket_num > 0 RETURNING ticket_num + 1"
        ).fetchone()
        if row is None:  # no row matched: sold out, decided by the engine
            db.execute("COMMIT")
            me.sold_out(0)
            return
        (ticket,) = row
        _record(db, me, ticket)
        me.step("mid-write")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    me.bought(ticket=ticket)


def immediate(me: Buyer) -> None:
    """A pessimistic lock: BEGIN IMMEDIATE takes the database's write lock before the read."""
    db = _db(me)
    search(me)
    me.wants_lock()
    db.execute("BEGIN IMMEDIATE")  # waits (busy_timeout) while another buyer holds it
    me.acquired()
    try:
        (count,) = db.execute(f"SELECT ticket_num FROM {TICKETS}").fetchone()
        me.read(count)
        me.network_latency()  # inside the lock now: nobody can read a stale count
        if count > 0:
            db.execute(f"UPDATE {TICKETS} SET ticket_num = ?", (count - 1,))
            _record(db, me, count)
            me.step("mid-write")
    except BaseException:
        db.execute("ROLLBACK")
        me.released()
        raise
    db.execute("COMMIT")
    me.released()
    if count > 0:
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def _version_attempt(me: Buyer, db: sqlite3.Connection) -> bool | None:
    """One optimistic try: True sold, False sold out, None lost the compare-and-set."""
    count, version = db.execute(f"SELECT ticket_num, version FROM {TICKETS}").fetchone()
    me.read(count)
    me.network_latency()
    if count <= 0:
        me.sold_out(count)
        return False
    db.execute("BEGIN IMMEDIATE")
    try:
        changed = db.execute(
            f"UPDATE {TICKETS} SET ticket_num = ?, version = version + 1 WHERE version = ?",
            (count - 1, version),
        ).rowcount
        if changed:
            _record(db, me, count)
            me.step("mid-write")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    if changed:
        me.bought(ticket=count)
        return True
    return None


def version(me: Buyer, retries: int) -> None:
    """Optimistic concurrency: write only if nobody wrote since our read; else try again."""
    db = _db(me)
    search(me)
    for _ in range(retries + 1):
        if _version_attempt(me, db) is not None:
            return
        me.retried("the version changed since the read")
    me.failed(TimeoutError(f"lost the compare-and-set {retries + 1} times"))


def version_once(me: Buyer) -> None:
    """The same compare-and-set with no retry: a loser gives up although tickets may be left."""
    db = _db(me)
    search(me)
    if _version_attempt(me, db) is None:
        me.gave_up("the version changed since the read; no retry")


class _Sqlite(VariantBase):
    """What every SQLite variant shares: the store, and a stage with one program."""

    store = "sqlite"
    explorable = False

    def program(self, env: RunEnv) -> Stage[Any]:
        raise NotImplementedError

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield self.program(env)


class SqliteNaive(_Sqlite):
    name = "sqlite-naive"
    fixed_by: str | None = "sqlite-conditional"
    fix = N_(
        "let the engine check and decrement in one statement: UPDATE lab_tickets SET "
        "ticket_num = ticket_num - 1 WHERE ticket_num > 0, and decide by the row count"
    )
    summary = "SQLite: SELECT, wait, UPDATE in autocommit (the notes' race in SQL)"
    safe = False
    why = (
        "each statement commits alone, so buyers who SELECT before anyone's UPDATE all "
        "write the same count-1: a lost update (P4), and the order table shows the double sale"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(naive)


class SqliteConditional(_Sqlite):
    name = "sqlite-conditional"
    summary = "SQLite: UPDATE … SET n = n-1 WHERE n > 0, deciding by the row count"
    safe = True
    why = "the engine checks and decrements in one statement; the row count says who won"

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(conditional)


class SqliteImmediate(_Sqlite):
    name = "sqlite-immediate"
    summary = "SQLite: BEGIN IMMEDIATE takes the write lock before the read"
    safe = True
    why = "the read, the wait and the write run under the database's one write lock"

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(immediate)


class SqliteVersion(_Sqlite):
    name = "sqlite-version"
    summary = "SQLite: optimistic version column, compare-and-set, retry on conflict"
    safe = True
    why = "a write lands only if nobody wrote since the read; a loser reads again and retries"

    def program(self, env: RunEnv) -> Stage[Any]:
        # Each lost compare-and-set means another buyer sold: at most one loss per buyer.
        return Stage(program=version, kit=env.buyers)


class SqliteVersionOnce(_Sqlite):
    name = "sqlite-version-once"
    summary = "SQLite: the version compare-and-set without retry (never oversells, undersells)"
    safe = True
    caveat = "undersells"
    undersells = True
    why = (
        "a loser of the compare-and-set gives up instead of retrying: consistent, but "
        "tickets stay unsold although buyers wanted them"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(version_once)


#: In the order the lesson goes: the race, then each fix.
SQLITE_VARIANTS: tuple[Variant, ...] = (
    SqliteNaive(),
    SqliteConditional(),
    SqliteImmediate(),
    SqliteVersion(),
    SqliteVersionOnce(),
)
