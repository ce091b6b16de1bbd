"""The ticket grab on PostgreSQL: the notes' race in SQL, and the standard fixes.

The race is the notes' own, moved into a database server: read the count,
wait, write count-1. In Adya's and Hermitage's terms it is a *lost update*
(P4): two buyers read 1, both write 0, and both are sold ticket 1. A
transaction alone does not stop it: at PostgreSQL's default level, READ
COMMITTED, each statement sees what was committed when it began, and an
``UPDATE … SET ticket_num = ?`` that waited for another buyer's row lock
simply overwrites that buyer's write once it commits.

==================  ===========================================================
variant             what the buyer runs (``?`` = the count it read)
==================  ===========================================================
pg-naive            BEGIN (READ COMMITTED); SELECT; wait; UPDATE SET ticket_num = ?-1;
                    COMMIT — the lost update, with the transaction doing nothing
pg-conditional      BEGIN; wait; UPDATE … SET ticket_num = ticket_num-1 WHERE ticket_num > 0
                    RETURNING ticket_num+1; COMMIT — the engine decides, the row says who won
pg-for-update       BEGIN; SELECT … FOR UPDATE (the row lock first); wait; UPDATE; COMMIT
pg-repeatable-read  BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT; wait; UPDATE; COMMIT;
                    40001 (SerializationFailure): roll back, read again, retry
pg-serializable     the same at SERIALIZABLE (SSI): the same retry loop
pg-version          BEGIN; SELECT ticket_num, version; wait; UPDATE … WHERE version = v;
                    0 rows: someone else sold first, so roll back, read again and retry
pg-version-once     the same compare-and-set, without the retry: it never oversells,
                    but a loser gives up while tickets are left (it *undersells*)
pg-advisory         BEGIN; SELECT pg_advisory_xact_lock(k); SELECT; wait; UPDATE; COMMIT
                    (the lab's own lock, held until COMMIT or the connection dies)
==================  ===========================================================

Where the engine can switch from one buyer to another, and what stops it:

- between the SELECT and the UPDATE (the wait, ``me.network_latency()``):
  this is the race window. pg-naive leaves it open. pg-for-update and
  pg-advisory hold a lock across it (the row lock, the advisory lock), so the
  next buyer waits at its ``FOR UPDATE`` / ``pg_advisory_xact_lock``.
  pg-conditional has no window: the check and the decrement are one statement.
- at the UPDATE: the row lock serializes writers. At READ COMMITTED the
  waiter re-reads the row and goes on (pg-naive loses the update; pg-version's
  ``WHERE version = v`` no longer matches; pg-conditional's ``ticket_num > 0``
  is re-checked). At REPEATABLE READ the waiter fails with SQLSTATE 40001
  instead ("could not serialize access due to concurrent update").
- at COMMIT: SERIALIZABLE may refuse it (40001) when the transactions could
  not have run one after the other.

Every sale also inserts a row in ``lab_orders`` in the same transaction, so
the engine's own ledger shows a double sale as two rows for one ticket. In
the fixes ``me.step("mid-write")`` sits after the write and before COMMIT: a
buyer ``--crash`` kills there dies inside its transaction, the server sees
its connection close and rolls the sale back, and the books still balance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.core.lazy import lazy_import
from lab.stores.pgdb import ORDERS, SALE_KEY, TICKETS, PgStore
from lab.variants.protocol import RunEnv, Stage, Variant, VariantBase

if TYPE_CHECKING:
    import psycopg

    from lab.stores.pgdb import Conn
else:
    psycopg = lazy_import("psycopg")  # loaded by the first buyer that talks to the server

__all__ = [
    "PG_VARIANTS",
    "VARIANTS",
    "PgAdvisory",
    "PgConditional",
    "PgForUpdate",
    "PgNaive",
    "PgRepeatableRead",
    "PgSerializable",
    "PgVersion",
    "PgVersionOnce",
]

_COUNT = f"SELECT ticket_num FROM {TICKETS} WHERE id = 1"


def _db(me: Buyer) -> Conn:
    store = me.store
    assert isinstance(store, PgStore)
    return store.db()


def _one(db: Conn, sql: str, params: tuple[object, ...] = ()) -> tuple[int, ...]:
    row = db.execute(sql, params).fetchone()
    assert row is not None, f"no row for: {sql}"
    return tuple(int(v) for v in row)


def search(me: Buyer) -> None:
    """查票: read the count (harmless on its own)."""
    (count,) = _one(_db(me), _COUNT)
    me.searched(count)


def _record(db: Conn, me: Buyer, ticket: int) -> None:
    """The order row, the engine's own record of this sale."""
    run = me.store.run if isinstance(me.store, PgStore) else ""  # whose sale: see --join
    db.execute(
        f"INSERT INTO {ORDERS}(run, buyer, ticket) VALUES (%s, %s, %s)", (run, me.index, ticket)
    )


