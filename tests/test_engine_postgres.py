"""The PostgreSQL backend and its variants, against a real private PostgreSQL server.

One server per test module (starting one takes seconds); each test seeds the
lab's two tables afresh, so the tests stay independent. Two layers:

- the programs, driven directly: real buyer processes (forked) running each
  variant's program against the server, with a small stand-in for ``me``, so
  the SQL is tested on its own;
- whole runs through the runner (``lab.harness.runner.run``), the server
  passed as the scenario's ``store_url`` (what ``--dsn`` sets).
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lab.core.errors import DataFileBusy, LabError, UsageError
from lab.core.model import Latency, Result, Scenario
from lab.harness.runner import run
from lab.stores import open_store
from lab.stores._servers import PrivateServer, start_postgres
from lab.stores.pgdb import ORDERS, TICKETS, PgStore
from lab.stores.protocol import StorePlace
from lab.variants import engine_postgres as pg
from lab.variants.protocol import RunEnv

#: The safe variants and the unsafe one, by name.
SAFE = [cls for cls in pg.VARIANTS if cls.safe]
#: Safe variants that sell every ticket when buyers outnumber them (version-once may not).
SELLS_OUT = [cls for cls in SAFE if not cls.caveat]
#: The longest one driven batch of buyers may take.
BATCH_TIMEOUT_S = 60.0
#: Safe runs repeated this often: a race that shows one run in ten should still show.
REPEATS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    with start_postgres(tmp_path_factory.mktemp("pg"), timeout=90) as started:
        yield started


@pytest.fixture
def dsn(server: PrivateServer) -> str:
    """The module's server, with the lab's tables gone before each test."""
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TICKETS}, {ORDERS}")
    return server.dsn


def env_for(buyers: int) -> RunEnv:
    return RunEnv(
        mp=multiprocessing.get_context("fork"),
        store=None,  # the PostgreSQL programs take no store here
        scenario=Scenario(buyers=buyers),
        buyers=buyers,
        timeout=BATCH_TIMEOUT_S,
    )


# -- the programs, driven directly --------------------------------------------------


@dataclass
class FakeMe:
    """The parts of ``lab.buyer.Buyer`` a PostgreSQL program calls, reporting to a queue."""

    index: int
    store: PgStore
    reports: Any  # a multiprocessing queue
    barrier: Any = None
    crash_at: str | None = None
    events: list[tuple[str, object]] = field(default_factory=list)

    def step(self, name: str) -> None:
        if name == self.crash_at:
            self.reports.put((self.index, "crash", name, list(self.events)))
            time.sleep(0.05)  # let the queue's feeder thread send it
            os.kill(os.getpid(), signal.SIGKILL)

    def searched(self, count: int) -> None:
        self.events.append(("search", count))

    def read(self, count: int) -> None:
        self.events.append(("read", count))

    def network_latency(self) -> None:
        if self.barrier is not None:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self.events.append(("lockstep_broken", None))
        self.step("window")

    def wants_lock(self) -> None:
        self.step("want-lock")

    def acquired(self) -> None:
        self.events.append(("acquired", None))

    def released(self) -> None:
        self.events.append(("released", None))

    def retried(self, reason: str) -> None:
        self.events.append(("retried", reason))

    def gave_up(self, reason: str) -> None:
        self._end("gave_up", reason)

    def bought(self, ticket: int | None) -> None:
        self.step("bought")
        self._end("bought", ticket)

    def sold_out(self, count: int | None) -> None:
        self._end("sold_out", count)

    def failed(self, exc: BaseException) -> None:
        self._end("error", f"{type(exc).__name__}: {exc}")

    def _end(self, outcome: str, detail: object) -> None:
        self.reports.put((self.index, outcome, detail, list(self.events)))


@dataclass(frozen=True)
class Batch:
    """What one batch of driven buyers reported, and what the database holds after."""

    tickets: int
    outcomes: dict[int, tuple[str, object, list[tuple[str, object]]]]
    remaining: int
    orders: tuple[tuple[int, int], ...]

    def of(self, outcome: str) -> dict[int, object]:
        return {i: detail for i, (o, detail, _) in self.outcomes.items() if o == outcome}

    @property
    def sold(self) -> int:
        return len(self.of("bought"))


def _buyer_process(
    program: Callable[..., None],
    args: tuple[object, ...],
    me: FakeMe,
) -> None:
    try:
        program(me, *args)
    except Exception as exc:  # the runner's rule: a buyer's error is reported, not raised
        me.failed(exc)


def drive(
    dsn: str,
    variant: type[pg._Postgres],
    *,
    buyers: int,
    tickets: int,
    lockstep: bool = False,
    crash: frozenset[int] = frozenset(),
) -> Batch:
    """Seed ``tickets``, run ``buyers`` forked buyers of ``variant``'s program, collect."""
    store = PgStore(dsn, timeout=30.0)
    store.seed(tickets)
    store.close()
    stage = variant().program(env_for(buyers))
    program, args = stage.program, (stage.kit,)  # each buyer calls program(me, kit)
    ctx = multiprocessing.get_context("fork")
    reports = ctx.Queue()
    barrier = ctx.Barrier(buyers, timeout=2.0) if lockstep else None
    procs = []
    for i in range(buyers):
        me = FakeMe(
            i,
            store.for_buyer(lambda _name: None),
            reports,
            barrier,
            crash_at="mid-write" if i in crash else None,
        )
        proc = ctx.Process(target=_buyer_process, args=(program, args, me), daemon=True)
        proc.start()
        procs.append(proc)
    outcomes: dict[int, tuple[str, object, list[tuple[str, object]]]] = {}
    deadline = time.monotonic() + BATCH_TIMEOUT_S
    try:
        while len(outcomes) < buyers and time.monotonic() < deadline:
            try:
                index, outcome, detail, events = reports.get(timeout=0.5)
            except Exception:  # queue.Empty: every buyer still alive may yet report
                if all(not p.is_alive() for p in procs) and reports.empty():
                    break
                continue
            outcomes[index] = (outcome, detail, events)
    finally:
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
        reports.close()
        reports.join_thread()
    assert len(outcomes) == buyers, f"only {len(outcomes)} of {buyers} buyers reported"
    snap = PgStore(dsn).snapshot()
    assert snap.remaining is not None, snap.problem
    assert snap.orders is not None
    return Batch(tickets, outcomes, snap.remaining, snap.orders)


