"""Seed the store, start the buyers, fire the gun, collect, reap, tally.

The same loop runs every variant, so a difference in the tally can only come
from the variant's mechanism::

    runner (parent)                          buyer processes (one per buyer)
    ───────────────                          ───────────────────────────────
    seed data.json
    variant.stage(): lock / seller ...
    fork N buyers  ───────────────────────►  post "ready" (a semaphore), wait for the gun
    all ready? fire the gun (an Event) ───►  run the variant's program:
    read reports from one pipe  ◄──────────    search, read, bought/sold_out/error
      (progress, --verbose lines, stall      (batched; sent before every wait)
       watchdog, dead-buyer detection)       report "done", exit
    reap every child (finally)
    read data.json once more
    fold reports into Receipts -> Result (tallies are Result properties)

The start gun matters: forking 1,000 processes takes over a second, and
without it the first buyers would finish before the last ones exist, which
hides the race. Buyers are held at the gun until all are ready.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import multiprocessing
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeAlias

from lab.buyer import (
    BuyerSpec,
    buyer_main,
    decode,
    prepare_parent_death,
    signals_deferred,
    to_event,
)
from lab.core.errors import LabError, StoreCorrupted, UsageError
from lab.core.model import BuyerEvent, Result, Scenario
from lab.harness._procs import ForkedProcess
from lab.harness.result import build_result
from lab.stores import open_store
from lab.stores.jsonfile import Store
from lab.stores.protocol import Holding, SharedSale, Snapshot, StorePlace, TicketStore
from lab.stores.rundirs import new_run_dir
from lab.variants.protocol import MpContext, RunEnv, Stage, Variant

__all__ = [
    "CRASH_STEPS",
    "Observer",
    "check_data",
    "crash_plan",
    "default_start_method",
    "draw_latencies",
    "run",
    "with_seed",
]


def default_start_method() -> str:
    """``fork`` where the platform has it, else ``spawn``; never the interpreter's default.

    fork starts a buyer in ~1.5 ms instead of ~39 ms (spawn) or ~15 ms
    (forkserver), so 1,000 buyers are ready in about a second, and the child
    inherits the report pipe and locks without pickling. Python 3.14 made
    forkserver the Linux default; naming the method keeps runs comparable
    across Python versions.
    """
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


class Observer:
    """Hooks the runner calls while a run is in flight (the CLI shows progress with them)."""

    def started(self, buyers: int) -> None:
        """All buyers are forked and ready; the gun is about to fire. No fork follows
        in this run, so an observer may start threads here."""

    def event(self, event: BuyerEvent) -> None:
        """A buyer reported something (``t`` is seconds since the gun)."""

    def finished(self, buyer: int) -> None:
        """A buyer is done, one way or another."""

    def tick(self, now: float) -> None:
        """Called at least every 0.05 s while buyers run (``now``: seconds since the gun)."""

    def waiting(self, why: str) -> None:
        """Every buyer is done, but the run waits for something else (``why``)."""


def with_seed(scenario: Scenario) -> Scenario:
    """The scenario with a seed: its own, or a fresh random one (reported, so runs repeat)."""
    if scenario.seed is not None:
        return scenario
    return dataclasses.replace(scenario, seed=random.SystemRandom().randrange(1, 1_000_000))


def draw_latencies(scenario: Scenario, seed: int) -> list[float]:
    """Each buyer's latency, drawn in buyer order from ``seed``: the same seed, the same draws."""
    rng = random.Random(seed)
    low, high = scenario.latency.low, scenario.latency.high
    return [rng.uniform(low, high) for _ in range(scenario.buyers)]


def check_data(data: Path, scenario: Scenario) -> None:
    """Refuse a ``--data`` file that cannot be used, before anything is created or touched.

    A ``--connect`` run never touches ``--data`` (the server owns the count),
    so there is nothing to check.

    Raises:
        StoreCorrupted: its directory does not exist, or (when the run keeps the
            file's count, i.e. no ``--tickets``) the file is missing or corrupt.
    """
    if scenario.connect is not None:
        return
    store = Store(data)
    if not store.path.parent.is_dir():
        # Checked first: the run's lock file would otherwise create the directory.
        raise StoreCorrupted(str(store.path), "is in a directory that does not exist")
    if scenario.tickets is None and scenario.connect is None:
        store.read()


