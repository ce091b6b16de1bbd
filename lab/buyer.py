"""The buyer's side of a run: what a variant's program can call besides the store.

A variant's program is the notes' ``run(name)``: it receives a :class:`Buyer`
(``me``) and reads like the notes::

    count = me.store.read()       # 再次确认票
    me.read(count)                # report what it read
    me.network_latency()          # 模拟网络延迟: the race window
    ...

Reports travel to the runner as small messages on one shared pipe. A pipe
write of fewer than ``PIPE_BUF`` (4096) bytes is atomic, so many buyers can
share the pipe without a lock, and a buyer killed mid-report can never leave
half a message or a lock held behind it.

A buyer batches its reports and sends them wherever it is about to wait (for
a lock, its latency, the seller or server) and when it finishes. The runner
therefore hears of every step before the buyer can sit on it, while a
1,000-buyer run at latency 0 costs one or two pipe writes per buyer instead of
six: every write wakes the runner, and on two cores those wake-ups were
stealing the CPU from the lock holder.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier, Event, Semaphore
from typing import Any, TypeAlias, TypeVar

from lab.core.interrupts import held
from lab.core.model import BuyerEvent, EventKind
from lab.stores.protocol import TicketStore

__all__ = [
    "Bare",
    "BareProgram",
    "Buyer",
    "BuyerSpec",
    "Host",
    "Kit",
    "Program",
    "Seat",
    "child_signals",
    "decode",
    "die_with_parent",
    "encode",
    "signals_deferred",
]

#: SIGINT and SIGTERM: what Ctrl-C and ``kill`` send, to one process or a whole group.
INTERRUPTS = frozenset({signal.SIGINT, signal.SIGTERM})
#: ``prctl(PR_SET_PDEATHSIG, sig)`` (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: Without PR_SET_PDEATHSIG, a child waiting for its parent checks on it this often.
PARENT_POLL_S = 0.5


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (where the platform can).

    The runner forks every child inside this block, so an interrupt cannot land
    between forking a child and recording it, and the child starts with both
    signals blocked: it cannot be interrupted before :func:`child_signals` has
    installed its own handling (an interrupt sent to the whole process group
    would otherwise raise KeyboardInterrupt in the child, through the handler
    it inherited, and multiprocessing would print the child's traceback).
    """
    can_mask = (
        hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    )
    if can_mask:
        signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    try:
        # The mask holds back a signal sent to this thread; ``held`` the one the
        # kernel gives another thread (rich's refresh thread) and Python then
        # runs here anyway. Leaving the block raises whichever was held.
        with held:
            yield
    finally:
        if can_mask:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


def child_signals() -> None:
    """A child's signal handling: ignore Ctrl-C, die quietly on SIGTERM; then unblock both.

    The order matters. The child was forked with both signals blocked (see
    :func:`signals_deferred`) and may already have one pending: one sent to the
    whole group while the runner was forking. Unblocking first would deliver it
    to the handler inherited from the parent (Python's KeyboardInterrupt, or the
    CLI's SIGTERM handler), which raises inside the child and prints a
    traceback. Installed first, SIG_IGN discards a pending SIGINT and SIG_DFL
    makes a pending SIGTERM end the child without a word.
    """
    # Ctrl-C reaches the whole process group; the runner handles it and reaps us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The CLI turns SIGTERM into an interrupt for itself; a child just dies when reaped.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, or None off Linux. Resolved in the parent (see
    :func:`prepare_parent_death`), so a fresh child does not pay for the lookup."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return fn


def prepare_parent_death() -> None:
    """Resolve ``prctl`` before forking (cached), so every child inherits it."""
    _prctl()


def die_with_parent(parent_pid: int | None) -> bool:
    """Make the kernel SIGKILL this process when its parent dies; True if it will.

    Called first thing in every child the runner starts (buyers, the seller,
    the run's server). A child killed this way runs nothing more, so it can
    write nothing after the runner is gone. The parent may already have died
    between the fork and the ``prctl`` (then no signal will come): if the
    parent is no longer ``parent_pid``, the child leaves at once, without
    running any of its own code. ``parent_pid`` None skips that check (a
    forkserver child's parent is the fork server, not the runner).
    """
    prctl = _prctl()
    armed = False
    if prctl is not None:
        armed = prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(0)  # orphaned already: exit without cleanup, flushing or writing
    return armed