def assert_books_balance(batch: Batch, *, killed: frozenset[int] = frozenset()) -> None:
    """Never oversold, no lost update, and the engine's orders agree with the buyers."""
    assert batch.of("error") == {}, batch.of("error")
    sold = batch.of("bought")
    assert batch.sold <= batch.tickets, f"oversold: {batch.sold} sales of {batch.tickets}"
    assert batch.sold + batch.remaining == batch.tickets, (
        f"lost update: {batch.sold} sold + {batch.remaining} remaining != {batch.tickets}"
    )
    tickets_sold = [ticket for _, ticket in batch.orders]
    assert len(set(tickets_sold)) == len(tickets_sold), f"a ticket sold twice: {batch.orders}"
    assert sorted(batch.orders) == sorted(sold.items()), "the orders table disagrees"
    # A buyer killed inside its transaction sold nothing: no order row is left behind.
    assert not {buyer for buyer, _ in batch.orders} & killed


@pytest.mark.parametrize("variant", SAFE, ids=lambda v: v.name)
def test_safe_program_never_oversells_and_balances(dsn: str, variant: type[pg._Postgres]) -> None:
    for _ in range(REPEATS):
        batch = drive(dsn, variant, buyers=30, tickets=10)
        assert_books_balance(batch)
        if not variant.caveat:
            assert batch.sold == 10, f"undersold: {batch.sold} of 10 with 30 buyers"
            assert len(batch.of("sold_out")) == 20


@pytest.mark.parametrize("variant", SAFE, ids=lambda v: v.name)
def test_safe_program_holds_in_lockstep(dsn: str, variant: type[pg._Postgres]) -> None:
    """Every buyer reads before any writes: the window the naive program loses in."""
    batch = drive(dsn, variant, buyers=6, tickets=3, lockstep=True)
    assert_books_balance(batch)


@pytest.mark.parametrize("variant", SAFE, ids=lambda v: v.name)
def test_buyer_killed_mid_transaction_sold_nothing(dsn: str, variant: type[pg._Postgres]) -> None:
    killed = frozenset({0, 3, 5, 8, 13, 21})
    batch = drive(dsn, variant, buyers=24, tickets=10, crash=killed)
    crashed = batch.of("crash")
    # Buyers that reached their write were killed there; the rest found it sold out.
    assert set(crashed) <= killed
    assert all(batch.outcomes[i][0] in {"crash", "sold_out", "gave_up"} for i in killed)
    assert_books_balance(batch, killed=killed)
    if not variant.caveat:
        assert batch.sold == 10, "a killed buyer's rolled-back sale left its ticket unsold"


def test_naive_program_oversells_in_lockstep(dsn: str) -> None:
    for _ in range(REPEATS):
        batch = drive(dsn, pg.PgNaive, buyers=8, tickets=1, lockstep=True)
        assert batch.sold == 8, batch.outcomes
        assert batch.remaining == 0
        # The engine's own ledger shows it: eight rows for ticket 1, one per buyer.
        assert sorted(batch.orders) == [(i, 1) for i in range(8)]


