"""The machinery behind ``locked``'s ``with mutex(me):``. Not part of the lesson.

:mod:`lab.variants.locked` reads like the course notes: a lock made in the
main block, handed to every buyer, held around ``buy``. Everything a real lock
needs beyond that lives here, so a newcomer reading ``locked`` meets the idea
first and the tuning only if they come looking for it:

* :class:`Mutex`: the lock the stage makes before the fork and passes to each
  buyer (the notes' ``mutex = Lock()`` in the main block). It is a small frozen,
  picklable value, so it also crosses a ``spawn`` start.
* :data:`LOCKS`: lock kind (``--lock``) -> how a buyer takes it. A mutex looks
  its kind up here each time a buyer takes it, so a test can swap an entry for a
  no-op before the buyers fork and prove the tally catches the missing lock.
* :func:`file_mutex` / :func:`mp_mutex`: the two kinds. Each reports
  ``wants_lock``, ``acquired`` and ``released`` to its buyer (the timeline,
  ``--crash`` at ``acquired`` and ``lab explore`` rely on those steps), and
  each waits with a timeout, so a dead holder is one buyer's error, not a hang.
* :func:`file_lock_poll_interval`: how often a FileLock waiter retries; see the
  comment above it for why it scales with the crowd.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Lock as MpLock

from filelock import FileLock, Timeout

from lab.buyer import Buyer
from lab.variants.protocol import RunEnv

__all__ = [
    "HOLD_FRACTION",
    "LOCKS",
    "POLL_MAX_S",
    "POLL_MIN_S",
    "TRY_SPACING_S",
    "WRITE_HOLD_S",
    "LockKit",
    "Mutex",
    "file_lock_poll_interval",
    "file_mutex",
    "lock_kit",
    "mp_mutex",
    "new_mutex",
]

# filelock never blocks in the kernel: a waiter tries flock(LOCK_NB) and sleeps
# between tries. With W waiters trying at spread-out moments, a released lock
# is noticed after about poll/W, while the failed tries cost W/poll of them per
# second, each ~70 us of Python (~220 us in a freshly forked buyer). No fixed
# interval serves both ends: filelock's 50 ms default adds ~25 ms to every
# handoff when few wait; 5 ms with 1,000 waiters makes 200,000 tries/s, which
# starves the holder on 2 cores (1,000 buyers took 29 s). So each waiter sleeps
# about W x SPACING: the crowd as a whole then tries once per SPACING, a release
# is noticed within about SPACING, and the tries cost a bounded ~1,400/s
# whatever the crowd. With long holds (the notes' 1-3 s inside the lock) the
# spacing grows to a small fraction of a hold. benchmarks/bench_lock_poll.py
# compares this with fixed intervals.
POLL_MIN_S = 0.001
POLL_MAX_S = 2.0
#: the crowd's tries are spread this far apart at least
TRY_SPACING_S = 0.0007
#: ...or this fraction of one expected hold, when holds are long
HOLD_FRACTION = 0.05
#: a hold without latency: read + fsync'd atomic write, ~0.5-1 ms here
WRITE_HOLD_S = 0.001


def file_lock_poll_interval(waiting: int, hold_s: float, index: int, attempt: int) -> float:
    """How long this waiter sleeps before its next try, given the crowd still waiting."""
    spacing = max(TRY_SPACING_S, HOLD_FRACTION * hold_s)
    base = min(POLL_MAX_S, max(POLL_MIN_S, waiting * spacing))
    # A golden-ratio sequence spreads the sleeps over [0.5, 1.5) x base:
    # deterministic, and buyers released together by the start gun do not
    # retry in step.
    return base * (0.5 + ((index + attempt) * 0.6180339887) % 1.0)


@dataclass(frozen=True)
class LockKit:
    """What the runner-side stage hands each buyer for its mutex."""

    mp_lock: MpLock | None
    #: buyers that have finished their turn; only the lock holder increments it,
    #: so the lock itself makes the update safe
    served: Synchronized[int] | None
    #: expected time one buyer holds the lock (latency + write)
    hold_s: float
    timeout: float


@contextmanager
def mp_mutex(me: Buyer, kit: LockKit) -> Iterator[None]:
    """``multiprocessing.Lock``: the course's 互斥锁, made before the fork."""
    assert kit.mp_lock is not None, "the stage creates the multiprocessing.Lock before the fork"
    me.wants_lock()
    # A bare ``with lock`` would wait forever if the holder died; a timeout
    # turns that into this buyer's error instead of a silent hang.
    if not kit.mp_lock.acquire(timeout=kit.timeout):
        raise TimeoutError(f"multiprocessing.Lock not acquired within {kit.timeout:g} s")
    try:
        me.acquired()
        yield
    finally:
        kit.mp_lock.release()
        me.released()


@contextmanager
def file_mutex(me: Buyer, kit: LockKit) -> Iterator[None]:
    """``filelock.FileLock`` on ``data.json.lock``: released by the kernel if its holder dies."""
    # Created here, in the buyer: filelock refuses a FileLock object made before the fork.
    # thread_local=False: one buyer is one thread, so it needs no threading.local.
    lock = FileLock(str(me.store.lock_path), thread_local=False)
    me.wants_lock()
    deadline = time.monotonic() + kit.timeout
    attempt = 0
    while True:
        try:
            lock.acquire(blocking=False)
            break
        except Timeout:
            if time.monotonic() > deadline:
                raise TimeoutError(f"FileLock not acquired within {kit.timeout:g} s") from None
            waiting = me.buyers - (kit.served.value if kit.served is not None else 0)
            attempt += 1
            time.sleep(file_lock_poll_interval(waiting, kit.hold_s, me.index, attempt))
    try:
        me.acquired()
        yield
    finally:
        if kit.served is not None:
            kit.served.value += 1  # we hold the lock: no other writer
        lock.release()
        me.released()


def lock_kit(env: RunEnv, kind: str) -> LockKit:
    """The shared parts of one run's mutex, made before the buyers fork."""
    latency = env.scenario.latency
    return LockKit(
        mp_lock=env.mp.Lock() if kind == "mp" else None,
        served=env.mp.RawValue("i", 0) if kind == "file" else None,
        hold_s=(latency.low + latency.high) / 2 + WRITE_HOLD_S,
        timeout=env.timeout,
    )


#: Lock kind -> mutex. Tests swap an entry for a no-op to prove the tally
#: catches the race when the lock is gone.
LOCKS: dict[str, Callable[[Buyer, LockKit], AbstractContextManager[None]]] = {
    "file": file_mutex,
    "mp": mp_mutex,
}


@dataclass(frozen=True)
class Mutex:
    """One run's lock, as a buyer receives it: ``with mutex(me): buy(me)``.

    ``me`` is passed so the lock can report to its buyer when it waits, holds
    and releases. The kind is looked up in :data:`LOCKS` at that moment, not
    when the mutex is made, so a test's swap reaches buyers forked after it.
    """

    #: ``--lock``: a key of :data:`LOCKS`
    kind: str
    kit: LockKit

    def __call__(self, me: Buyer) -> AbstractContextManager[None]:
        return LOCKS[self.kind](me, self.kit)


def new_mutex(env: RunEnv, kind: str) -> Mutex:
    """The run's lock, made in the parent before the buyers fork (the notes' ``Lock()``)."""
    return Mutex(kind, lock_kit(env, kind))
