"""``lab matrix``: the engines x mechanisms table, built by running real engines.

No mocks: SQLite and a private PostgreSQL (started and stopped inside each test
by the matrix itself), and the ceiling's bare loop on every engine. Only the
``--check`` unit tests build rows and results by hand.
"""

from __future__ import annotations

import dataclasses
import html
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from lab.core.errors import UsageError
from lab.core.matrix_rows import MatrixRow
from lab.core.model import BuyerEvent, Result, Scenario, receipts_from_events
from lab.harness.matrix import (
    ENGINES,
    Settings,
    ceiling,
    check,
    engine_server,
    engines_in,
    isolation_of,
    make_row,
    run_matrix,
    variants_of,
)
from lab.ui.matrix_view import check_line, matrix_html, matrix_markdown, matrix_table, observed
from lab.variants import VARIANTS

#: Small runs: each engine's whole matrix in a few seconds.
SMALL = Settings(buyers=4, race_buyers=4, repeat=1, seed=7)


def _assert_matrix(rows: list[MatrixRow], engine: str) -> None:
    names = [v.name for v in variants_of(engine)]
    assert [r.variant for r in rows] == names  # every registered variant, in registry order
    for row in rows:
        variant = VARIANTS[row.variant]
        assert row.engine == engine
        assert row.isolation == isolation_of(variant)
        if variant.safe:
            assert row.held, row
            assert (row.oversold, row.lost_updates, row.errors) == (0, 0, 0), row
        else:
            assert row.oversold > 0, row  # the race run shows the race
            assert not row.held
            assert observed(row) == "races"
        assert row.ceiling_per_s > 0
        assert row.ratio > 0, row
        assert row.ratio == pytest.approx(row.tickets_per_s / row.ceiling_per_s)
    assert check(rows) == []


def _assert_outputs(rows: list[MatrixRow], tmp_path: Path) -> None:
    markdown = matrix_markdown(rows, caption="caption text")
    page = matrix_html(rows, title="lab matrix", caption="caption text")
    (tmp_path / "matrix.md").write_text(markdown, encoding="utf-8")
    (tmp_path / "matrix.html").write_text(page, encoding="utf-8")
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(rows)  # the header and one line per row
    for row in rows:
        assert f"| {row.engine} | `{row.variant}` | {row.isolation} |" in markdown
        assert f">{html.escape(row.variant)}</td>" in page
    assert "caption text" in markdown and "caption text" in page
    # self-contained: nothing is fetched
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page
    table = matrix_table(rows, caption="caption text")
    assert table.row_count == len(rows) + len({r.engine for r in rows})  # a heading per engine
    out = io.StringIO()
    Console(file=out, width=80).print(table)
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    for row in rows:
        assert f" {row.variant} " in text  # whole, not cut short


@pytest.mark.timeout(110)
def test_sqlite_matrix_races_and_holds(tmp_path: Path) -> None:
    rows, seed = run_matrix(["sqlite"], SMALL)
    assert seed == 7
    _assert_matrix(rows, "sqlite")
    assert {r.isolation for r in rows} == {"SERIALIZABLE (one writer)"}
    _assert_outputs(rows, tmp_path)


@pytest.mark.timeout(110)
def test_postgres_matrix_races_and_holds(tmp_path: Path) -> None:
    seen: list[str] = []
    rows, _ = run_matrix(["postgres"], SMALL, progress=seen.append)
    _assert_matrix(rows, "postgres")
    by_name = {r.variant: r for r in rows}
    assert by_name["pg-naive"].isolation == "READ COMMITTED"
    assert by_name["pg-repeatable-read"].isolation == "REPEATABLE READ"
    assert by_name["pg-serializable"].isolation == "SERIALIZABLE"
    # the race run makes the optimistic fixes abort and retry
    assert by_name["pg-serializable"].retries > 0
    assert by_name["pg-version"].retries > 0
    assert seen == [f"postgres: {r.variant}" for r in rows]
    _assert_outputs(rows, tmp_path)


@pytest.mark.parametrize("engine", ENGINES)
def test_ceiling_sells_exactly_what_it_is_given(engine: str, tmp_path: Path) -> None:
    with engine_server(engine, tmp_path) as url:
        where = url if url is not None else str(tmp_path / "ceiling.sqlite3")
        rate = ceiling(engine, where, clients=4, sales=20)
    assert rate > 0


def _result(
    variant: str, tickets: int, remaining: int, sales: list[tuple[int, int]], orders: list[int]
) -> Result:
    """A hand-made run: sales are (buyer, ticket); ``orders`` the tickets the ledger holds."""
    events = [BuyerEvent(b, "bought", 0.1 + b, t) for b, t in sales]
    buyers = max((b for b, _ in sales), default=0) + 1
    return Result(
        variant=variant,
        scenario=Scenario(buyers=buyers, tickets=tickets),
        tickets=tickets,
        remaining=remaining,
        receipts=receipts_from_events({i: f"buyer {i}" for i in range(buyers)}, events),
        elapsed_s=0.5,
        data_path="x",
        seed=1,
        start_method="fork",
        expected_safe=True,
        orders=tuple((b, t) for (b, _), t in zip(sales, orders, strict=False)),
    )


