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

How a run is built: the runner seats every buyer in one process
(``Stage.buyers_per_process``), and that process hands them all to
:func:`host_naive` or :func:`host_locked` (``Stage.host``) after the start
gun, which does what an asyncio program does::

    asyncio.run(main())     # main: gather one task per buyer

One thread, one loop, one task per buyer: 10,000 buyers are 10,000 tasks,
not 10,000 threads. Each task is bounded (``asyncio.wait_for``); a task
that overruns is cancelled and reported as that buyer's error.

``--lockstep``: every coroutine waits at an ``asyncio.Barrier`` (new in
3.11) between its read and its sleep, so every buyer has read before any
writes. Its wait is bounded: on timeout the barrier is aborted (broken), and
every buyer goes on, as the runner's own lockstep barrier does. With the
lock, the holder waits there alone until then, as with ``locked``.

``--crash`` is refused: a task cannot be SIGKILLed alone, and killing the
process would kill every buyer.

``lab explore`` and ``lab replay`` drive these buyers too: the explorer runs
the same coroutines on an event loop of its own and, at every switch point
(:meth:`ProcessLoop.gate`: the await between read and write, and around
the lock), decides which task goes next. One thread, no preemption: the
schedule alone decides, so every interleaving, and the shortest one that
oversells, is found exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.net.server import lockstep_wait_s
from lab.variants.naive import search
from lab.variants.protocol import OneProcessVariant, RunEnv, Stage, Variant

__all__ = [
    "COROUTINE_VARIANTS",
    "AsyncioLocked",
    "AsyncioNaive",
    "CoroutineVariant",
    "LoopKit",
    "ProcessLoop",
    "buy",
    "grab_locked",
    "grab_naive",
    "host_locked",
    "host_naive",
]

#: Beyond a buyer's own bounds (lock, rendezvous, latency): when its task is cancelled.
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
    """What the coroutines of one buyer process share on its event loop."""

    def __init__(self, parties: int) -> None:
        #: the fix of ``asyncio-locked``; bound to the running loop when first used
        self.lock = asyncio.Lock()
        #: ``--lockstep``: every buyer of the process meets here between read and write
        self.barrier = asyncio.Barrier(parties)
        #: ``lab explore``: awaited at every switch point, so the explorer decides who
        #: goes next (None in a run: the loop decides, and a gate costs nothing)
        self.gated: Callable[[int, str], Awaitable[None]] | None = None

    async def gate(self, me: Buyer, name: str) -> None:
        """A point where the loop may switch buyers: ``lab explore`` pauses ``me`` here."""
        if self.gated is not None:
            await self.gated(me.index, name)

    @asynccontextmanager
    async def mutex(self, me: Buyer, timeout: float) -> AsyncIterator[None]:
        """``async with lock``: bounded, and reported like every variant's lock."""
        me.wants_lock()
        await self.gate(me, "want-lock")
        try:
            await asyncio.wait_for(self.lock.acquire(), timeout)
        except TimeoutError:
            raise TimeoutError(f"asyncio.Lock not acquired within {timeout:g} s") from None
        try:
            me.acquired()
            await self.gate(me, "acquired")
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


# -- the buyer: the notes' program as coroutines ---------------------------------------------


async def network_latency(me: Buyer, kit: LoopKit, here: ProcessLoop) -> None:
    """模拟网络延迟, the coroutine way: the one ``await`` between read and write."""
    await here.gate(me, "read")  # the switch point: lab explore lets another buyer go here
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


def _host(seated: list[tuple[Buyer, Any]], grab: Grab) -> None:
    """``asyncio.run(main())``: one task per buyer on this process's one loop, all gathered."""
    kit: LoopKit = seated[0][1]

    async def one(me: Buyer, here: ProcessLoop) -> None:
        # Longer than any wait inside (lock, rendezvous, latency), so those report first.
        limit = kit.timeout + kit.lockstep_timeout + me.latency_s + _CANCEL_GRACE_S
        try:
            if me.arrival_s > 0:
                await asyncio.sleep(me.arrival_s)
            await asyncio.wait_for(grab(me, kit, here), limit)
        except TimeoutError as exc:
            # wait_for's own timeout says nothing; the lock's says which wait ran out.
            overran = TimeoutError(f"this buyer's coroutine did not finish within {limit:g} s")
            me.failed(exc if str(exc) else overran)
        except Exception as exc:  # a torn read, a lock timeout: this buyer's error
            me.failed(exc)

    async def main() -> None:
        here = ProcessLoop(len(seated))  # made on the running loop, which binds its lock
        await asyncio.gather(*(one(me, here) for me, _ in seated))

    asyncio.run(main())


def host_naive(seated: list[tuple[Buyer, Any]]) -> None:
    """``asyncio-naive``'s host: every buyer of the process a task, gathered."""
    _host(seated, grab_naive)


def host_locked(seated: list[tuple[Buyer, Any]]) -> None:
    """``asyncio-locked``'s host: the same, each purchase under the ``asyncio.Lock``."""
    _host(seated, grab_locked)


# -- the variants -----------------------------------------------------------------------


class CoroutineVariant(OneProcessVariant):
    """Shared by both variants: all buyers are tasks on one loop in one process."""

    name: str
    runs_as = "asyncio tasks on one event loop in one process; a task cannot be killed alone"
    #: ``lab explore`` runs the coroutines on a loop of its own, one step at a time:
    #: a single-threaded loop is a deterministic scheduler (lab.harness.explore)
    explorable = True
    host: Callable[[list[tuple[Buyer, Any]]], None]
    #: the buyer's coroutine, for the explorer (the host runs it in a run)
    grab: Grab

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        n = env.buyers
        kit = LoopKit(
            timeout=env.timeout,
            lockstep=env.scenario.lockstep,
            # The last buyer may arrive (n - 1) x arrival after the gun.
            lockstep_timeout=lockstep_wait_s(n) + n * env.scenario.arrival,
        )
        yield Stage.hosted(type(self).host, kit, buyers_per_process=n)


class AsyncioNaive(CoroutineVariant):
    name = "asyncio-naive"
    fixed_by: str | None = "asyncio-locked"
    fix = N_("an asyncio.Lock held across the await between the read and the write")
    summary = (
        "every buyer an asyncio task on one event loop, await asyncio.sleep between read and write"
    )
    safe = False
    host = staticmethod(host_naive)
    grab = staticmethod(grab_naive)
    why = (
        "a coroutine switches only at await, and the sleep between read and write is one: "
        "every task reads the count before any writes, so they all sell the same ticket"
    )


class AsyncioLocked(CoroutineVariant):
    name = "asyncio-locked"
    summary = "asyncio tasks on one event loop, an asyncio.Lock held across read, await and write"
    safe = True
    host = staticmethod(host_locked)
    grab = staticmethod(grab_locked)
    why = (
        "the asyncio.Lock is held across the await, so a task that switches out mid-purchase "
        "keeps every other task waiting at async with until its write has landed"
    )


#: Both variants, for the registry (through :data:`lab.variants.threads.THREAD_VARIANTS`).
COROUTINE_VARIANTS: tuple[Variant, ...] = (AsyncioNaive(), AsyncioLocked())