def test_version_once_program_undersells_in_lockstep(dsn: str) -> None:
    batch = drive(dsn, pg.PgVersionOnce, buyers=6, tickets=10, lockstep=True)
    assert_books_balance(batch)
    assert batch.sold == 1
    assert batch.remaining == 9
    assert len(batch.of("gave_up")) == 5


@pytest.mark.parametrize("variant", [pg.PgRepeatableRead, pg.PgSerializable], ids=lambda v: v.name)
def test_isolation_losers_are_refused_with_40001_and_retry(
    dsn: str, variant: type[pg._Postgres]
) -> None:
    batch = drive(dsn, variant, buyers=6, tickets=10, lockstep=True)
    assert_books_balance(batch)
    assert batch.sold == 6
    retries = [r for _, _, events in batch.outcomes.values() for k, r in events if k == "retried"]
    assert retries, "no buyer was refused, though all read the same count"
    assert all(str(r).startswith("SQLSTATE 40001") for r in retries)


# -- the store ------------------------------------------------------------------------


def test_seed_creates_only_the_lab_tables_and_resets_them(dsn: str) -> None:
    store = PgStore(dsn)
    store.seed(5)
    store.db().execute(f"INSERT INTO {ORDERS} VALUES (1, 5), (2, 5)")
    store.db().execute(f"UPDATE {TICKETS} SET ticket_num = 3, version = 7")
    store.seed(4)
    assert store.read() == 4
    snap = store.snapshot()
    assert (snap.remaining, snap.orders, snap.problem) == (4, (), None)
    assert "lab_tickets" in snap.where
    with psycopg.connect(dsn) as conn:
        tables = {
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert tables == {TICKETS, ORDERS}
        assert conn.execute(f"SELECT version FROM {TICKETS}").fetchone() == (0,)


def test_orders_table_keeps_a_double_sale_visible(dsn: str) -> None:
    store = PgStore(dsn)
    store.seed(1)
    store.db().execute(f"INSERT INTO {ORDERS} VALUES (0, 1), (1, 1)")
    assert store.snapshot().orders == ((0, 1), (1, 1))


def test_snapshot_never_raises(dsn: str) -> None:
    snap = PgStore(dsn).snapshot()  # no tables yet
    assert snap.remaining is None
    assert snap.problem and "\n" not in snap.problem
    gone = PgStore("host=127.0.0.1 port=1 user=nobody dbname=x connect_timeout=2").snapshot()
    assert gone.remaining is None and gone.problem


def test_claim_refuses_a_second_run_and_is_released(dsn: str) -> None:
    store = PgStore(dsn)
    held = store.claim()
    try:
        with pytest.raises(DataFileBusy) as busy:
            PgStore(dsn).claim()
        assert "\n" not in str(busy.value)
    finally:
        held.close()
    PgStore(dsn).claim().close()  # free again


def test_store_pickles_only_its_dsn(dsn: str) -> None:
    store = PgStore(dsn, timeout=12.0)
    store.seed(2)
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.dsn, copy.timeout) == (dsn, 12.0)
    assert copy.read() == 2
    copy.close()
    store.close()


def test_forked_child_never_closes_the_parents_session(dsn: str) -> None:
    """A child that closes its store (or its inherited claim) leaves the parent's alone."""
    store = PgStore(dsn)
    store.seed(3)
    held = store.claim()
    ctx = multiprocessing.get_context("fork")

    def child() -> None:
        assert store.read() == 3  # its own connection
        store.close()
        held.close()

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(30.0)
    try:
        assert proc.exitcode == 0
        assert store.read() == 3  # the parent's connection still works
        with pytest.raises(DataFileBusy):
            PgStore(dsn).claim()  # and the claim is still held
    finally:
        held.close()
        store.close()


@pytest.mark.parametrize(
    "bad",
    [
        "host=127.0.0.1 port=1 user=postgres dbname=postgres",  # nobody listens
        "postgresql://postgres@127.0.0.1:1/postgres",
        "not a dsn at all ===",
        "host=127.0.0.1 port={port} user=postgres dbname=no_such_database",
    ],
)
def test_bad_dsn_is_one_usage_line(server: PrivateServer, bad: str, tmp_path: Path) -> None:
    port = server.startup_nodes[0][1]
    place = StorePlace(run_dir=tmp_path, url=bad.format(port=port), timeout=5.0)
    with pytest.raises(UsageError) as refused, open_store("postgres", place):
        pass
    text = str(refused.value)
    assert "\n" not in text and "--dsn" in text, text


def test_bad_password_is_never_echoed(server: PrivateServer, tmp_path: Path) -> None:
    url = "postgresql://ghost:s3cret-pw@127.0.0.1:1/postgres"
    with (
        pytest.raises(UsageError) as refused,
        open_store("postgres", StorePlace(tmp_path, url=url)),
    ):
        pass
    assert "s3cret-pw" not in str(refused.value)


