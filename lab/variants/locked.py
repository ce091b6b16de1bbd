"""locked: the notes' program with a mutex (互斥锁) around ``buy``.

The fix it applies: a buyer takes the lock *before* it reads the count and
releases it only *after* it has written the new one. While it waits out its
network latency nobody else can read, so nobody acts on a stale count. The
read-check-write becomes one indivisible step, and no two buyers can sell the
same ticket. Writes are atomic (``os.replace``), so an unlocked ``search``
never sees a torn file either.

The price is visible in the elapsed time: buyers now buy one at a time, each
holding the lock through its whole latency.

Two mutexes, same lesson (``--lock``):

* ``file`` (default): ``filelock.FileLock`` on ``data.json.lock``. It works
  between any processes, even unrelated ones, and the kernel releases it if the
  holder dies. Each buyer creates its own lock object after the fork (filelock
  refuses to use one created before it).
* ``mp``: ``multiprocessing.Lock``, the classic fix taught with the notes. It
  only works between processes of one family, and a holder that dies never
  releases it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from multiprocessing.synchronize import Lock as MpLock

from filelock import FileLock

from lab._buyer import Buyer
from lab.variants.naive import search
from lab.variants.protocol import RunEnv, Stage

__all__ = ["LOCKS", "Locked", "buy", "file_lock_poll_interval", "run"]

# filelock never blocks in the kernel: a waiter tries flock(LOCK_NB) and sleeps
# ``poll_interval`` between tries. With W waiters polling at spread-out phases,
# a released lock is noticed after about poll/W, while the failed tries cost
# W/poll open+flock+close calls per second. A fixed interval cannot serve both
# ends: filelock's 50 ms default adds ~25-50 ms to every handoff with few
# buyers; 5 ms with 1,000 buyers makes 200,000 tries/s, which starves the
# holder on 2 cores (1,000 buyers took 29 s). So the interval grows with the
# number of buyers: ~0.1 ms per buyer keeps the tries near 10,000/s in total
# and the handoff near 0.1 ms, whatever the crowd (benchmarks/bench_lock_poll.py).
POLL_PER_BUYER_S = 0.0001
POLL_MIN_S = 0.001
POLL_MAX_S = 0.25


def file_lock_poll_interval(buyers: int, index: int = 0) -> float:
    """This buyer's poll interval: scaled to the crowd, phase-spread so tries do not collide."""
    base = min(POLL_MAX_S, max(POLL_MIN_S, buyers * POLL_PER_BUYER_S))
    # Golden-ratio spread over [0.5, 1.5) x base: deterministic, and no two
    # neighbours retry in step after the start gun releases them together.
    return base * (0.5 + (index * 0.6180339887) % 1.0)


@contextmanager
def _mp_mutex(lock: MpLock, timeout: float) -> Iterator[None]:
    # A bare ``with lock`` would wait forever if the holder died; a timeout
    # turns that into this buyer's error instead of a silent hang.
    if not lock.acquire(timeout=timeout):
        raise TimeoutError(f"multiprocessing.Lock not acquired within {timeout:g} s")
    try:
        yield
    finally:
        lock.release()


def _file_lock(me: Buyer, mp_lock: MpLock | None, timeout: float) -> AbstractContextManager[object]:
    # Created here, in the buyer: filelock refuses a FileLock object made before the fork.
    poll = file_lock_poll_interval(me.buyers, me.index)
    return FileLock(str(me.store.lock_path), timeout=timeout, poll_interval=poll)


def _mp_lock(me: Buyer, mp_lock: MpLock | None, timeout: float) -> AbstractContextManager[object]:
    assert mp_lock is not None, "the runner creates the multiprocessing.Lock before the fork"
    return _mp_mutex(mp_lock, timeout)


#: Lock kind -> factory. Tests swap an entry for a no-op to prove the tally
#: catches the race when the lock is gone.
LOCKS: dict[str, Callable[[Buyer, MpLock | None, float], AbstractContextManager[object]]] = {
    "file": _file_lock,
    "mp": _mp_lock,
}


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


def run(me: Buyer, kind: str, mp_lock: MpLock | None, timeout: float) -> None:
    """The notes' ``run(name)`` with the course's fix: ``acquire(); buy(); release()``."""
    search(me)
    with LOCKS[kind](me, mp_lock, timeout):
        buy(me)


class Locked:
    name = "locked"
    summary = "a mutex (filelock, or multiprocessing.Lock with --lock mp) around read-check-write"
    safe = True
    locks: tuple[str, ...] = tuple(LOCKS)
    why = (
        "the lock is taken before the read and released after the write, so no buyer "
        "ever decides on a count another buyer is about to change"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage]:
        kind = env.scenario.lock
        mp_lock = env.mp.Lock() if kind == "mp" else None
        yield Stage(program=run, shared=(kind, mp_lock, env.timeout), lock=kind)
