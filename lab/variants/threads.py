"""threads-* and threadpool-*: the notes' program with threads instead of processes.

The notes' next chapter (section 9, 进程池与线程池) swaps ``Process`` for
``threading.Thread`` and then for a ``ThreadPoolExecutor``. The ticket grab
races exactly as before, because the race was never about processes: it is a
read, a wait, and a write of what was read, with other buyers free to run in
between.

Where the scheduler can switch buyers: a thread can be switched out anywhere
between two bytecodes, and it always is while it blocks. ``time.sleep`` (the
notes' 模拟网络延迟, :meth:`~lab.buyer.Buyer.network_latency`) releases the
GIL, so every other buyer thread runs while this one waits between its read
and its write. The race window sits *across the sleep*, not inside one
bytecode: the GIL makes each bytecode indivisible, never the read-check-write
as a whole, so it does not help at all.

* ``threads-naive`` (races): every buyer is a ``threading.Thread`` in one
  process (the runner seats all of them there: ``Stage.buyers_per_process``),
  running the notes' ``search`` and ``buy`` on data.json unchanged.
* ``threads-locked`` (holds): the same, with one ``threading.Lock`` around
  the read-check-write, as the notes take the 互斥锁::

      def run(me, lock):
          search(me)
          with lock(me):      # lock.acquire() ... lock.release()
              buy(me)         # read, wait, write: no other thread in between

  A ``threading.Lock`` only coordinates the threads of one process (and it
  cannot be pickled): :class:`ThreadLock` is made by the stage and each
  buyer process gets its own lock (inherited at the fork, or made afresh when
  unpickled under spawn), which every buyer thread of that process shares.
  Since all buyers sit in that one process, one lock is all of them.
* ``threadpool-naive`` / ``threadpool-locked``: the notes' pool::

      pool = ThreadPoolExecutor(10)
      res = pool.submit(task, 123)
      res.result()

  Each buyer is a task submitted to a fixed pool of threads (at most
  :data:`POOL_WORKERS` at once; beyond that a buyer waits for a free worker,
  超出则等待). A pool bounds how many buyers run at once, not what they do:
  ten workers still read the same count before any of them writes. With
  ``--lockstep`` the pool has one worker per buyer, so that every buyer can
  be in the race window at once.

``--crash`` is refused: it kills a buyer with SIGKILL, and a thread cannot be
killed alone; killing the process would kill every buyer seated in it.
``lab explore`` and ``lab replay`` step the ``threads-*`` buyers (the
explorer runs each buyer on a thread of its own, as these variants do); the
pool's buyers are run by the pool, which the explorer cannot gate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.variants import locked, naive
from lab.variants.coroutines import COROUTINE_VARIANTS
from lab.variants.naive import search
from lab.variants.protocol import OneProcessVariant, RunEnv, Stage, Variant

__all__ = [
    "POOL_WORKERS",
    "THREAD_VARIANTS",
    "PoolKit",
    "ThreadLock",
    "ThreadPoolLocked",
    "ThreadPoolNaive",
    "ThreadsLocked",
    "ThreadsNaive",
    "pool_locked",
    "pool_naive",
    "run_locked",
]

#: The notes' ``ThreadPoolExecutor(10)``.
POOL_WORKERS = 10


class ThreadLock:
    """The run's ``threading.Lock``, as a buyer takes it: ``with lock(me): buy(me)``.

    One per buyer process, shared by every buyer thread in it: the stage makes
    it before the fork (the child inherits it, unheld), and under spawn it is
    made afresh when unpickled (a lock cannot be pickled, and a copy in another
    process would coordinate nothing anyway). ``me`` is passed so the lock can
    report when its buyer waits, holds and releases; the wait is bounded.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[type[ThreadLock], tuple[float]]:
        return ThreadLock, (self.timeout,)

    @contextmanager
    def __call__(self, me: Buyer) -> Iterator[None]:
        me.wants_lock()
        # A bare ``with lock`` would wait forever behind a stuck holder.
        if not self._lock.acquire(timeout=self.timeout):
            raise TimeoutError(f"threading.Lock not acquired within {self.timeout:g} s")
        try:
            me.acquired()
            yield
        finally:
            self._lock.release()
            me.released()


def run_locked(me: Buyer, lock: ThreadLock) -> None:
    """The notes' ``run(name)`` with the fix: ``lock.acquire(); buy(); lock.release()``.

    ``locked.buy`` writes data.json atomically: ``search`` runs outside the
    lock, on another thread, and must never see the file half written.
    """
    search(me)  # 查票: no lock needed, it writes nothing
    with lock(me):
        locked.buy(me)  # read, wait, write: nobody else in between


# -- the pool (section 9) ----------------------------------------------------------------


@dataclass(frozen=True)
class PoolKit:
    """What every buyer of a pool run is handed: the pool's size, its bounds, and the lock."""

    workers: int
    #: the longest a buyer waits for its task (queued behind others, then run)
    timeout: float
    #: ``threadpool-locked`` only
    lock: ThreadLock | None = None


def task_naive(me: Buyer, kit: PoolKit) -> None:
    """``pool.submit(run, name)``: the notes' ``run`` on a pool thread."""
    naive.run(me)