@contextmanager
def transaction(db: Conn, begin: str = "BEGIN") -> Iterator[None]:
    """``begin`` … ``COMMIT``, or ``ROLLBACK`` if the block raises.

    A COMMIT that fails (SERIALIZABLE's 40001) has already ended the transaction.
    """
    db.execute(begin)
    try:
        yield
    except BaseException:
        with suppress(psycopg.Error):  # a broken connection has nothing to roll back
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def naive(me: Buyer) -> None:
    """The notes' buy in one READ COMMITTED transaction: it races all the same."""
    db = _db(me)
    search(me)
    with transaction(db, "BEGIN ISOLATION LEVEL READ COMMITTED"):
        (count,) = _one(db, _COUNT)
        me.read(count)
        me.network_latency()  # the count read above is already stale while this lasts
        if count > 0:
            db.execute(f"UPDATE {TICKETS} SET ticket_num = %s WHERE id = 1", (count - 1,))
            _record(db, me, count)
            me.step("mid-write")
    if count > 0:
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def conditional(me: Buyer) -> None:
    """The fix most flash-sale systems use: let the engine check and decrement in one step."""
    db = _db(me)
    search(me)
    with transaction(db):  # the UPDATE and the order row commit together
        me.network_latency()
        row = db.execute(
            f"UPDATE {TICKETS} SET ticket_num = ticket_num - 1 "
            "WHERE id = 1 AND ticket_num > 0 RETURNING ticket_num + 1"
        ).fetchone()
        ticket = None if row is None else int(row[0])
        if ticket is not None:
            _record(db, me, ticket)
            me.step("mid-write")
    if ticket is None:  # no row matched: sold out, decided by the engine
        me.sold_out(0)
    else:
        me.bought(ticket=ticket)


def _locked_sale(me: Buyer, db: Conn, lock_sql: str | None, read_sql: str) -> None:
    """Take a lock inside a transaction (``lock_sql``; None: ``read_sql`` itself locks),
    then read, wait, write, commit."""
    me.wants_lock()
    db.execute("BEGIN")
    try:
        if lock_sql is not None:
            db.execute(lock_sql)  # waits (lock_timeout) while another buyer holds it
            me.acquired()
        # A statement of its own after the lock: at READ COMMITTED it sees every sale
        # committed before the lock was granted (FOR UPDATE re-reads the row it waited for).
        (count,) = _one(db, read_sql)
        if lock_sql is None:
            me.acquired()
        me.read(count)
        me.network_latency()  # inside the lock now: nobody can read a stale count
        if count > 0:
            db.execute(f"UPDATE {TICKETS} SET ticket_num = %s WHERE id = 1", (count - 1,))
            _record(db, me, count)
            me.step("mid-write")
    except BaseException:
        with suppress(psycopg.Error):
            db.execute("ROLLBACK")
        me.released()
        raise
    db.execute("COMMIT")  # releases the lock
    me.released()
    if count > 0:
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def for_update(me: Buyer) -> None:
    """A pessimistic row lock: SELECT … FOR UPDATE locks the row before the read."""
    db = _db(me)
    search(me)
    _locked_sale(me, db, None, f"{_COUNT} FOR UPDATE")  # waits while another holds the row


def advisory(me: Buyer) -> None:
    """The lab's own named lock in the server: an advisory lock held until COMMIT."""
    db = _db(me)
    search(me)
    _locked_sale(me, db, f"SELECT pg_advisory_xact_lock({SALE_KEY})", _COUNT)


def _isolated_attempt(me: Buyer, db: Conn, level: str) -> None:
    """One try at ``level``; raises SerializationFailure when the engine refuses it."""
    with transaction(db, f"BEGIN ISOLATION LEVEL {level}"):
        (count,) = _one(db, _COUNT)
        me.read(count)
        me.network_latency()
        if count > 0:
            db.execute(f"UPDATE {TICKETS} SET ticket_num = %s WHERE id = 1", (count - 1,))
            _record(db, me, count)
            me.step("mid-write")
    if count > 0:
        me.bought(ticket=count)
    else:
        me.sold_out(count)


@dataclass(frozen=True)
class Isolation:
    """An isolated variant's kit: its level, and how many refusals it retries."""

    level: str
    retries: int


def isolated(me: Buyer, kit: Isolation) -> None:
    """The naive transaction at a stronger level: the engine refuses the lost update (40001)."""
    db = _db(me)
    search(me)
    retries = kit.retries
    for _ in range(retries + 1):
        try:
            _isolated_attempt(me, db, kit.level)
        except psycopg.errors.SerializationFailure as exc:
            me.retried(f"SQLSTATE 40001: {' '.join(str(exc).split())}")
            continue
        return
    me.failed(TimeoutError(f"refused with SQLSTATE 40001 {retries + 1} times"))


