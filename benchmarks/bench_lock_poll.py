"""Why the FileLock waiters sleep about (waiters x spacing) between tries.

filelock never blocks in the kernel; a waiting buyer retries flock(LOCK_NB)
and sleeps in between. Two costs pull against each other:

* handoff: after the holder releases, some waiter notices at its next try,
  about poll/W later with W waiters (filelock's 50 ms default: ~25 ms per
  handoff when few wait);
* churn: W waiters make W/poll failed tries per second, ~70-220 us of Python
  each, which on 2 cores steals CPU from the holder.

The table compares fixed intervals with the lab's crowd-scaled one
(``lab.variants._mutex.file_lock_poll_interval``) at both ends: 20 buyers
each holding the lock 10 ms (ceiling: raw flock ~10.6 ms per buyer), and a
herd of buyers at latency 0. Run: ``.venv/bin/python benchmarks/bench_lock_poll.py [HERD]``.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from lab.core.model import Latency, Scenario
from lab.harness.runner import run
from lab.variants import VARIANTS, _mutex

Poll = Callable[[int, float, int, int], float]
SCALED: Poll = _mutex.file_lock_poll_interval


def measure(poll: Poll, buyers: int, latency: float) -> float:
    _mutex.file_lock_poll_interval = poll  # type: ignore[assignment]  # buyers fork after this
    try:
        with tempfile.TemporaryDirectory() as tmp:
            scenario = Scenario(
                buyers=buyers, tickets=buyers, latency=Latency(latency, latency), seed=1
            )
            result = run(
                VARIANTS["locked"], scenario, data=Path(tmp) / "data.json", stall_timeout=20
            )
    finally:
        _mutex.file_lock_poll_interval = SCALED
    if not result.consistent:
        # A crowd polling too often starves the holder: report it as the finding it is.
        return float("nan")
    return result.elapsed_s


def fixed(seconds: float) -> Poll:
    return lambda waiting, hold_s, index, attempt: seconds


def main() -> None:
    herd = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    print("# filelock poll interval\n")
    print(
        "| poll interval | 20 buyers holding 10 ms: ms per buyer "
        f"| {herd} buyers at latency 0: s after the gun |"
    )
    print("|---|---|---|")
    cases = [
        ("fixed 50 ms (filelock's default)", fixed(0.05)),
        ("fixed 5 ms", fixed(0.005)),
        ("fixed 1 ms", fixed(0.001)),
        ("waiters x 0.7 ms, 1 ms-2 s (the lab's)", SCALED),
    ]
    for label, poll in cases:
        handoff = statistics.median(measure(poll, 20, 0.010) for _ in range(3)) / 20 * 1000
        crowd = measure(poll, herd, 0.0)
        shown = "stalled / lock timeouts" if math.isnan(crowd) else f"{crowd:.2f}"
        print(f"| {label} | {handoff:.1f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
