"""The verdict, the race and the books are decided once, in the core; renderers only word them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from rich.console import Console

from lab.core.contracts import Expectation, Failure, Ledger, RunsVerdict, Verdict
from lab.core.errors import StoreCorrupted, TornRead
from lab.core.model import BuyerEvent, Result, Scenario, receipts_from_events
from lab.core.stats import VariantStats
from lab.ui.render import evidence, render_result, run_header, verdict


def text_of(renderable: object, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return str(console.file.getvalue())  # type: ignore[attr-defined]


def make(
    tickets: int, remaining: int | None, events: list[BuyerEvent], buyers: int, **fields: Any
) -> Result:
    """A small Result: ``buyers`` buyers, with the given events."""
    return Result(
        variant=fields.pop("variant", "t"),
        scenario=Scenario(buyers=buyers),
        tickets=tickets,
        remaining=remaining,
        receipts=receipts_from_events({i: f"buyer {i}" for i in range(buyers)}, events),
        elapsed_s=1.0,
        data_path="x",
        seed=1,
        start_method=fields.pop("start_method", "fork"),
        expected_safe=fields.pop("expected_safe", False),
        **fields,
    )


def bought(buyer: int, ticket: int, t: float = 1.0) -> list[BuyerEvent]:
    return [BuyerEvent(buyer, "read", t - 0.5, ticket), BuyerEvent(buyer, "bought", t, ticket)]


TORN = "TornRead: data.json: is empty (read between another writer's truncate and its write?)"

#: verdict -> (a small Result showing it, the headline's start as a user reads it)
CASES: dict[Verdict, tuple[Result, str]] = {
    Verdict.INTERRUPTED: (
        make(1, 0, bought(0, 1), 2, interrupted=True),
        "INTERRUPTED: 1 sold before the run was stopped; this tally is partial",
    ),
    Verdict.STALLED: (
        make(1, 1, [BuyerEvent(0, "acquired", 0.1)], 2, stalled="buyer 0 died holding the lock"),
        "STALLED: buyer 0 died holding the lock",
    ),
    Verdict.MISMATCH: (
        make(3, 1, bought(0, 3), 1),
        "MISMATCH: data.json went down by 1 more than the 1 sales reported",
    ),
    Verdict.OVERSOLD: (
        make(1, 0, bought(0, 1) + bought(1, 1, 2.0), 2), "OVERSOLD: 1 ticket sold 2 times"
    ),
    Verdict.UNREADABLE: (
        make(1, None, [BuyerEvent(0, "error", 0.5, None, TORN)], 1, final_problem="is empty"),
        "UNREADABLE: data.json at the end is empty",
    ),
    Verdict.LOST_UPDATES: (
        make(100, 99, bought(0, 100) + bought(1, 100, 2.0), 2),
        "LOST UPDATES: 2 sold, but data.json went down by only 1 (99 of 100 still on offer)",
    ),
    Verdict.ERRORS: (
        make(1, 1, [BuyerEvent(0, "error", 0.5, None, "RuntimeError: the seller refused")], 1),
        "ERRORS: 1 of 1 buyers failed",
    ),
    Verdict.UNKNOWN: (make(1, 1, [BuyerEvent(0, "read", 0.5, 1)], 1), "UNKNOWN: 1 buyers vanished"),
    Verdict.HELD_DESPITE_KILLS: (
        make(1, 1, [BuyerEvent(0, "crash", 0.5, None, "window")], 1),
        "consistent despite 1 killed buyer: 0 sold, 1 remaining, 0 taken by killed buyers",
    ),
    Verdict.UNDERSOLD: (
        make(2, 1, [*bought(0, 2), BuyerEvent(1, "gave_up", 2.0, None, "lost the CAS")], 2),
        "UNDERSOLD: consistent, but 1 ticket unsold although 1 buyers wanted one",
    ),
    Verdict.HOLDS: (
        make(1, 0, [*bought(0, 1), BuyerEvent(1, "sold_out", 2.0, 0)], 2),
        "consistent: 1 sold, 0 remaining",
    ),
}  # fmt: skip


def test_every_verdict_has_a_case() -> None:
    assert set(CASES) == set(Verdict)


@pytest.mark.parametrize("expected", list(Verdict))
def test_verdict_is_decided_by_the_result(expected: Verdict) -> None:
    result, _ = CASES[expected]
    assert result.verdict is expected


@pytest.mark.parametrize("expected", list(Verdict))
def test_render_only_words_the_verdict(expected: Verdict) -> None:
    result, headline = CASES[expected]
    assert verdict(result).plain.startswith(headline)


@pytest.mark.parametrize("expected", list(Verdict))
def test_held_verdicts_are_consistent_runs(expected: Verdict) -> None:
    result, _ = CASES[expected]
    # An undersold run is consistent and race-free, but it did not hold: tickets stayed
    # unsold. never_oversold is what --check asks of a variant expected to undersell.
    assert expected.never_oversold == (result.consistent and not result.raced)
    assert expected.held == (result.consistent and not result.raced and not result.undersold)


def test_verdicts_that_raced() -> None:
    raced = {v for v, (r, _) in CASES.items() if r.raced}
    assert raced == {Verdict.OVERSOLD, Verdict.LOST_UPDATES}


def _kill_hides_a_lost_update() -> Result:
    events = [
        *bought(0, 2, 0.3),
        BuyerEvent(1, "read", 0.1, 2),
        BuyerEvent(1, "crash", 0.3, None, "bought"),
    ]
    return make(2, 1, events, 2)


def test_a_hidden_lost_update_is_a_race() -> None:
    r = _kill_hides_a_lost_update()
    assert r.lost_updates == 0 and r.hidden_lost_updates == 1
    assert r.raced and not r.consistent


def _stats(results: list[Result], *, safe: bool = False, caveat: str = "") -> VariantStats:
    return VariantStats("t", None, safe, "because", caveat, tuple(results))


def test_stats_aggregate_the_results_own_race() -> None:
    results = [r for r, _ in CASES.values()] + [_kill_hides_a_lost_update()]
    stats = _stats(results)
    assert stats.raced_runs == sum(1 for r in results if r.raced) == 3
    assert stats.verdict is RunsVerdict.RACES and f"{stats.verdict}" == "races"
    assert not stats.held


def test_stats_verdicts() -> None:
    holds = CASES[Verdict.HOLDS][0]
    stalled = CASES[Verdict.STALLED][0]
    errors = CASES[Verdict.ERRORS][0]
    assert _stats([holds, holds]).verdict is RunsVerdict.HOLDS
    assert _stats([holds, stalled]).verdict is RunsVerdict.HANGS
    assert _stats([holds, errors]).verdict is RunsVerdict.FAILS
    assert json.loads(json.dumps(_stats([holds]).to_json()))["verdict"] == "holds"


def test_vanished_is_one_number_everywhere() -> None:
    r = CASES[Verdict.UNKNOWN][0]
    killed = CASES[Verdict.HELD_DESPITE_KILLS][0]
    assert (r.unknown, r.killed, r.vanished) == (1, 0, 1)
    assert (killed.unknown, killed.killed, killed.vanished) == (1, 1, 0)
    assert "vanished" in text_of(render_result(r))
    assert "vanished" not in text_of(render_result(killed)).split("who read what")[-1]
    assert "lost track of 1 buyers" in _stats([r]).sentence()


def test_expectation_of_a_variant() -> None:
    assert Expectation.of(True, "") is Expectation.HOLDS
    assert Expectation.of(True, "correct but slow: one at a time") is Expectation.HOLDS_SLOW
    assert Expectation.of(False, "") is Expectation.RACES
    assert Expectation.of(False, "yours to judge") is Expectation.YOURS
    holds = CASES[Verdict.HOLDS][0]
    assert _stats([holds], safe=True, caveat="slow").expectation is Expectation.HOLDS_SLOW


# -- failures travel as types -------------------------------------------------------


def test_failure_of_an_exception() -> None:
    assert Failure.of(TornRead("data.json", "is empty")) is Failure.TORN_READ
    assert Failure.of(StoreCorrupted("data.json", "not JSON")) is Failure.CORRUPT
    assert Failure.of(RuntimeError("is empty")) is Failure.OTHER

    class Relayed(Exception):
        failure = Failure.TORN_READ

    assert Failure.of(Relayed("the server refused (store)")) is Failure.TORN_READ


def test_torn_read_is_the_failure_type_not_the_message() -> None:
    typed = make(1, 1, [BuyerEvent(0, "error", 0.5, None, "anything", Failure.TORN_READ)], 1)
    by_name = make(1, 1, [BuyerEvent(0, "error", 0.5, None, TORN)], 1)
    # says "empty", but is not a torn read
    other = make(1, 1, [BuyerEvent(0, "error", 0.5, None, "ValueError: empty reply")], 1)
    assert typed.receipts[0].torn_read and by_name.receipts[0].torn_read
    assert not other.receipts[0].torn_read
    assert (typed.torn_reads, by_name.torn_reads, other.torn_reads) == (1, 1, 0)
    assert any(s.startswith("A torn read") for s in evidence(typed))
    assert not any(s.startswith("A torn read") for s in evidence(other))


# -- what the runner (and the explorer) say about the run ---------------------------


def test_own_program_and_schedule_driven_default_from_the_callers_fields() -> None:
    custom = make(1, 0, bought(0, 1), 1, variant="custom")
    plain = make(1, 0, bought(0, 1), 1)
    explored = make(1, 0, bought(0, 1), 1, start_method="threads (lab explore)")
    assert custom.own_program and not plain.own_program
    assert explored.schedule_driven and not plain.schedule_driven


def test_own_program_and_schedule_driven_are_what_the_caller_says() -> None:
    mine = make(1, 0, bought(0, 1), 1, variant="mine", own_program=True, schedule_driven=True)
    out = text_of(render_result(mine))
    assert "mine: your program, judged by the tally" in out
    assert "latency: your program's own" in out
    assert "Your program held this time" in out
    assert "a schedule-driven run" in out and "elapsed" not in out
    not_mine = make(1, 0, bought(0, 1), 1, variant="custom", own_program=False)
    assert "your program" not in text_of(render_result(not_mine)).lower()


def test_run_header_asks_the_variant() -> None:
    class Yours:
        name = "mine"
        summary = ""
        safe = False
        why = ""
        locks: tuple[str, ...] = ()
        caveat = "yours to judge"
        requires: str | None = None
        explorable = False
        crash_safe = False
        many_buyers_per_process = False
        needs_fork = False
        store = "json"
        undersells = False
        fails = False

    scenario = Scenario()
    assert "your program's own" in run_header(Yours(), scenario, 1, 1, None).plain
    assert "your program's own" in run_header("custom", scenario, 1, 1, None).plain
    assert "latency 1–3 s" in run_header("naive", scenario, 1, 1, None).plain


# -- the ledger ---------------------------------------------------------------------

STATS = {
    "server": "127.0.0.1:8000", "external": False, "mode": "naive", "data": "/srv/data.json",
    "tickets_before": 1, "remaining": 0, "problem": None, "requests": 20, "searches": 10,
    "sold": 10, "sold_out": 0, "errors": 0, "unauthorized": 0, "connections": 10,
    "lost_updates": 9, "peak_connections": 10, "lockstep_broken": 0,
}  # fmt: skip


def test_result_takes_the_ledgers_dict_form() -> None:
    r = make(1, 0, bought(0, 1), 1, ledger=STATS)
    assert isinstance(r.ledger, Ledger)
    assert r.ledger.lost_updates == 9 and r.ledger["lost_updates"] == 9
    assert dict(r.ledger) == STATS  # the dict view is the dict form
    assert r.to_json()["ledger"] == STATS
    assert make(1, 0, bought(0, 1), 1, ledger=r.ledger).ledger == r.ledger


def test_ledger_lost_updates_are_never_negative() -> None:
    ledger = Ledger.from_stats({**STATS, "tickets_before": 10, "remaining": 0, "sold": 3})
    assert ledger.lost_updates == 0


def test_an_unreadable_ledger_shows_no_counts() -> None:
    broken = {"server": "127.0.0.1:8000", "external": True, "error": "connection refused"}
    r = make(1, 0, bought(0, 1), 1, ledger=broken)
    assert r.ledger is not None and r.ledger.error == "connection refused"
    assert dict(r.ledger) == broken and "error" in r.ledger and "sold" not in r.ledger
    assert "server ledger (127.0.0.1:8000): (empty)" in text_of(render_result(r))
    full = text_of(render_result(make(1, 0, bought(0, 1), 1, ledger=STATS)))
    assert "sold 10 · sold out 0 · remaining 0 · lost updates 9 · errors 0" in full


def test_other_runs_sales_close_the_books_and_count_toward_double_sales() -> None:
    """``--join``: 4 tickets, this run sold 2, another run's 2 are in the engine's ledger."""
    events = bought(0, 4) + bought(1, 3)
    shared = make(
        4, 0, events, 2, expected_safe=True, orders=((0, 4), (1, 3)), orders_elsewhere=(2, 1)
    )
    assert shared.sold_elsewhere == 2
    assert shared.accounted and shared.ledger_agrees and shared.consistent
    assert shared.oversold == 0 and shared.ledger_double_sold == 0
    assert shared.verdict is Verdict.HOLDS
    assert "sold elsewhere" in text_of(render_result(shared, "en"))
    # Without the other run's orders, the same count is a mismatch: two sales nobody made.
    alone = make(4, 0, events, 2, expected_safe=True, orders=((0, 4), (1, 3)))
    assert not alone.accounted and not alone.ledger_agrees
    # The other run sold ticket 3 too: a double sale only the shared ledger shows.
    double = make(4, 0, events, 2, orders=((0, 4), (1, 3)), orders_elsewhere=(3, 1))
    assert double.ledger_double_sold == 1 and not double.consistent
    # Six sales of one ticket, three of them elsewhere: five oversold, on either machine.
    one = [e for i in range(3) for e in bought(i, 1)]
    naive = make(1, 0, one, 3, orders=((0, 1), (1, 1), (2, 1)), orders_elsewhere=(1, 1, 1))
    assert naive.oversold == 5
    # The books line states true arithmetic: balanced with "=", or "≠" when they are not.
    assert any("2 + 2 + 0 = 4" in line for line in evidence(shared))
    assert any("3 + 3 + 0 ≠ 1" in line for line in evidence(naive))
    assert not any("= 1." in line for line in evidence(naive))
