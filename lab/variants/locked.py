"""locked: the notes' program with a mutex (互斥锁) held around ``buy``.

The lesson: take the lock *before* reading the count and release it only
*after* writing the new one. Then nobody can read while a buyer waits out its
network latency, the read-check-write is one indivisible step, and no two
buyers sell the same ticket. The price shows in the elapsed time: buyers now
buy one at a time.

As in the notes, the lock is made in the main block (the stage, before the
fork), passed to every buyer process, and held around ``buy``::

    def run(me, mutex):
        search(me)          # 查票: no lock needed, it writes nothing
        with mutex(me):     # mutex.acquire() ... mutex.release()
            buy(me)         # read, wait, write: nobody else in between

``--lock file`` (default) is a ``filelock.FileLock`` on ``data.json.lock``,
released by the kernel if its holder dies; ``--lock mp`` is the course's
``multiprocessing.Lock``, which a dead holder never releases. How either is
taken (timeouts, polling, reports) is in :mod:`lab.variants._mutex`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.buyer import Buyer
from lab.variants._mutex import LOCKS, Mutex, new_mutex
from lab.variants.naive import search
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = ["Locked", "buy", "run"]


def buy(me: Buyer) -> None:
    """买票, with the lock held by the caller: nobody else reads until this write lands."""
    count = me.store.read()  # 再次确认票, and nobody can change it under us now
    me.read(count)
    me.network_latency()  # the same wait as the notes, now inside the lock
    if count > 0:
        me.store.write_atomic(count - 1)
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def run(me: Buyer, mutex: Mutex) -> None:
    """The notes' ``run(name)`` with the course's fix: ``acquire(); buy(); release()``."""
    search(me)
    with mutex(me):
        buy(me)


class Locked(VariantBase):
    name = "locked"
    summary = "a mutex (filelock, or multiprocessing.Lock with --lock mp) around read-check-write"
    safe = True
    locks: tuple[str, ...] = tuple(LOCKS)
    why = (
        "the lock is taken before the read and released after the write, so no buyer "
        "ever decides on a count another buyer is about to change"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        mutex = new_mutex(env, env.scenario.lock)  # the notes' ``mutex = Lock()``, before the fork
        yield Stage(program=run, kit=mutex, lock=mutex.kind)