def test_check_names_a_safe_row_that_oversold() -> None:
    bad = _result("pg-conditional", 1, 0, [(0, 1), (1, 1)], [1, 1])  # ticket 1 sold twice
    good = _result("pg-naive", 1, 0, [(0, 1), (1, 1)], [1, 1])  # the same, but expected
    rows = [
        make_row(VARIANTS["pg-conditional"], [bad], [bad], ceiling_per_s=10.0),
        make_row(VARIANTS["pg-naive"], [good], [good], ceiling_per_s=10.0),
    ]
    assert rows[0].oversold == 1 and not rows[0].held
    assert rows[0].tickets_per_s == pytest.approx(4.0)  # 2 sold in 0.5 s
    assert rows[0].ratio == pytest.approx(0.4)
    assert check(rows) == [rows[0]]  # the naive row races as expected: not a failure
    line = check_line(check(rows))
    assert "\n" not in line
    assert "postgres/pg-conditional" in line and "1 oversold" in line
    assert "pg-naive" not in line
    assert observed(rows[0]) == "BUG: did not hold"


def test_check_names_a_row_whose_ledger_disagrees() -> None:
    # one sale, the count went down by one, but the engine recorded no order
    result = _result("sqlite-immediate", 2, 1, [(0, 2)], [])
    assert not result.ledger_agrees
    row = make_row(VARIANTS["sqlite-immediate"], [result], [result], ceiling_per_s=1.0)
    assert (row.oversold, row.lost_updates, row.errors) == (0, 0, 0)
    assert check([row]) == [row]
    assert "ledger disagrees" in check_line([row])


def test_an_undersells_row_passes_unless_it_oversold() -> None:
    row = MatrixRow(
        engine="postgres",
        variant="pg-version-once",
        isolation="READ COMMITTED",
        expected="undersells",
        oversold=0,
        lost_updates=0,
        undersold=5,
        retries=0,
        errors=0,
        tickets_per_s=10.0,
        ceiling_per_s=20.0,
        ratio=0.5,
        held=True,
    )
    assert check([row]) == []
    assert observed(row) == "holds, undersells"
    worse = dataclasses.replace(row, oversold=1, held=False)
    assert check([worse]) == [worse]
    racy = dataclasses.replace(row, expected="races", oversold=3, held=False)
    assert check([racy]) == []


def test_unknown_or_absent_engines_are_refused() -> None:
    with pytest.raises(UsageError, match="not an engine"):
        run_matrix(["mysql"], SMALL)
    only_sqlite = {n: v for n, v in VARIANTS.items() if v.store in ("json", "sqlite")}
    assert engines_in(only_sqlite) == ["sqlite"]
    with pytest.raises(UsageError, match="no variant in the registry runs on postgres"):
        run_matrix(["postgres"], SMALL, registry=only_sqlite)


def test_isolation_levels() -> None:
    assert isolation_of(VARIANTS["pg-advisory"]) == "READ COMMITTED"
    assert isolation_of(VARIANTS["pg-repeatable-read"]) == "REPEATABLE READ"
    assert isolation_of(VARIANTS["sqlite-version"]) == "SERIALIZABLE (one writer)"
    redis_like = [v for v in VARIANTS.values() if v.store.startswith("redis")]
    assert all(isolation_of(v) == "n/a" for v in redis_like)
    # every engine the registry holds is in the matrix, json data.json variants never are
    assert set(engines_in()) == {v.store for v in VARIANTS.values()} - {"json"}


def test_the_matrix_reads_in_chinese_too() -> None:
    """Markdown, the HTML page and the terminal table, with ``lang="zh"``."""
    from lab.ui.matrix_view import describe_runs  # noqa: PLC0415

    row = MatrixRow(
        engine="redis",
        variant="redis-naive",
        isolation="-",
        expected="races",
        oversold=7,
        lost_updates=7,
        undersold=0,
        retries=0,
        errors=0,
        tickets_per_s=100.0,
        ceiling_per_s=200.0,
        ratio=0.5,
        held=False,
    )
    caption = describe_runs(
        buyers=8, race_buyers=8, race_latency=0.2, lockstep=False, repeat=3, seed=7, lang="zh"
    )
    assert "每一行" in caption and "种子 7" in caption
    markdown = matrix_markdown([row], caption=caption, lang="zh")
    assert markdown.startswith("| 引擎 | 做法 | 隔离级别 | 预期 | 实际 | 超卖 |")
    assert "| 竞争 | 竞争 |" in markdown  # expected races, observed races
    page = matrix_html([row], caption=caption, lang="zh")
    assert '<html lang="zh-CN">' in page and "<th>引擎</th>" in page
    assert 'class="races' in page  # the styles key on the English word, whatever the language
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(matrix_table([row], caption=caption, lang="zh"))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "结果" in screen and "竞争" in screen and "expected" not in screen
    english = matrix_markdown([row], lang="en")
    assert english.startswith("| engine | variant | isolation | expected | observed |")
