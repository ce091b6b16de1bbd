"""Issue 14's figures: 10,000 buyers per scheduler against a bare loop, and memory per buyer.

Part 1. For asyncio, gevent and a thread pool, A/B pairs alternate: A is a
bare loop of that scheduler running ``--buyers`` no-op tasks (``asyncio.run``
of a gather, ``gevent.joinall`` of spawns, ``ThreadPoolExecutor(10)``
submits), in a forked child so gevent's patch stays there; B is one lab run
of the variant with that many buyers at latency 0, timed from the start gun
to the last buyer's report (``Result.elapsed_s``). The table shows medians
and the ratio B / A. A buyer does real work a no-op does not: two reads and
a write of data.json and five reports through the runner's pipe.

data.json lives on ``--dir`` (default ``/dev/shm``, a tmpfs, where there is
one): on ext4 the notes' ``open('w')`` of a file that holds data costs about
0.6 ms (``auto_da_alloc`` flushes a file truncated to zero), ten times the
rest of a buyer, and the table would measure the disk, not the scheduler.

Part 2. Memory per idle buyer, side by side: a forked process (its private
memory, from ``/proc/PID/smaps_rollup``), a thread, a greenlet and an
asyncio task (the growth of a child's resident set over N of them, each
blocked on an event, divided by N).

Run: ``.venv/bin/python benchmarks/bench_schedulers.py [--buyers 10000] [--pairs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

from lab.core.model import Latency, Scenario
from lab.harness.runner import run
from lab.variants import VARIANTS


def in_child(measure: Callable[[], float]) -> float:
    """``measure()`` in a forked child (gevent's patch and every thread stay there)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            value = measure()
            os.write(write, repr(value).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return float(text)


# -- part 1: bare loops ---------------------------------------------------------------------


def bare_asyncio(n: int) -> float:
    async def noop() -> None:
        await asyncio.sleep(0)  # a buyer's one switch point

    async def main() -> None:
        await asyncio.gather(*(noop() for _ in range(n)))

    t0 = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t0


def bare_gevent(n: int) -> float:
    import warnings  # noqa: PLC0415

    from gevent import monkey  # noqa: PLC0415

    with warnings.catch_warnings():  # ssl was imported by the lab's own modules: moot here
        warnings.simplefilter("ignore")
        monkey.patch_all()
    import gevent  # noqa: PLC0415

    t0 = time.perf_counter()
    gevent.joinall([gevent.spawn(time.sleep, 0) for _ in range(n)])
    return time.perf_counter() - t0


def bare_threadpool(n: int) -> float:
    t0 = time.perf_counter()
    pool = ThreadPoolExecutor(10)
    wait([pool.submit(time.sleep, 0) for _ in range(n)])
    pool.shutdown()
    return time.perf_counter() - t0


BARE = {"asyncio": bare_asyncio, "gevent": bare_gevent, "threadpool": bare_threadpool}


def lab_run(variant: str, n: int, workdir: Path) -> float:
    scenario = Scenario(buyers=n, tickets=n // 2, latency=Latency(0, 0), seed=1)
    data = workdir / f"{variant}.json"
    result = run(VARIANTS[variant], scenario, data=data)
    assert result.sold == n // 2 or not VARIANTS[variant].safe, result.sold
    return result.elapsed_s


# -- part 2: memory per idle buyer ------------------------------------------------------------


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def private_kb(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total


def per_process(n: int) -> float:
    """Private memory of a forked child blocked on a pipe (what a buyer process costs)."""
    pids, gates = [], []
    for _ in range(n):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(write)
            os.read(read, 1)  # blocked, as a buyer waiting for the gun
            os._exit(0)
        os.close(read)
        pids.append(pid)
        gates.append(write)
    time.sleep(0.5)
    sizes = [private_kb(pid) for pid in pids]
    for gate in gates:
        os.close(gate)
    for pid in pids:
        os.waitpid(pid, 0)
    return statistics.median(sizes)


def per_thread(n: int) -> float:
    gate = threading.Event()
    before = rss_kb()
    threads = [threading.Thread(target=gate.wait) for _ in range(n)]
    for t in threads:
        t.start()
    after = rss_kb()
    gate.set()
    for t in threads:
        t.join()
    return (after - before) / n


def per_greenlet(n: int) -> float:
    import gevent  # noqa: PLC0415
    import gevent.event  # noqa: PLC0415

    gate = gevent.event.Event()
    before = rss_kb()
    greenlets = [gevent.spawn(gate.wait) for _ in range(n)]
    gevent.sleep(0)  # every greenlet starts and blocks
    after = rss_kb()
    gate.set()
    gevent.joinall(greenlets)
    return (after - before) / n


def per_task(n: int) -> float:
    async def main() -> float:
        gate = asyncio.Event()
        before = rss_kb()
        tasks = [asyncio.create_task(gate.wait()) for _ in range(n)]
        await asyncio.sleep(0)  # every task starts and blocks
        after = rss_kb()
        gate.set()
        await asyncio.gather(*tasks)
        return (after - before) / n

    return asyncio.run(main())


MEASURES: dict[str, Callable[[int], float]] = {
    "process": per_process,
    "thread": per_thread,
    "greenlet": per_greenlet,
    "task": per_task,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=3)
    shm = Path("/dev/shm")
    parser.add_argument("--dir", type=Path, default=shm if shm.is_dir() else None)
    parser.add_argument("--measure", choices=sorted(MEASURES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(MEASURES[args.measure](args.buyers))
        return 0
    n, pairs = args.buyers, max(1, args.pairs)
    where = args.dir or tempfile.gettempdir()
    print(
        f"# {n:,} buyers per scheduler, latency 0, data.json in {where};"
        f" median of {pairs} alternating A/B pairs\n"
    )
    print("| scheduler | variant | bare loop (A) | lab run (B) | B / A |")
    print("|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="lab-bench-sched-", dir=args.dir) as tmp:
        workdir = Path(tmp)
        for scheduler, bare in BARE.items():
            for variant in (f"{scheduler}-naive", f"{scheduler}-locked"):
                a, b = [], []
                for _ in range(pairs):
                    a.append(in_child(lambda bare=bare: bare(n)))
                    b.append(lab_run(variant, n, workdir))
                ma, mb = statistics.median(a), statistics.median(b)
                print(f"| {scheduler} | `{variant}` | {ma:.3f} s | {mb:.3f} s | {mb / ma:.1f}× |")
    print("\n# memory per idle buyer (blocked on an event), this machine\n")
    print("| a buyer is a | N | memory per buyer |")
    print("|---|---:|---:|")
    rows = [
        ("process (fork; private memory)", 200, "process"),
        ("thread", 1000, "thread"),
        ("greenlet (gevent)", n, "greenlet"),
        ("asyncio task", n, "task"),
    ]
    for label, count, kind in rows:
        # A fresh interpreter each: a forked child would reuse the parent's freed
        # memory, and its resident set would hardly grow.
        measured = subprocess.run(
            [sys.executable, __file__, "--measure", kind, "--buyers", str(count)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        print(f"| {label} | {count:,} | {float(measured.stdout):.1f} KiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
