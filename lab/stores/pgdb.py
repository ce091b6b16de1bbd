"""The tickets in PostgreSQL (``psycopg`` 3): a real client-server engine.

Two tables, both the lab's own (``lab_tickets`` and ``lab_orders``), as in
the SQLite backend::

    lab_tickets(id = 1, ticket_num, version,   the count, a version for optimistic
                seeded)                        compare-and-set, and the count seeded
    lab_orders(run, buyer, ticket)             the engine's own ledger: one row
                                               per sale it recorded, tagged with
                                               the run (the lab) that made it

The ledger has no unique index on purpose: a double sale must be *visible*
in it (two rows for one ticket), not turned into an error.

Where the server comes from:

- no ``--dsn``: a private, throw-away PostgreSQL the lab starts in the run
  directory (:func:`lab.stores._servers.start_postgres`) and stops at the end
  of the run; its data goes with it.
- ``--dsn URL``: the user's own server. The lab touches only ``lab_tickets``
  and ``lab_orders`` there (it creates them if missing, and each seed resets
  the count and empties the orders). It **leaves both tables in place** at the
  end, so that runs on several machines against one server share one count
  and one ledger, and the tables can be inspected after the run
  (``DROP TABLE lab_tickets, lab_orders`` removes them).

One sale per database at a time: the runner's claim is a session-level
advisory lock on :data:`CLAIM_KEY`, held by a connection of its own until the
run ends (the server releases it if the runner dies). The run that seeds takes
it exclusively, then shares it (:meth:`PgStore.share`): runs on other machines
``--join`` with the shared lock, and nobody can re-seed under them.

Each process opens its own connection after a fork (a connection never
crosses a fork, and the parent's is never closed from a child, which would
end the parent's session), in autocommit mode: the variants say ``BEGIN`` /
``COMMIT`` themselves, so the SQL on the page is all the SQL that runs. Only
the DSN is pickled. Every lock wait is bounded by ``lock_timeout``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lab.core.lazy import lazy_import

if TYPE_CHECKING:
    import psycopg
else:
    psycopg = lazy_import("psycopg")  # 0.17 s: only when a run really uses PostgreSQL

from lab.core.errors import DataFileBusy, StoreCorrupted, UsageError
from lab.core.model import MAX_TICKETS
from lab.stores._servers import start_postgres
from lab.stores.protocol import Holding, Snapshot, StorePlace, ledger_snapshot

__all__ = ["CLAIM_KEY", "ORDERS", "SALE_KEY", "SELLING_KEY", "TICKETS", "PgStore", "open_store"]

TICKETS = "lab_tickets"
ORDERS = "lab_orders"
#: The advisory-lock key a run holds for its whole length (one run per database).
CLAIM_KEY = 0x6C61625F72756E  # "lab_run"
#: Held shared by every run whose buyers are selling from the sale (``--join``).
SELLING_KEY = 0x6C61625F62757973  # "lab_buys"
#: The advisory-lock key ``pg-advisory`` buyers take around their read-wait-write.
SALE_KEY = 0x6C61625F73616C  # "lab_sal"

if TYPE_CHECKING:
    #: A connection (its rows are tuples).
    Conn = psycopg.Connection[tuple[Any, ...]]

_SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TICKETS} (
    id integer PRIMARY KEY CHECK (id = 1),
    ticket_num integer NOT NULL,
    version integer NOT NULL DEFAULT 0
)""",
    f"""CREATE TABLE IF NOT EXISTS {ORDERS} (
    buyer integer NOT NULL,
    ticket integer NOT NULL
)""",
    # Columns added since the first release: tables an older lab left on a
    # user's server gain them at the next seed.
    f"ALTER TABLE {TICKETS} ADD COLUMN IF NOT EXISTS seeded integer",
    f"ALTER TABLE {ORDERS} ADD COLUMN IF NOT EXISTS run text NOT NULL DEFAULT ''",
)
#: How often a run that waits for the others sharing its sale looks again.
_ALONE_POLL_S = 0.1

#: Connections a forked child inherited from its parent. They are kept, never
#: used and never closed: closing (or freeing) one would send the server a
#: Terminate on the parent's socket and end the parent's session (its claim).
#: A child leaves with ``os._exit``, which runs no finalizer.
_INHERITED: list[Conn] = []


