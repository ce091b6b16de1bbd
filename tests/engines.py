"""Real engine servers shared by the registry-wide tests of one pytest worker.

Each engine variant could start its own private server per run (the lab does
that when the user names none), but the invariant tests run every variant
many times: one PostgreSQL, one Redis and one Redis Cluster per worker,
started on first use and passed to runs as their ``store_url`` (the
``--dsn`` / ``--redis-url`` path), keep them fast. Runs on one server are
serialized by the store's claim; a worker runs its tests one at a time.
"""

from __future__ import annotations

from pathlib import Path

from lab.stores._servers import PrivateServer, start_postgres, start_redis, start_redis_cluster

__all__ = ["ENGINES"]

_STARTERS = {
    "postgres": start_postgres,
    "redis": start_redis,
    "redis-cluster": start_redis_cluster,
}


class _Engines:
    def __init__(self) -> None:
        self.base: Path | None = None
        self._servers: dict[str, PrivateServer] = {}

    def url(self, store: str) -> str | None:
        """The shared server for backend ``store`` (None: the backend needs no server)."""
        if store not in _STARTERS:
            return None
        if store not in self._servers:
            assert self.base is not None, "the engines fixture sets the base directory"
            workdir = self.base / store
            workdir.mkdir(exist_ok=True)
            self._servers[store] = _STARTERS[store](workdir, timeout=60.0)
        return self._servers[store].url

    def pids(self) -> set[int]:
        return {pid for server in self._servers.values() for pid in server.pids}

    def stop_all(self) -> None:
        for server in self._servers.values():
            server.stop()
        self._servers.clear()


ENGINES = _Engines()