def parent_alive(parent_pid: int | None) -> bool:
    """Whether the process that started this one still is (by pid; None: cannot tell)."""
    return parent_pid is None or os.getppid() == parent_pid


#: One report: kind, buyer index, time (``time.monotonic()``), count, detail.
Report = tuple[str, int, float, int | None, str]

#: A detail is cut to this many characters (a learner's printed line, an error)...
_MAX_DETAIL = 600
#: ...and a batch is sent before it could grow past this many bytes, so that
#: every write stays below PIPE_BUF (4096) and is atomic. A character costs at
#: most 6 bytes once JSON-escaped (``\u001b``), a report's other fields under 100.
_BATCH_BYTES = 3800


def encode(reports: list[Report]) -> bytes:
    """One message holding a batch of reports, in the order they happened."""
    # ASCII-escaped (the json module's shared default encoder): no encoder is built per call.
    return json.dumps([[k, b, t, c, d[:_MAX_DETAIL]] for k, b, t, c, d in reports]).encode()


def decode(raw: bytes) -> list[Report]:
    return [(k, b, t, c, d) for k, b, t, c, d in json.loads(raw)]


@dataclass(frozen=True)
class BuyerSpec:
    """What the runner decides for one buyer before it starts."""

    index: int
    name: str
    #: this buyer's simulated network latency, drawn by the runner from the seed
    latency_s: float
    #: how many buyers take part in the run (a lock may tune itself to the crowd)
    buyers: int = 1
    #: how long after the start gun this buyer arrives (``Scenario.arrival``)
    arrival_s: float = 0.0
    #: ``--crash``: the step at which this buyer is killed with SIGKILL, if any
    crash_at: str | None = None
    #: the run's ``--seed`` (for a buyer program with randomness of its own)
    seed: int = 0


