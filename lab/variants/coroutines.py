"""asyncio-naive and asyncio-locked: every buyer a coroutine on one event loop, one thread.

The notes' section 10 (协程): 单线程下实现并发, concurrency inside one
thread, switching only where the code waits for I/O. The notes use gevent's
monkey patch; here it is the standard library's asyncio, where the switch
points are written out: a coroutine runs until its next ``await`` and
nothing can interrupt it before that. The ticket grab still races::

    async def buy(me):
        count = me.store.read()             # 再次确认票: no await, nobody else runs
        me.read(count)
        await asyncio.sleep(me.latency_s)   # 模拟网络延迟: the loop runs every other buyer
        if count > 0:
            me.store.write_in_place(count - 1)

Where the scheduler can switch buyers: only at an ``await`` that suspends.
Between the read and the write there is exactly one, the sleep, so the race
window sits *across the await*: while this buyer sleeps, every other buyer
reads the same count, and each writes count-1 when it wakes. The event loop
is single-threaded, so there is no GIL to blame or to help, and no torn
read either (the truncate and the write have no await between them, so no
other buyer can read in between). Latency 0 still races: ``asyncio.sleep(0)``
yields to every buyer that is ready.

* ``asyncio-naive`` (races): the notes' ``search`` and ``buy`` as coroutines.
* ``asyncio-locked`` (holds): an ``asyncio.Lock`` around the read-check-write::

      async with lock:        # the lock is held across the await
          await buy(me)

  A coroutine that finds the lock taken waits at ``async with`` until the
  holder releases it, so no two buyers are ever between read and write at
  once. A ``threading.Lock`` would be wrong here: a coroutine that blocked on
  it would block the loop's only thread, holder included.

How a run is built: the runner seats every buyer in one process, each on
its own thread (``Stage.buyers_per_process``), and calls the program once
per seat. The program (:func:`run_naive`, :func:`run_locked`) hands its
buyer's coroutine to the process's one event loop, which runs on its own
thread (started by the first buyer: :func:`this_process_loop`), with
``asyncio.run_coroutine_threadsafe``, and waits for the result with a
timeout. Every coroutine, and so every report and store access of a buyer,
runs on the loop's thread; the seat thread only waits, then reports "done"
(after the coroutine has finished, so one buyer is never reported for from
two threads at once). Reports share the process's pipe as every buyer's do:
each batch is one write below PIPE_BUF, which is atomic.

``--lockstep``: every coroutine waits at an ``asyncio.Barrier`` (new in
3.11) between its read and its sleep, so every buyer has read before any
writes. Its wait is bounded: on timeout the barrier is aborted (broken), and
every buyer goes on, as the runner's own lockstep barrier does. With the
lock, the holder waits there alone until then, as with ``locked``.

``--crash`` is refused: a task cannot be SIGKILLed alone, and killing the
process would kill every buyer. ``lab explore`` cannot pause these buyers.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from lab.buyer import Buyer
from lab.core.errors import UsageError
from lab.core.model import Scenario
from lab.net.server import lockstep_wait_s
from lab.variants.naive import search
from lab.variants.protocol import RunEnv, Stage, Variant, VariantBase

__all__ = [
    "COROUTINE_VARIANTS",
    "AsyncioLocked",
    "AsyncioNaive",
    "LoopKit",
    "ProcessLoop",
    "buy",
    "grab_locked",
    "grab_naive",
    "run_locked",
    "run_naive",
    "this_process_loop",
]

#: After a buyer's coroutine timed out and was cancelled, how long it gets to stop
#: reporting before the seat thread reports the timeout.
_CANCEL_GRACE_S = 5.0


@dataclass(frozen=True)
class LoopKit:
    """What every buyer of an asyncio run is handed (plain values: it pickles under spawn)."""

    #: the longest a buyer waits for the lock (behind every other buyer's latency)
    timeout: float
    #: ``--lockstep``: rendezvous every buyer between its read and its write
    lockstep: bool
    #: how long the rendezvous waits for the last buyer before it gives up
    lockstep_timeout: float


class ProcessLoop:
    """One buyer process's event loop, on its own thread, and what its coroutines share."""

    def __init__(self, parties: int) -> None:
        self.loop = asyncio.new_event_loop()
        #: the fix of ``asyncio-locked``; bound to ``loop`` when first used there
        self.lock = asyncio.Lock()
        #: ``--lockstep``: every buyer of the process meets here between read and write
        self.barrier = asyncio.Barrier(parties)
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="lab-asyncio-loop", daemon=True
        )
        self.thread.start()

    @asynccontextmanager
    async def mutex(self, me: Buyer, timeout: float) -> AsyncIterator[None]:
        """``async with lock``: bounded, and reported like every variant's lock."""
        me.wants_lock()
        try:
            await asyncio.wait_for(self.lock.acquire(), timeout)
        except TimeoutError:
            raise TimeoutError(f"asyncio.Lock not acquired within {timeout:g} s") from None
        try:
            me.acquired()
            yield
        finally:
            self.lock.release()
            me.released()

    async def rendezvous(self, timeout: float) -> None:
        """Wait until every buyer has read (``barrier.wait()``), for at most ``timeout``.

        A buyer holding the lock waits here alone: on timeout the barrier is
        aborted, so the waiters and every later arrival go straight on.
        """
        try:
            await asyncio.wait_for(self.barrier.wait(), timeout)
        except TimeoutError:
            await self.barrier.abort()
        except asyncio.BrokenBarrierError:
            pass