#: One OS process per buyer: beyond this a 2-core, 24 GiB machine runs out of
#: memory and patience before it runs out of tickets.
PROCESS_PER_BUYER_MAX = 5000

#: Where ``--crash`` may kill a buyer (see ``Buyer.step``).
CRASH_STEPS = ("search", "acquired", "read", "window", "mid-write", "bought")


def crash_plan(scenario: Scenario, seed: int) -> list[str | None]:
    """Which buyers ``--crash`` kills, and at which step: seeded, so a crash run repeats."""
    if scenario.crash <= 0:
        return [None] * scenario.buyers
    rng = random.Random(f"crash:{seed}")
    return [
        rng.choice(CRASH_STEPS) if rng.random() < scenario.crash else None
        for _ in range(scenario.buyers)
    ]


def _stall_message(events: list[BuyerEvent], lock: str | None, timeout: float, waiting: int) -> str:
    """Why the run stalled, naming a dead lock holder when there is one."""
    holders = [
        e.buyer
        for e in events
        if e.kind == "crash" and e.count == 1  # died holding the lock
    ]
    if holders and lock == "mp":
        return (
            f"deadlock: the lock holder (buyer {holders[-1]}) died holding the lock; "
            f"a multiprocessing.Lock is never released by a dead holder, so {waiting} buyers "
            f"waited {timeout:g} s with no progress"
        )
    return f"no buyer made progress for {timeout:g} s; {waiting} still waiting"


def _reap(procs: list[Child], *, grace: float) -> None:
    """Make sure no child outlives the run: join, terminate stragglers, kill the stubborn.

    Idempotent: reaped processes leave ``procs``, so a second call (a second
    Ctrl-C, or an interrupt during the variant's teardown) has nothing to redo.
    SIGINT and SIGTERM wait until the reaping is done.
    """
    with signals_deferred():
        deadline = time.monotonic() + grace
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(2.0)
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for p in list(procs):
            if not p.is_alive():
                p.close()
                procs.remove(p)


