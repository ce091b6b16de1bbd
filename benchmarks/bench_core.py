"""Speed figures for the core lab, measured against this machine's ceilings in the same run.

Run: ``.venv/bin/python benchmarks/bench_core.py [--quick]``. Prints a Markdown
report. No assertion on time lives in the tests; the figures live here.

What it measures (issue 2's targets):
1. ``lab run naive --buyers 10 --latency 0`` from the shell (target: well under 1 s).
2. The notes scenario for ``naive`` (1–3 s latency): time beyond the longest
   latency drawn (target: at most 0.5 s).
3. 1,000 buyers at latency 0 for every variant, against bare fork+join of
   1,000 processes in the same run (target: within 2x).
4. Where the time goes: the same runs' CPU seconds (runner and buyers) and
   page faults per process, next to bare fork+join and to "held" fork+join
   (every process waits at an Event, as buyers wait at the start gun, before
   any exits): the price of the gun alone.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.core.model import Latency, Scenario
from lab.harness.runner import draw_latencies, run
from lab.variants import VARIANTS


def _noop() -> None:
    pass


def bare_fork_join(n: int) -> float:
    """The ceiling: start n do-nothing fork processes, then join them all."""
    ctx = multiprocessing.get_context("fork")
    t = time.perf_counter()
    procs = [ctx.Process(target=_noop) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        p.close()
    return time.perf_counter() - t


def _wait(ready: object, gun: object) -> None:
    ready.release()  # type: ignore[attr-defined]
    gun.wait(60)  # type: ignore[attr-defined]


def held_fork_join(n: int) -> float:
    """Fork n processes that wait at one Event (as buyers wait at the gun); fire; join."""
    ctx = multiprocessing.get_context("fork")
    ready, gun = ctx.Semaphore(0), ctx.Event()
    t = time.perf_counter()
    procs = [ctx.Process(target=_wait, args=(ready, gun)) for _ in range(n)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire(timeout=60)
    gun.set()
    for p in procs:
        p.join()
        p.close()
    return time.perf_counter() - t


def cpu_split(what: str, call: object, n: int) -> str:
    """One Markdown row: wall, CPU of the runner and of its children, page faults per child."""
    before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    call()  # type: ignore[operator]
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own, kids = (
        (a.ru_utime - b.ru_utime, a.ru_stime - b.ru_stime)
        for a, b in zip(after, before, strict=True)
    )
    faults = (after[1].ru_minflt - before[1].ru_minflt) / n
    return (
        f"| {what} | {wall:.2f} | {own[0]:.2f} + {own[1]:.2f} | {kids[0]:.2f} + {kids[1]:.2f} "
        f"| {sum(own) + sum(kids):.2f} | {faults:.0f} |"
    )


def lab_wall(variant: str, n: int, lock: str = "file") -> float:
    """Wall time of runner.run() for n buyers at latency 0, including fork, gun, collect, reap."""
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Scenario(buyers=n, tickets=n // 2, latency=Latency(0, 0), seed=1, lock=lock)  # type: ignore[arg-type]
        t = time.perf_counter()
        result = run(VARIANTS[variant], scenario, data=Path(tmp) / "data.json")
        wall = time.perf_counter() - t
    if VARIANTS[variant].safe:
        assert result.consistent, f"{variant} was not consistent: {result.to_json()}"
    return wall


def shell_run(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "lab", *args], check=True, capture_output=True, timeout=120
    )
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--buyers", type=int, default=1000)
    args = parser.parse_args()
    reps = 3 if args.quick else 5
    n = args.buyers

    print("# Core lab benchmarks\n")
    print(f"python {sys.version.split()[0]}, {multiprocessing.cpu_count()} cores\n")

    shell = [shell_run(["run", "naive", "--buyers", "10", "--latency", "0"]) for _ in range(reps)]
    print("## 1. `lab run naive --buyers 10 --latency 0` from the shell\n")
    print(
        f"median {statistics.median(shell):.3f} s, max {max(shell):.3f} s "
        "(target: well under 1 s)\n"
    )

    print("## 2. The notes scenario (naive, 10 buyers, 1–3 s latency)\n")
    overheads = []
    for seed in range(1, 4 if args.quick else 6):
        scenario = Scenario(buyers=10, tickets=1, latency=Latency(1, 3), seed=seed)
        longest = max(draw_latencies(scenario, seed))
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            result = run(VARIANTS["naive"], scenario, data=Path(tmp) / "data.json")
            wall = time.perf_counter() - t
        overheads.append(wall - longest)
        print(
            f"- seed {seed}: longest latency {longest:.3f} s, run {wall:.3f} s, "
            f"beyond it {wall - longest:.3f} s, oversold {result.oversold}"
        )
    print(f"\nmax time beyond the longest latency: {max(overheads):.3f} s (target: <= 0.5 s)\n")

    print(f"## 3. {n} buyers at latency 0 vs bare fork+join of {n} processes\n")
    print("| what | median wall (s) | ratio to bare fork+join |")
    print("|---|---|---|")
    bare = statistics.median(bare_fork_join(n) for _ in range(reps))
    print(f"| bare fork+join ({n}) | {bare:.3f} | 1.00 |")
    cases = [
        (name, lock)
        for name, v in sorted(VARIANTS.items())
        if not getattr(v, "requires", None)  # custom runs your file; nothing to time here
        for lock in (v.locks or ("file",))
    ]
    for name, lock in cases:
        # Interleave a fresh bare measurement with each variant: the machine drifts.
        bare_now = bare_fork_join(n)
        walls = [lab_wall(name, n, lock) for _ in range(reps)]
        wall = statistics.median(walls)
        label = name if not VARIANTS[name].locks else f"{name} --lock {lock}"
        note = " (one buyer at a time by design)" if name == "naive-joined" else ""
        print(
            f"| {label}{note} | {wall:.3f} | {wall / bare:.2f} (vs bare just before: "
            f"{wall / bare_now:.2f}) |",
            flush=True,
        )
    print("\n(target: every ratio <= 2.0, except naive-joined, which is N times slower by design)")

    print(f"\n## 4. Where the time goes ({n} processes, one run each)\n")
    print("CPU seconds are user + system. Two cores: a wall time near half the total CPU")
    print("means both were busy.\n")
    print("| what | wall (s) | runner CPU | buyers' CPU | total CPU | page faults per child |")
    print("|---|---|---|---|---|---|")
    print(cpu_split("bare fork+join", lambda: bare_fork_join(n), n), flush=True)
    print(cpu_split("held at an Event, then joined", lambda: held_fork_join(n), n), flush=True)
    for name, lock in [("naive", "file"), ("locked", "mp"), ("locked", "file"), ("queue", "file")]:
        label = name if name != "locked" else f"locked --lock {lock}"
        print(cpu_split(label, lambda: lab_wall(name, n, lock), n), flush=True)  # noqa: B023


if __name__ == "__main__":
    main()
