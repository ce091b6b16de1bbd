"""naive: the notes' program as written. Ten processes, one file, no coordination.

The race it allows (the lesson of section 8, 多进程数据错乱问题): each buyer
reads ``ticket_num``, waits its network latency, and only then writes
``ticket_num - 1``. Nothing stops a second buyer from reading the same 1 while
the first is still waiting. Both see a ticket, both write 0, and both are told
买票成功: one write overwrites the other (a *lost update*) and the ticket is
sold twice (an *oversell*).

The notes' ``open('w')`` also truncates data.json before ``json.dump`` fills
it, so a buyer that reads at that instant finds an empty file: a *torn read*,
which the tally counts as that buyer's error.

Notes' code                                  This module
-------------------------------------------  ------------------------------
def search(name): json.load(f) ... print     search(me)
def buy(name): json.load(f)                  buy(me): me.store.read()
    time.sleep(random.randint(1, 3))             me.network_latency()
    if data['ticket_num'] > 0: ... dump          me.store.write_in_place(...)
def run(name): search(name); buy(name)       run(me)
Process(target=run, args=(...)).start()      the runner, for every variant
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lab.buyer import Buyer
from lab.core.i18n import N_
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = ["Naive", "buy", "run", "search"]


def search(me: Buyer) -> None:
    """查票: read the count and report it. Harmless on its own: it writes nothing."""
    count = me.store.read()
    me.searched(count)


def buy(me: Buyer) -> None:
    """买票: read again, wait, then decrement what was read. The race lives here."""
    count = me.store.read()  # 再次确认票
    me.read(count)
    # 模拟网络延迟. The count above is already stale for as long as this lasts:
    # every other buyer can read the same value and act on it.
    me.network_latency()
    if count > 0:
        me.store.write_in_place(count - 1)  # the notes' open('w') + json.dump: truncate, then write
        me.bought(ticket=count)
    else:
        me.sold_out(count)


def run(me: Buyer) -> None:
    """The notes' ``run(name)``."""
    search(me)
    buy(me)


class Naive(VariantBase):
    name = "naive"
    fixed_by: str | None = "locked"
    fix = N_(
        "a lock around the read, the check and the write (multiprocessing.Lock or a file "
        "lock), so no buyer reads while another is between its read and its write"
    )
    summary = "the notes' program: processes share data.json with no coordination"
    locks: tuple[str, ...] = ()
    safe = False
    why = (
        "every buyer reads the count, waits, then writes count-1; buyers who read before "
        "anyone wrote all sell the same ticket, and a read mid-write sees a torn file"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        yield Stage.alone(run)