def run(
    variant: Variant,
    scenario: Scenario,
    *,
    data: Path | None = None,
    observer: Observer | None = None,
    start_method: str | None = None,
    stall_timeout: float | None = None,
) -> Result:
    """Run ``variant`` on ``scenario`` once and return what happened.

    Args:
        data: an existing data.json to use (its count is kept unless the
            scenario sets ``tickets``), claimed for the run and its buyers; by
            default a fresh one in a new run directory (``lab.stores.rundirs``). A
            ``--connect`` run ignores it: the server owns the count.
        stall_timeout: seconds without any buyer report before the run is
            declared stalled (e.g. a lock holder died); the default allows for
            the longest latency plus generous slack.

    Raises:
        StoreCorrupted: the given data.json cannot be read.
        DataFileBusy: another run (or a buyer of one, orphaned) is using the same data.json.
        UsageError: an option the variant refuses; nothing has been created.
    """
    observer = observer or Observer()
    method = start_method or default_start_method()
    mp = multiprocessing.get_context(method)
    scenario = with_seed(scenario)
    assert scenario.seed is not None
    seed = scenario.seed
    latencies = draw_latencies(scenario, seed)
    # Every refusal known in advance comes first: a refused run creates nothing
    # (no run directory, no claim file).
    refuse_early(variant, scenario, method)
    kw: dict[str, Any] = {
        "observer": observer,
        "mp": mp,
        "method": method,
        "seed": seed,
        "latencies": latencies,
        "stall_timeout": stall_timeout,
    }
    if scenario.connect is not None:
        # The server owns the count: no local file is read, written, claimed or
        # created (not --data, not a run directory). The store is a name only;
        # the report names the server's data file, from its ledger.
        return _run_locked(variant, scenario, Store(_SERVER_DATA), data=None, **kw)
    if data is not None and variant.store != "json":
        raise UsageError(f"--data: {variant.name} keeps its tickets in {variant.store}, not a file")
    if data is not None:
        check_data(data, scenario)
    # A fresh run directory unless the user gave data.json: a database file or a
    # private server's data lives there, and it goes if the run is refused.
    run_dir = new_run_dir() if data is None else None
    place = StorePlace(
        run_dir=run_dir.path if run_dir is not None else None,
        data=data,
        url=scenario.store_url,
        timeout=_store_timeout(scenario),
    )
    try:
        with open_store(variant.store, place) as store:
            shared = isinstance(store, SharedSale) and scenario.store_url is not None
            if isinstance(store, SharedSale):
                # This run's tag on its orders: each run's tally tells its buyers'
                # orders from those of runs that --join the same sale.
                store.run = uuid.uuid4().hex[:12]
            # Forked buyers inherit the claim: it lasts until the last of them is gone.
            if scenario.join:
                assert isinstance(store, SharedSale), "refuse_early allows --join on servers only"
                claim = store.join()
            else:
                claim = store.claim()
            try:
                return _run_locked(
                    variant, scenario, store, data=data, claim=claim if shared else None, **kw
                )
            finally:
                # Closes this process's descriptor only (never an unlock): buyers
                # that outlive the runner still hold the claim.
                claim.close()
    except UsageError:
        if run_dir is not None:
            # A bad option the variant or the store found before any buyer was
            # started: a refused run leaves no directory behind.
            shutil.rmtree(run_dir.path, ignore_errors=True)
        raise
    finally:
        if run_dir is not None:
            run_dir.close()


def _store_timeout(scenario: Scenario) -> float:
    """How long a buyer may wait on the store (a busy database, a row lock): behind everyone."""
    return 30.0 + scenario.buyers * (scenario.latency.high + 0.05 + scenario.arrival)


#: A buyer process: forked directly, or a multiprocessing Process (spawn, forkserver).
Child: TypeAlias = ForkedProcess | BaseProcess

#: The name a ``--connect`` run's store carries: never opened, never created.
_SERVER_DATA = Path("(the server's data file)")


#: Backends that live on a server the user may name (--dsn, --redis-url).
_SERVER_STORES = frozenset({"postgres", "redis", "redis-cluster"})


def refuse_early(variant: Variant, scenario: Scenario, start_method: str | None = None) -> None:
    """Refuse a run that cannot go ahead, before anything is created or started.

    Raises:
        UsageError: too many buyers for one process each, or the variant's own
            ``check(scenario)`` refused an option (a bad ``--connect``, too few
            file descriptors).
    """
    if not variant.many_buyers_per_process and scenario.buyers > PROCESS_PER_BUYER_MAX:
        raise UsageError(
            f"--buyers: {variant.name} runs each buyer in its own process; at most "
            f"{PROCESS_PER_BUYER_MAX} (server variants seat many buyers per process)"
        )
    if scenario.store_url is not None and variant.store not in _SERVER_STORES:
        option = "--redis-url" if scenario.store_url.startswith(("redis", "rediss")) else "--dsn"
        raise UsageError(
            f"{option}: {variant.name} keeps its tickets in "
            f"{'data.json' if variant.store == 'json' else variant.store}, not on a server"
        )
    if scenario.join:
        if variant.store not in _SERVER_STORES:
            raise UsageError(f"--join: {variant.name} sells from no server another run can reach")
        if scenario.store_url is None:
            option = "--dsn" if variant.store == "postgres" else "--redis-url"
            raise UsageError(f"--join: name the server the sale is on ({option})")
        if scenario.tickets is not None:
            raise UsageError("--join sells what the sale has left; drop --tickets")
    method = start_method or default_start_method()
    if variant.needs_fork and method != "fork":
        raise UsageError(
            f"--start-method: {variant.name} forks its workers from the buyers' process, "
            f"so that they inherit the buyers; it needs fork, not {method}"
        )
    variant.check(scenario)


