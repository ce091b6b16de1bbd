"""queue: one seller process owns data.json; buyers ask it through a queue.

The fix it applies: only one process ever reads or writes the file, and it
handles one request at a time, so a read-check-write can never interleave with
another. This is the notes' next lesson, inter-process communication
(进程间通信) through a queue to a single owner, applied to the ticket grab::

    buyer 0 ──┐                                    ┌───────────────────────┐
    buyer 1 ──┼─ requests.put((i, "buy")) ───────► │ seller (one process)  │
      ...     │   RequestQueue (one pipe, no lock) │  read ticket_num      │
    buyer N ──┘                                    │  if > 0: write n - 1  │──► data.json
       ▲                                           │  reply ("bought", n)  │
       └──────── replies[i].recv() ◄── Pipe ─────  └───────────────────────┘

* A buyer: ``search`` = ask "search" and report the count; ``buy`` = spend its
  network latency *first* (the request is still travelling), then ask "buy"
  and report the seller's answer. The latency is the buyer's, outside the
  seller, so the seller is never the bottleneck of a slow network.
* The seller: takes requests in arrival order; for "buy" it checks the count
  and writes the new one (atomically) before it looks at the next request. As
  data.json's only owner it reads the file once and keeps the count in memory.
* Each buyer gets its answer on its own one-way ``Pipe``: the seller answers
  the right buyer without any shared reply channel to lock.

Why not ``multiprocessing.Queue`` itself: a ``Queue`` is a pipe plus a lock
plus a feeder thread. The feeder writes while holding the lock, and releases
it a moment after the seller may already have answered. ``--crash`` kills a
buyer right after an answer, so now and then it killed one whose feeder still
held the lock: every other buyer's request then waited forever. The requests
here go through the pipe underneath, without the lock: each request is one
write of a few dozen bytes, and the kernel makes a pipe write under
``PIPE_BUF`` (4096) bytes atomic, so many buyers can share it, and a killed
buyer has either sent a whole request or nothing.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Any

from lab.buyer import Buyer, child_signals, die_with_parent, signals_deferred
from lab.core.errors import LabError, UsageError
from lab.core.model import Scenario
from lab.net.server import fd_budget
from lab.stores.jsonfile import Store
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = ["Queued", "SellerLine", "buy", "run", "search", "seller"]

Request = tuple[int, str]
Reply = tuple[str, Any]


class RequestQueue:
    """Many buyers put, one seller gets: a ``Queue`` without the lock (see the module doc)."""

    def __init__(self, mp: Any) -> None:
        self._reader, self._writer = mp.Pipe(duplex=False)

    def put(self, request: Request) -> None:
        self._writer.send(request)  # one atomic write: no lock to share, none to leave held

    def get(self, timeout: float) -> Request:
        if not self._reader.poll(timeout):
            raise queue.Empty
        request: Request = self._reader.recv()
        return request

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


#: How often an idle seller checks that the runner is still alive.
_IDLE_POLL_S = 0.2


def seller(
    store: Store,
    requests: RequestQueue,
    replies: list[Connection],
    stop: Event,
    runner: int | None = None,
) -> None:
    """The single owner of data.json: answer requests one at a time until told to stop.

    Killed by the kernel when the runner dies (where the platform can), so it
    writes nothing after; elsewhere it notices when idle.
    """
    die_with_parent(runner)
    child_signals()  # the runner handles Ctrl-C and stops us; SIGTERM just ends us
    runner = os.getppid() if runner is None else runner
    # The seller is data.json's only owner, so the count it last wrote is the
    # count in the file: it reads the file once and keeps the count in memory.
    # Every sale is still written through, atomically, before the reply.
    count: int | None = None
    while True:
        try:
            request = requests.get(timeout=_IDLE_POLL_S)
        except queue.Empty:
            if stop.is_set() or os.getppid() != runner:
                return  # the run is over, or the runner died: do not linger
            continue
        buyer, op = request
        reply: Reply
        try:
            if count is None:
                count = store.read()
            if op == "search":
                reply = ("count", count)
            elif op == "buy" and count > 0:
                store.write_atomic(count - 1)
                reply = ("bought", count)
                count -= 1
            elif op == "buy":
                reply = ("sold_out", count)
            else:
                reply = ("error", f"unknown request {op!r}")
        except (LabError, OSError) as exc:
            reply = ("error", str(exc))
        replies[buyer].send(reply)


@dataclass(frozen=True)
class SellerLine:
    """One buyer's line to the seller: the shared request queue and its own reply pipe."""

    requests: RequestQueue
    #: this buyer's own one-way pipe: the seller answers here and nowhere else
    reply: Connection
    #: the longest one answer may take (the seller may be serving everyone else first)
    timeout: float

    def ask(self, me: Buyer, op: str) -> Reply:
        """Send one request and wait (bounded) for the seller's answer."""
        self.requests.put((me.index, op))
        if not self.reply.poll(self.timeout):
            raise TimeoutError(f"the seller did not answer {op!r} within {self.timeout:g} s")
        kind, value = self.reply.recv()
        if kind == "error":
            raise RuntimeError(f"the seller refused: {value}")
        return kind, value


