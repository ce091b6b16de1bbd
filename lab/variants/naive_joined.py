"""naive-joined: ``p.start(); p.join()`` inside the loop. Correct, but only by accident, and slow.

The mistake it shows: the notes' loop with a ``join`` right after each
``start``::

    for i in range(10):
        p = Process(target=run, args=('用户%s' % i,))
        p.start()
        p.join()        # waits for this buyer before starting the next

Buyers now run one at a time, so no two ever overlap and nothing is ever
oversold. But nothing was fixed: the program is the naive one, and the
"fix" is not using concurrency at all. It takes about N times as long (the
elapsed time shows it), and the moment two copies of it run at once, or a
second machine joins, it races again. The runner honours this by starting
each buyer only after the previous one has finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.variants.naive import run
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = ["NaiveJoined"]


class NaiveJoined(VariantBase):
    name = "naive-joined"
    summary = "the notes' program with p.join() right after p.start(): one buyer at a time"
    safe = True
    caveat = "correct but slow: buyers run one at a time, so it is not concurrent at all"
    #: It keeps the notes' truncate-and-write: a buyer killed mid-write leaves
    #: data.json empty for the next one. Safe from the race, not from crashes.
    crash_safe = False
    locks: tuple[str, ...] = ()
    why = (
        "each buyer starts only after the previous one has finished, so nobody ever reads a "
        "stale count; the race is hidden, not fixed, and the run takes about N times longer"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield Stage.alone(run, sequential=True)