class _Collector:
    """The parent's side of the report pipe: events, finished buyers, the stall watchdog."""

    def __init__(self, reader: Connection, observer: Observer, n: int) -> None:
        self.reader = reader
        self.observer = observer
        self.n = n
        self.events: list[BuyerEvent] = []
        self.done: set[int] = set()
        self.procs: list[Child] = []
        self.seated: list[list[int]] = []  # buyer indices hosted by each process
        self.t0: float | None = None
        self.last_progress = time.monotonic()
        self.lock: str | None = None
        #: temporary files killed writers left (their exact names, from the buyers)
        self.temps: list[str] = []

    def _handle(self, raw: bytes) -> None:
        self.last_progress = time.monotonic()
        for kind, buyer, t, count, detail in decode(raw):
            if kind == "done":
                self._finish(buyer)
            elif kind == "temp":
                self.temps.append(detail)
            else:
                event = to_event(kind, buyer, t - (self.t0 or t), count, detail)
                self.events.append(event)
                self.observer.event(event)

    def _finish(self, buyer: int) -> None:
        if buyer not in self.done:
            self.done.add(buyer)
            self.observer.finished(buyer)

    def drain(self) -> None:
        # Signals wait until the pipe is drained: a Ctrl-C landing inside
        # recv_bytes (between a report's header and its body) would leave the
        # pipe out of step, and the next read would block forever.
        with signals_deferred():
            while self.reader.poll(0):
                self._handle(self.reader.recv_bytes())

    def collect(self, until: Callable[[], bool], stall_timeout: float) -> str | None:
        """Read reports until ``until()``; return a message if no buyer progressed for too long."""
        next_check = time.monotonic() + 0.5
        self.last_progress = time.monotonic()
        while not until():
            if self.reader.poll(0.05):
                self.drain()
            now = time.monotonic()
            self.observer.tick(now - (self.t0 or now))
            if now < next_check:
                continue
            next_check = now + 0.5
            self.drain()  # a buyer's last reports are in the pipe before it exits
            for p, indices in zip(self.procs, self.seated, strict=True):
                if p.exitcode is not None:
                    for i in indices:
                        self._finish(i)  # died without saying goodbye: outcome unknown
            if not until() and now - self.last_progress > stall_timeout:
                return _stall_message(
                    self.events, self.lock, stall_timeout, self.n - len(self.done)
                )
        return None


def _seats(stage: Stage[Any], specs: list[BuyerSpec]) -> list[tuple[BuyerSpec, Any]]:
    return [(spec, stage.kit_for(spec.index)) for spec in specs]