def _version_attempt(me: Buyer, db: Conn) -> bool | None:
    """One optimistic try: True sold, False sold out, None lost the compare-and-set."""
    with transaction(db):
        count, seen = _one(db, f"SELECT ticket_num, version FROM {TICKETS} WHERE id = 1")
        me.read(count)
        me.network_latency()
        if count <= 0:
            changed = 0
        else:
            changed = db.execute(
                f"UPDATE {TICKETS} SET ticket_num = %s, version = version + 1 "
                "WHERE id = 1 AND version = %s",
                (count - 1, seen),
            ).rowcount
            if changed:
                _record(db, me, count)
                me.step("mid-write")
    if count <= 0:
        me.sold_out(count)
        return False
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


class _Postgres(VariantBase):
    """What every PostgreSQL variant shares: the store, and a stage with one program."""

    name: str
    summary: str
    safe: bool
    why: str
    store = "postgres"
    explorable = False

    def program(self, env: RunEnv) -> Stage[Any]:
        raise NotImplementedError

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield self.program(env)


class PgNaive(_Postgres):
    name = "pg-naive"
    fixed_by: str | None = "pg-conditional"
    fix = N_(
        "let the engine check and decrement in one statement (UPDATE ... WHERE ticket_num > 0"
        " RETURNING), or lock the row first (SELECT ... FOR UPDATE: lab run pg-for-update)"
    )
    summary = "PostgreSQL: SELECT, wait, UPDATE in a READ COMMITTED transaction (the race)"
    safe = False
    why = (
        "READ COMMITTED lets every buyer SELECT the same count before anyone's UPDATE, and "
        "each writes that count-1: a lost update (P4), and the order table shows the double sale"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(naive)


class PgConditional(_Postgres):
    name = "pg-conditional"
    summary = "PostgreSQL: UPDATE … SET n = n-1 WHERE n > 0 RETURNING, deciding by the row"
    safe = True
    why = (
        "the engine checks and decrements in one statement under the row lock; "
        "the returned row says who won"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(conditional)


class PgForUpdate(_Postgres):
    name = "pg-for-update"
    summary = "PostgreSQL: SELECT … FOR UPDATE locks the row before the read"
    safe = True
    why = "the read, the wait and the write run under the row's lock, held until COMMIT"

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(for_update)


class PgRepeatableRead(_Postgres):
    name = "pg-repeatable-read"
    summary = "PostgreSQL: the naive transaction at REPEATABLE READ, retried on 40001"
    safe = True
    why = (
        "a second writer of the row is refused (SQLSTATE 40001) instead of overwriting; "
        "it rolls back, reads again and retries"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        # Each refusal means another buyer committed a sale: at most one per buyer.
        return Stage(program=isolated, kit=Isolation("REPEATABLE READ", env.buyers))


class PgSerializable(_Postgres):
    name = "pg-serializable"
    summary = "PostgreSQL: the naive transaction at SERIALIZABLE, retried on 40001"
    safe = True
    why = (
        "the engine refuses any transaction that could not have run alone (SQLSTATE 40001); "
        "the loser rolls back, reads again and retries"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage(program=isolated, kit=Isolation("SERIALIZABLE", env.buyers))


class PgVersion(_Postgres):
    name = "pg-version"
    summary = "PostgreSQL: optimistic version column, compare-and-set, retry on conflict"
    safe = True
    why = "a write lands only if nobody wrote since the read; a loser reads again and retries"

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage(program=version, kit=env.buyers)


class PgVersionOnce(_Postgres):
    name = "pg-version-once"
    summary = "PostgreSQL: the version compare-and-set without retry (never oversells, undersells)"
    safe = True
    caveat = "undersells"
    undersells = True
    why = (
        "a loser of the compare-and-set gives up instead of retrying: consistent, but "
        "tickets stay unsold although buyers wanted them"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(version_once)


class PgAdvisory(_Postgres):
    name = "pg-advisory"
    summary = "PostgreSQL: pg_advisory_xact_lock around the read, the wait and the write"
    safe = True
    why = (
        "the lab's own lock in the server is taken before the read and released at COMMIT "
        "(or when a killed buyer's connection closes)"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(advisory)


#: Every PostgreSQL variant class, in the order ``lab variants`` lists them.
VARIANTS: tuple[type[_Postgres], ...] = (
    PgNaive,
    PgConditional,
    PgForUpdate,
    PgRepeatableRead,
    PgSerializable,
    PgVersion,
    PgVersionOnce,
    PgAdvisory,
)
#: The same, one instance each, for the registry (as ``SQLITE_VARIANTS``).
PG_VARIANTS: tuple[Variant, ...] = tuple(cls() for cls in VARIANTS)
