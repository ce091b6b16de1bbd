"""The invariants, parametrized over the registry: safe variants hold, naive races.

Like trio's test_sync, one invariant is checked against every implementation,
so a new variant in the registry is tested the moment it is registered.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import sys
from pathlib import Path

import pytest
from rich.console import Console

import lab.variants
from lab.core.errors import UsageError
from lab.core.model import Latency, Scenario
from lab.harness.runner import draw_latencies, run
from lab.variants import VARIANTS, _mutex, locked
from tests.helpers import case_id, place, run_variant, safe_cases

SAFE = safe_cases()


def test_registry_matches_modules_on_disk() -> None:
    """One registry: every variant module on disk is registered, and nothing else is."""
    here = Path(lab.variants.__file__).parent
    # Private modules (``_mutex``) hold a variant's mechanism, not a variant.
    modules = {p.stem for p in here.glob("*.py") if not p.stem.startswith("_")} - {"protocol"}
    registered = {type(v).__module__.rsplit(".", 1)[1] for v in VARIANTS.values()}
    assert registered == modules
    for variant in VARIANTS.values():
        assert variant.summary and variant.why
        module = sys.modules[type(variant).__module__]
        assert module.__doc__ and len(module.__doc__) > 200, (
            f"{module.__name__} must explain itself"
        )


def test_registry_has_safe_and_unsafe_variants() -> None:
    unsafe = {n for n, v in VARIANTS.items() if not v.safe}
    assert "naive" in unsafe
    assert unsafe != set(VARIANTS)  # something must hold
    assert ("locked", "file") in SAFE and ("locked", "mp") in SAFE and ("queue", None) in SAFE


@pytest.mark.parametrize("case", SAFE, ids=case_id)
@pytest.mark.parametrize("repeat", range(3))
def test_safe_variant_never_oversells_at_latency_zero(
    case: tuple[str, str | None], repeat: int, tmp_path: Path
) -> None:
    """40 buyers, 10 tickets, no latency: the hardest case for a fix (all contend at once)."""
    name, lock = case
    result = run_variant(name, tmp_path, buyers=40, tickets=10, lock=lock or "file", seed=repeat)
    if VARIANTS[name].undersells:  # never oversells; losers may leave tickets (its own verdict)
        assert result.oversold == result.lost_updates == result.double_sold == result.errors == 0
        assert result.sold + result.remaining == result.tickets  # type: ignore[operator]
        assert result.ledger_agrees and result.verdict.never_oversold
        return
    assert result.sold == 10
    assert result.oversold == 0
    assert result.lost_updates == 0
    assert result.double_sold == 0
    assert result.errors == 0
    assert result.sold + result.remaining == result.tickets  # type: ignore[operator]
    assert result.remaining == 0
    assert result.consistent


@pytest.mark.parametrize("case", SAFE, ids=case_id)
def test_safe_variant_never_oversells_with_latency(
    case: tuple[str, str | None], tmp_path: Path
) -> None:
    name, lock = case
    result = run_variant(
        name, tmp_path, buyers=12, tickets=4, lock=lock or "file", latency=Latency(0.0, 0.01)
    )
    if VARIANTS[name].undersells:
        assert (result.oversold, result.lost_updates, result.errors) == (0, 0, 0)
        assert result.consistent and result.ledger_agrees
        return
    assert (result.sold, result.remaining, result.oversold, result.lost_updates) == (4, 0, 0, 0)
    assert result.errors == 0
    assert sorted(r.ticket for r in result.receipts if r.ticket is not None) == [1, 2, 3, 4]


@pytest.mark.parametrize("case", SAFE, ids=case_id)
def test_safe_variant_when_tickets_outnumber_buyers(
    case: tuple[str, str | None], tmp_path: Path
) -> None:
    name, lock = case
    result = run_variant(name, tmp_path, buyers=10, tickets=100, lock=lock or "file")
    if VARIANTS[name].undersells:
        assert (result.oversold, result.lost_updates, result.errors) == (0, 0, 0)
        assert result.sold + result.gave_up == 10 and result.consistent
        return
    assert (result.sold, result.remaining, result.lost_updates, result.errors) == (10, 90, 0, 0)
    assert result.sold + result.remaining == result.tickets  # type: ignore[operator]


@pytest.mark.parametrize("attempt", range(5))
def test_naive_oversells_deterministically_in_lockstep(attempt: int, tmp_path: Path) -> None:
    """Lockstep holds all buyers between read and write: every run sells the one ticket 10 times."""
    result = run_variant("naive", tmp_path, buyers=10, tickets=1, lockstep=True, seed=attempt)
    assert result.sold == 10
    assert result.oversold == 9
    assert result.lost_updates == 9
    assert result.double_sold == 1
    assert result.errors == 0  # every read happened before the first truncate
    (conflict,) = result.conflicts
    assert conflict.ticket == 1 and sorted(conflict.buyers) == list(range(10))
    assert conflict.all_read_before_first_write


def test_naive_shows_phantom_inventory(tmp_path: Path) -> None:
    """100 tickets, 10 buyers: nothing oversold, yet 9 decrements vanish."""
    result = run_variant("naive", tmp_path, buyers=10, tickets=100, lockstep=True)
    assert result.oversold == 0
    assert result.sold == 10
    assert result.remaining == 99
    assert result.lost_updates == 9


@pytest.mark.parametrize("kind", locked.Locked.locks)
def test_locked_without_its_lock_is_caught(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break the fix (swap the mutex for a no-op) and the same tally goes red.

    This is the proof that the safe-variant tests above can fail: the buyers
    are forked after the patch, so they run the locked program with no lock.
    """
    monkeypatch.setitem(_mutex.LOCKS, kind, lambda me, kit: contextlib.nullcontext())
    result = run_variant("locked", tmp_path, buyers=10, tickets=1, lock=kind, lockstep=True)
    assert result.oversold == 9
    assert result.lost_updates == 9
    assert not result.consistent


