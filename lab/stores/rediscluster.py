"""The tickets in a Redis Cluster: the same keys, spread over 16384 hash slots.

A cluster shards keys by hash slot, and a Lua script or a MULTI/EXEC may
only touch keys of one slot: anything else fails with ``CROSSSLOT``. The lab's
keys are the single server's (:mod:`lab.stores.redisdb`), whose ``{tickets}``
hash tag puts the count, the orders and the claim in one slot, so a script
over the count and the orders runs, atomically, on the one node that owns it.

``open_store`` uses the user's cluster (``--redis-url`` naming any one node;
the client finds the others) or starts a private 3-master cluster in the run
directory and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from lab.core.errors import LabError
from lab.core.lazy import lazy_import
from lab.stores._servers import start_redis_cluster
from lab.stores.protocol import StorePlace
from lab.stores.redisdb import (
    COUNT,
    ORDERS,
    Client,
    RedisStore,
    own_timeouts,
    redis_errors,
    serve,
)

if TYPE_CHECKING:
    import redis
    import redis.cluster
    import redis.crc
    import redis.exceptions
else:
    redis = lazy_import("redis")  # 0.17 s: only when a run really talks to Redis

__all__ = [
    "COUNT_UNTAGGED",
    "ORDERS_UNTAGGED",
    "CrossSlot",
    "RedisClusterStore",
    "open_store",
    "slot",
]

#: The keys a learner writes first, with no common hash tag: two different slots.
#: Never written: the cluster refuses every script over both before it runs.
COUNT_UNTAGGED = "lab:count"
ORDERS_UNTAGGED = "lab:orders"


class CrossSlot(LabError):
    """Raised by a cluster buyer whose script names keys in two hash slots (``CROSSSLOT``).

    One line: the keys, their slots, and the fix (a ``{hash tag}``).
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "CROSSSLOT"


def crossslot(keys: tuple[str, ...], slots: tuple[int, ...], reply: str) -> CrossSlot:
    """The one-line error for the server's ``CROSSSLOT`` reply to a script over ``keys``."""
    named = ", ".join(f"{k} (slot {s})" for k, s in zip(keys, slots, strict=True))
    reason = " ".join(reply.split())
    return CrossSlot(
        f"CROSSSLOT: the cluster refused a script over {named}: {reason}; a script may "
        "only touch keys of one slot. Fix: give the keys a common {hash tag}, "
        f"e.g. {COUNT} and {ORDERS}"
    )


def slot(key: str) -> int:
    """The hash slot of ``key`` (CRC16 of the key, or of its ``{tag}``, mod 16384)."""
    return int(redis.crc.key_slot(key.encode()))


class RedisClusterStore(RedisStore):
    """The lab's keys (``lab:{tickets}:*``, one slot) on the Redis Cluster at ``url``."""

    kind = "redis-cluster"
    engine = "Redis Cluster"

    def _connect(self) -> Client:
        return redis.cluster.RedisCluster.from_url(
            own_timeouts(self.url),
            socket_timeout=self.timeout,
            socket_connect_timeout=min(self.timeout, 10.0),
        )

    def close(self) -> None:
        # RedisCluster.close() leaves the nodes' pooled sockets open: disconnect each.
        cluster = self._client
        if cluster is not None and self._pid == os.getpid():
            assert isinstance(cluster, redis.cluster.RedisCluster)
            with contextlib.suppress(*redis_errors()):
                for node in cluster.get_nodes():  # type: ignore[no-untyped-call]
                    if node.redis_connection is not None:
                        node.redis_connection.connection_pool.disconnect()
        super().close()

    def node_for(self, key: str) -> redis.Redis:
        """A plain client of the node that owns ``key``'s slot (to send it exactly what we mean)."""
        cluster = self.client()
        assert isinstance(cluster, redis.cluster.RedisCluster)
        node = cluster.nodes_manager.get_node_from_slot(slot(key))
        return cluster.get_redis_connection(node)


@contextlib.contextmanager
def open_store(place: StorePlace) -> Iterator[RedisStore]:
    """The user's cluster (``--redis-url`` of one node), or a private 3-master cluster."""
    with contextlib.ExitStack() as stack:

        def start() -> str:
            assert place.run_dir is not None, "a private Redis Cluster needs a run directory"
            workdir = place.run_dir / "redis-cluster"
            workdir.mkdir(parents=True, exist_ok=True)
            server = start_redis_cluster(workdir, masters=3)
            stack.callback(server.stop)
            return server.url

        with serve(place, lambda url, t: RedisClusterStore(url, timeout=t), start) as store:
            yield store
