"""One function turns a run's reports and its store's final snapshot into a Result.

The runner (real processes, a clock) and ``lab explore`` (gated threads, a
schedule) both end here, so they cannot disagree on how a run is tallied:
what an unreadable store means, which count the sale began with, whose name
the report gives the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lab.core.contracts import Expectation, Ledger, VariantInfo
from lab.core.model import BuyerEvent, Result, Scenario, receipts_from_events
from lab.stores.protocol import Snapshot

__all__ = ["build_result"]


def build_result(
    variant: VariantInfo,
    scenario: Scenario,
    *,
    buyers: int,
    tickets: int,
    events: Sequence[BuyerEvent],
    final: Snapshot,
    elapsed_s: float,
    seed: int,
    start_method: str,
    lock: str | None,
    interrupted: bool = False,
    stalled: str | None = None,
    ledger: Mapping[str, Any] | None = None,
    schedule_driven: bool = False,
) -> Result:
    """The Result of one run.

    ``tickets`` is the count the runner seeded or read at the start; a store
    that owns its count (a server) overrides it through ``final.tickets``.
    """
    names = {i: f"buyer {i}" for i in range(buyers)}
    return Result(
        variant=variant.name,
        scenario=scenario,
        tickets=final.tickets if final.tickets is not None else tickets,
        remaining=final.remaining,
        receipts=receipts_from_events(names, list(events)),
        elapsed_s=elapsed_s,
        data_path=final.where,
        seed=seed,
        start_method=start_method,
        expected_safe=variant.safe,
        final_text=final.text,
        final_problem=final.problem,
        lock=lock,
        interrupted=interrupted,
        stalled=stalled,
        ledger=None if ledger is None else Ledger.from_stats(ledger),
        own_program=Expectation.of(variant.safe, variant.caveat, variant.undersells)
        is Expectation.YOURS,
        schedule_driven=schedule_driven,
        orders=final.orders,
        orders_elsewhere=final.orders_elsewhere,
    )