def _run_locked(
    variant: Variant,
    scenario: Scenario,
    store: TicketStore,
    *,
    data: Path | None,
    observer: Observer,
    mp: MpContext,
    method: str,
    seed: int,
    latencies: list[float],
    stall_timeout: float | None,
    claim: Holding | None = None,
) -> Result:
    n = scenario.buyers
    if scenario.connect is not None:
        # The buyers use the server's data.json; nothing local exists, and the
        # tally is taken from the server's ledger below.
        tickets = 0
    elif scenario.join:
        tickets = store.read()  # what the sale has left; its seed comes with the snapshot
    elif data is None or scenario.tickets is not None:
        tickets = scenario.tickets if scenario.tickets is not None else 1
        store.seed(tickets)
    else:
        tickets = store.read()
    if claim is not None and not scenario.join:
        assert isinstance(store, SharedSale)
        store.share(claim)  # seeded: from now on other runs may --join this sale

    high = scenario.latency.high
    # Every wait allows for the last buyer's arrival (``--arrival``), too.
    arrivals = (n - 1) * scenario.arrival
    lockstep_timeout = 5.0 + 0.01 * n + arrivals
    if stall_timeout is None:
        # Some buyer reports at least once per latency while any make progress;
        # with --crash a dead lock holder is expected, so detect it sooner.
        slack = 3.0 if scenario.crash > 0 else 15.0
        stall_timeout = high + (lockstep_timeout if scenario.lockstep else 0.0) + slack
        stall_timeout += scenario.arrival  # the longest quiet gap between two arrivals
    # A buyer may legitimately wait behind every other buyer's latency for a lock or the seller.
    wait_timeout = n * (high + 0.05) + stall_timeout + n * scenario.arrival
    ready_timeout = 30.0 + 0.05 * n

    names = {i: f"buyer {i}" for i in range(n)}
    crashes = crash_plan(scenario, seed)
    specs = [
        BuyerSpec(
            i,
            names[i],
            latencies[i],
            n,
            arrival_s=i * scenario.arrival,
            crash_at=crashes[i],
            seed=seed,
        )
        for i in range(n)
    ]
    reader, writer = mp.Pipe(duplex=False)
    gun = mp.Event()
    # Each buyer posts once when it is at the gun: a semaphore is a futex, far
    # cheaper than 1,000 reports through the pipe while the parent is forking.
    ready = mp.Semaphore(0)
    env = RunEnv(mp=mp, store=store, scenario=scenario, buyers=n, timeout=wait_timeout)
    box = _Collector(reader, observer, n)
    per_process_max = PROCESS_PER_BUYER_MAX
    t_end: float | None = None
    interrupted = False
    stalled: str | None = None
    lock_name: str | None = None
    ledger: Any = None

    # A buyer dies with the runner (see buyer_main); under forkserver its parent is
    # the fork server, which itself exits when the runner does.
    parent_pid = None if method == "forkserver" else os.getpid()
    prepare_parent_death()

    def fork(stage: Stage[Any], group: list[BuyerSpec], barrier: Any) -> Child:
        # Under fork, os.fork() directly (lab.harness._procs says why); else a Process.
        make = ForkedProcess if method == "fork" else mp.Process
        proc: Child = make(
            target=buyer_main,
            args=(
                stage.program,
                _seats(stage, group),
                store,
                writer,
                ready,
                gun,
                barrier,
                ready_timeout + 30.0,
                parent_pid,
                stage.host,
            ),
            name=f"lab-buyer-{group[0].index}",
            **({} if method == "fork" else {"daemon": True}),
        )
        with signals_deferred():  # the child unblocks them first thing (buyer_main)
            proc.start()
            box.procs.append(proc)
            box.seated.append([spec.index for spec in group])
        return proc

    try:
        with variant.stage(env) as stage:
            lock_name = box.lock = stage.lock
            per_process = max(1, stage.buyers_per_process)
            if per_process == 1 and n > per_process_max:
                raise UsageError(
                    f"--buyers: {variant.name} runs each buyer in its own process; at most "
                    f"{per_process_max} (server variants seat many buyers per process)"
                )
            groups = [specs[i : i + per_process] for i in range(0, n, per_process)]
            try:
                if stage.sequential:
                    # The notes' classic mistake, literally: start one buyer, join it,
                    # then start the next. No two buyers ever overlap (so no lockstep).
                    # observer.started() is not called: it may start threads (a
                    # progress bar), and this mode keeps forking until the end.
                    box.t0 = time.monotonic()
                    gun.set()
                    for planned in groups:
                        # Arrival times count from the gun, not from this buyer's fork.
                        due = box.t0 + planned[0].arrival_s - time.monotonic()
                        group = [dataclasses.replace(s, arrival_s=max(0.0, due)) for s in planned]
                        proc = fork(stage, group, None)
                        indices = {spec.index for spec in group}
                        stalled = box.collect(
                            partial(set.issubset, indices, box.done), stall_timeout
                        )
                        if stalled:
                            break
                        proc.join(5.0)
                else:
                    barrier = mp.Barrier(n, timeout=lockstep_timeout) if scenario.lockstep else None
                    # Move the parent's heap out of the collector's reach while forking:
                    # a child's GC would otherwise walk (and so copy-on-write) every
                    # page of it. Buyers never collect (see buyer_main).
                    gc.freeze()
                    for group in groups:
                        fork(stage, group, barrier)
                    gc.unfreeze()
                    _await_ready(ready, n, box.procs, ready_timeout)
                    observer.started(n)
                    box.t0 = time.monotonic()
                    gun.set()
                    stalled = box.collect(lambda: len(box.done) >= n, stall_timeout)
                t_end = time.monotonic()
            except KeyboardInterrupt:
                interrupted = True
            finally:
                gc.unfreeze()
                clean = not (interrupted or stalled) and box.t0 is not None
                _reap(box.procs, grace=5.0 if clean else 0.0)
                box.drain()
        ledger = stage.extra.get("ledger")
    except KeyboardInterrupt:
        interrupted = True
        _reap(box.procs, grace=0.0)
    finally:
        writer.close()
        reader.close()
    if box.temps:
        # Every buyer is reaped: a killed writer's temp file can no longer be renamed.
        store.discard(box.temps)
    if claim is not None and not interrupted:
        # Runs that share the sale (--join) may still be selling: the tally waits
        # for them, so every machine's books close on the same final state.
        assert isinstance(store, SharedSale)
        observer.waiting("waiting for the other runs selling from this sale to finish")
        alone = store.wait_for_others(claim, timeout=wait_timeout)
    if t_end is None:
        t_end = time.monotonic()
    # A --connect run's buyers used the server's data.json: tally against its own account.
    final = store.snapshot() if scenario.connect is None else server_snapshot(ledger)
    if claim is not None and not interrupted and not alone:
        final = dataclasses.replace(
            final, text=f"{final.text} (other runs were still selling when it was read)"
        )
    return build_result(
        variant,
        scenario,
        buyers=n,
        tickets=tickets,
        events=box.events,
        final=final,
        elapsed_s=(t_end - box.t0) if box.t0 is not None else 0.0,
        seed=seed,
        start_method=method,
        lock=lock_name,
        interrupted=interrupted,
        stalled=stalled,
        ledger=ledger,
    )