def test_users_server_keeps_the_lab_tables(dsn: str, tmp_path: Path) -> None:
    with open_store("postgres", StorePlace(tmp_path, url=dsn)) as store:
        store.seed(2)
    with psycopg.connect(dsn) as conn:
        assert conn.execute(f"SELECT ticket_num FROM {TICKETS}").fetchone() == (2,)


def test_private_server_is_started_and_stopped(tmp_path: Path) -> None:
    with open_store("postgres", StorePlace(tmp_path, timeout=30.0)) as store:
        assert isinstance(store, PgStore)
        store.seed(3)
        assert store.read() == 3
        dsn = store.dsn
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2).close()


# -- whole runs through the runner --------------------------------------------------


def run_pg(variant: type[pg._Postgres], dsn: str | None, **fields: Any) -> Result:
    """One run of ``variant`` through the runner, on the module's server (``--dsn``)."""
    scenario = Scenario(
        **{
            "buyers": 30,
            "tickets": 10,
            "latency": Latency(0.0, 0.0),
            "seed": 7,
            "store_url": dsn,
            **fields,
        }
    )
    return run(variant(), scenario)


def engine_orders(dsn: str) -> list[tuple[int, int]]:
    with psycopg.connect(dsn) as conn:
        return [(int(b), int(t)) for b, t in conn.execute(f"SELECT buyer, ticket FROM {ORDERS}")]


@pytest.mark.parametrize("variant", SAFE, ids=lambda v: v.name)
def test_run_safe_variant_balances_its_books(dsn: str, variant: type[pg._Postgres]) -> None:
    for seed in range(REPEATS):
        result = run_pg(variant, dsn, seed=seed)
        assert result.errors == 0
        assert result.oversold == 0
        assert result.lost_updates == 0
        assert result.accounted
        assert result.remaining is not None
        assert result.sold + result.remaining == result.tickets == 10
        orders = engine_orders(dsn)
        assert len(orders) == result.sold
        assert len({t for _, t in orders}) == len(orders), "a ticket sold twice"
        bought = {r.buyer: r.ticket for r in result.receipts if r.outcome == "bought"}
        assert dict(orders) == bought
        if not variant.caveat:
            assert result.sold == 10


@pytest.mark.parametrize("variant", SAFE, ids=lambda v: v.name)
def test_run_safe_variant_under_crash_balances(dsn: str, variant: type[pg._Postgres]) -> None:
    result = run_pg(variant, dsn, crash=0.3, seed=11)
    assert result.killed > 0
    assert result.oversold == 0
    assert result.accounted
    orders = engine_orders(dsn)
    assert len({t for _, t in orders}) == len(orders), "a ticket sold twice"
    # Every order belongs to a buyer told it bought, or to one killed after COMMIT.
    assert len(orders) == result.sold + result.unknown_consumed


def test_run_naive_oversells_in_lockstep(dsn: str) -> None:
    for seed in range(REPEATS):
        result = run_pg(pg.PgNaive, dsn, buyers=8, tickets=1, lockstep=True, seed=seed)
        assert result.sold == 8
        assert result.oversold == 7
        assert sorted(engine_orders(dsn)) == [(i, 1) for i in range(8)]


def test_run_version_once_undersells_in_lockstep(dsn: str) -> None:
    result = run_pg(pg.PgVersionOnce, dsn, buyers=6, tickets=10, lockstep=True)
    assert result.oversold == 0
    assert result.accounted
    assert result.sold == 1 and result.remaining == 9


def test_run_bad_dsn_is_one_usage_line() -> None:
    with pytest.raises(LabError) as refused:
        run_pg(pg.PgConditional, "host=127.0.0.1 port=1 user=postgres dbname=postgres")
    assert isinstance(refused.value, UsageError)
    assert "\n" not in str(refused.value) and "--dsn" in str(refused.value)


def test_run_on_a_private_server_starts_and_stops_it(tmp_path: Path) -> None:
    """No ``--dsn``: the run starts its own server in its run directory, and stops it."""
    result = run_pg(pg.PgConditional, None, buyers=5, tickets=2)
    assert (result.sold, result.remaining, result.oversold) == (2, 0, 0)
    assert result.accounted


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_run_store_crosses_a_spawn_start(dsn: str, method: str) -> None:
    """Only the DSN crosses to a spawned buyer; each opens its own connection."""
    scenario = Scenario(buyers=4, tickets=2, latency=Latency(0.0, 0.0), seed=3, store_url=dsn)
    result = run(pg.PgForUpdate(), scenario, start_method=method)
    assert (result.sold, result.remaining, result.errors) == (2, 0, 0)
    assert sorted(t for _, t in engine_orders(dsn)) == [1, 2]
