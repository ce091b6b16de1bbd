"""The TCP ticket server: one process owns data.json, buyers ask it over sockets.

This is the notes' socket server (``server.bind(('127.0.0.1', 8080))``,
``listen``, ``accept``, ``recv``, ``send``) serving the notes' ticket grab.
It answers three requests (docs/protocol.md): ``search`` (查票), ``buy``
(买票) and ``stats`` (its own ledger)::

    buyer ─┐  connect, {"op":"search"}         ┌──────────────────────────────────┐
    buyer ─┼────────────────────────────────►  │ accept thread: one thread per     │
     ...   │  {"op":"buy","latency":0.4}       │ connection, at most               │
    buyer ─┘ ◄──────────────────────────────── │ --max-connections of them         │
              {"ok":true,"outcome":"bought",..} │                                    │
                                               │ handler (mode naive / safe):       │
                                               │   [safe: take the purchase lock]   │
                                               │   count = read data.json           │──► data.json
                                               │   wait the latency (race window)   │
                                               │   if count > 0: write count - 1    │
                                               └──────────────────────────────────┘

Two modes, one handler; the difference is one ``with`` statement:

* ``naive``: the handler does the notes' ``buy`` (read, sleep, check, write)
  with no lock. Every connection has its own thread, so two handlers can read
  the same count while both wait their latency: the file race of the notes,
  moved into the server. A server does not fix a race by being a server.
* ``safe``: the same handler holds the *purchase lock* from its read to its
  write, and writes atomically. No other purchase can read a count that is
  about to change, so no ticket is sold twice; searches and stats take no
  lock, and atomic writes mean they never see a torn file.

Why a lock rather than a single-threaded ``selectors`` event loop: the
simulated latency sits *between* the read and the write, as in the notes. In
an event loop that wait would either stall every client (a blocking sleep) or
need timers plus a queue of pending purchases. A lock keeps the handler
identical to the naive one, so the fix is visible as one line; purchases are
serialized while searches, stats and new connections carry on. The cost is a
thread per connection, which ``--max-connections`` bounds.

Limits, so that bad or hostile input never takes the server down:

* messages over 64 KiB are refused before their body is read (lab.net.wire);
* a connection idle for ``--idle-timeout`` s, or trickling one frame for
  longer than 10 s, is closed;
* at ``--max-connections`` the server stops accepting; new connections wait
  in the kernel's listen backlog until a slot frees, so a flood slows buyers
  down but never refuses or loses a request;
* while every slot is taken and someone waits, a connection open for
  ``--evict-after`` s is hung up at its next pause, so whoever holds the
  slots (idle, trickling or chatty clients) cannot shut a newcomer out;
* nothing a peer sends (any JSON value, number or string, lone surrogates in
  the token included) escapes a handler as a traceback: it is answered
  ``bad_request`` / ``unauthorized`` or hung up on;
* a buy may ask for at most ``--max-latency`` s, so one request cannot hold the
  purchase lock for an hour;
* with ``--token``, a request without the token is refused and disconnected.

Stopping (Ctrl-C, SIGTERM, :meth:`TicketServer.stop`): the server stops
accepting, hangs up idle connections, and wakes every purchase that is waiting
out its latency; those are refused with ``shutting_down`` *before* they write,
so each purchase either completed or changed nothing. In safe mode data.json
is only ever replaced whole, so it is valid whenever the server stops.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import random
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from lab.core.errors import LabError, StoreCorrupted, UsageError
from lab.core.model import Latency
from lab.net.wire import (
    ProtocolError,
    Request,
    check_token,
    format_address,
    parse_request,
    recv_message,
    send_message,
)
from lab.stores.jsonfile import Store

__all__ = [
    "MODES",
    "PURCHASE_LOCKS",
    "WRITES",
    "Mode",
    "ServerConfig",
    "ServerFailed",
    "TicketServer",
    "fd_budget",
    "is_loopback",
    "lockstep_wait_s",
]

Mode = Literal["naive", "safe"]
MODES: tuple[Mode, ...] = ("naive", "safe")

#: Mode -> what a purchase holds from its read to its write. This *is* the fix:
#: the naive server holds nothing. Tests swap ``"safe"`` for a no-op to prove
#: the tally catches the race when the lock is gone.
PURCHASE_LOCKS: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "naive": contextlib.nullcontext,
    "safe": threading.Lock,
}

#: Mode -> how a purchase writes: the notes' truncate-then-dump (a reader can
#: catch the file empty), or a whole-file replace that nobody can see half of.
WRITES: dict[str, Callable[[Store, int], None]] = {
    "naive": Store.write_in_place,
    "safe": Store.write_atomic,
}

#: How often the accept loop looks up from ``select`` to notice a stop.
_POLL_S = 0.1
#: A frame must arrive whole within this many seconds of its first byte.
_FRAME_TIMEOUT_S = 10.0
#: File descriptors kept free for data.json, temp files, logs and the listener.
_FD_RESERVE = 64
#: Default of ``--evict-after``: a full house frees a slot for a newcomer after this long.
DEFAULT_EVICT_AFTER_S = 5.0
#: Longest message text a refusal carries (a refusal quotes the request's fields).
_MAX_REFUSAL_CHARS = 300
#: Connections at which ``lab serve`` stops accepting unless told otherwise.
DEFAULT_MAX_CONNECTIONS = 1024
#: accept() errors that mean "out of something, try again later", not "broken".
_TRANSIENT_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}


def fd_budget() -> int:
    """Connections this process can hold open: its open-file limit minus a reserve.

    Raises the soft limit to the hard one first (allowed without privileges):
    the default soft limit of 1,024 would otherwise cap a server far below
    what the machine can serve.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return max(1, soft - _FD_RESERVE)