class Buyer:
    """One buyer process's handle: its name, the store, its latency, and its reports."""

    def __init__(
        self,
        spec: BuyerSpec,
        store: Any,
        sink: Connection,
        lockstep: Barrier | None = None,
    ) -> None:
        self.index = spec.index
        self.name = spec.name
        #: The run's store as this buyer's program uses it: a
        #: :class:`~lab.stores.jsonfile.Store` for the file variants, the engine's
        #: store (its own connection, opened after the fork) for ``sqlite-*``,
        #: ``pg-*`` and ``redis-*``. Each program knows which backend it runs on.
        self.store: Any = store
        self.latency_s = spec.latency_s
        self.buyers = spec.buyers
        self.arrival_s = spec.arrival_s
        self.seed = spec.seed
        self._sink = sink
        #: reports not yet sent (see ``flush``), and a bound on their encoded size
        self._pending: list[Report] = []
        self._pending_bytes = 0
        self._lockstep = lockstep
        self._crash_at = spec.crash_at
        #: True while this buyer holds its variant's lock (set by the lock itself)
        self.holding = False
        #: ``lab explore`` / ``replay`` / ``step`` install a gate here: the buyer
        #: pauses at each step until the scheduler lets it take the next one
        self.on_step: Callable[[str], None] | None = None
        # The store calls back at its own step ("mid-write": between truncate
        # and write, or between the temp file and the replace).
        self.store = store.for_buyer(self.step)

    # -- steps: where a purchase can be interrupted ------------------------------

    def step(self, name: str) -> None:
        """A point in the purchase where ``--crash`` may kill this buyer.

        Steps: ``search``, ``want-lock`` (about to take the lock),
        ``acquired``, ``read``, ``window`` (after the latency), ``mid-write``
        or ``torn`` (inside the store's atomic or in-place write) and
        ``bought`` (written, not yet reported). The buyer first reports where it dies,
        then SIGKILLs itself: nothing after that runs, exactly as if the
        machine lost it.
        """
        if self.on_step is not None:
            self.flush()  # the scheduler labels each step by the reports it produced
            self.on_step(name)
        if self._crash_at == name or (self._crash_at == "mid-write" and name == "torn"):
            # The step, and (as the count) whether it dies inside the critical section.
            self._send("crash", 1 if self.holding else 0, name)
            if self.store.temp_in_flight is not None:
                # Its exact name, so the runner removes this file and nothing else.
                self._send("temp", None, self.store.temp_in_flight)
            self.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def wants_lock(self) -> None:
        """About to take the variant's lock (a scheduling point for ``lab explore``)."""
        self.flush()  # the wait for the lock may be long
        self.step("want-lock")

    def acquired(self) -> None:
        """The variant's lock is now held by this buyer."""
        self.holding = True
        self._send("acquired")
        self.step("acquired")

    def released(self) -> None:
        """The variant's lock is free again."""
        self.holding = False
        self._send("released")

    # -- reports ---------------------------------------------------------------

    def _send(self, kind: str, count: int | None = None, detail: str = "") -> None:
        size = 100 + 6 * min(len(detail), _MAX_DETAIL)  # an upper bound on its encoded size
        if self._pending_bytes + size > _BATCH_BYTES:
            self.flush()
        self._pending.append((kind, self.index, time.monotonic(), count, detail))
        self._pending_bytes += size

    def flush(self) -> None:
        """Send the reports batched so far. Call it before anything that may wait."""
        if self._pending:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
            self._sink.send_bytes(encode(batch))

    def searched(self, count: int) -> None:
        """查票: report the ``ticket_num`` seen when searching."""
        self._send("search", count)
        self.step("search")

    def read(self, count: int) -> None:
        """再次确认票: report the ``ticket_num`` read right before deciding."""
        self._send("read", count)
        self.step("read")

    def bought(self, ticket: int | None) -> None:
        """买票成功: report a sale of ticket number ``ticket`` (the count decremented from)."""
        self.step("bought")  # written but not yet reported: the sale's fate is unknown
        self._send("bought", ticket)

    def sold_out(self, count: int | None) -> None:
        """很倒霉 没有抢到票: report that the count was 0 when it decided."""
        self._send("sold_out", count)

    def said(self, line: str) -> None:
        """A line the buyer's own program printed (``custom``)."""
        self._send("said", None, line)
        self.flush()  # shown as it is printed: the learner's program may sleep next

    def retried(self, reason: str) -> None:
        """An attempt was aborted (a serialization failure, a lost compare-and-set) and
        is tried again: the price of optimistic concurrency, counted per buyer."""
        self._send("retried", None, reason)

    def gave_up(self, reason: str) -> None:
        """An optimistic loser stops without buying, whether or not tickets are left
        (it undersells): neither a sale nor "sold out"."""
        self._send("gave_up", None, reason)

    def failed(self, exc: BaseException) -> None:
        self._send("error", None, f"{type(exc).__name__}: {exc}")

    # -- the race window ---------------------------------------------------------

    def network_latency(self) -> None:
        """模拟网络延迟: wait this buyer's latency, the gap between its read and its write.

        In lockstep mode every buyer first waits here until all buyers have
        arrived, so every read happens before any write and an unprotected
        read-check-write races in every run. A buyer that waits here while
        holding a lock can never be joined by the others; the barrier then times
        out, breaks, and the run goes on (reported as ``lockstep_broken``).
        """
        if self._lockstep is None and self.latency_s <= 0:
            self.step("window")  # no wait: nothing to flush for
            return
        self.flush()
        if self._lockstep is not None:
            try:
                self._lockstep.wait()
            except threading.BrokenBarrierError:
                self._send("lockstep_broken")
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        self.step("window")


#: A variant's kit: one typed, picklable value (a frozen dataclass) holding
#: everything its buyers share: a lock, a line to the seller, a server's address.
Kit = TypeVar("Kit")

#: A buyer program: the notes' ``run(name)``, given its buyer and its variant's
#: kit, e.g. ``locked.run(me, mutex)``. A module-level function, so that it also
#: crosses a ``spawn`` start.
Program: TypeAlias = Callable[[Buyer, Kit], None]
#: A program that needs nothing but its buyer: the notes' program as written (``naive.run(me)``).
BareProgram: TypeAlias = Callable[[Buyer], None]


@dataclass(frozen=True)
class Bare:
    """A program that takes only its buyer (``naive.run(me)``), as a ``Program[None]``.

    A frozen dataclass around a module-level function, so it pickles (``spawn``).
    """

    program: BareProgram

    def __call__(self, me: Buyer, kit: None) -> None:
        self.program(me)


