from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lab.core.model import BuyerEvent, Latency, Receipt, Result, Scenario, receipts_from_events
from lab.ui.render import format_buyers


def _result(
    tickets: int, remaining: int, sales: list[tuple[int, int, float, float]], buyers: int
) -> Result:
    """sales: (buyer, ticket, t_read, t_write)."""
    events = []
    for buyer, ticket, t_read, t_write in sales:
        events += [
            BuyerEvent(buyer, "read", t_read, ticket),
            BuyerEvent(buyer, "bought", t_write, ticket),
        ]
    sold = {b for b, *_ in sales}
    events += [BuyerEvent(b, "sold_out", 9.0, 0) for b in range(buyers) if b not in sold]
    return Result(
        variant="t",
        scenario=Scenario(buyers=buyers),
        tickets=tickets,
        remaining=remaining,
        receipts=receipts_from_events({i: f"buyer {i}" for i in range(buyers)}, events),
        elapsed_s=1.0,
        data_path="x",
        seed=1,
        start_method="fork",
        expected_safe=False,
    )


def test_tallies_for_the_notes_oversell() -> None:
    r = _result(1, 0, [(b, 1, 0.01 * b, 1.0 + b) for b in range(10)], buyers=10)
    assert (r.sold, r.remaining, r.oversold, r.lost_updates, r.double_sold, r.errors) == (
        10,
        0,
        9,
        9,
        1,
        0,
    )
    (c,) = r.conflicts
    assert c.buyers == tuple(range(10)) and c.all_read_before_first_write


def test_phantom_inventory_is_a_lost_update_without_oversell() -> None:
    r = _result(100, 99, [(b, 100, 0.0, 1.0) for b in range(10)], buyers=10)
    assert r.oversold == 0
    assert r.lost_updates == 9


def test_consistent_run() -> None:
    r = _result(3, 0, [(0, 3, 0, 1), (1, 2, 1, 2), (2, 1, 2, 3)], buyers=5)
    assert r.consistent and r.double_sold == 0 and r.sold_out == 2


def test_conflict_order_follows_write_time_not_buyer_number() -> None:
    r = _result(1, 0, [(5, 1, 0.0, 2.0), (2, 1, 0.1, 1.0)], buyers=6)
    assert r.conflicts[0].buyers == (2, 5)


def test_buyer_without_outcome_is_unknown() -> None:
    (receipt,) = receipts_from_events({0: "buyer 0"}, [BuyerEvent(0, "search", 0.0, 1)])
    assert receipt.outcome == "unknown"


@given(st.integers(0, 100), st.integers(0, 100))
def test_latency_round_trip(a: int, b: int) -> None:
    low, high = sorted((a / 10, b / 10))
    parsed = Latency.parse(f"{low}-{high}")
    assert (parsed.low, parsed.high) == (low, high)


@pytest.mark.parametrize("spec", ["", "-1", "abc", "3-1", "1-2-3", "nan", "inf", "1e9", "5000"])
def test_bad_latency_is_refused(spec: str) -> None:
    with pytest.raises(ValueError, match=r"latency|expected|exceed|finite|at most"):
        Latency.parse(spec)


@pytest.mark.parametrize(
    ("nums", "text"),
    [
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "0–9"),
        ([1, 2, 3, 7], "1–3 and 7"),
        ([0, 1], "0 and 1"),  # two in a row are two buyers, not a range
        ([3, 4, 7], "3, 4 and 7"),
        ([4], "4"),
        ([1, 3, 5], "1, 3 and 5"),
    ],
)
def test_format_buyers(nums: list[int], text: str) -> None:
    assert format_buyers(nums) == text


def test_receipt_json_has_the_story() -> None:
    r = Receipt(
        0,
        "buyer 0",
        (
            BuyerEvent(0, "search", 0.0, 1),
            BuyerEvent(0, "read", 0.1, 1),
            BuyerEvent(0, "bought", 0.2, 1),
        ),
    )
    j = r.to_json()
    assert (j["searched"], j["read"], j["ticket"], j["outcome"]) == (1, 1, 1, "bought")


def test_a_kill_after_the_write_cannot_hide_a_lost_update() -> None:
    """2 tickets; A and B both read 2 and both wrote 1; A reported, B was killed before reporting.

    The books balance (1 sold + 1 remaining + 0 taken by the killed), yet an
    update was lost: the run must not be called consistent.
    """
    events = [
        BuyerEvent(0, "read", 0.1, 2), BuyerEvent(0, "bought", 0.3, 2),
        BuyerEvent(1, "read", 0.1, 2), BuyerEvent(1, "crash", 0.3, None, "bought"),
    ]  # fmt: skip
    r = Result(
        variant="t", scenario=Scenario(buyers=2), tickets=2, remaining=1,
        receipts=receipts_from_events({0: "buyer 0", 1: "buyer 1"}, events),
        elapsed_s=1.0, data_path="x", seed=1, start_method="fork", expected_safe=False,
    )  # fmt: skip
    assert r.accounted and r.lost_updates == 0  # the plain books cannot see it...
    assert r.hidden_lost_updates == 1  # ...this can
    assert not r.consistent


def test_a_kill_after_a_clean_write_hides_nothing() -> None:
    """A reads 2 and writes 1, then is killed before reporting; B then reads 1 and buys it."""
    events = [
        BuyerEvent(0, "read", 0.1, 2), BuyerEvent(0, "crash", 0.2, None, "bought"),
        BuyerEvent(1, "read", 0.3, 1), BuyerEvent(1, "bought", 0.4, 1),
    ]  # fmt: skip
    r = Result(
        variant="t", scenario=Scenario(buyers=2), tickets=2, remaining=0,
        receipts=receipts_from_events({0: "buyer 0", 1: "buyer 1"}, events),
        elapsed_s=1.0, data_path="x", seed=1, start_method="fork", expected_safe=True,
    )  # fmt: skip
    assert (r.sold, r.unknown_consumed, r.hidden_lost_updates) == (1, 1, 0)
    assert r.consistent
