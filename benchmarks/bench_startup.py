"""How long the lab takes to start: ``lab --help``, ``lab variants``, ``import lab.core.model``.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--runs N] [--quick]``.
Prints a Markdown report. No assertion on time lives in the tests; the figures
live here (issue 11's target: ``lab --help`` and ``lab variants`` under 0.25 s).

Like hyperfine: each command runs a few times unmeasured (warm-up), then N
times, each a fresh process from the shell's point of view; the report gives
the median, the fastest and the slowest wall-clock time. ``python -c pass``
is measured beside them: the floor no Python command goes below on this machine.

Two bytecode settings:

- **cached** (what a learner sees from the second run on): compiled
  bytecode is written on the warm-up runs (to a temporary
  ``PYTHONPYCACHEPREFIX``, so the work tree stays clean) and read after.
- **uncached**: ``PYTHONDONTWRITEBYTECODE=1``, as in an environment that
  sets it: the lab's own modules (which then never get a ``__pycache__``)
  are compiled from source on every run; the standard library and rich
  still load the bytecode their installers wrote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 0.25


def _lab() -> list[str]:
    """The installed console script (``lab = lab.__main__:entry``), else ``python -m lab``."""
    script = Path(sys.executable).parent / "lab"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lab"]


def commands() -> list[tuple[str, list[str], bool]]:
    """(label, argv, held to the target)."""
    lab = _lab()
    model = [sys.executable, "-c", "import lab.core.model"]
    return [
        ("python -c pass (the floor)", [sys.executable, "-c", "pass"], False),
        ("python -c 'import lab.core.model'", model, False),
        ("lab --help", [*lab, "--help"], True),
        ("lab variants", [*lab, "variants"], True),
        ("lab variants --markdown", [*lab, "variants", "--markdown"], False),
    ]


def _env(cache: Path, cached: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["COLUMNS"] = "100"
    if cached:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    return env


def time_once(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def measure(argv: list[str], env: dict[str, str], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        time_once(argv, env)
    return [time_once(argv, env) for _ in range(runs)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="measured runs per command")
    parser.add_argument("--quick", action="store_true", help="5 runs per command")
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs

    print("# lab startup\n")
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {runs} runs after 2 warm-up runs."
    )
    print(f"Target: `lab --help` and `lab variants` under {TARGET_S} s (median).\n")
    over = []
    for cached in (True, False):
        with tempfile.TemporaryDirectory(prefix="lab-bench-pyc-") as cache:
            env = _env(Path(cache), cached)
            title = "cached bytecode" if cached else "uncached (PYTHONDONTWRITEBYTECODE=1)"
            print(f"## {title}\n")
            print("| command | median | fastest | slowest |")
            print("|---|---:|---:|---:|")
            for label, argv, held in commands():
                times = measure(argv, env, runs, warmup=2)
                median = statistics.median(times)
                mark = ""
                if held:
                    mark = " ✓" if median < TARGET_S else " ✗ over target"
                    if median >= TARGET_S:
                        over.append(f"{label} ({title})")
                print(
                    f"| `{label}` | {median * 1000:.0f} ms{mark} | {min(times) * 1000:.0f} ms "
                    f"| {max(times) * 1000:.0f} ms |"
                )
            print()
    if over:
        print("Over the target: " + "; ".join(over))
    else:
        print(f"Every held command's median is under {TARGET_S} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
