"""The tickets in Redis (``redis-py``): one server, every command atomic on its own.

The lab keeps everything under one key prefix, ``lab:``, and touches nothing
else on the server (no ``FLUSHDB``, no ``KEYS *``)::

    lab:{tickets}:count    the count, a string holding an integer
    lab:{tickets}:seeded   the count the sale was seeded with
    lab:{tickets}:orders   the engine's own ledger: a list of "run/buyer:ticket",
                           one entry per sale it recorded
    lab:{tickets}:claim    the run that seeds the sale now (SET NX, with a TTL)
    lab:{tickets}:runs     the runs sharing it now (a sorted set: token ->
                           expiry), the seeding run's among them once it shares
    lab:{tickets}:selling  those of them whose buyers still sell

The ``{tickets}`` hash tag puts the three keys in one hash slot, so the same
names work on a Redis Cluster (:mod:`lab.stores.rediscluster`), where a Lua
script or a transaction may only touch keys of one slot.

The ledger is a plain list on purpose: a double sale must be *visible* in it
(two entries for one ticket), not refused.

Each process makes its own client on first use (a socket must never cross a
fork): the store pickles only its URL. ``open_store`` uses the user's server
(``--redis-url``) or starts a private one in the run directory and stops it
afterwards.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lab.core.errors import DataFileBusy, StoreCorrupted, UsageError
from lab.core.lazy import lazy_import
from lab.core.model import MAX_TICKETS
from lab.stores._servers import start_redis
from lab.stores.protocol import Holding, Snapshot, StorePlace, ledger_snapshot

if TYPE_CHECKING:
    import redis
    import redis.cluster
    import redis.crc
    import redis.exceptions
else:
    redis = lazy_import("redis")  # 0.17 s: only when a run really talks to Redis

__all__ = [
    "CLAIM",
    "COUNT",
    "ORDERS",
    "PREFIX",
    "RUNS",
    "SEEDED",
    "SELLING",
    "Client",
    "RedisStore",
    "open_store",
    "order_entry",
    "parse_order",
    "redact",
    "redis_errors",
    "unreachable",
]

#: Every key the lab creates starts with this; nothing else on the server is touched.
PREFIX = "lab:"
COUNT = "lab:{tickets}:count"
ORDERS = "lab:{tickets}:orders"
CLAIM = "lab:{tickets}:claim"
SEEDED = "lab:{tickets}:seeded"
RUNS = "lab:{tickets}:runs"
SELLING = "lab:{tickets}:selling"
#: How often a run that waits for the others sharing its sale looks again.
_ALONE_POLL_S = 0.1
#: A claim left by a lab that died (SIGKILL, a power cut) expires by itself after this.
CLAIM_TTL_S = 24 * 3600

#: What a buyer program talks to: one server, or a cluster.
Client: TypeAlias = "redis.Redis | redis.cluster.RedisCluster"


#: Everything redis-py raises for a server it cannot use (RedisClusterException is no RedisError).
#: URL query options that would override the lab's own bounds on every wait.
_TIMEOUT_OPTIONS = frozenset({"socket_timeout", "socket_connect_timeout", "timeout"})


def own_timeouts(url: str) -> str:
    """``url`` without timeout options: redis-py lets a URL's query override the timeouts
    it is given, and ``?socket_timeout=1e9`` against a server that never answers would
    hang the lab. Every wait stays bounded by the run's own timeout."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    kept = [(k, v) for k, v in kept if k.lower() not in _TIMEOUT_OPTIONS]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def redis_errors(*also: type[BaseException]) -> tuple[type[BaseException], ...]:
    """Everything redis-py raises for a server it cannot use (a function: redis loads lazily)."""
    return (redis.RedisError, redis.exceptions.RedisClusterException, OSError, *also)


#: Set the count and clear the orders in one step (both keys share a slot: cluster-safe).
_SEED = """
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[3], ARGV[1])
return redis.call('SET', KEYS[1], ARGV[1])
"""
#: Take the sole claim: only if nobody holds it and no run (whose entry has not
#: expired) sells from the sale. KEYS: claim, runs; ARGV: token, ttl.
_CLAIM = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('ZCARD', KEYS[2]) > 0 then
    return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
