"""gevent-naive and gevent-locked: the notes' 协程 (section 10), every buyer a greenlet.

The notes write it so::

    from gevent import monkey; monkey.patch_all()   # 固定编写: detect every I/O (猴子补丁)
    from gevent import spawn
    s1 = spawn(func1)       # 一旦有IO自动切换: switch at I/O, run whoever is ready
    s2 = spawn(func2)
    s1.join(); s2.join()

and the ticket grab, written the same way, still races::

    def run(me):
        search(me)                  # 查票
        count = me.store.read()     # 再次确认票: no I/O that yields, nobody else runs
        time.sleep(me.latency_s)    # 模拟网络延迟: patched, so it yields to every greenlet
        if count > 0:
            me.store.write_in_place(count - 1)

Where the scheduler can switch buyers: only where a greenlet blocks on
something gevent patched (a sleep, a socket). ``monkey.patch_all()`` turns
the notes' ``time.sleep`` into ``gevent.sleep``, which yields to the hub, and
the hub runs every other greenlet that is ready. The file reads and writes
are not patched and never yield, so there is no torn read; but between the
read and the write there is the sleep, so the race window sits *across the
sleep*, exactly as with threads and coroutines: every greenlet reads the same
count before any of them writes. One thread, no GIL at play, and still a
lost update. Latency 0 still races: ``sleep(0)`` yields too.

* ``gevent-naive`` (races): the notes' program, spawned and joined.
* ``gevent-locked`` (holds): a ``gevent.lock.Semaphore`` around the read,
  the sleep and the write. A greenlet that finds it taken waits at
  ``acquire`` (yielding to the hub) until the holder releases it. A plain
  ``threading.Lock`` would be patched into the same thing by ``patch_all``;
  an unpatched one would block the only thread, holder included.

How a run is built: the runner seats every buyer in one process
(``Stage.buyers_per_process``), and that process hands them all to
:func:`host_naive` or :func:`host_locked` (``Stage.host``) after the start
gun: it patches, spawns one greenlet per buyer and joins them all, as the
notes do. Patching happens in that buyer process only, never in the lab's
own: the runner and every other variant keep the real ``threading`` and
``time``.

``--lockstep``: every greenlet waits at a gevent rendezvous between its read
and its sleep, bounded like every lockstep wait; with the lock, the holder
waits there alone until the bound passes, as with ``locked``.

``--crash`` is refused: a greenlet cannot be SIGKILLed alone, and killing
the process would kill every buyer. ``lab explore`` and ``lab replay`` run
the same greenlets on a hub of their own (unpatched: the gates, not the
sleep, switch), pausing each at every switch point (:meth:`Hub.gate`).
gevent is an extra (``pip install 'ticket-race-lab[gevent]'``); without it
these variants refuse to run, in one line.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from lab.buyer import Buyer
from lab.core.errors import UsageError
from lab.core.i18n import N_
from lab.core.model import Scenario
from lab.net.server import lockstep_wait_s
from lab.variants.naive import search
from lab.variants.protocol import OneProcessVariant, RunEnv, Stage, Variant

__all__ = [
    "GREENLET_VARIANTS",
    "GeventKit",
    "GeventLocked",
    "GeventNaive",
    "GreenletVariant",
    "Hub",
    "host_locked",
    "host_naive",
]

#: After the last greenlet's own bounds, how long ``joinall`` waits before giving up.
_JOIN_GRACE_S = 5.0


@dataclass(frozen=True)
class GeventKit:
    """What every buyer of a gevent run is handed (plain values: it pickles under spawn)."""

    #: the longest a buyer waits for the semaphore (behind every other buyer's latency)
    timeout: float
    #: ``--lockstep``: rendezvous every buyer between its read and its write
    lockstep: bool
    #: how long the rendezvous waits for the last buyer before it gives up
    lockstep_timeout: float


class Hub:
    """What the greenlets of one run share: the fix's semaphore and the lockstep rendezvous."""

    def __init__(self, parties: int) -> None:
        import gevent.event  # noqa: PLC0415 - after the patch, in the buyer process only
        import gevent.lock  # noqa: PLC0415

        #: the fix of ``gevent-locked``
        self.mutex = gevent.lock.Semaphore()
        self.parties = parties
        self.arrived = 0
        self.everyone_read = gevent.event.Event()
        #: ``lab explore``: called at every switch point, so the explorer decides who
        #: goes next (None in a run: the hub decides, and a gate costs nothing)
        self.gated: Callable[[int, str], None] | None = None

    def gate(self, me: Buyer, name: str) -> None:
        """A point where the hub may switch greenlets: ``lab explore`` pauses ``me`` here."""
        if self.gated is not None:
            self.gated(me.index, name)

    def rendezvous(self, timeout: float) -> None:
        """Wait until every buyer has read, for at most ``timeout`` (then go on anyway)."""
        self.arrived += 1  # no yield in between: greenlets switch only where they block
        if self.arrived >= self.parties:
            self.everyone_read.set()
        if not self.everyone_read.wait(timeout):
            self.everyone_read.set()  # the bound passed: release every later arrival too


