"""Every way the lab runs the ticket grab, in one registry.

``VARIANTS`` is the only list of variants: the CLI's choices, ``lab
variants``, ``lab compare`` and the tests all read it. Adding a variant means
adding a module here and one line below.
"""

from __future__ import annotations

from lab.variants.custom import Custom
from lab.variants.engine_postgres import PG_VARIANTS
from lab.variants.engine_redis import VARIANTS as REDIS_VARIANTS
from lab.variants.engine_sqlite import SQLITE_VARIANTS
from lab.variants.greenlets import GREENLET_VARIANTS
from lab.variants.locked import Locked
from lab.variants.locked_write_only import LockedWriteOnly
from lab.variants.naive import Naive
from lab.variants.naive_joined import NaiveJoined
from lab.variants.process_pool import POOL_VARIANTS
from lab.variants.protocol import RunEnv, Stage, Variant
from lab.variants.queued import Queued
from lab.variants.tcp import Server, ServerNaive
from lab.variants.threads import THREAD_VARIANTS

__all__ = ["VARIANTS", "RunEnv", "Stage", "Variant", "get"]

#: In the order ``lab variants`` lists them: the notes' file variants, then each engine's.
_ALL: tuple[Variant, ...] = (
    Naive(),
    NaiveJoined(),
    Locked(),
    LockedWriteOnly(),
    Queued(),
    ServerNaive(),
    Server(),
    Custom(),
    *SQLITE_VARIANTS,
    *PG_VARIANTS,
    *(cls() for cls in REDIS_VARIANTS),
    *THREAD_VARIANTS,
    *POOL_VARIANTS,
    *GREENLET_VARIANTS,
)

VARIANTS: dict[str, Variant] = {v.name: v for v in _ALL}


def get(name: str) -> Variant:
    """The registered variant called ``name`` (KeyError if there is none)."""
    return VARIANTS[name]
