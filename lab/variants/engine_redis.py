"""The ticket grab on Redis and a Redis Cluster: the notes' race, and the Redis fixes.

The race is the notes' own, moved into Redis: GET the count, wait, SET
count-1. Each command is atomic, but the GET and the SET are two commands,
and another buyer's SET can land between them: a *lost update* (P4). Two
buyers GET 1, both SET 0, and both are sold ticket 1.

The fixes close the gap between the read and the write in three ways: make
the write itself decide (DECR), make the write conditional on nobody having
written since the read (WATCH), or run read, check and write as one command
on the server (a Lua script).

=========================  ======================================================
variant                    what the buyer runs (``?`` = the count it read)
=========================  ======================================================
redis-naive                GET; wait; SET count ?-1; RPUSH order  (two commands: races)
redis-decr                 wait; DECR — the reply is the decision; below 0: INCR it
                           back, sold out. Never oversells, but the count is *negative*
                           between the DECR and the INCR, and a concurrent GET sees it
redis-watch                WATCH count; GET; wait; MULTI; SET ?-1; RPUSH; EXEC — EXEC
                           refuses (WatchError) if the count changed: read again, retry
redis-lua                  wait; EVAL "if count > 0 then DECR; RPUSH; return ticket end"
                           — read, check and write are one command on the server
cluster-naive              redis-naive on a 3-master cluster: sharding changes nothing
cluster-lua-crossslot      the script over ``lab:count`` and ``lab:orders``: two hash
                           slots, so the cluster refuses it (CROSSSLOT) — every buyer
                           fails with one line naming the fix
cluster-lua                the same script over ``lab:{tickets}:count`` and
                           ``lab:{tickets}:orders``: one ``{hash tag}``, one slot: holds
=========================  ======================================================

Every sale also appends ``"buyer:ticket"`` to ``lab:{tickets}:orders``, the
engine's own ledger; a double sale shows there as two entries for one ticket.

A ``--crash`` kill at ``mid-write``: in redis-naive, between the SET and the
RPUSH (the count went down, the order was never recorded); in redis-decr,
between the DECR and its INCR or RPUSH (a second write: a kill there leaves
the count down for good, negative if the DECR went below 0: it is not
crash-safe); in redis-watch, with the transaction queued but not yet EXECed
(nothing is committed); in the Lua variants, after the EVAL and before the
report (committed, never reported).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.core.lazy import lazy_import
from lab.stores.rediscluster import (
    COUNT_UNTAGGED,
    ORDERS_UNTAGGED,
    RedisClusterStore,
    crossslot,
    slot,
)
from lab.stores.redisdb import COUNT, ORDERS, Client, RedisStore, order_entry
from lab.variants.protocol import RunEnv, Stage, VariantBase

if TYPE_CHECKING:
    import redis
    import redis.cluster
    import redis.crc
    import redis.exceptions
else:
    redis = lazy_import("redis")  # 0.17 s: only when a run really talks to Redis

__all__ = [
    "VARIANTS",
    "ClusterLua",
    "ClusterLuaCrossSlot",
    "ClusterNaive",
    "RedisDecr",
    "RedisLua",
    "RedisNaive",
    "RedisWatch",
]

#: Check and sell in one step on the server: the ticket sold (the count it
#: decremented from), or 0 when none is left. KEYS: the count, the orders; ARGV: the buyer.
SELL = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then
    redis.call('DECR', KEYS[1])
    redis.call('RPUSH', KEYS[2], ARGV[1] .. ':' .. count)
    return count
end
return 0
"""


def _client(me: Buyer) -> Client:
    store: object = me.store
    assert isinstance(store, RedisStore)
    return store.client()


def _server(me: Buyer) -> redis.Redis:
    """The single server's client (WATCH/MULTI are shown on one server)."""
    client = _client(me)
    assert isinstance(client, redis.Redis)
    return client


def _int(raw: object) -> int:
    if not isinstance(raw, (bytes, str, int)):
        raise TypeError(f"{COUNT} holds {raw!r}, not a count (seed the store first)")
    return int(raw)