def buy(me: Buyer, kit: GeventKit, hub: Hub) -> None:
    """买票: read, sleep (patched: it yields), then decrement what was read."""
    count = me.store.read()  # 再次确认票
    me.read(count)
    me.flush()  # report the read before the sleep, as Buyer.network_latency does
    hub.gate(me, "read")  # the switch point: lab explore lets another buyer go here
    if kit.lockstep:
        hub.rendezvous(kit.lockstep_timeout)
    time.sleep(me.latency_s)  # 模拟网络延迟: gevent.sleep after patch_all; every greenlet runs
    me.step("window")
    if count > 0:
        me.store.write_in_place(count - 1)
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def grab_naive(me: Buyer, kit: GeventKit, hub: Hub) -> None:
    """The notes' ``run(name)``, as a greenlet."""
    search(me)
    buy(me, kit, hub)


def grab_locked(me: Buyer, kit: GeventKit, hub: Hub) -> None:
    """The notes' ``run(name)`` with a ``gevent.lock.Semaphore`` held across read, sleep, write."""
    search(me)
    me.wants_lock()
    hub.gate(me, "want-lock")
    if not hub.mutex.acquire(timeout=kit.timeout):
        raise TimeoutError(f"gevent.lock.Semaphore not acquired within {kit.timeout:g} s")
    try:
        me.acquired()
        hub.gate(me, "acquired")
        buy(me, kit, hub)
    finally:
        hub.mutex.release()
        me.released()


Grab = Callable[[Buyer, GeventKit, Hub], None]


def _patch_all() -> None:
    """``monkey.patch_all()``, as the notes' first line, in this buyer process only.

    gevent warns when a module it patches (ssl, say) was imported before the
    patch; the lab imported them for its own use, never the buyers', so the
    warning (an error under pytest's filters, inherited at the fork) is moot.
    """
    from gevent import monkey  # noqa: PLC0415 - only in the process that runs greenlets

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkey.patch_all()


def _host(seated: list[tuple[Buyer, Any]], grab: Grab) -> None:
    """Patch, spawn one greenlet per buyer, join them all: the notes' section 10."""
    _patch_all()
    import gevent  # noqa: PLC0415

    kit: GeventKit = seated[0][1]
    hub = Hub(parties=len(seated))

    def one(me: Buyer) -> None:
        try:
            if me.arrival_s > 0:
                time.sleep(me.arrival_s)  # patched: the others run meanwhile
            grab(me, kit, hub)
        except Exception as exc:  # a torn read, a timeout: this buyer's error
            me.failed(exc)

    greenlets = [gevent.spawn(one, me) for me, _ in seated]
    slowest = max(me.latency_s + me.arrival_s for me, _ in seated)
    limit = kit.timeout + kit.lockstep_timeout + slowest + _JOIN_GRACE_S
    done = gevent.joinall(greenlets, timeout=limit)
    if len(done) < len(greenlets):
        gevent.killall(greenlets, timeout=_JOIN_GRACE_S)
        for (me, _), greenlet in zip(seated, greenlets, strict=True):
            if greenlet not in done:
                me.failed(TimeoutError(f"this buyer's greenlet did not finish within {limit:g} s"))


def host_naive(seated: list[tuple[Buyer, Any]]) -> None:
    """``gevent-naive``'s host: every buyer of the process, spawned and joined."""
    _host(seated, grab_naive)


def host_locked(seated: list[tuple[Buyer, Any]]) -> None:
    """``gevent-locked``'s host: the same, each purchase under the semaphore."""
    _host(seated, grab_locked)


# -- the variants -----------------------------------------------------------------------


class GreenletVariant(OneProcessVariant):
    """Shared by both variants: all buyers are greenlets in one process."""

    name: str
    runs_as = "greenlets in one process; a greenlet cannot be killed alone"
    #: ``lab explore`` runs the greenlets on a hub of its own, one step at a time
    explorable = True
    host: Callable[[list[tuple[Buyer, Any]]], None]
    #: the buyer's greenlet body, for the explorer (the host spawns it in a run)
    grab: Grab

    def check(self, scenario: Scenario) -> None:
        if importlib.util.find_spec("gevent") is None:
            raise UsageError(
                f"{self.name} needs gevent: pip install 'ticket-race-lab[gevent]' (or gevent)"
            )
        super().check(scenario)

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        n = env.buyers
        kit = GeventKit(
            timeout=env.timeout,
            lockstep=env.scenario.lockstep,
            lockstep_timeout=lockstep_wait_s(n) + n * env.scenario.arrival,
        )
        yield Stage.hosted(type(self).host, kit, buyers_per_process=n)


class GeventNaive(GreenletVariant):
    name = "gevent-naive"
    fixed_by: str | None = "gevent-locked"
    fix = N_("a gevent.lock.Semaphore held across the patched sleep between the read and the write")
    summary = "every buyer a greenlet after monkey.patch_all(), spawn and joinall as in the notes"
    safe = False
    host = staticmethod(host_naive)
    grab = staticmethod(grab_naive)
    why = (
        "patch_all makes time.sleep yield to the hub, and the sleep sits between read and "
        "write: every greenlet reads the count before any writes, so all sell the same ticket"
    )


class GeventLocked(GreenletVariant):
    name = "gevent-locked"
    summary = "greenlets after monkey.patch_all(); a gevent Semaphore across read, sleep, write"
    safe = True
    host = staticmethod(host_locked)
    grab = staticmethod(grab_locked)
    why = (
        "the semaphore is held across the sleep, so a greenlet that yields mid-purchase keeps "
        "every other greenlet waiting at acquire until its write has landed"
    )


#: Both variants, for the registry.
GREENLET_VARIANTS: tuple[Variant, ...] = (GeventNaive(), GeventLocked())
