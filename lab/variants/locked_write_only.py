"""locked-write-only: a lock around the write alone. A classic mistake; it still oversells.

The race it still allows: the buyer reads the count *outside* the lock, waits
out its latency, and only then takes the lock to write ``count - 1``. The
lock makes each write whole (no torn file), but the decision was made on a
count that may already be stale. Two buyers who both read 1 both write 0, one
after the other, each safely, and both are told 买票成功. Mutual exclusion has
to cover the whole read-check-write, not just the part that touches the disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.variants._mutex import LockKit, file_mutex, lock_kit
from lab.variants.naive import search
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = ["LockedWriteOnly", "buy", "run"]


def buy(me: Buyer, kit: LockKit) -> None:
    """买票, locking only around the write (the same FileLock as ``locked``, the wrong scope)."""
    count = me.store.read()  # read WITHOUT the lock: another buyer may be about to write
    me.read(count)
    me.network_latency()  # the race window is still wide open
    if count > 0:
        with file_mutex(me, kit):  # too late: the decision is already made
            me.store.write_atomic(count - 1)
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def run(me: Buyer, kit: LockKit) -> None:
    search(me)
    buy(me, kit)


class LockedWriteOnly(VariantBase):
    name = "locked-write-only"
    fixed_by: str | None = "locked"
    fix = N_(
        "take the lock before the read, not just around the write: the decision must be made "
        "on a count nobody else can change"
    )
    summary = "a FileLock around the write only, not the read-check-write (a classic mistake)"
    safe = False
    locks: tuple[str, ...] = ()
    why = (
        "the lock makes each write whole, but the count was read before taking it, so buyers "
        "who read the same count still each sell the same ticket"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield Stage(program=run, kit=lock_kit(env, "file"), lock="file")