def search(me: Buyer, seller: SellerLine) -> None:
    """查票, by asking the seller."""
    _, count = seller.ask(me, "search")
    me.searched(count)


def buy(me: Buyer, seller: SellerLine) -> None:
    """买票: wait out the network, then let the seller read-check-write for us."""
    me.network_latency()  # the request is in flight; the seller is busy with others meanwhile
    kind, count = seller.ask(me, "buy")
    me.read(count)  # the count the seller read for us, with nobody in between
    if kind == "bought":
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def run(me: Buyer, seller: SellerLine) -> None:
    """The notes' ``run(name)``, talking to the seller instead of the file."""
    search(me, seller)
    buy(me, seller)


class Queued(VariantBase):
    name = "queue"
    #: ``lab explore`` gates buyers at their step points, but here the read and
    #: the write both happen inside the seller during one request: the step it
    #: would label ``read`` already contains the write. Nothing to interleave.
    explorable = False
    summary = "one seller process owns data.json; buyers send it requests through a queue"
    locks: tuple[str, ...] = ()
    safe = True
    why = (
        "only the seller touches data.json and it finishes each read-check-write before "
        "taking the next request, so there is nothing to interleave"
    )

    def check(self, scenario: Scenario) -> None:
        """Refuse a run this process cannot open enough pipes for, before anything exists."""
        # Two descriptors per buyer (its reply pipe), inherited by every buyer.
        budget = fd_budget()
        if 2 * scenario.buyers + 64 > budget:
            raise UsageError(
                f"--buyers: the queue variant needs two file descriptors per buyer; "
                f"this process may open {budget} (raise `ulimit -n`)"
            )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        self.check(env.scenario)
        requests = RequestQueue(env.mp)
        stop = env.mp.Event()  # the seller checks it whenever it is idle
        pipes = [env.mp.Pipe(duplex=False) for _ in range(env.buyers)]
        runner = None if env.mp.get_start_method() == "forkserver" else os.getpid()
        owner = env.mp.Process(
            target=seller,
            args=(env.store, requests, [send for _, send in pipes], stop, runner),
            name="lab-seller",
            daemon=True,
        )
        # Started with SIGINT/SIGTERM held back: the seller installs its own
        # handling before it can be interrupted (no traceback from a group Ctrl-C).
        with signals_deferred():
            owner.start()
        try:
            lines = [SellerLine(requests, recv, env.timeout) for recv, _ in pipes]
            yield Stage(program=run, kit=lines[0], per_buyer=lines)
        finally:
            try:
                stop.set()
                owner.join(timeout=5)
            finally:
                if owner.is_alive():
                    owner.kill()
                    owner.join(timeout=5)
                owner.close()
                requests.close()
                for recv, send in pipes:
                    recv.close()
                    send.close()