def test_locked_lockstep_breaks_instead_of_deadlocking(tmp_path: Path) -> None:
    """Lockstep with a real lock cannot gather the buyers (the lock keeps them out).

    The barrier times out instead of deadlocking, and the run still holds."""
    result = run_variant("locked", tmp_path, buyers=2, tickets=1, lockstep=True)
    assert result.lockstep_broken
    assert (result.sold, result.oversold, result.lost_updates) == (1, 0, 0)


RUNNABLE = sorted(n for n, v in VARIANTS.items() if not getattr(v, "requires", None))


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_variant_runs_under_spawn(name: str, tmp_path: Path) -> None:
    """The start method is explicit; spawn (the only choice without fork) works too."""
    data, scenario = place(
        name, tmp_path, Scenario(buyers=3, tickets=3, latency=Latency(0, 0), seed=1)
    )
    if VARIANTS[name].needs_fork:
        # Its workers inherit the buyers by forking: refused in one line, before anything.
        with pytest.raises(UsageError, match=r"it needs fork, not spawn"):
            run(VARIANTS[name], scenario, data=data, start_method="spawn")
        return
    result = run(VARIANTS[name], scenario, data=data, start_method="spawn")
    assert result.start_method == "spawn"
    assert result.sold + result.sold_out + result.errors + result.gave_up == 3
    if VARIANTS[name].safe and not VARIANTS[name].undersells:
        assert (result.sold, result.remaining) == (3, 0)


def test_same_seed_same_latency_draws() -> None:
    s = Scenario(buyers=10, latency=Latency(1, 3), seed=42)
    assert draw_latencies(s, 42) == draw_latencies(s, 42)
    assert draw_latencies(s, 42) != draw_latencies(s, 43)
    assert all(1 <= x <= 3 for x in draw_latencies(s, 42))


UNSAFE = sorted(n for n in RUNNABLE if not VARIANTS[n].safe and not VARIANTS[n].fails)
FAILING = sorted(n for n in RUNNABLE if VARIANTS[n].fails)


@pytest.mark.parametrize("name", UNSAFE)
def test_every_unsafe_variant_oversells_in_lockstep(name: str, tmp_path: Path) -> None:
    """Every variant the registry calls unsafe is caught, every time, once overlap is forced."""
    result = run_variant(name, tmp_path, buyers=6, tickets=1, lockstep=True)
    assert result.oversold == 5
    assert result.lost_updates == 5
    assert not result.consistent


@pytest.mark.parametrize("name", FAILING)
def test_every_failing_variant_fails_every_buyer_and_sells_nothing(
    name: str, tmp_path: Path
) -> None:
    """A variant that shows an error (CROSSSLOT) fails every buyer, one line each, no sale."""
    result = run_variant(name, tmp_path, buyers=4, tickets=2)
    assert result.errors == 4 and result.sold == 0 and result.remaining == 2
    assert all(r.error and "\n" not in r.error for r in result.receipts)


@pytest.mark.parametrize("name", UNSAFE)
def test_every_racing_variant_names_its_fix(name: str) -> None:
    """Every racing screen can end with the fix: a sentence, and a safe variant that shows it."""
    variant = VARIANTS[name]
    if variant.requires:
        return  # custom: the learner's own program, judged by the tally
    assert variant.fix and variant.fixed_by in VARIANTS, name
    fixed = VARIANTS[variant.fixed_by]
    assert fixed.safe and fixed.store == variant.store, (name, fixed.name)


def test_naive_joined_hides_the_race_by_running_buyers_one_at_a_time(tmp_path: Path) -> None:
    result = run_variant("naive-joined", tmp_path, buyers=6, tickets=2)
    assert (result.sold, result.oversold, result.lost_updates) == (2, 0, 0)
    order = sorted(result.receipts, key=lambda r: r.t_done or 0.0)
    # Each buyer searched only after the previous buyer was done: no overlap at all.
    for before, after in itertools.pairwise(order):
        first_event = min(e.t for e in after.events)
        assert first_event >= (before.t_done or 0.0)


def test_a_racing_screen_names_the_fix_and_its_command(tmp_path: Path) -> None:
    from lab.ui.render import fix_hint  # noqa: PLC0415 - the renderer under test

    raced = run_variant("naive", tmp_path, buyers=4, tickets=1, lockstep=True, seed=5)
    hint = fix_hint(raced, VARIANTS["naive"])
    assert hint is not None
    console = Console(file=io.StringIO(), width=40, color_system=None)
    console.print(hint, crop=False)
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines[0].startswith("The fix: a lock around the read")  # the prose wraps at 40...
    command = "lab run locked --buyers 4 --tickets 1 --latency 0 --lockstep --seed 5"
    assert lines[-1] == command  # ...the command is one whole line, to copy and paste
    held = run_variant("locked", tmp_path, buyers=4, tickets=1, seed=5)
    assert fix_hint(held, VARIANTS["locked"]) is None  # nothing to fix
