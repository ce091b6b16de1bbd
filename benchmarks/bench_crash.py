"""Issue 6's figures: many `--crash 0.3` runs of every safe variant, and of naive.

For each variant: runs, buyers killed, killed inside the critical section,
torn files seen (reads that hit a half-written data.json, plus runs that
ended with one), runs whose books did not balance, and, for the
multiprocessing.Lock, how long deadlock detection took.

Run: ``.venv/bin/python benchmarks/bench_crash.py [RUNS] [VARIANT ...]`` (default: 200 runs
of every safe variant, naive-joined too although it is not crash-safe, and naive).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from lab.core.model import Latency, Scenario
from lab.harness.runner import run
from lab.variants import VARIANTS

STALL_S = 1.0


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    only = set(sys.argv[2:])
    cases: list[tuple[str, str | None]] = [
        (n, lock)
        for n, v in sorted(VARIANTS.items())
        if v.safe and not getattr(v, "requires", None) and (not only or n in only)
        for lock in (v.locks or (None,))
    ]
    if not only or "naive" in only:
        cases.append(("naive", None))
    print(f"# --crash 0.3, {runs} runs per variant (20 buyers, 8 tickets, latency 0-2 ms)\n")
    print(
        "| variant | runs | killed | in critical section | torn reads | torn final file "
        "| oversold runs | unbalanced books | deadlocks | detection s (median) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, lock in cases:
        killed = inside = torn = torn_final = oversold = unbalanced = deadlocks = 0
        detection: list[float] = []
        for seed in range(runs):
            scenario = Scenario(
                buyers=20,
                tickets=8,
                latency=Latency(0, 0.002),
                seed=seed,
                crash=0.3,
                lock=lock or "file",
            )
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                r = run(
                    VARIANTS[name], scenario, data=Path(tmp) / "data.json", stall_timeout=STALL_S
                )
                wall = time.perf_counter() - t
            killed += r.killed
            inside += r.killed_in_critical_section
            torn += r.torn_reads
            torn_final += r.remaining is None
            oversold += r.oversold > 0
            unbalanced += not r.accounted
            if r.stalled:
                deadlocks += 1
                last = max((e.t for x in r.receipts for e in x.events), default=0.0)
                detection.append(wall - last)
        label = name if lock is None else f"{name} --lock {lock}"
        det = f"{statistics.median(detection):.2f}" if detection else "-"
        print(
            f"| {label} | {runs} | {killed} | {inside} | {torn} | {torn_final} | {oversold} "
            f"| {unbalanced} | {deadlocks} | {det} |",
            flush=True,
        )
    print(
        f"\n(deadlock detection = stall timeout {STALL_S:g} s + the watchdog's 0.5 s poll; "
        "the default timeout with --crash is the longest latency + 3 s)"
    )


if __name__ == "__main__":
    main()