def task_locked(me: Buyer, kit: PoolKit) -> None:
    """``pool.submit(run, name)`` with the lock taken around ``buy`` inside the task."""
    assert kit.lock is not None, "threadpool-locked hands every buyer the process's lock"
    run_locked(me, kit.lock)


def _pool_host(seated: list[tuple[Buyer, Any]], task: Callable[[Buyer, PoolKit], None]) -> None:
    """The notes' pool: ``pool.submit`` each buyer as it arrives, then wait (bounded) for all."""
    kit: PoolKit = seated[0][1]

    def job(me: Buyer) -> None:
        try:
            task(me, kit)
        except Exception as exc:  # a torn read, a lock timeout: this buyer's error
            me.failed(exc)

    gun = time.monotonic()
    pool = ThreadPoolExecutor(kit.workers, thread_name_prefix="lab-pool")
    try:
        futures: list[Future[None]] = []
        for me, _ in seated:  # in arrival order: buyer i arrives i x --arrival after the gun
            if (due := gun + me.arrival_s - time.monotonic()) > 0:
                time.sleep(due)
            futures.append(pool.submit(job, me))
        _, late = wait(futures, timeout=kit.timeout)
        for (me, _), future in zip(seated, futures, strict=True):
            if future in late and future.cancel():  # never started: nobody reports for it
                me.failed(TimeoutError(f"the pool did not run this buyer in {kit.timeout:g} s"))
        # One still running past the bound keeps its own reports; the runner reaps it.
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def pool_naive(seated: list[tuple[Buyer, Any]]) -> None:
    """``threadpool-naive``'s host: every buyer a task of one ``ThreadPoolExecutor``."""
    _pool_host(seated, task_naive)


def pool_locked(seated: list[tuple[Buyer, Any]]) -> None:
    """``threadpool-locked``'s host: the same, with the process's one lock in every task."""
    _pool_host(seated, task_locked)


# -- the variants -----------------------------------------------------------------------


class _OneProcessOfThreads(OneProcessVariant):
    """Shared by every variant here: all buyers are threads of one buyer process."""

    name: str
    runs_as = "threads in one process; a thread cannot be killed alone"
    explorable = False


class ThreadsNaive(_OneProcessOfThreads):
    name = "threads-naive"
    #: ``lab explore`` runs every buyer on a thread of its own anyway: it gates these too
    explorable = True
    fixed_by: str | None = "threads-locked"
    fix = N_(
        "one threading.Lock shared by the threads, held around the read, the check and the write"
    )
    summary = "the notes' program with threading.Thread buyers in one process, no lock"
    safe = False
    why = (
        "time.sleep releases the GIL, so every thread reads the count before any writes; "
        "the GIL keeps each bytecode whole, not the read-check-write, and the ticket is sold twice"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield Stage.alone(naive.run, buyers_per_process=env.buyers)


class ThreadsLocked(_OneProcessOfThreads):
    name = "threads-locked"
    explorable = True
    summary = "threading.Thread buyers in one process, a threading.Lock around read-check-write"
    safe = True
    why = (
        "every buyer thread shares the process's one threading.Lock, taken before the read and "
        "released after the write, so no thread decides on a count another is about to change"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield Stage(program=run_locked, kit=ThreadLock(env.timeout), buyers_per_process=env.buyers)


def _pool_kit(env: RunEnv, lock: ThreadLock | None) -> PoolKit:
    # Lockstep gathers every buyer in the race window at once: only a worker per buyer can.
    workers = env.buyers if env.scenario.lockstep else min(env.buyers, POOL_WORKERS)
    return PoolKit(workers=max(1, workers), timeout=env.timeout, lock=lock)


class ThreadPoolNaive(_OneProcessOfThreads):
    name = "threadpool-naive"
    fixed_by: str | None = "threadpool-locked"
    fix = N_(
        "one threading.Lock shared by the pool's threads, held around the read, the check and"
        " the write"
    )
    summary = "the notes' ThreadPoolExecutor(10): each buyer a submitted task, no lock"
    safe = False
    runs_as = "tasks of a thread pool in one process; a pool thread cannot be killed alone"
    why = (
        "the pool bounds how many buyers run at once, not what they do: its threads read the "
        "count, sleep, and write count-1, and those that read before any wrote sell one ticket"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield Stage.hosted(pool_naive, _pool_kit(env, None), buyers_per_process=env.buyers)


class ThreadPoolLocked(_OneProcessOfThreads):
    name = "threadpool-locked"
    summary = "ThreadPoolExecutor(10) tasks with a threading.Lock around read-check-write"
    safe = True
    runs_as = "tasks of a thread pool in one process; a pool thread cannot be killed alone"
    why = (
        "every pool thread takes the process's one threading.Lock before the read and releases "
        "it after the write, so the pool's threads buy one at a time"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        kit = _pool_kit(env, ThreadLock(env.timeout))
        yield Stage.hosted(pool_locked, kit, buyers_per_process=env.buyers)


#: Every variant of this module and of :mod:`lab.variants.coroutines`, for the registry.
THREAD_VARIANTS: tuple[Variant, ...] = (
    ThreadsNaive(),
    ThreadsLocked(),
    ThreadPoolNaive(),
    ThreadPoolLocked(),
    *COROUTINE_VARIANTS,
)
