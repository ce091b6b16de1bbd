"""Issue 5's figures: schedules explored and time per schedule for `lab explore`.

Target: `lab explore locked --buyers 3 --tickets 1` (every schedule) under 30 s.
Run: ``.venv/bin/python benchmarks/bench_explore.py``.
"""

from __future__ import annotations

from lab.harness.explore import explore
from lab.variants import VARIANTS

CASES = [
    ("naive", 2, 1),
    ("naive", 3, 1),
    ("locked", 2, 1),
    ("locked", 3, 1),
    ("locked-write-only", 2, 1),
    ("locked-write-only", 3, 1),
    ("queue", 3, 1),
]


def main() -> None:
    print("# lab explore\n")
    print(
        "| variant | buyers | tickets | schedules | complete | failing | total s "
        "| ms per schedule |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, buyers, tickets in CASES:
        e = explore(VARIANTS[name], buyers, tickets)
        print(
            f"| {name} | {buyers} | {tickets} | {e.explored} | {e.complete} | {e.failing} "
            f"| {e.elapsed_s:.2f} | {1000 * e.elapsed_s / e.explored:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
