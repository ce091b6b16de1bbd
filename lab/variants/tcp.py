"""server-naive and server: the ticket grab over TCP, one server owning data.json.

The notes' next chapter is socket programming; a course then asks "how does
one server serve many clients?". Here every buyer is the notes' client
(``connect``, ``send``, ``recv``) and :mod:`lab.net.server` is the notes' server
with a thread per connection::

    buyer processes (K buyers each, on threads)        server process (lab.net.server)
    ───────────────────────────────────────────        ──────────────────────────────────────
    Client.connect((host, port)) ─────────────────────► accept -> a thread for this buyer
    {"op":"search"}  ─────────────────────────────────► read data.json
        me.searched(count) ◄──────────────────────────── {"count": n}
    {"op":"buy","latency":me.latency_s} ──────────────► [server: take the purchase lock]
                                                        count = read data.json
                                                        wait latency  <- the race window
                                                        if count > 0: write count - 1
        me.read(count); me.bought(count)  ◄───────────── {"result":"bought","count":n}
    stage exit: {"op":"stats"} ───────────────────────► the server's ledger -> Result.ledger

* ``server-naive`` (races): the handler is the notes' ``buy`` with no lock.
  Two connections are two threads; both read 1, both wait, both write 0, both
  are told 买票成功. Moving the file behind a server fixes nothing by itself.
* ``server`` (holds): the same handler takes a lock before its read and
  releases it after its (atomic) write, so purchases happen one at a time.
  lab/net/server.py explains why a lock and not a single-threaded event loop.

Where the latency lives: on the server, between its read and its write, as
in the notes' ``buy``, because that is where the race window is. Each buyer
sends its own seeded draw (``me.latency_s``) with its ``buy``, so ``--seed``
repeats a run; the server waits it out (refusing anything above its
``--max-latency``), and draws its own only for clients that send none. In
``server`` mode the wait is inside the lock, so purchases take the sum of the
latencies, exactly like ``locked``.

Determinism: with ``--lockstep`` the server is started with a barrier for all
N purchases between read and write (lab.net.server, ``lockstep``), so
``server-naive`` oversells every time: each handler has read the count before
any writes. The runner's own lockstep barrier is not used, because the race
window is in the server, not in the buyer.

Scale: buyers here share nothing but a socket, so a large run seats many
buyers per process, each on its own thread (:func:`buyers_per_process`):
10,000 buyers are 16 processes, not 10,000. At ``--max-connections`` the
server stops accepting and the rest wait in the listen backlog.

Without ``--connect`` the run starts its own server in a child process on
127.0.0.1, a free port, and a random token (so no other local program can buy
from it), and stops and reaps it at the end. With ``--connect HOST:PORT`` it
drives an external ``lab serve`` instead (``--token`` / ``$LAB_TOKEN`` if it
needs one); the ledger then counts everything the server did during the run,
including other clients' requests.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from typing import Any

from lab.buyer import Buyer, child_signals, die_with_parent, signals_deferred
from lab.core.errors import LabError, UsageError
from lab.core.i18n import N_
from lab.core.model import Scenario
from lab.net.server import Mode, ServerConfig, TicketServer, fd_budget, lockstep_wait_s
from lab.net.wire import Client, format_address, parse_address
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = [
    "ConnectionPool",
    "Server",
    "ServerKit",
    "ServerNaive",
    "buy",
    "buyers_per_process",
    "connections_per_process",
    "run",
    "search",
    "server_process",
]

#: Up to this many buyers, one process each, as in the notes.
ONE_PER_PROCESS_UP_TO = 64
#: Above it, the buyers are spread over this many processes (threads inside each).
PROCESSES_AT_SCALE = 16
#: Connections the run's own server serves at once (the rest wait in its backlog).
CONNECTIONS_CAP = 1024
#: How long the server process may take to bind and report its port.
_START_TIMEOUT_S = 30.0
#: How long the server gets to answer or refuse in-flight requests when stopped.
_STOP_TIMEOUT_S = 10.0
#: Bound on one stats request at the start and end of a run.
_STATS_TIMEOUT_S = 30.0


def buyers_per_process(buyers: int) -> int:
    """K: how many buyers share one process. 1 for classroom sizes; 16 processes at scale."""
    if buyers <= ONE_PER_PROCESS_UP_TO:
        return 1
    return math.ceil(buyers / PROCESSES_AT_SCALE)


# -- the buyer: the notes' client --------------------------------------------------------


@dataclass(frozen=True)
class ServerKit:
    """What every buyer of a server run is handed: where the server is, and how long to wait."""

    host: str
    port: int
    token: str | None
    timeout: float
    #: large runs only: this buyer process's connection pool (None: connect at once)
    pool: ConnectionPool | None = None

    def slot(self) -> AbstractContextManager[None]:
        """Wait for a connection slot in this process (large runs), or go straight on."""
        return contextlib.nullcontext() if self.pool is None else self.pool.slot(self.timeout)

    def connect(self) -> Client:
        """The notes' ``client.connect((host, port))``."""
        return Client(self.host, self.port, token=self.token, timeout=self.timeout)


