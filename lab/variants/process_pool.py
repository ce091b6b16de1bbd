"""processpool-naive and processpool-locked: the notes' ``ProcessPoolExecutor`` (section 9).

The notes' pool, with processes::

    pool = ProcessPoolExecutor(5)
    res = pool.submit(task, 123)
    res.result()

Each buyer is a task submitted to a fixed pool of worker processes (at most
:data:`POOL_WORKERS` at once; beyond that a buyer's task waits for a free
worker). The ticket grab races as with ``Process``: every worker reads
data.json, sleeps, and writes what it read minus one.

Where the scheduler can switch buyers: anywhere. The workers are separate
processes that the kernel runs at once (on every core), so the race window
is the whole read-sleep-write, as in the notes' section 8.

* ``processpool-naive`` (races): the notes' ``run`` as the pool's task.
* ``processpool-locked`` (holds): a ``multiprocessing.Lock`` around the
  read-check-write, **handed to the workers when the pool makes them** (the
  pool's ``initializer``), so that every worker holds the same lock::

      lock = multiprocessing.Lock()
      pool = ProcessPoolExecutor(5, initializer=share, initargs=(lock,))

  This is the point section 9 leaves to the reader. A lock cannot travel as
  a task's argument (``pool.submit(task, lock)`` fails: a ``Lock`` may be
  shared only through inheritance), and a lock *made inside each task* is a
  different lock in every worker: it coordinates nothing, and the race stays.
  ``Manager().Lock()`` would also work (a proxy pickles), at the price of a
  server process and a round trip per acquire.

How a run is built: the runner seats every buyer in one process, which runs
them all through :func:`host_naive` or :func:`host_locked` (``Stage.host``)
after the start gun: it makes the pool (forked from itself, so the workers
inherit the buyers' report pipe and data.json's store), submits one task per
buyer and waits for them, bounded. Each worker arms the parent-death signal
first, so the workers die with their pool's process, which dies with the
runner: none outlives a killed lab.

``--lockstep`` gives the pool one worker per buyer, so every buyer can be in
the race window at once (at most :data:`LOCKSTEP_MAX` buyers). ``--crash``
is refused (a task is not a process the lab can kill alone), and so is a
start method other than fork: the pool's workers are forked from the buyer
process, and that is how they inherit what a task needs.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab.buyer import Buyer, child_signals, die_with_parent
from lab.core.errors import UsageError
from lab.core.i18n import N_
from lab.core.model import Scenario
from lab.variants import locked, naive
from lab.variants.naive import search
from lab.variants.protocol import OneProcessVariant, RunEnv, Stage, Variant

__all__ = [
    "LOCKSTEP_MAX",
    "POOL_VARIANTS",
    "POOL_WORKERS",
    "ProcessPoolKit",
    "ProcessPoolLocked",
    "ProcessPoolNaive",
    "host_locked",
    "host_naive",
]

#: The notes' ``ProcessPoolExecutor(5)``.
POOL_WORKERS = 5
#: ``--lockstep`` needs a worker per buyer: a pool of processes is bounded by this.
LOCKSTEP_MAX = 200


@dataclass(frozen=True)
class ProcessPoolKit:
    """What every buyer of a process-pool run shares: the pool's size and its bound."""

    workers: int
    #: the longest the pool's process waits for all its buyers' tasks
    timeout: float


#: In each pool worker: its buyers (inherited at the fork) and, for the fix, the
#: lock the pool handed it. Module globals, as ``initializer`` sets them in the notes.
_SEATED: list[Buyer] = []
_LOCK: Any = None
#: The longest a worker waits for the lock (behind every other buyer's latency).
_LOCK_TIMEOUT = [60.0]


def _share(lock: Any, pool_pid: int) -> None:
    """The pool's ``initializer``, in each worker: keep the lock; die with the pool's process."""
    global _LOCK  # noqa: PLW0603 - the initializer's way to hand a worker its lock
    die_with_parent(pool_pid)
    child_signals()
    _LOCK = lock


def task_naive(index: int) -> None:
    """The notes' ``run(name)``, as the pool's task: search, then read, sleep, write."""
    me = _SEATED[index]
    try:
        naive.run(me)
    except Exception as exc:  # a torn read: this buyer's error
        me.failed(exc)
    finally:
        me.flush()  # this worker's reports, before the task returns


