"""lab.stores: the only code that touches the tickets where they are kept.

Lives here: the Store contract (``protocol``: claim, seed, read, discard,
snapshot), one module per backend (``jsonfile``: data.json as in the notes;
``sqlitedb``: SQLite; ``pgdb``: PostgreSQL; ``redisdb``: Redis and a Redis
Cluster), the private servers they may start (``_servers``) and the run
directories (``rundirs``). May import: ``lab.core`` only. Never writes to
the terminal.

Adding a backend: write a module with ``open_store(place)`` (a context
manager yielding a :class:`~lab.stores.protocol.TicketStore`) and add one
line to :data:`BACKENDS`. No runner code changes.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractContextManager
from typing import Any

from lab.stores.protocol import StorePlace, TicketStore

__all__ = ["BACKENDS", "open_store"]

#: Backend name (a variant's ``store``) -> the module that opens it. Imported
#: only when used: ``lab run naive`` never loads a database client.
BACKENDS: dict[str, str] = {
    "json": "lab.stores.jsonfile",
    "sqlite": "lab.stores.sqlitedb",
    "postgres": "lab.stores.pgdb",
    "redis": "lab.stores.redisdb",
    "redis-cluster": "lab.stores.rediscluster",
}


def open_store(kind: str, place: StorePlace) -> AbstractContextManager[TicketStore]:
    """Open backend ``kind`` at ``place`` for one run (and close it, or its server, after)."""
    module: Any = importlib.import_module(BACKENDS[kind])
    opened: AbstractContextManager[TicketStore] = module.open_store(place)
    return opened
