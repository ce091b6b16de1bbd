"""Seed the store, start the buyers, fire the gun, collect, reap, tally.

The same loop runs every variant, so a difference in the tally can only come
from the variant's mechanism::

    runner (parent)                          buyer processes (one per buyer)
    ───────────────                          ───────────────────────────────
    seed data.json
    variant.stage(): lock / seller ...
    fork N buyers  ───────────────────────►  report "ready", wait for the gun
    all ready? fire the gun (an Event) ───►  run the variant's program:
    read reports from one pipe  ◄──────────    search, read, bought/sold_out/error
      (progress, --verbose lines, stall      report "done", exit
       watchdog, dead-buyer detection)
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
import multiprocessing
import random
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from lab._buyer import BuyerSpec, buyer_main, decode, to_event
from lab.errors import DataFileBusy, LabError, StoreCorrupted
from lab.model import BuyerEvent, Result, Scenario, receipts_from_events
from lab.store import Store
from lab.variants.protocol import MpContext, RunEnv, Variant

__all__ = ["Observer", "default_start_method", "draw_latencies", "run", "with_seed"]


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
        """All buyers are ready; the gun is about to fire."""

    def event(self, event: BuyerEvent) -> None:
        """A buyer reported something (``t`` is seconds since the gun)."""

    def finished(self, buyer: int) -> None:
        """A buyer is done, one way or another."""


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


def _reap(procs: Sequence[BaseProcess], *, grace: float) -> None:
    """Make sure no child outlives the run: join, terminate stragglers, kill the stubborn."""
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
    for p in procs:
        if not p.is_alive():
            p.close()


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
            scenario sets ``tickets``); by default a fresh one in a new
            temporary directory.
        stall_timeout: seconds without any buyer report before the run is
            declared stalled (e.g. a lock holder died); the default allows for
            the longest latency plus generous slack.

    Raises:
        StoreCorrupted: the given data.json cannot be read.
        DataFileBusy: another run is using the same data.json.
    """
    observer = observer or Observer()
    method = start_method or default_start_method()
    mp = multiprocessing.get_context(method)
    scenario = with_seed(scenario)
    assert scenario.seed is not None
    seed = scenario.seed
    latencies = draw_latencies(scenario, seed)

    if data is None:
        store = Store(Path(tempfile.mkdtemp(prefix="lab-")) / "data.json")
        run_lock = None
    else:
        store = Store(data)
        # Two runs on one data.json would tally each other's sales: refuse the second.
        run_lock = FileLock(str(store.path) + ".run.lock", timeout=0)
        try:
            run_lock.acquire()
        except FileLockTimeout:
            raise DataFileBusy(f"{store.path}: another lab run is using this file") from None
    try:
        return _run_locked(
            variant,
            scenario,
            store,
            data=data,
            observer=observer,
            mp=mp,
            method=method,
            seed=seed,
            latencies=latencies,
            stall_timeout=stall_timeout,
        )
    finally:
        if run_lock is not None:
            run_lock.release()