def server_snapshot(ledger: object) -> Snapshot:
    """A ``--connect`` run's final store, from the server's ledger (its ``stats``)."""
    if not isinstance(ledger, dict) or "error" in ledger:
        problem = "the server's ledger could not be read"
        if isinstance(ledger, dict):
            problem += f": {ledger['error']}"
        return Snapshot(remaining=None, problem=problem, where="the server's data file")
    before, after = ledger.get("tickets_before"), ledger.get("remaining")
    remaining = after if isinstance(after, int) else None
    return Snapshot(
        remaining=remaining,
        text="" if remaining is None else json.dumps({"ticket_num": remaining}),
        problem=ledger.get("problem") if remaining is None else None,
        where=server_data_path(ledger),
        tickets=before if isinstance(before, int) else None,
    )


def server_data_path(ledger: dict[str, Any]) -> str:
    """The server's data file and mode, as the report names them: never a local file.

    ``data`` is the server's own path for its data.json (its ``stats``);
    ``mode`` is naive or safe.
    """
    where = ledger.get("data")
    mode = ledger.get("mode")
    server = ledger.get("server") or "the server"
    path = where if isinstance(where, str) and where else "the server's data file"
    return f"{path} (on {server}, mode {mode})" if mode else f"{path} (on {server})"


def _await_ready(ready: Any, n: int, procs: list[Child], timeout: float) -> None:
    """Wait until every buyer has posted that it is at the gun."""
    deadline = time.monotonic() + timeout
    for count in range(n):
        while not ready.acquire(timeout=0.2):
            if time.monotonic() > deadline:
                raise LabError(f"only {count} of {n} buyers started within {timeout:g} s")
            if any(p.exitcode is not None for p in procs):
                raise LabError("a buyer process died before the start gun")