def task_locked(index: int) -> None:
    """The same task, with ``buy`` under the lock every worker was handed."""
    me = _SEATED[index]
    try:
        search(me)  # 查票: no lock needed, it writes nothing
        me.wants_lock()
        if not _LOCK.acquire(timeout=_LOCK_TIMEOUT[0]):
            raise TimeoutError(f"multiprocessing.Lock not acquired within {_LOCK_TIMEOUT[0]:g} s")
        try:
            me.acquired()
            locked.buy(me)  # read, wait, write: no other worker in between
        finally:
            _LOCK.release()
            me.released()
    except Exception as exc:
        me.failed(exc)
    finally:
        me.flush()


def _host(seated: list[tuple[Buyer, Any]], task: Callable[[int], None], lock: Any) -> None:
    """Make the pool, submit one task per buyer, and wait for all of them (bounded)."""
    _SEATED[:] = [me for me, _ in seated]
    kit: ProcessPoolKit = seated[0][1]
    _LOCK_TIMEOUT[0] = kit.timeout
    pool = ProcessPoolExecutor(
        kit.workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_share,
        initargs=(lock, os.getpid()),
    )
    try:
        gun = time.monotonic()
        futures = []
        for i, me in enumerate(_SEATED):  # in arrival order: buyer i arrives i x --arrival
            if (due := gun + me.arrival_s - time.monotonic()) > 0:
                time.sleep(due)
            futures.append(pool.submit(task, i))
        _, late = wait(futures, timeout=kit.timeout)
        for me, future in zip(_SEATED, futures, strict=True):
            if future in late:
                me.failed(TimeoutError(f"the pool did not run this buyer in {kit.timeout:g} s"))
            elif (error := future.exception()) is not None:
                me.failed(error)  # the worker died (BrokenProcessPool): this buyer's error
    finally:
        # Late tasks are cancelled; running ones die with this process (their parent-death signal).
        pool.shutdown(wait=False, cancel_futures=True)


def host_naive(seated: list[tuple[Buyer, Any]]) -> None:
    """``processpool-naive``'s host: every buyer a task in the notes' pool."""
    _host(seated, task_naive, None)


def host_locked(seated: list[tuple[Buyer, Any]]) -> None:
    """``processpool-locked``'s host: one ``multiprocessing.Lock``, handed to every worker."""
    _host(seated, task_locked, multiprocessing.get_context("fork").Lock())


# -- the variants -----------------------------------------------------------------------


class _Pool(OneProcessVariant):
    """Shared by both variants: one pool of processes, made by the process seating every buyer."""

    name: str
    runs_as = "tasks in a process pool; a task cannot be killed alone"
    explorable = False
    #: the pool's workers are forked from the buyers' process, and inherit the buyers so
    needs_fork = True
    host: Callable[[list[tuple[Buyer, Any]]], None]

    def check(self, scenario: Scenario) -> None:
        super().check(scenario)
        if scenario.lockstep and scenario.buyers > LOCKSTEP_MAX:
            raise UsageError(
                f"--lockstep: {self.name} needs a pool process per buyer; at most {LOCKSTEP_MAX}"
            )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        n = env.buyers
        workers = n if env.scenario.lockstep else min(n, POOL_WORKERS)
        kit = ProcessPoolKit(workers=workers, timeout=env.timeout)
        yield Stage.hosted(type(self).host, kit, buyers_per_process=n)


class ProcessPoolNaive(_Pool):
    name = "processpool-naive"
    fixed_by: str | None = "processpool-locked"
    fix = N_(
        "one multiprocessing.Lock around read, check and write, handed to every worker by the "
        "pool's initializer (not made inside each task)"
    )
    summary = "every buyer a task in ProcessPoolExecutor(5), as in the notes' section 9"
    safe = False
    host = staticmethod(host_naive)
    why = (
        "the pool's workers are processes reading and writing data.json at once: a pool bounds "
        "how many buyers run, not what they do, so five read the same count before one writes"
    )


class ProcessPoolLocked(_Pool):
    name = "processpool-locked"
    summary = "ProcessPoolExecutor tasks; one multiprocessing.Lock given to every worker"
    safe = True
    host = staticmethod(host_locked)
    why = (
        "the pool's initializer hands every worker the same lock, so no two tasks are ever "
        "between read and write; a lock made inside each task would guard nothing"
    )


#: Both variants, for the registry.
POOL_VARIANTS: tuple[Variant, ...] = (ProcessPoolNaive(), ProcessPoolLocked())