class ConnectionPool:
    """At most ``max_open`` of one buyer process's buyers connected at once.

    Like any client's connection pool: the buyers beyond the cap wait here, not
    in the server's full listen backlog, where the kernel drops their SYNs and
    TCP retries only after 1, 3, 7, 15 s. The stage makes one; every buyer
    process gets its own copy (inherited at the fork, or rebuilt from
    ``max_open`` when unpickled under spawn), which the buyer threads seated in
    that process share.
    """

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self._slots = threading.BoundedSemaphore(max_open)

    def __reduce__(self) -> tuple[type[ConnectionPool], tuple[int]]:
        # A semaphore cannot be pickled, and each process needs a fresh one anyway.
        return ConnectionPool, (self.max_open,)

    @contextmanager
    def slot(self, timeout: float) -> Iterator[None]:
        """Wait (bounded) for one of this process's ``max_open`` connection slots."""
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"no free connection slot in this process within {timeout:g} s")
        try:
            yield
        finally:
            self._slots.release()


def search(me: Buyer, client: Client) -> None:
    """查票, by asking the server."""
    me.searched(client.search())


def buy(me: Buyer, client: Client) -> None:
    """买票: the server reads, waits this buyer's latency, checks and writes; we report it.

    ``me.read`` is the count the server read for this purchase. It is reported
    when the reply arrives, i.e. after the server's write.
    """
    me.flush()  # report the search before the server spends our latency
    result, count = client.buy(latency=me.latency_s, buyer=me.name)
    me.read(count)
    if result == "bought":
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def run(me: Buyer, server: ServerKit) -> None:
    """The notes' ``run(name)``, as a socket client: connect, search, buy, close."""
    with server.slot(), server.connect() as c:
        search(me, c)
        buy(me, c)


def connections_per_process(buyers: int, lockstep: bool) -> int | None:
    """``max_open`` for a run: None (no cap) unless buyers outnumber what the server can queue.

    The server serves ``CONNECTIONS_CAP`` connections and queues as many again
    in its backlog; the buyer processes share that budget. Lockstep needs every
    purchase inside the server at once, so it is never capped.
    """
    if lockstep or buyers <= CONNECTIONS_CAP:
        return None
    processes = math.ceil(buyers / buyers_per_process(buyers))
    return max(1, (2 * CONNECTIONS_CAP) // processes)


# -- the run's own server -------------------------------------------------------------------


def server_process(config: ServerConfig, control: Connection, runner: int | None = None) -> None:
    """Entry point of the server child: report the port, serve until told to stop.

    Stops when the runner sends ``"stop"``, closes its end of the pipe, or dies
    (killed by the kernel with it, where the platform can: it writes nothing after).
    """
    die_with_parent(runner)
    child_signals()  # the runner handles Ctrl-C and stops us; SIGTERM just ends us
    runner = os.getppid() if runner is None else runner
    config = replace(config, max_connections=min(config.max_connections, fd_budget()))
    server = TicketServer(config)
    try:
        host, port = server.start()
    except (LabError, OSError) as exc:
        control.send(("error", str(exc)))
        return
    try:
        control.send(("listening", host, port))
        while True:
            if control.poll(0.2):
                with contextlib.suppress(EOFError, OSError):
                    if control.recv() != "stop":
                        continue
                return
            if os.getppid() != runner:
                return  # the runner died: do not linger as an orphan
    finally:
        server.stop(_STOP_TIMEOUT_S)
        control.close()


@contextmanager
def _own_server(env: RunEnv, mode: Mode, token: str) -> Iterator[tuple[str, int]]:
    """Start a server for this run in a child process; always reap it."""
    n = env.buyers
    lockstep = n if env.scenario.lockstep else 0
    config = ServerConfig(
        store=env.store,
        mode=mode,
        host="127.0.0.1",
        port=0,
        latency=env.scenario.latency,
        max_latency=env.scenario.latency.high,
        token=token,
        # Lockstep needs every purchase in the server at once; otherwise a cap
        # keeps the thread count sane and the backlog holds the rest.
        max_connections=max(16, n if lockstep else min(n, CONNECTIONS_CAP)),
        idle_timeout=env.timeout,
        lockstep=lockstep,
        # The last buyer may arrive (n - 1) x arrival after the gun: the barrier must wait for it.
        lockstep_timeout=lockstep_wait_s(n) + n * env.scenario.arrival,
    )
    ours, theirs = env.mp.Pipe()
    runner = None if env.mp.get_start_method() == "forkserver" else os.getpid()
    proc = env.mp.Process(
        target=server_process, args=(config, theirs, runner), name="lab-server", daemon=True
    )
    # Started with SIGINT/SIGTERM held back: the child installs its own handling
    # before it can be interrupted (no traceback from a group-wide Ctrl-C).
    with signals_deferred():
        proc.start()
    theirs.close()  # our copy: only the child's end must keep the pipe open
    try:
        if not ours.poll(_START_TIMEOUT_S):
            raise LabError(f"the ticket server did not start within {_START_TIMEOUT_S:g} s")
        try:
            status = ours.recv()
        except EOFError:
            raise LabError("the ticket server exited before it was listening") from None
        if status[0] != "listening":
            raise LabError(f"the ticket server did not start: {status[1]}")
        yield status[1], status[2]
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        proc.join(_STOP_TIMEOUT_S + 5.0)
        if proc.is_alive():
            proc.terminate()
            proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)
        proc.close()
        ours.close()