@dataclass(frozen=True)
class ServerConfig:
    """Everything a :class:`TicketServer` is told; picklable, so a child process can get it."""

    store: Store
    mode: Mode = "safe"
    host: str = "127.0.0.1"
    #: 0: a free port chosen by the kernel (read it back from ``TicketServer.address``)
    port: int = 0
    #: the latency drawn for a ``buy`` that does not name its own
    latency: Latency = field(default_factory=lambda: Latency(0.0, 0.0))
    #: the longest latency a ``buy`` may ask for (it is waited out inside the lock in safe mode)
    max_latency: float = 3.0
    token: str | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = 60.0
    frame_timeout: float = _FRAME_TIMEOUT_S
    #: while every slot is taken and a connection waits for one: hang up connections
    #: open at least this long, at their next pause (at once if idle, else after the
    #: reply they are working on), so a full house cannot shut a newcomer out
    evict_after: float = DEFAULT_EVICT_AFTER_S
    #: hold the first ``lockstep`` purchases between read and write until all have
    #: read (0: off), so an unprotected purchase races every time, not "usually"
    lockstep: int = 0
    #: how long the lockstep barrier waits for everyone before it breaks
    lockstep_timeout: float = 5.0

    def __post_init__(self) -> None:
        # A token that cannot be compared as UTF-8 bytes would fail every request:
        # refuse it here, where the caller still gets one line, not in a handler.
        if self.token is not None:
            check_token(self.token, "token (--token or $LAB_TOKEN)")


def lockstep_wait_s(parties: int) -> float:
    """How long a lockstep barrier of ``parties`` waits: the runner's own formula."""
    return 5.0 + 0.01 * parties


class ServerFailed(LabError):
    """Raised by ``lab serve`` when its accept loop died (not bad input: exit status 1)."""

    exit_code = 1


@dataclass
class _Conn:
    """One open connection, as the accept loop and its handler thread see it (under the mutex)."""

    #: time.monotonic() when it was accepted
    opened: float
    #: "idle" (waiting for a request, or reading one) or "busy" (handling one)
    state: str = "idle"
    #: chosen to make room for a newcomer: hang up at the next pause
    evict: bool = False
    #: requests answered on it so far
    served: int = 0


class _Stopping(Exception):
    """Raised inside a handler when the server stops before the request changed anything."""