#: Share the sale: enter the runs, then let the sole claim go. KEYS: claim, runs, selling.
_SHARE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
end
return 1
"""
#: Join the sale: refused while a run holds the sole claim (-1: it is seeding) or
#: when none was seeded (0). KEYS: claim, runs, count, selling.
_JOIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    return -1
end
if redis.call('EXISTS', KEYS[3]) == 0 then
    return 0
end
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
#: Let go of whatever claim is ours (it may have expired and been taken).
#: KEYS: claim, runs, selling.
_RELEASE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
#: Take over a stale claim only if it still holds the token we found dead.
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return false
"""


def redact(url: str) -> str:
    """``url`` without its password, for messages and reports."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            # No "//" (``:pw@h``, ``redis:u:pw@h``): urlsplit sees no userinfo, but a
            # ``user:secret@`` may still be there. Hide all of it, not just its password.
            head, at, tail = url.rpartition("@")
            if at and ":" in head.rpartition("//")[2]:
                return f"{head.rpartition('//')[0]}{'//' if '//' in head else ''}***@{tail}"
            return url
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
        netloc = f"{parts.username or ''}:***@{netloc}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(an unparsable URL)"


def unreachable(url: str, exc: BaseException) -> UsageError:
    """The one-line error for a server the lab cannot use, naming ``--redis-url``."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return UsageError(f"--redis-url {redact(url)}: cannot use this Redis server: {reason}")


def order_entry(run: str, buyer: int) -> str:
    """Who bought, as a ledger entry names them: ``"run/buyer"`` (``"buyer"`` untagged)."""
    return f"{run}/{buyer}" if run else str(buyer)


def parse_order(entry: bytes | str) -> tuple[str, int, int]:
    """One ledger entry, ``b"run/buyer:ticket"``, as ``(run, buyer, ticket)``.

    Raises ValueError for anything else."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    who, ticket = text.split(":")
    run, _, buyer = who.rpartition("/")
    return run, int(buyer), int(ticket)


def _token() -> str:
    """A claim's token: ``host:pid:random``, so a dead local lab's claim can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


def _text(raw: object) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _holder(token: str) -> str:
    """``host:pid:random`` as a person reads it: "pid 12 on host"."""
    host, _, rest = token.partition(":")
    pid_text = rest.partition(":")[0]
    return f"pid {pid_text} on {host}" if pid_text else "another client"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Claim:
    """The run's claim, by its token: in ``lab:{tickets}:claim`` (sole) or ``:runs``
    (shared); released by the process that took it."""

    def __init__(self, store: RedisStore, token: str) -> None:
        self.store = store
        self.token = token
        self.owner = os.getpid()

    def close(self) -> None:
        # Forked buyers inherit this object; only the runner that claimed lets go.
        if self.token and os.getpid() == self.owner:
            token, self.token = self.token, ""
            with contextlib.suppress(*redis_errors()):
                self.store.client().eval(_RELEASE, 3, CLAIM, RUNS, SELLING, token)