def _who(me: Buyer) -> str:
    """The buyer as the ledger names them, tagged with the run (see ``--join``)."""
    store: object = me.store
    return order_entry(store.run if isinstance(store, RedisStore) else "", me.index)


def _order(me: Buyer, ticket: int) -> str:
    return f"{_who(me)}:{ticket}"


def search(me: Buyer) -> None:
    """查票: GET the count (harmless on its own; under redis-decr it may be negative)."""
    me.searched(_int(_client(me).get(COUNT)))


def naive(me: Buyer) -> None:
    """The notes' buy in Redis: GET, wait, SET count-1. Two commands: it races."""
    client = _client(me)
    search(me)
    count = _int(client.get(COUNT))
    me.read(count)
    me.network_latency()  # the count read above is already stale while this lasts
    if count > 0:
        client.set(COUNT, count - 1)  # blind write: whatever the count is now
        me.step("mid-write")
        client.rpush(ORDERS, _order(me, count))
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def decr(me: Buyer) -> None:
    """DECR decides: its reply is the count after this buyer's decrement.

    Below 0 means there was none left: INCR it back. Two buyers can never get
    the same reply, so nobody oversells; but between the DECR and the INCR the
    count is negative, and a buyer that searches then sees ``-1``.
    """
    client = _client(me)
    search(me)
    me.network_latency()
    left = int(client.decr(COUNT))
    me.read(left + 1)  # what the count was, as far as this buyer's DECR is concerned
    me.step("mid-write")  # a kill here never compensates, nor records the order
    if left < 0:
        client.incr(COUNT)  # the compensating write; until now everyone saw a negative count
        me.sold_out(left + 1)
        return
    client.rpush(ORDERS, _order(me, left + 1))
    me.bought(ticket=left + 1)


def _watch_attempt(me: Buyer, client: redis.Redis) -> bool | None:
    """One optimistic try: True sold, False sold out, None the count changed (WatchError)."""
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(COUNT)  # type: ignore[no-untyped-call]  # from here, EXEC fails if anyone writes the count
            count = _int(pipe.get(COUNT))
            me.read(count)
            me.network_latency()
            if count <= 0:
                pipe.unwatch()
                me.sold_out(count)
                return False
            pipe.multi()
            pipe.set(COUNT, count - 1)
            pipe.rpush(ORDERS, _order(me, count))
            me.step("mid-write")  # queued, not sent: a kill here commits nothing
            pipe.execute()
        except redis.WatchError:
            return None
    me.bought(ticket=count)
    return True


def watch(me: Buyer, retries: int) -> None:
    """Optimistic concurrency: WATCH the count, and EXEC only if nobody wrote it since."""
    client = _server(me)
    search(me)
    for _ in range(retries + 1):
        if _watch_attempt(me, client) is not None:
            return
        me.retried("the count changed since WATCH; EXEC refused")
    me.failed(TimeoutError(f"EXEC refused {retries + 1} times: the count kept changing"))


def _sell(me: Buyer, client: Client, keys: tuple[str, str]) -> None:
    """EVAL the sell script, then report: the check and the write happened on the server."""
    ticket = int(client.eval(SELL, 2, *keys, _who(me)))
    me.step("mid-write")  # committed: a kill here is a sale nobody reported
    if ticket > 0:
        me.bought(ticket=ticket)
    else:
        me.sold_out(0)


def lua(me: Buyer) -> None:
    """One script: read, check, decrement and record, with no other command in between."""
    client = _client(me)
    search(me)
    me.network_latency()
    _sell(me, client, (COUNT, ORDERS))


def lua_crossslot(me: Buyer) -> None:
    """The script over two keys without a common hash tag: the cluster refuses it."""
    store: object = me.store
    assert isinstance(store, RedisClusterStore)
    search(me)
    me.network_latency()
    keys = (COUNT_UNTAGGED, ORDERS_UNTAGGED)
    # Sent as written, to the node owning the first key: the server, not the client
    # library, says CROSSSLOT (redis-py's cluster client would refuse it before sending).
    node = store.node_for(keys[0])
    try:
        _sell(me, node, keys)
    except redis.ResponseError as exc:
        # redis-py turns the server's "-CROSSSLOT ..." reply into ClusterCrossSlotError.
        if not isinstance(exc, redis.exceptions.ClusterCrossSlotError) and "CROSSSLOT" not in str(
            exc
        ):
            raise
        slots = tuple(slot(k) for k in keys)
        me.failed(crossslot(keys, slots, str(exc)))


