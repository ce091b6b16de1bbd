"""Issue 15's figures: the whole command at 1,000 buyers against a held-at-the-gun fork+join.

A (the floor): ``python held.py 1000`` from the shell: an interpreter starts,
forks 1,000 processes that each wait at one ``multiprocessing.Event``, fires
it, and joins them all; nothing else. B: ``lab run VARIANT --buyers 1000
--tickets 1000 --latency 0 --json``, also from the shell, so interpreter
start-up counts on both sides. A and B alternate; the table gives the medians
of ``--pairs`` pairs and B / A (target: at most 1.3).

For ``locked`` it also reports the time after the gun (``elapsed_s`` in the
JSON) against the flock read-modify-write ceiling for the same 1,000 sales
(8 processes taking ``fcntl.flock``, reading data.json and writing it back
atomically with fsync, as ``locked`` does; target: at most 2x), and the
runner's peak RSS next to the held baseline's.

Run: ``.venv/bin/python benchmarks/bench_command.py [--pairs 5] [--buyers 1000]``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAB = Path(sys.executable).with_name("lab")
HELD = """
import multiprocessing as mp, sys
ctx = mp.get_context("fork")
gun = ctx.Event()
procs = [ctx.Process(target=gun.wait) for _ in range(int(sys.argv[1]))]
for p in procs:
    p.start()
gun.set()
for p in procs:
    p.join()
"""
VARIANTS = [
    ("naive", []),
    ("locked", ["--lock", "file"]),
    ("locked", ["--lock", "mp"]),
    ("locked-write-only", []),
    ("queue", []),
]


def timed(argv: list[str], cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (KiB) of the process itself, and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    return wall, usage.ru_maxrss, out.decode()


def flock_ceiling(sales: int, workers: int, workdir: Path) -> float:
    """Seconds for ``workers`` processes to make ``sales`` flock-guarded atomic sales."""
    data = workdir / "ceiling.json"
    data.write_text(json.dumps({"ticket_num": sales}))
    lock_path = workdir / "ceiling.lock"
    lock_path.touch()
    t0 = time.perf_counter()
    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            fd = os.open(lock_path, os.O_RDWR)
            while True:
                fcntl.flock(fd, fcntl.LOCK_EX)
                count = json.loads(data.read_text())["ticket_num"]
                if count > 0:
                    tmp = data.with_name(f"ceiling.{os.getpid()}.tmp")
                    with open(tmp, "w") as f:
                        f.write(json.dumps({"ticket_num": count - 1}))
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, data)
                fcntl.flock(fd, fcntl.LOCK_UN)
                if count <= 0:
                    os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--buyers", type=int, default=1000)
    args = parser.parse_args()
    n, pairs = args.buyers, max(1, args.pairs)
    with tempfile.TemporaryDirectory(prefix="lab-bench-command-") as tmp:
        workdir = Path(tmp)
        held = workdir / "held.py"
        held.write_text(HELD)
        print(
            f"# the whole command, {n:,} buyers, {n:,} tickets, latency 0, from the shell; "
            f"median of {pairs} alternating A/B pairs\n"
        )
        print("| command | held fork+join (A) | lab run (B) | B / A | after the gun | peak RSS |")
        print("|---|---:|---:|---:|---:|---:|")
        held_rss: list[int] = []
        after_gun: dict[str, float] = {}
        for variant, extra in VARIANTS:
            a, b, gun, rss = [], [], [], []
            for _ in range(pairs):
                wall, peak, _ = timed([sys.executable, str(held), str(n)], workdir)
                a.append(wall)
                held_rss.append(peak)
                argv = [str(LAB), "run", variant, *extra, "--buyers", str(n)]
                argv += ["--tickets", str(n), "--latency", "0", "--json"]
                wall, peak, out = timed(argv, workdir)
                b.append(wall)
                rss.append(peak)
                gun.append(json.loads(out)["elapsed_s"])
            label = " ".join([variant, *extra])
            ma, mb, mg = statistics.median(a), statistics.median(b), statistics.median(gun)
            after_gun[label] = mg
            print(
                f"| `lab run {label}` | {ma:.2f} s | {mb:.2f} s | {mb / ma:.2f}× | {mg:.2f} s "
                f"| {statistics.median(rss) / 1024:.0f} MiB |"
            )
        print(f"\nheld baseline's peak RSS: {statistics.median(held_rss) / 1024:.0f} MiB")
        ceiling = statistics.median(flock_ceiling(n, 8, workdir) for _ in range(pairs))
        print(
            f"\n# where the lock time goes: {n:,} sales\n\n"
            f"flock read-modify-write ceiling (8 processes, atomic write with fsync): "
            f"{ceiling:.2f} s\n"
        )
        for label in ("locked --lock file", "locked --lock mp"):
            print(
                f"- `{label}` after the gun: {after_gun[label]:.2f} s = "
                f"{after_gun[label] / ceiling:.1f}× the ceiling"
            )
        quick = [
            timed([str(LAB), "run", "naive", "--buyers", "10", "--latency", "0"], workdir)[0]
            for _ in range(pairs)
        ]
        print(
            f"\n`lab run naive --buyers 10 --latency 0` from the shell: "
            f"{statistics.median(quick):.2f} s median (target under 0.4 s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
