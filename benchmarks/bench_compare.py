"""Issue 4's figure: `lab compare --scenario classroom --repeat 5` over every variant.

Target: well under 60 s on this 2-core machine. Run:
``.venv/bin/python benchmarks/bench_compare.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time


def main() -> None:
    t = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lab",
            "compare",
            "--scenario",
            "classroom",
            "--repeat",
            "5",
            "--check",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    wall = time.perf_counter() - t
    print("# lab compare --scenario classroom --repeat 5 (every variant)\n")
    print(done.stdout)
    print(f"wall time: {wall:.1f} s (target: well under 60 s); exit {done.returncode}")


if __name__ == "__main__":
    main()
