"""Run several variants, several times each, on one scenario: the data behind ``lab compare``.

Every variant sees the same scenario and, run for run, the same latency
draws (run k of every variant uses seed + k), so differences between rows
come from the mechanisms alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from lab.core.model import Result, Scenario
from lab.core.stats import VariantStats
from lab.harness.runner import Observer, run, with_seed
from lab.variants import VARIANTS
from lab.variants.protocol import Variant

__all__ = ["Case", "cases_for", "compare"]


@dataclass(frozen=True)
class Case:
    """One row of the comparison: a variant, with one of its lock kinds if it has any."""

    variant: Variant
    lock: str | None = None


def cases_for(
    names: Sequence[str] | None,
    *,
    lock: str | None = None,
    have_buyer: bool = False,
    registry: dict[str, Variant] | None = None,
) -> list[Case]:
    """The rows for ``names`` (default: every data.json variant); each lock kind is its own row.

    Variants that need an input the run does not have (``custom`` without
    ``--buyer``) are left out of the default list, and so are the engine
    variants (SQLite, PostgreSQL, Redis): ``lab matrix`` puts those side by
    side, and each would start its own server per run here. Name them to
    compare them anyway.
    """
    registry = VARIANTS if registry is None else registry
    chosen = list(names) if names else sorted(n for n, v in registry.items() if v.store == "json")
    cases: list[Case] = []
    for name in chosen:
        variant = registry[name]
        requires = variant.requires
        if requires and not have_buyer:
            if names:
                cases.append(Case(variant))  # asked for by name: let it explain what it needs
            continue
        kinds: list[str | None] = [lock] if lock and lock in variant.locks else [*variant.locks]
        cases.extend(Case(variant, kind) for kind in kinds or [None])
    return cases


def compare(
    cases: Iterable[Case],
    scenario: Scenario,
    repeat: int,
    *,
    observer: Observer | None = None,
    on_result: Callable[[Case, Result], None] | None = None,
    start_method: str | None = None,
    stall_timeout: float | None = None,
) -> tuple[list[VariantStats], bool]:
    """Run every case ``repeat`` times; return the stats per case and whether it was interrupted."""
    scenario = with_seed(scenario)
    assert scenario.seed is not None
    stats: list[VariantStats] = []
    for case in cases:
        results: list[Result] = []
        for k in range(repeat):
            this = dataclasses.replace(
                scenario, seed=scenario.seed + k, lock=case.lock or scenario.lock
            )
            result = run(
                case.variant,
                this,
                observer=observer,
                start_method=start_method,
                stall_timeout=stall_timeout,
            )
            results.append(result)
            if on_result is not None:
                on_result(case, result)
            if result.interrupted:
                stats.append(_stats(case, results))
                return stats, True
        stats.append(_stats(case, results))
    return stats, False


def _stats(case: Case, results: list[Result]) -> VariantStats:
    v = case.variant
    return VariantStats(
        variant=v.name,
        lock=case.lock,
        expected_safe=v.safe,
        why=v.why,
        caveat=v.caveat,
        undersells=v.undersells,
        fails=v.fails,
        results=tuple(results),
    )