_COUNTERS = (
    "requests",
    "searches",
    "sold",
    "sold_out",
    "errors",
    "unauthorized",
    "connections",
    "evicted",
)


class TicketServer:
    """A thread-per-connection TCP server selling the tickets in one data.json.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with TicketServer(ServerConfig(Store(path), mode="safe")) as server:
            host, port = server.address
            ...
    """

    def __init__(self, config: ServerConfig, log: Callable[[str], None] | None = None) -> None:
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
        self.config = config
        self.store = config.store
        self._log = log
        self._purchase_lock = PURCHASE_LOCKS[config.mode]()
        self._write = WRITES[config.mode]
        # Guards the counters and the connection table; never held across I/O.
        self._mutex = threading.Lock()
        self._slot_free = threading.Condition(self._mutex)
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._address: tuple[str, int] | None = None
        #: every open connection, with its state and age
        self._conns: dict[socket.socket, _Conn] = {}
        self._threads: set[threading.Thread] = set()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._peak = 0
        self._started_with: int | None = None
        self._started_at = time.monotonic()
        self._rng = random.Random()
        self._barrier = (
            threading.Barrier(config.lockstep, timeout=config.lockstep_timeout)
            if config.lockstep > 0
            else None
        )
        self._window_entries = 0
        self._lockstep_broken = False
        self._purchases_in_flight = 0
        #: why the accept loop ended on its own, if it did (None: it was stopped)
        self.failure: str | None = None

    # -- lifecycle --------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` actually bound: with port 0, the port the kernel chose."""
        if self._address is None:
            raise RuntimeError("the server is not started")
        return self._address

    def start(self) -> tuple[str, int]:
        """Check data.json, bind, listen, and start accepting in a background thread.

        Raises:
            StoreCorrupted: data.json cannot be read.
            UsageError: the host cannot be resolved or the port cannot be bound
                (naming ``--host`` or ``--port``, as ``lab serve`` reports it).
        """
        self._started_with = self.store.read()
        listener = _listen(self.config.host, self.config.port, self.config.max_connections)
        host, port = listener.getsockname()[:2]
        self._listener = listener
        self._address = (host, port)
        self._started_at = time.monotonic()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"lab-server-accept-{port}", daemon=True
        )
        self._accept_thread.start()
        return self._address

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True once the server has stopped accepting."""
        return self._stopped.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, answer or refuse what is in flight, and join every thread.

        A purchase waiting out its latency (or the lockstep barrier) is woken
        and refused before it writes; a purchase already writing finishes.
        Idle connections are hung up. Threads still running after ``timeout``
        are daemons and are abandoned (they hold no lock the caller needs).
        """
        deadline = time.monotonic() + timeout
        with self._mutex:
            self._stopping.set()
            # Idle handlers are blocked in recv(): SHUT_RD makes it return EOF at once.
            # Busy ones are left alone to answer; they close after replying.
            for conn, info in self._conns.items():
                if info.state == "idle":
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RD)
            self._slot_free.notify_all()
        if self._barrier is not None:
            self._barrier.abort()
        if self._accept_thread is not None:
            self._accept_thread.join(max(0.0, deadline - time.monotonic()))
        with self._mutex:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
        self._stopped.set()

    def __enter__(self) -> TicketServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- accepting ----------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                if not selector.select(_POLL_S) or self._stopping.is_set():
                    continue
                with self._slot_free:
                    if len(self._conns) >= self.config.max_connections:
                        # At capacity with someone waiting: leave them in the kernel's
                        # backlog (backpressure) rather than accept and refuse them, and
                        # make room so that they are served within a bounded time.
                        self._evict_for_newcomer()
                        self._slot_free.wait(_POLL_S)
                        continue
                self._accept_ready(listener)
        except Exception as exc:  # the listener itself failed: say so, do not die silently
            self.failure = f"{type(exc).__name__}: {exc}"
            self._say(f"stopped accepting: {self.failure}")
        finally:
            selector.close()
            self._stopped.set()

    def _evict_for_newcomer(self) -> None:
        """Pick who makes room for a connection waiting in the backlog. Mutex held.

        Only connections open at least ``evict_after`` s are candidates, so a
        buyer between its search and its buy is not cut off in a busy run. The
        oldest idle one is hung up at once (SHUT_RD wakes its handler's recv,
        as in :meth:`stop`); with none idle, every old busy one that has
        answered a request before is marked and the first to send its reply
        frees the slot. One eviction at a time: a
        waiting crowd does not empty the server in one go.
        """
        if any(info.evict for info in self._conns.values()):
            return  # a slot is already on its way free
        now = time.monotonic()
        old = [
            (info.opened, conn, info)
            for conn, info in self._conns.items()
            if now - info.opened >= self.config.evict_after
        ]
        idle = [entry for entry in old if entry[2].state == "idle"]
        # A busy connection on its first request is left alone: a slow first answer
        # (a lab buyer's search on a loaded server) must not cost it its buy.
        busy = [entry for entry in old if entry[2].served > 0]
        chosen = [min(idle, key=lambda entry: entry[0])] if idle else busy
        for _, conn, info in chosen:
            info.evict = True
            if info.state == "idle":
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)

    def _accept_ready(self, listener: socket.socket) -> None:
        """Accept every connection already waiting, up to the free slots."""
        while len(self._conns) < self.config.max_connections:
            try:
                conn, peer = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _TRANSIENT_ACCEPT:
                    self._say(f"accept failed ({exc.strerror}); retrying shortly")
                    time.sleep(_POLL_S)
                    return
                raise
            self._open(conn, peer)

    def _open(self, conn: socket.socket, peer: Any) -> None:
        with self._mutex:
            if self._stopping.is_set():
                conn.close()
                return
            self._conns[conn] = _Conn(opened=time.monotonic())
            self._counters["connections"] += 1
            self._peak = max(self._peak, len(self._conns))
        self._say(f"connection from {_peer(peer)}")
        # Replies are one small frame each: send them now rather than wait (Nagle).
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(
            target=self._serve_connection, args=(conn, peer), name="lab-server-conn", daemon=True
        )
        with self._mutex:
            self._threads.add(thread)
        try:
            thread.start()
        except RuntimeError as exc:  # "can't start new thread": out of memory or a ulimit
            self._say(f"cannot serve {peer}: {exc}")
            self._close(conn, thread)

    def _close(self, conn: socket.socket, thread: threading.Thread | None) -> None:
        with contextlib.suppress(OSError):
            conn.close()
        with self._slot_free:
            info = self._conns.pop(conn, None)
            if info is not None and info.evict:
                self._counters["evicted"] += 1
            self._threads.discard(thread or threading.current_thread())
            self._slot_free.notify()

    # -- one connection ---------------------------------------------------------------

    def _serve_connection(self, conn: socket.socket, peer: Any) -> None:
        """Answer requests on one connection, in order, until it closes or the server stops.

        Nothing a peer sends may escape this thread as a traceback: every
        failure below is a reply (``bad_request``, ``unauthorized``, ...) or a
        hang-up. The last ``except`` is for bugs: it says so and hangs up.
        """
        try:
            self._converse(conn)
        except Exception as exc:
            self._count("errors")
            self._say(f"internal error on {_peer(peer)}: {type(exc).__name__}: {exc}")
            self._reply(conn, _refusal("internal", type(exc).__name__))
        finally:
            self._close(conn, None)

    def _converse(self, conn: socket.socket) -> None:
        while True:
            with self._mutex:
                if self._conns[conn].evict:
                    return  # chosen to make room for a newcomer, now between requests
            try:
                message = recv_message(
                    conn,
                    self.config.frame_timeout,
                    first_byte_timeout=self.config.idle_timeout,
                )
            except ProtocolError as exc:
                # The stream may be out of step (a frame cut short or too long):
                # answer once, then hang up rather than guess where the next frame starts.
                self._count("errors")
                code = "shutting_down" if self._stopping.is_set() else "bad_request"
                self._reply(conn, _refusal(code, str(exc)))
                return
            except OSError:  # idle timeout, reset, or shut down by stop()
                return
            if message is None:
                return
            if not self._begin(conn):
                self._reply(conn, _refusal("shutting_down", "the server is stopping"))
                return
            try:
                reply, keep_open = self._handle(message)
            finally:
                still_serving = self._end(conn)
            if not self._reply(conn, reply) or not keep_open or not still_serving:
                return

    def _begin(self, conn: socket.socket) -> bool:
        with self._mutex:
            if self._stopping.is_set():
                return False
            self._conns[conn].state = "busy"
            self._counters["requests"] += 1
            return True

    def _end(self, conn: socket.socket) -> bool:
        with self._mutex:
            info = self._conns[conn]
            info.state = "idle"
            info.served += 1
            return not self._stopping.is_set() and not info.evict

    def _reply(self, conn: socket.socket, reply: dict[str, Any]) -> bool:
        try:
            send_message(conn, reply, self.config.frame_timeout)
        except (OSError, ProtocolError):
            return False
        return True

    def _handle(self, message: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One request -> (reply, keep the connection open?). Never raises."""
        try:
            request = parse_request(message)
        except ProtocolError as exc:
            self._count("errors")
            return _refusal("bad_request", str(exc)), True
        try:
            if not self._authorized(request):
                self._count("unauthorized")
                return _refusal("unauthorized", "missing or wrong token"), False
            if request.op == "search":
                return self._search(request), True
            if request.op == "buy":
                return self._buy(request), True
            return self.stats(), True
        except _Stopping:
            return _refusal(
                "shutting_down", "the server stopped before this request changed anything"
            ), False
        except ProtocolError as exc:
            self._count("errors")
            return _refusal("bad_request", str(exc)), True
        except StoreCorrupted as exc:
            # e.g. a torn read in naive mode: another handler truncated the file just now.
            self._count("errors")
            self._say(f"{request.buyer or 'a buyer'}: {exc}")
            return _refusal("store", str(exc)), True
        except OSError as exc:
            self._count("errors")
            return _refusal("store", f"{self.store.path}: {exc.strerror or exc}"), True
        except Exception as exc:  # a bug: answer it, keep serving everyone else
            self._count("errors")
            self._say(f"internal error: {type(exc).__name__}: {exc}")
            return _refusal("internal", type(exc).__name__), True

    def _authorized(self, request: Request) -> bool:
        expected = self.config.token
        if expected is None:
            return True
        # Constant-time comparison: response timing must not leak the token's prefix.
        # surrogatepass: a request's token may hold lone surrogates (JSON "\\ud800");
        # their bytes are not UTF-8, so they never equal a usable token's bytes.
        given = (request.token or "").encode("utf-8", "surrogatepass")
        return hmac.compare_digest(given, expected.encode("utf-8"))

    # -- the notes' search and buy, server side ------------------------------------------

    def _search(self, request: Request) -> dict[str, Any]:
        """查票: read and report. No lock: it writes nothing (and safe writes are never torn)."""
        count = self.store.read()
        self._count("searches")
        self._say(f"{request.buyer or 'a buyer'} searched: ticket_num={count}")
        return {"ok": True, "op": "search", "count": count}

    def _buy(self, request: Request) -> dict[str, Any]:
        """买票: read, wait, check, write. The purchase lock (safe mode) spans all four."""
        latency = request.latency
        if latency is None:
            latency = self._rng.uniform(self.config.latency.low, self.config.latency.high)
        if latency > self.config.max_latency:
            raise ProtocolError(
                f"latency {latency:g} s is above this server's maximum "
                f"({self.config.max_latency:g} s, --max-latency)"
            )
        with self._purchase_lock:
            if self._stopping.is_set():
                raise _Stopping
            count = self.store.read()  # 再次确认票
            with self._in_flight():
                self._race_window(latency)  # 模拟网络延迟: naive handlers interleave here
                if count > 0:
                    self._write(self.store, count - 1)
                    outcome = "bought"
                else:
                    outcome = "sold_out"
        self._count("sold" if outcome == "bought" else "sold_out")
        who = request.buyer or "a buyer"
        if outcome == "bought":
            self._say(f"{who} bought ticket {count} (wrote ticket_num={count - 1})")
            return {"ok": True, "op": "buy", "outcome": "bought", "count": count, "ticket": count}
        self._say(f"{who} found no ticket (read ticket_num={count})")
        return {"ok": True, "op": "buy", "outcome": "sold_out", "count": count, "ticket": None}

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count purchases between their read and their write (``stats``: ``in_flight``)."""
        with self._mutex:
            self._purchases_in_flight += 1
        try:
            yield
        finally:
            with self._mutex:
                self._purchases_in_flight -= 1

    def _race_window(self, latency: float) -> None:
        """Wait between the read and the write: the lockstep barrier, then the latency.

        The barrier (``lockstep``) holds the first N purchases here until all N
        have read, so in naive mode every one of them decides on the same
        count, every run. In safe mode the purchase lock keeps the others out,
        the barrier can never fill, and it breaks after its timeout (recorded
        as ``lockstep_broken``) instead of deadlocking. A stop wakes both waits.
        """
        if self._barrier is not None:
            with self._mutex:
                self._window_entries += 1
                mine = self._window_entries
            if mine <= self._barrier.parties:
                try:
                    self._barrier.wait()
                except threading.BrokenBarrierError:
                    with self._mutex:
                        self._lockstep_broken = True
        if self._stopping.wait(latency):
            raise _Stopping

    # -- the ledger ---------------------------------------------------------------------

    def _count(self, key: str) -> None:
        with self._mutex:
            self._counters[key] += 1

    def _say(self, line: str) -> None:
        if self._log is not None:
            # A --verbose line is commentary: a closed stdout must not fail a sale
            # that has already been written.
            with contextlib.suppress(Exception):
                self._log(line)

    def stats(self) -> dict[str, Any]:
        """The server's own account: what it sold, and what data.json holds now.

        ``sold`` counts the purchases this server confirmed; ``remaining`` is
        read from the file. In naive mode the two disagree after a race:
        ``sold - (started_with - remaining)`` sales were lost updates.
        """
        try:
            remaining: int | None = self.store.read()
            problem = None
        except StoreCorrupted as exc:
            remaining, problem = None, exc.problem
        with self._mutex:
            counters = dict(self._counters)
            active, peak, broken = len(self._conns), self._peak, self._lockstep_broken
            in_flight = self._purchases_in_flight
        return {
            "ok": True,
            "op": "stats",
            "mode": self.config.mode,
            # Named in a --connect run's report: the server owns the count, not the client.
            "data": str(self.store.path),
            "started_with": self._started_with,
            "remaining": remaining,
            "problem": problem,
            **counters,
            "active_connections": active,
            "peak_connections": peak,
            "max_connections": self.config.max_connections,
            "max_latency": self.config.max_latency,
            "in_flight": in_flight,
            "lockstep_broken": broken,
            "uptime_s": round(time.monotonic() - self._started_at, 3),
        }


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_address(str(peer[0]), int(peer[1]))
    return str(peer)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bound address) is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _refusal(code: str, message: str) -> dict[str, Any]:
    """An error reply that can always be sent.

    The message often quotes the request (an unknown key, a bad op), which
    may hold lone surrogates that UTF-8 cannot encode, or be long: escape the
    one and cut the other, or the refusal itself would fail to send.
    """
    text = message[:_MAX_REFUSAL_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")
    return {"ok": False, "error": code, "message": text}


def _listen(host: str, port: int, max_connections: int) -> socket.socket:
    """A non-blocking listening socket on ``host:port``, or UsageError naming the option."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--host: cannot resolve {host!r}: {exc}") from None
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Restarting right after a stop must not fail on the old connections' TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        # The backlog is where connections wait while every slot is busy; the
        # kernel caps it at net.core.somaxconn.
        sock.listen(max(128, min(max_connections, 4096)))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        where = format_address(host, port)
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"--host: {host} is not an address of this machine") from None
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port: {where} is already in use") from None
        raise UsageError(f"--port: cannot listen on {where}: {exc.strerror or exc}") from None
    return sock