def _run_locked(
    variant: Variant,
    scenario: Scenario,
    store: Store,
    *,
    data: Path | None,
    observer: Observer,
    mp: MpContext,
    method: str,
    seed: int,
    latencies: list[float],
    stall_timeout: float | None,
) -> Result:
    n = scenario.buyers
    if data is None or scenario.tickets is not None:
        tickets = scenario.tickets if scenario.tickets is not None else 1
        store.reset(tickets)
    else:
        tickets = store.read()

    high = scenario.latency.high
    lockstep_timeout = 5.0 + 0.01 * n
    if stall_timeout is None:
        stall_timeout = high + (lockstep_timeout if scenario.lockstep else 0.0) + 15.0
    # A buyer may legitimately wait behind every other buyer's latency for a lock or the seller.
    wait_timeout = n * (high + 0.05) + stall_timeout
    ready_timeout = 30.0 + 0.05 * n

    names = {i: f"buyer {i}" for i in range(n)}
    specs = [BuyerSpec(i, names[i], latencies[i], n) for i in range(n)]
    reader, writer = mp.Pipe(duplex=False)
    gun = mp.Event()
    barrier = mp.Barrier(n, timeout=lockstep_timeout) if scenario.lockstep else None
    env = RunEnv(mp=mp, store=store, scenario=scenario, buyers=n, timeout=wait_timeout)

    events: list[BuyerEvent] = []
    procs: list[BaseProcess] = []
    ready: set[int] = set()
    done: set[int] = set()
    t0: float | None = None
    t_end: float | None = None
    interrupted = False
    stalled: str | None = None
    lock_name: str | None = None

    last_progress = time.monotonic()

    def handle(raw: bytes) -> None:
        nonlocal last_progress
        kind, buyer, t, count, detail = decode(raw)
        last_progress = time.monotonic()
        if kind == "ready":
            ready.add(buyer)
        elif kind == "done":
            if buyer not in done:
                done.add(buyer)
                observer.finished(buyer)
        else:
            event = to_event(kind, buyer, t - (t0 or t), count, detail)
            events.append(event)
            observer.event(event)

    def drain() -> None:
        while reader.poll(0):
            handle(reader.recv_bytes())

    try:
        with variant.stage(env) as stage:
            lock_name = stage.lock
            # Move the parent's heap out of the collector's reach while forking: a
            # child's GC would otherwise walk (and so copy-on-write) every page of
            # it. Buyers are short-lived and never collect (see buyer_main).
            gc.freeze()
            try:
                for spec in specs:
                    extra = stage.per_buyer[spec.index] if stage.per_buyer is not None else ()
                    proc = mp.Process(
                        target=buyer_main,
                        args=(
                            stage.program,
                            (*stage.shared, *extra),
                            spec,
                            store,
                            writer,
                            gun,
                            barrier,
                            ready_timeout + 30.0,
                        ),
                        name=f"lab-buyer-{spec.index}",
                        daemon=True,
                    )
                    proc.start()
                    procs.append(proc)
                gc.unfreeze()

                deadline = time.monotonic() + ready_timeout
                while len(ready) < n:
                    if reader.poll(0.2):
                        drain()
                    elif time.monotonic() > deadline:
                        raise LabError(
                            f"only {len(ready)} of {n} buyers started within {ready_timeout:g} s"
                        )
                    elif any(p.exitcode is not None for p in procs):
                        raise LabError("a buyer process died before the start gun")

                observer.started(n)
                t0 = time.monotonic()
                gun.set()
                last_progress = t0
                next_check = t0 + 0.5
                while len(done) < n:
                    if reader.poll(0.1):
                        drain()
                    now = time.monotonic()
                    if now >= next_check:
                        next_check = now + 0.5
                        drain()  # a buyer's last reports are in the pipe before it exits
                        for i, p in enumerate(procs):
                            if i not in done and p.exitcode is not None:
                                done.add(i)  # died without saying goodbye: outcome unknown
                                observer.finished(i)
                        if now - last_progress > stall_timeout:
                            waiting = sorted(set(range(n)) - done)
                            stalled = (
                                f"no buyer made progress for {stall_timeout:g} s; "
                                f"{len(waiting)} still waiting"
                            )
                            break
                t_end = time.monotonic()
            except KeyboardInterrupt:
                interrupted = True
            finally:
                gc.unfreeze()
                _reap(procs, grace=0.0 if (interrupted or stalled) else 5.0)
                drain()
    except KeyboardInterrupt:
        interrupted = True
        _reap(procs, grace=0.0)
    finally:
        writer.close()
        reader.close()

    if t_end is None:
        t_end = time.monotonic()
    final_text = ""
    remaining: int | None
    final_problem: str | None = None
    try:
        final_text = store.read_text()
        remaining = store.parse(final_text)
    except StoreCorrupted as exc:
        remaining, final_problem = None, exc.problem

    return Result(
        variant=variant.name,
        scenario=scenario,
        tickets=tickets,
        remaining=remaining,
        receipts=receipts_from_events(names, events),
        elapsed_s=(t_end - t0) if t0 is not None else 0.0,
        data_path=str(store.path),
        seed=seed,
        start_method=method,
        expected_safe=variant.safe,
        final_text=final_text,
        final_problem=final_problem,
        lock=lock_name,
        interrupted=interrupted,
        stalled=stalled,
    )
