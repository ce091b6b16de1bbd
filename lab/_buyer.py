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

import dataclasses
import gc
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier, Event, Semaphore
from typing import Any

from lab.model import BuyerEvent, EventKind
from lab.store import Store

__all__ = ["Buyer", "BuyerSpec", "decode", "encode"]

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
        store: Store,
        sink: Connection,
        lockstep: Barrier | None = None,
    ) -> None:
        self.index = spec.index
        self.name = spec.name
        self.store = store
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
        self.store = Store(store.path, step=self.step)

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
            where = f"{name}, holding the lock" if self.holding else name
            self._send("crash", None, where)
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


Program = Callable[..., None]


def _one_buyer(program: Program, args: tuple[Any, ...], me: Buyer) -> None:
    if me.arrival_s > 0:
        time.sleep(me.arrival_s)
    try:
        program(me, *args)
    except Exception as exc:
        # A torn read, a dead seller, a refused connection: the buyer's error, not the lab's.
        me.failed(exc)
    finally:
        me._send("done")
        me.flush()


def buyer_main(  # noqa: PLR0917 - a Process target receives its args positionally
    program: Program,
    seats: list[tuple[BuyerSpec, tuple[Any, ...]]],
    store: Store,
    sink: Connection,
    ready: Semaphore,
    gun: Event,
    lockstep: Barrier | None,
    gun_timeout: float,
) -> None:
    """Entry point of every buyer process: report ready, wait for the gun, run the program.

    A process usually hosts one buyer (``seats`` has one entry), as in the
    notes. Variants whose buyers only talk over a socket may seat many buyers
    in one process, each on its own thread, so 10,000 buyers need not be
    10,000 processes.
    """
    # The runner forks with SIGINT/SIGTERM held back; take them again here.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    # Ctrl-C reaches the whole process group; the runner handles it and reaps us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The CLI turns SIGTERM into an interrupt for itself; a buyer just dies when reaped.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # A buyer lives milliseconds; a collection would only copy the parent's pages.
    gc.disable()
    if len(seats) > 1:
        # Killing a process would kill every buyer seated in it: crash only solo buyers.
        seats = [(dataclasses.replace(spec, crash_at=None), args) for spec, args in seats]
    buyers = [(Buyer(spec, store, sink, lockstep), args) for spec, args in seats]
    for _ in buyers:
        ready.release()
    if not gun.wait(gun_timeout):
        return  # the runner gave up (or died): leave quietly rather than linger
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


def to_event(kind: str, buyer: int, t: float, count: int | None, detail: str) -> BuyerEvent:
    k: EventKind = kind  # type: ignore[assignment]
    return BuyerEvent(buyer=buyer, kind=k, t=t, count=count, detail=detail)