#: One buyer's seat in a buyer process: its spec, and the kit its program gets.
Seat: TypeAlias = tuple[BuyerSpec, Any]
#: Runs every buyer seated in one process its own way (a gevent hub, an event
#: loop): handed each buyer with its kit after the gun, it returns when all are
#: done, having reported every buyer's error itself (``me.failed``). Without
#: one, each seat gets a thread of its own.
Host: TypeAlias = Callable[[list[tuple[Buyer, Any]]], None]


def _one_buyer(program: Program[Any], kit: Any, me: Buyer) -> None:
    if me.arrival_s > 0:
        time.sleep(me.arrival_s)
    try:
        program(me, kit)
    except Exception as exc:
        # A torn read, a dead seller, a refused connection: the buyer's error, not the lab's.
        me.failed(exc)
    finally:
        me._send("done")
        me.flush()


def buyer_main(  # noqa: PLR0917 - a Process target receives its args positionally
    program: Program[Any],
    seats: list[Seat],
    store: TicketStore,
    sink: Connection,
    ready: Semaphore,
    gun: Event,
    lockstep: Barrier | None,
    gun_timeout: float,
    parent_pid: int | None = None,
    host: Host | None = None,
) -> None:
    """Entry point of every buyer process: report ready, wait for the gun, run the program.

    A process usually hosts one buyer (``seats`` has one entry), as in the
    notes. Variants whose buyers only talk over a socket may seat many buyers
    in one process, each on its own thread, so 10,000 buyers need not be
    10,000 processes.

    ``parent_pid`` is the runner's pid (None when the buyer's parent is not
    the runner, as under forkserver): a buyer never outlives the runner.
    ``host`` (the stage's) runs all the seats instead of one thread each.
    """
    # First, before anything else runs: die with the runner (SIGKILL from the kernel).
    armed = die_with_parent(parent_pid)
    # The runner forks with SIGINT/SIGTERM held back; install ours, then take them again.
    child_signals()
    # A buyer lives milliseconds; a collection would only copy the parent's pages.
    gc.disable()
    if len(seats) > 1:
        # Killing a process would kill every buyer seated in it: crash only solo buyers.
        seats = [(dataclasses.replace(spec, crash_at=None), args) for spec, args in seats]
    buyers = [(Buyer(spec, store, sink, lockstep), args) for spec, args in seats]
    for _ in buyers:
        ready.release()
    if not _wait_for_gun(gun, gun_timeout, None if armed else parent_pid):
        return  # the runner gave up (or died): leave quietly rather than linger
    if host is not None:
        try:
            host(buyers)
        finally:
            for me, _ in buyers:
                me._send("done")
                me.flush()
        return
    if len(buyers) == 1:
        ((me, args),) = buyers
        _one_buyer(program, args, me)
        return
    threads = [
        threading.Thread(target=_one_buyer, args=(program, args, me), daemon=True)
        for me, args in buyers
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + gun_timeout + sum(me.latency_s + me.arrival_s for me, _ in buyers)
    for thread in threads:
        # Bounded: a buyer stuck past every timeout of its own is reaped by the runner.
        thread.join(max(0.0, deadline - time.monotonic()))


def _wait_for_gun(gun: Event, timeout: float, watch_parent: int | None) -> bool:
    """Wait for the gun; False if it never came, or the runner died meanwhile.

    With the kernel's parent-death signal armed, the runner's death kills this
    process outright, so one wait suffices (``watch_parent`` None). Without it
    (not Linux), the wait is cut into slices and the parent checked between
    them: 1,000 buyers each waking every ``PARENT_POLL_S`` is the price.
    """
    if watch_parent is None:
        return gun.wait(timeout)
    deadline = time.monotonic() + timeout
    while parent_alive(watch_parent):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if gun.wait(min(left, PARENT_POLL_S)):
            return parent_alive(watch_parent)
    return False


def to_event(kind: str, buyer: int, t: float, count: int | None, detail: str) -> BuyerEvent:
    k: EventKind = kind  # type: ignore[assignment]
    return BuyerEvent(buyer=buyer, kind=k, t=t, count=count, detail=detail)