class RedisStore:
    """The lab's keys (``lab:{tickets}:*``) on the Redis server at ``url``."""

    kind = "redis"
    engine = "Redis"
    #: what a killed writer leaves half-made (``Buyer.step`` reports it): never anything here
    temp_in_flight: str | None = None

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        step: Callable[[str], None] | None = None,
        run: str = "",
    ) -> None:
        self.url = url
        self.timeout = timeout
        #: this run's tag on its orders (SharedSale): set by the runner
        self.run = run
        #: a buyer's ``--crash`` hook (the programs call ``me.step`` themselves)
        self.step = step or (lambda _name: None)
        self._client: Client | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, object]:
        # A client (a socket) never crosses a process boundary; each process makes its own.
        return {"url": self.url, "timeout": self.timeout, "run": self.run}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__init__(state["url"], timeout=state["timeout"], run=state["run"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact(self.url)!r})"

    @property
    def where(self) -> str:
        return f"{redact(self.url)} ({self.engine}, keys {PREFIX}{{tickets}}:*)"

    def for_buyer(self, step: Callable[[str], None]) -> RedisStore:
        """This store as one buyer uses it: its own client, and its crash hook."""
        return type(self)(self.url, timeout=self.timeout, step=step, run=self.run)

    def _connect(self) -> Client:
        return redis.Redis.from_url(
            own_timeouts(self.url),
            socket_timeout=self.timeout,
            socket_connect_timeout=min(self.timeout, 10.0),
        )

    def client(self) -> Client:
        """This process's client (made on first use, after any fork)."""
        if self._client is None or self._pid != os.getpid():
            self._client, self._pid = self._connect(), os.getpid()
        return self._client

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            with contextlib.suppress(*redis_errors()):
                self._client.close()
        self._client = None

    def check(self) -> None:
        """Reach the server once; a bad URL or a dead server is one ``UsageError`` line."""
        try:
            self.client().ping()
        # redis-py passes a URL's query to the connection class as keywords, unchecked:
        # an unknown one (``?ssl_cert_reqs=x`` on redis://) is a TypeError, a huge
        # timeout (``?socket_connect_timeout=1e999``) an OverflowError. The user's --redis-url.
        except redis_errors(ValueError, TypeError, ArithmeticError) as exc:
            self.close()
            raise unreachable(self.url, exc) from None

    # -- the TicketStore contract ------------------------------------------------

    def claim(self) -> Holding:
        client = self.client()
        token = _token()
        self._forget_dead_runs()
        if client.eval(_CLAIM, 2, CLAIM, RUNS, token, CLAIM_TTL_S):
            return _Claim(self, token)
        raw = client.get(CLAIM)
        if raw is None:
            sharing = [_text(m) for m in client.zrange(RUNS, 0, -1)]
            hosts = ", ".join(sorted({_holder(m) for m in sharing})) or "another client"
            raise DataFileBusy(
                f"{self.where}: {len(sharing)} lab run(s) ({hosts}) are selling from this "
                f"sale; --join them, or wait for them to finish (or DEL {RUNS} if they are gone)"
            )
        holder = _text(raw)
        host, _, rest = holder.partition(":")
        pid_text = rest.partition(":")[0]
        # A lab on this machine that died holding it: take it over, if nobody else did.
        if (
            host == socket.gethostname()
            and pid_text.isdigit()
            and not _pid_alive(int(pid_text))
            and client.eval(_TAKE_OVER, 1, CLAIM, holder, token, CLAIM_TTL_S)
        ):
            return _Claim(self, token)
        raise DataFileBusy(
            f"{self.where}: another lab run ({_holder(holder)}) holds {CLAIM}; "
            f"wait for it to finish, or DEL {CLAIM} if it is gone"
        )

    def _forget_dead_runs(self) -> None:
        """Drop the entries of labs on this machine that died without leaving."""
        client = self.client()
        for raw in client.zrange(RUNS, 0, -1):
            token = _text(raw)
            host, _, rest = token.partition(":")
            pid_text = rest.partition(":")[0]
            mine = host == socket.gethostname() and pid_text.isdigit()
            if mine and not _pid_alive(int(pid_text)):
                client.zrem(RUNS, token)
                client.zrem(SELLING, token)

    def share(self, claim: Holding) -> None:
        assert isinstance(claim, _Claim)
        self.client().eval(_SHARE, 3, CLAIM, RUNS, SELLING, claim.token, CLAIM_TTL_S)

    def join(self) -> Holding:
        token = _token()
        self._forget_dead_runs()
        joined = int(self.client().eval(_JOIN, 4, CLAIM, RUNS, COUNT, SELLING, token, CLAIM_TTL_S))
        if joined < 0:
            raise DataFileBusy(f"{self.where}: a lab run is seeding the sale; --join once it sells")
        if joined == 0:
            raise UsageError(
                f"--join: no sale to join on {redact(self.url)} (no {COUNT}); "
                "start one with --tickets N first"
            )
        return _Claim(self, token)

    def wait_for_others(self, claim: Holding, timeout: float) -> bool:
        assert isinstance(claim, _Claim)
        # Our buyers are done; our claim stays in :runs until our tally is read.
        self.client().zrem(SELLING, claim.token)
        deadline = time.monotonic() + timeout
        while True:
            self._forget_dead_runs()
            if not self.client().zrangebyscore(SELLING, time.time(), "+inf"):  # unexpired
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(_ALONE_POLL_S)

    def seed(self, tickets: int) -> None:
        if not 0 <= tickets <= MAX_TICKETS:
            raise ValueError(f"tickets must be 0..{MAX_TICKETS}, got {tickets}")
        self.client().eval(_SEED, 3, COUNT, ORDERS, SEEDED, tickets)

    def read(self) -> int:
        try:
            raw = self.client().get(COUNT)
        except redis_errors() as exc:
            raise StoreCorrupted(self.where, f"cannot be read: {exc}") from None
        if raw is None:
            raise StoreCorrupted(self.where, f"has no key {COUNT}")
        try:
            return int(raw)
        except ValueError:
            raise StoreCorrupted(self.where, f"{COUNT} is not an integer: {raw!r}") from None

    def orders(self) -> tuple[tuple[str, int, int], ...]:
        """The ledger, ``(run, buyer, ticket)`` in the order the engine recorded it
        (``StoreCorrupted`` if unreadable)."""
        try:
            entries = self.client().lrange(ORDERS, 0, -1)
            return tuple(parse_order(entry) for entry in entries)
        except redis_errors() as exc:
            raise StoreCorrupted(self.where, f"{ORDERS} cannot be read: {exc}") from None
        except ValueError as exc:
            raise StoreCorrupted(self.where, f"{ORDERS} holds a bad entry: {exc}") from None

    def discard(self, leftovers: Sequence[str]) -> None:
        """Nothing to discard: every command (and MULTI/EXEC, and a script) is all or nothing."""

    def snapshot(self) -> Snapshot:
        try:
            count = self.read()
            entries = self.orders()
            raw_seeded = self.client().get(SEEDED)
        except StoreCorrupted as exc:
            return Snapshot(remaining=None, problem=exc.problem, where=self.where)
        except redis_errors(ValueError) as exc:
            return Snapshot(remaining=None, problem=f"cannot be read: {exc}", where=self.where)
        finally:
            self.close()
        digits = isinstance(raw_seeded, bytes) and raw_seeded.isdigit()
        return ledger_snapshot(
            remaining=count,
            text=f"{COUNT} = {count}; {ORDERS}: {len(entries)} entries",
            where=self.where,
            seeded=int(raw_seeded) if digits else None,  # type: ignore[arg-type]
            ledger=entries,
            run=self.run,
        )


@contextlib.contextmanager
def serve(
    place: StorePlace, store_type: Callable[[str, float], RedisStore], start: Callable[[], str]
) -> Iterator[RedisStore]:
    """The user's server (``place.url``) or a private one from ``start``, stopped afterwards.

    ``start`` returns the private server's URL and registers its stop with the
    caller; shared by the single-server and the cluster backends.
    """
    url = place.url if place.url is not None else start()
    store = store_type(url, place.timeout)
    try:
        store.check()
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def open_store(place: StorePlace) -> Iterator[RedisStore]:
    """The user's Redis (``--redis-url``), or a private redis-server in the run directory."""
    with contextlib.ExitStack() as stack:

        def start() -> str:
            assert place.run_dir is not None, "a private Redis needs a run directory"
            workdir = place.run_dir / "redis"
            workdir.mkdir(parents=True, exist_ok=True)
            server = start_redis(workdir)
            stack.callback(server.stop)
            return server.url

        with serve(place, lambda url, t: RedisStore(url, timeout=t), start) as store:
            yield store