#: A password in a DSN: ``[scheme://]user:PASSWORD@`` (up to the token's last ``@``) or
#: ``password=PASSWORD`` (quoted or not).
_PASSWORD = re.compile(
    r"(?P<uri>(?:://)?[^\s/@:\"']*:)(?!//)[^\s\"]*(?=@)"
    r"|(?P<kw>password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s\"]*)",
    re.IGNORECASE,
)


def hide_password(text: str) -> str:
    """``text`` with every DSN password in it replaced by ``***``."""
    return _PASSWORD.sub(lambda m: f"{m.group('uri') or m.group('kw')}***", text)


def one_line(exc: BaseException) -> str:
    """An error's message on one line (libpq's messages span several), with no password:
    libpq quotes the part of a DSN it cannot parse (``missing "=" after
    "POSTGRESQL://u:pw@h/db"``), and that part may hold the password."""
    return hide_password(" ".join(str(exc).split())) or type(exc).__name__


def describe(dsn: str) -> str:
    """``host:port/dbname`` of a DSN, without its password (for reports and errors)."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError):  # ValueError: a lone surrogate cannot be encoded
        return "an unreadable DSN"  # (callers say "PostgreSQL at ...")
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    port = parts.get("port") or "5432"
    dbname = parts.get("dbname") or parts.get("user") or ""
    return f"{host}:{port}/{dbname}"


@contextlib.contextmanager
def _libpq_stderr() -> Iterator[list[str]]:
    """Hold what libpq itself writes to fd 2 while connecting (``WARNING: password file
    "/dev/zero" is not a plain file``, from a DSN's ``passfile``): the caller folds it into
    its one-line error if the connection fails; if it succeeds, the warning is dropped
    (the connection worked, and only lab.ui writes to the terminal). Without this a
    refused ``--dsn`` could print two lines on stderr."""
    said: list[str] = []
    with contextlib.ExitStack() as stack:
        try:
            held = stack.enter_context(tempfile.TemporaryFile())
            saved = os.dup(2)
        except OSError:  # no descriptor (or no temp space) to spare: let libpq write to fd 2
            saved = -1
        if saved < 0:
            yield said
            return
        os.dup2(held.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            said.append(held.read(4096).decode(errors="replace"))


def _forget_inherited(conn: Conn | None) -> None:
    if conn is not None:
        _INHERITED.append(conn)


class _Claim:
    """The runner's session-level advisory lock, on a connection of its own."""

    def __init__(self, conn: Conn) -> None:
        self.conn: Conn | None = conn
        self.pid = os.getpid()

    def close(self) -> None:
        # Ending the session releases the lock. Only the process that took it
        # closes it: a forked buyer must never end the runner's session.
        if self.conn is not None and self.pid == os.getpid():
            with contextlib.suppress(psycopg.Error):
                self.conn.close()
        elif self.conn is not None:
            _forget_inherited(self.conn)
        self.conn = None


class PgStore:
    """``lab_tickets`` and ``lab_orders`` in the PostgreSQL database at ``dsn``."""

    kind = "postgres"
    #: a killed buyer leaves no half-written file: its transaction rolls back (the
    #: buyer's ``--crash`` reports it this way, as for data.json's temp file)
    temp_in_flight: str | None = None

    def __init__(
        self,
        dsn: str,
        *,
        timeout: float = 60.0,
        private: bool = False,
        step: Callable[[str], None] | None = None,
        run: str = "",
    ) -> None:
        self.dsn = dsn
        #: this run's tag on its orders (SharedSale): set by the runner
        self.run = run
        #: the longest any lock wait or connection attempt may take
        self.timeout = timeout
        #: a throw-away server the lab started (True), or the user's own (--dsn)
        self.private = private
        #: a buyer's ``--crash`` hook (the variants call ``me.step`` themselves)
        self.step = step or (lambda _name: None)
        self._conn: Conn | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, object]:
        # Only the DSN (and settings) cross a process boundary; never a connection.
        return {"dsn": self.dsn, "timeout": self.timeout, "private": self.private, "run": self.run}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["dsn"], timeout=state["timeout"], private=state["private"], run=state["run"]
        )

    def __repr__(self) -> str:
        return f"PgStore({describe(self.dsn)!r})"

    @property
    def where(self) -> str:
        server = "a private PostgreSQL" if self.private else "PostgreSQL"
        return f"{server} at {describe(self.dsn)}, tables {TICKETS} and {ORDERS}"

    def for_buyer(self, step: Callable[[str], None]) -> PgStore:
        """This store as one buyer uses it: its own connection, and its crash hook."""
        return PgStore(
            self.dsn, timeout=self.timeout, private=self.private, step=step, run=self.run
        )

    def connect(self) -> Conn:
        """A new autocommit connection whose lock waits are bounded (``UsageError`` if refused)."""
        try:
            with _libpq_stderr() as said:
                conn: Conn = psycopg.connect(
                    self.dsn,
                    autocommit=True,
                    connect_timeout=max(2, min(int(self.timeout), 30)),
                )
        # ValueError too: psycopg encodes the DSN and resolves its host names in Python,
        # so a lone surrogate or an over-long host label is a UnicodeError, not a
        # psycopg.Error. Either way it is the user's --dsn: one line, not a traceback.
        except (psycopg.Error, ValueError) as exc:
            libpq = " ".join(said[0].split()) if said else ""
            warned = f" ({libpq})" if libpq else ""
            raise UsageError(
                f"--dsn: cannot connect to PostgreSQL at {describe(self.dsn)}: "
                f"{one_line(exc)}{warned}"
            ) from None
        try:
            ms = max(1, int(self.timeout * 1000))
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{ms}ms",))
        except psycopg.Error as exc:
            conn.close()
            raise UsageError(
                f"--dsn: PostgreSQL at {describe(self.dsn)} refused a setting: {one_line(exc)}"
            ) from None
        return conn

    def db(self) -> Conn:
        """This process's connection (opened on first use, after any fork)."""
        if self._conn is None or self._pid != os.getpid() or self._conn.closed:
            if self._conn is not None and self._pid != os.getpid():
                _forget_inherited(self._conn)  # the parent's: never touch it here
            self._conn, self._pid = self.connect(), os.getpid()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            if self._pid == os.getpid():
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
            else:
                _forget_inherited(self._conn)
        self._conn = None

    def check(self) -> None:
        """Connect now, so that a bad ``--dsn`` is refused before anything starts."""
        self.db()

    # -- the TicketStore contract ------------------------------------------------

    def claim(self) -> Holding:
        conn = self.connect()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (CLAIM_KEY,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise UsageError(
                f"--dsn: cannot take the run's lock on {describe(self.dsn)}: {one_line(exc)}"
            ) from None
        if row is None or not row[0]:
            conn.close()
            raise DataFileBusy(
                f"{describe(self.dsn)}: another lab run is selling from {TICKETS} in this "
                "database; --join it, or wait for it to finish"
            )
        return _Claim(conn)

    def share(self, claim: Holding) -> None:
        assert isinstance(claim, _Claim)
        assert claim.conn is not None
        # One session may hold both modes of one key: take the shared lock, then
        # let the exclusive one go. There is no moment without a claim.
        claim.conn.execute("SELECT pg_advisory_lock_shared(%s)", (CLAIM_KEY,))
        claim.conn.execute("SELECT pg_advisory_lock_shared(%s)", (SELLING_KEY,))
        claim.conn.execute("SELECT pg_advisory_unlock(%s)", (CLAIM_KEY,))

    def join(self) -> Holding:
        conn = self.connect()
        try:
            row = conn.execute("SELECT pg_try_advisory_lock_shared(%s)", (CLAIM_KEY,)).fetchone()
            if row is None or not row[0]:
                raise DataFileBusy(
                    f"{describe(self.dsn)}: a lab run is seeding {TICKETS}; --join once it sells"
                )
            conn.execute(f"SELECT ticket_num, seeded FROM {TICKETS} WHERE id = 1").fetchone()
            conn.execute("SELECT pg_advisory_lock_shared(%s)", (SELLING_KEY,))
        except psycopg.Error as exc:
            conn.close()
            raise UsageError(
                f"--join: no sale to join on {describe(self.dsn)} ({one_line(exc)}); "
                "start one with --tickets N first"
            ) from None
        except DataFileBusy:
            conn.close()
            raise
        return _Claim(conn)

    def wait_for_others(self, claim: Holding, timeout: float) -> bool:
        assert isinstance(claim, _Claim)
        assert claim.conn is not None
        # Our buyers are done. The claim itself stays (nobody re-seeds until our
        # tally is read); only the selling lock goes, so two runs never wait on
        # each other.
        claim.conn.execute("SELECT pg_advisory_unlock_shared(%s)", (SELLING_KEY,))
        deadline = time.monotonic() + timeout
        while True:
            row = claim.conn.execute("SELECT pg_try_advisory_lock(%s)", (SELLING_KEY,)).fetchone()
            if row is not None and row[0]:
                claim.conn.execute("SELECT pg_advisory_unlock(%s)", (SELLING_KEY,))
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_ALONE_POLL_S)

    def seed(self, tickets: int) -> None:
        if not 0 <= tickets <= MAX_TICKETS:
            raise ValueError(f"tickets must be 0..{MAX_TICKETS}, got {tickets}")
        db = self.db()
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            with db.transaction():
                db.execute(f"DELETE FROM {ORDERS}")
                db.execute(
                    f"INSERT INTO {TICKETS}(id, ticket_num, version, seeded) VALUES (1, %s, 0, %s) "
                    "ON CONFLICT (id) DO UPDATE SET ticket_num = excluded.ticket_num, "
                    "version = 0, seeded = excluded.seeded",
                    (tickets, tickets),
                )
        except psycopg.Error as exc:
            raise UsageError(
                f"--dsn: cannot set up {TICKETS} and {ORDERS} on {describe(self.dsn)}: "
                f"{one_line(exc)}"
            ) from None

    def read(self) -> int:
        try:
            row = self.db().execute(f"SELECT ticket_num FROM {TICKETS} WHERE id = 1").fetchone()
        except (psycopg.Error, UsageError) as exc:
            raise StoreCorrupted(self.where, f"cannot be read: {one_line(exc)}") from None
        if row is None:
            raise StoreCorrupted(self.where, f"has no row in {TICKETS}")
        return int(row[0])

    def discard(self, leftovers: Sequence[str]) -> None:
        """Nothing to discard: a killed buyer's open transaction rolls back by itself
        (the server sees its connection close)."""

    def snapshot(self) -> Snapshot:
        db = None
        try:
            db = self.db()
            # One snapshot of both tables: a run still selling elsewhere cannot
            # commit between reading the count and reading the ledger.
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            count = self.read()
            row = db.execute(f"SELECT seeded FROM {TICKETS} WHERE id = 1").fetchone()
            rows = db.execute(
                f"SELECT run, buyer, ticket FROM {ORDERS} ORDER BY ticket DESC, buyer"
            ).fetchall()
        except StoreCorrupted as exc:
            return Snapshot(remaining=None, problem=exc.problem, where=self.where)
        except (psycopg.Error, UsageError) as exc:
            return Snapshot(remaining=None, problem=one_line(exc), where=self.where)
        finally:
            if db is not None and not db.closed:
                with contextlib.suppress(psycopg.Error):
                    db.execute("ROLLBACK")
            self.close()
        return ledger_snapshot(
            remaining=count,
            text=f"{TICKETS}.ticket_num = {count}; {ORDERS}: {len(rows)} rows",
            where=self.where,
            seeded=row[0] if row is not None and isinstance(row[0], int) else None,
            ledger=rows,
            run=self.run,
        )


@contextlib.contextmanager
def open_store(place: StorePlace) -> Iterator[PgStore]:
    """The user's server (``--dsn``), or a private one started in the run directory.

    On the user's server the tables stay after the run (see the module's
    docstring); a private server is stopped, and its data removed, at the end.
    """
    if place.url is not None:
        store = PgStore(place.url, timeout=place.timeout)
        store.check()  # a bad DSN, an unreachable server, a refused login: UsageError now
        try:
            yield store
        finally:
            store.close()
        return
    assert place.run_dir is not None, "a private PostgreSQL needs a run directory"
    workdir = place.run_dir / "postgres"
    workdir.mkdir(parents=True, exist_ok=True)
    server = start_postgres(workdir, timeout=max(30.0, place.timeout))
    try:
        store = PgStore(server.dsn, timeout=place.timeout, private=True)
        try:
            yield store
        finally:
            store.close()
    finally:
        server.stop()