class _PerProcess:
    """This process's loop, keyed by pid: a forked child never uses its parent's."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.loops: dict[int, ProcessLoop] = {}

    def after_fork(self) -> None:
        """A forked child starts with no loop and a fresh guard (never one held at the fork)."""
        self.guard = threading.Lock()
        self.loops.clear()


_HERE = _PerProcess()
os.register_at_fork(after_in_child=_HERE.after_fork)


def this_process_loop(parties: int) -> ProcessLoop:
    """This process's event loop: started by the first of its ``parties`` buyers, shared by all."""
    pid = os.getpid()
    with _HERE.guard:
        here = _HERE.loops.get(pid)
        if here is None:
            here = _HERE.loops[pid] = ProcessLoop(parties)
        return here


# -- the buyer: the notes' program as coroutines ---------------------------------------------


async def network_latency(me: Buyer, kit: LoopKit, here: ProcessLoop) -> None:
    """模拟网络延迟, the coroutine way: the one ``await`` between read and write."""
    if kit.lockstep or me.latency_s > 0:
        me.flush()  # report the read before waiting, as Buyer.network_latency does
    if kit.lockstep:
        await here.rendezvous(kit.lockstep_timeout)
    await asyncio.sleep(me.latency_s)  # the loop runs every other buyer meanwhile
    me.step("window")


async def buy(me: Buyer, kit: LoopKit, here: ProcessLoop) -> None:
    """买票: read, await the latency, then decrement what was read. The race lives at the await."""
    count = me.store.read()  # 再次确认票
    me.read(count)
    await network_latency(me, kit, here)
    if count > 0:
        # No await inside: no other coroutine can run between truncate and write.
        me.store.write_in_place(count - 1)
        me.bought(ticket=count)
    else:
        me.sold_out(count)


async def grab_naive(me: Buyer, kit: LoopKit, here: ProcessLoop) -> None:
    """The notes' ``run(name)`` as a coroutine."""
    search(me)  # 查票: no await, nothing can interleave
    await buy(me, kit, here)


async def grab_locked(me: Buyer, kit: LoopKit, here: ProcessLoop) -> None:
    """The notes' ``run(name)`` with an ``asyncio.Lock`` held across the read, await and write."""
    search(me)
    async with here.mutex(me, kit.timeout):
        await buy(me, kit, here)


Grab = Callable[[Buyer, LoopKit, ProcessLoop], Awaitable[None]]


def _on_the_loop(me: Buyer, kit: LoopKit, grab: Grab) -> None:
    """Run ``grab(me)`` on this process's loop and wait (bounded) for it to finish."""
    here = this_process_loop(me.buyers)  # every buyer of the run is seated in this process
    finished = threading.Event()

    async def task() -> None:
        try:
            await grab(me, kit, here)
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(task(), here.loop)
    # Longer than any wait inside (the lock, the rendezvous, the latency), so those report first.
    limit = kit.timeout + kit.lockstep_timeout + me.latency_s + _CANCEL_GRACE_S
    try:
        future.result(timeout=limit)  # re-raises the coroutine's exception: this buyer's error
    except TimeoutError:
        future.cancel()
        finished.wait(_CANCEL_GRACE_S)  # the coroutine stops reporting before we do
        raise TimeoutError(f"this buyer's coroutine did not finish within {limit:g} s") from None


def run_naive(me: Buyer, kit: LoopKit) -> None:
    """``asyncio-naive``'s program, called on each buyer's seat thread."""
    _on_the_loop(me, kit, grab_naive)


def run_locked(me: Buyer, kit: LoopKit) -> None:
    """``asyncio-locked``'s program, called on each buyer's seat thread."""
    _on_the_loop(me, kit, grab_locked)


# -- the variants -----------------------------------------------------------------------


class _OneLoop(VariantBase):
    """Shared by both variants: all buyers are tasks on one loop in one process."""

    name: str
    locks: tuple[str, ...] = ()
    #: the explorer pauses buyers at steps a coroutine reaches on the loop's thread
    explorable = False
    #: ``--crash`` is refused: a task cannot be SIGKILLed alone
    crash_safe = False
    many_buyers_per_process = True
    program: Callable[[Buyer, LoopKit], None]

    def check(self, scenario: Scenario) -> None:
        if scenario.crash > 0:
            raise UsageError(
                f"--crash: {self.name} runs its buyers as asyncio tasks on one event loop in one "
                "process; a task cannot be killed alone"
            )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        n = env.buyers
        kit = LoopKit(
            timeout=env.timeout,
            lockstep=env.scenario.lockstep,
            # The last buyer may arrive (n - 1) x arrival after the gun.
            lockstep_timeout=lockstep_wait_s(n) + n * env.scenario.arrival,
        )
        yield Stage(program=type(self).program, kit=kit, buyers_per_process=n)


class AsyncioNaive(_OneLoop):
    name = "asyncio-naive"
    fixed_by: str | None = "asyncio-locked"
    fix = "an asyncio.Lock held across the await between the read and the write"
    summary = (
        "every buyer an asyncio task on one event loop, await asyncio.sleep between read and write"
    )
    safe = False
    program = staticmethod(run_naive)
    why = (
        "a coroutine switches only at await, and the sleep between read and write is one: "
        "every task reads the count before any writes, so they all sell the same ticket"
    )


class AsyncioLocked(_OneLoop):
    name = "asyncio-locked"
    summary = "asyncio tasks on one event loop, an asyncio.Lock held across read, await and write"
    safe = True
    program = staticmethod(run_locked)
    why = (
        "the asyncio.Lock is held across the await, so a task that switches out mid-purchase "
        "keeps every other task waiting at async with until its write has landed"
    )


#: Both variants, for the registry (through :data:`lab.variants.threads.THREAD_VARIANTS`).
COROUTINE_VARIANTS: tuple[Variant, ...] = (AsyncioNaive(), AsyncioLocked())