#: Stats counters whose change over the run is the run's share.
_DELTAS = ("requests", "searches", "sold", "sold_out", "errors", "unauthorized", "connections")


def _ledger(
    before: dict[str, Any], after: dict[str, Any], server: str, external: bool
) -> dict[str, Any]:
    """The server's account of this run: counters over the run, and the file before and after."""
    ledger: dict[str, Any] = {
        "server": server,
        "external": external,
        "mode": after.get("mode"),
        # The server's own data file (its stats' "data"): the run has no local one.
        "data": after.get("data"),
        "tickets_before": before.get("remaining"),
        "remaining": after.get("remaining"),
        "problem": after.get("problem"),
    }
    for key in _DELTAS:
        ledger[key] = int(after.get(key, 0)) - int(before.get(key, 0))
    # The closing stats request counted itself (one connection, one request): not the run's.
    ledger["connections"] -= 1
    ledger["requests"] -= 1
    start, end = ledger["tickets_before"], ledger["remaining"]
    # The server's own view of the race: confirmed sales the file does not show.
    ledger["lost_updates"] = (
        ledger["sold"] - (start - end) if isinstance(start, int) and isinstance(end, int) else None
    )
    ledger["peak_connections"] = after.get("peak_connections")
    ledger["lockstep_broken"] = after.get("lockstep_broken")
    return ledger


def _stats(host: str, port: int, token: str | None, timeout: float) -> dict[str, Any]:
    with Client(host, port, token=token, timeout=timeout) as client:
        return client.stats()


class _ServerVariant(VariantBase):
    """Shared stage() of both server variants; they differ in the server's mode only."""

    mode: Mode = "safe"
    locks: tuple[str, ...] = ()
    #: ``lab explore`` pauses buyers at their step points, but this race is
    #: between the server's handler threads, which it cannot pause: it would
    #: see each purchase complete alone and wrongly call server-naive safe.
    explorable = False

    #: buyers share nothing but a socket, so many sit in one process (the runner's
    #: one-process-per-buyer limit does not apply)
    many_buyers_per_process = True

    def check(self, scenario: Scenario) -> None:
        """Refuse a bad ``--connect`` before the runner creates anything."""
        if scenario.connect is not None:
            try:
                parse_address(scenario.connect)
            except ValueError as exc:
                raise UsageError(f"--connect: {exc}") from None

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        external = env.scenario.connect is not None
        with contextlib.ExitStack() as stack:
            if env.scenario.connect is not None:
                try:
                    host, port = parse_address(env.scenario.connect)
                except ValueError as exc:
                    raise UsageError(f"--connect: {exc}") from None
                token = env.scenario.token
            else:
                token = env.scenario.token or secrets.token_urlsafe(16)
                host, port = stack.enter_context(_own_server(env, self.mode, token))
            timeout = min(env.timeout, _STATS_TIMEOUT_S)
            # Also the reachability check with --connect: one clear error, not N buyer errors.
            before = _stats(host, port, token, timeout)
            limit = before.get("max_latency")
            if isinstance(limit, int | float) and env.scenario.latency.high > limit:
                raise UsageError(
                    f"--latency: {env.scenario.latency} is above the server's "
                    f"--max-latency ({limit:g} s); every purchase would be refused"
                )
            max_open = connections_per_process(env.buyers, env.scenario.lockstep)
            kit = ServerKit(
                host,
                port,
                token,
                env.timeout,
                pool=None if max_open is None else ConnectionPool(max_open),
            )
            stage = Stage(program=run, kit=kit, buyers_per_process=buyers_per_process(env.buyers))
            yield stage
            address = format_address(host, port)
            try:
                after = _stats(host, port, token, timeout)
            except LabError as exc:
                stage.extra["ledger"] = {"server": address, "external": external, "error": str(exc)}
            else:
                stage.extra["ledger"] = _ledger(before, after, address, external)


class ServerNaive(_ServerVariant):
    """A thread-per-connection TCP server whose handler does the notes' buy with no lock."""

    name = "server-naive"
    fixed_by: str | None = "server"
    fix = N_("a lock in the server around each purchase's read, check and write")
    mode: Mode = "naive"
    summary = "buyers ask a TCP server (a thread per connection) that reads, waits, writes unlocked"
    safe = False
    why = (
        "each connection's thread reads the count, waits, then writes count-1; two "
        "connections that read before either wrote sell the same ticket, server or not"
    )


class Server(_ServerVariant):
    """The same TCP server with a lock held around each purchase's read-check-write."""

    name = "server"
    mode: Mode = "safe"
    summary = "buyers ask a TCP server that holds a lock from each purchase's read to its write"
    safe = True
    why = (
        "the server takes its purchase lock before reading the count and releases it after "
        "the atomic write, so no two purchases ever decide on the same count"
    )