class _Redis(VariantBase):
    """What every Redis variant shares: the store, and a stage with one program."""

    store = "redis"
    explorable = False
    name: str
    summary: str
    safe: bool
    why: str

    def program(self, env: RunEnv) -> Stage[Any]:
        raise NotImplementedError

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield self.program(env)


class _Cluster(_Redis):
    store = "redis-cluster"


class RedisNaive(_Redis):
    name = "redis-naive"
    fixed_by: str | None = "redis-lua"
    fix = N_(
        "one Lua script that checks and decrements atomically (or WATCH/MULTI with a retry: "
        "lab run redis-watch)"
    )
    summary = "Redis: GET, wait, SET count-1 (the notes' race, two commands)"
    safe = False
    why = (
        "each command is atomic but GET and SET are two: buyers who GET before anyone's "
        "SET all write the same count-1, a lost update, and the orders list shows the double sale"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(naive)


class RedisDecr(_Redis):
    name = "redis-decr"
    summary = "Redis: DECR decides, INCR back below 0 (the count goes negative meanwhile)"
    safe = True
    crash_safe = False
    why = (
        "DECR's reply is the decision, and no two buyers get the same reply; but a loser's "
        "DECR leaves the count negative until its INCR, and a concurrent GET sees it"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(decr)


class RedisWatch(_Redis):
    name = "redis-watch"
    summary = "Redis: WATCH, GET, wait, MULTI/SET/EXEC; retry when EXEC refuses"
    safe = True
    why = "EXEC commits only if nobody wrote the count since WATCH; a loser reads again and retries"

    def program(self, env: RunEnv) -> Stage[Any]:
        # Each refused EXEC means another buyer sold: at most one refusal per other buyer.
        return Stage(program=watch, kit=env.buyers)


class RedisLua(_Redis):
    name = "redis-lua"
    summary = "Redis: one Lua script checks, decrements and records the order"
    safe = True
    why = "the server runs the whole script before any other command: nothing can come between"

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(lua)


class ClusterNaive(_Cluster):
    name = "cluster-naive"
    fixed_by: str | None = "cluster-lua"
    fix = N_(
        "one Lua script over hash-tagged keys ({tickets}), so the check and the decrement run"
        " in one slot, atomically"
    )
    summary = "Redis Cluster: GET, wait, SET count-1 (sharding fixes nothing)"
    safe = False
    why = (
        "the count lives on one node like on a single server: GET and SET are still two "
        "commands, and buyers who GET before anyone's SET sell the same ticket"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(naive)


class ClusterLuaCrossSlot(_Cluster):
    name = "cluster-lua-crossslot"
    summary = "Redis Cluster: the Lua script over lab:count and lab:orders (two slots)"
    safe = False
    caveat = "fails: CROSSSLOT"
    fails = True
    why = (
        "the keys have no common {hash tag}, so they hash to two slots and the cluster "
        "refuses the script with CROSSSLOT: every buyer fails, nothing is sold"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(lua_crossslot)


class ClusterLua(_Cluster):
    name = "cluster-lua"
    summary = "Redis Cluster: the Lua script over {tickets}-tagged keys (one slot)"
    safe = True
    why = (
        "the {tickets} hash tag puts the count and the orders in one slot, so the script "
        "runs whole on the node that owns it, as on a single server"
    )

    def program(self, env: RunEnv) -> Stage[Any]:
        return Stage.alone(lua)


#: Every Redis and Redis Cluster variant, in the order ``lab variants`` lists them.
VARIANTS: tuple[type[_Redis], ...] = (
    RedisNaive,
    RedisDecr,
    RedisWatch,
    RedisLua,
    ClusterNaive,
    ClusterLuaCrossSlot,
    ClusterLua,
)
