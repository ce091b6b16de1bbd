"""Issue 12's figure: each safe engine variant's throughput against its engine's ceiling.

For every engine in the registry (SQLite, PostgreSQL, and Redis / a Redis
Cluster once registered) one private server is started; then, for each safe
variant on it, A/B pairs alternate: A is the engine's ceiling (``buyers``
client processes doing the conditional decrement, or one Lua
check-and-decrement, in a bare loop for ``buyers`` sales; see
``lab.harness.matrix``), B is one throughput run of the variant (``buyers``
buyer processes, one ticket each, latency 0; tickets/s = sold / elapsed).
Each pair gives a ratio B / A; the table shows the medians over the pairs.

Target: every ratio >= 0.5. Run:
``.venv/bin/python benchmarks/bench_engines.py [--pairs 5] [--buyers 8] [--engines A,B]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lab.core.model import Latency, Scenario
from lab.harness.matrix import ceiling, engine_server, engines_in, variants_of
from lab.harness.runner import run

TARGET = 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="A/B pairs per variant (>= 3)")
    parser.add_argument("--buyers", type=int, default=8, help="buyer (and client) processes")
    parser.add_argument("--engines", default="", help="comma-separated (default: all registered)")
    args = parser.parse_args()
    pairs = max(3, args.pairs)
    engines = [e for e in args.engines.split(",") if e] or engines_in()
    print(
        f"# safe engine variants vs. their engine's ceiling: {args.buyers} processes, "
        f"{args.buyers} sales, latency 0; median of {pairs} alternating A/B pairs\n"
    )
    print("| engine | variant | tickets/s | ceiling/s | ratio | worst pair | target >= 0.5 |")
    print("|---|---|---:|---:|---:|---:|---|")
    missed = 0
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lab-bench-engines-") as tmp:
        workdir = Path(tmp)
        for engine in engines:
            with engine_server(engine, workdir) as url:
                where = url if url is not None else str(workdir / "ceiling.sqlite3")
                scenario = Scenario(
                    name="bench-engines",
                    buyers=args.buyers,
                    tickets=args.buyers,
                    latency=Latency(0.0, 0.0),
                    store_url=url,
                    seed=1,
                )
                for variant in variants_of(engine):
                    if not variant.safe:
                        continue
                    rates, tops, ratios = [], [], []
                    for k in range(pairs):
                        top = ceiling(engine, where, args.buyers, args.buyers)
                        result = run(variant, dataclasses.replace(scenario, seed=1 + k))
                        rate = result.sold / result.elapsed_s if result.elapsed_s > 0 else 0.0
                        rates.append(rate)
                        tops.append(top)
                        ratios.append(rate / top if top > 0 else 0.0)
                    ratio = statistics.median(ratios)
                    ok = ratio >= TARGET
                    missed += 0 if ok else 1
                    note = "yes" if ok else "NO"
                    if variant.undersells:
                        note += " (undersells: losers give up, so fewer sales)"
                    print(
                        f"| {engine} | `{variant.name}` | {statistics.median(rates):,.0f} | "
                        f"{statistics.median(tops):,.0f} | {ratio:.2f} | {min(ratios):.2f} | "
                        f"{note} |",
                        flush=True,
                    )
    print(f"\nwall time: {time.perf_counter() - t_all:.1f} s; below target: {missed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
