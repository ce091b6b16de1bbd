"""Rendering is pure: print into a StringIO console and read the words."""

from __future__ import annotations

import io
from pathlib import Path
from typing import get_args

import pytest
from rich.console import Console

from lab.core.model import BuyerEvent, EventKind
from lab.ui.render import Lang, event_line, render_result, variants_table
from lab.variants import VARIANTS
from tests.helpers import run_variant


def text_of(renderable: object, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_naive_report_names_the_race(tmp_path: Path) -> None:
    out = text_of(
        render_result(run_variant("naive", tmp_path, buyers=10, tickets=1, lockstep=True))
    )
    assert "OVERSOLD: 1 ticket sold 10 times" in out
    assert "Buyers 0–9 all read ticket_num=1 before any of them wrote." in out
    assert "overwrote buyer" in out and "both wrote 0" in out
    assert "#1 (double)" in out


def test_safe_report_says_consistent(tmp_path: Path) -> None:
    out = text_of(render_result(run_variant("queue", tmp_path, buyers=10, tickets=3)))
    assert "consistent: 3 sold, 0 remaining" in out
    assert "Every sale took a different ticket (#3…#1)" in out


def test_chinese_wording_is_the_notes(tmp_path: Path) -> None:
    assert "用户3在查票 当前余票为:1" in text_of(event_line(BuyerEvent(3, "search", 0.0, 1), "zh"))
    assert "用户3买票成功" in text_of(event_line(BuyerEvent(3, "bought", 0.0, 1), "zh"))
    assert "用户3很倒霉 没有抢到票" in text_of(event_line(BuyerEvent(3, "sold_out", 0.0, 0), "zh"))
    out = text_of(
        render_result(run_variant("naive", tmp_path, buyers=3, tickets=1, lockstep=True), "zh")
    )
    assert "超卖: 1张票卖了3次" in out


@pytest.mark.parametrize("kind", get_args(EventKind))
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_event_kind_has_words(kind: EventKind, lang: Lang) -> None:
    line = text_of(event_line(BuyerEvent(4, kind, 1.5, 1, "detail"), lang))
    assert ("用户4" if lang == "zh" else "buyer 4") in line


def test_many_buyers_table_is_trimmed(tmp_path: Path) -> None:
    out = text_of(
        render_result(run_variant("naive", tmp_path, buyers=30, tickets=1, lockstep=True))
    )
    assert "10 more buyers" in out


def test_variants_table_lists_the_registry() -> None:
    out = text_of(variants_table(VARIANTS))
    for name in VARIANTS:
        assert name in out
    assert "races" in out and "holds" in out
