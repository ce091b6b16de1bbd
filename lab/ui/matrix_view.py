"""``lab matrix`` rows -> Markdown, a self-contained HTML page, a rich table. Pure.

Builds from :class:`~lab.core.matrix_rows.MatrixRow` alone (core data): no
harness, variant, store or printing code, so a test renders a hand-made row.
Nothing here prints; the CLI prints what these functions return.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from lab.core.matrix_rows import MatrixRow

__all__ = [
    "HEADERS",
    "check_line",
    "describe_runs",
    "matrix_html",
    "matrix_markdown",
    "matrix_table",
    "observed",
]

#: The matrix's columns, in order (Markdown, HTML and the terminal table share them).
HEADERS: tuple[str, ...] = (
    "engine",
    "variant",
    "isolation",
    "expected",
    "observed",
    "oversold",
    "lost updates",
    "undersold",
    "aborted & retried",
    "errors",
    "tickets/s",
    "ceiling/s",
    "× ceiling",
)


def observed(row: MatrixRow) -> str:
    """What the runs showed, in one word or two."""
    if row.failed_check:
        return "BUG: did not hold"
    if row.oversold or row.lost_updates:
        return "races"
    if row.errors:
        return "fails"
    if not row.held:
        return "did not balance"
    if row.undersold:
        return "holds, undersells"
    return "holds"


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _cells(row: MatrixRow) -> tuple[str, ...]:
    return (
        row.engine,
        row.variant,
        row.isolation,
        row.expected,
        observed(row),
        str(row.oversold),
        str(row.lost_updates),
        str(row.undersold),
        str(row.retries),
        str(row.errors),
        _rate(row.tickets_per_s),
        _rate(row.ceiling_per_s),
        f"{row.ratio:.2f}",
    )


def describe_runs(
    *,
    buyers: int,
    race_buyers: int,
    race_latency: float,
    lockstep: bool,
    repeat: int,
    seed: int,
) -> str:
    """One sentence on how the rows were measured (a caption for every output)."""
    window = "held in lockstep" if lockstep else f"{race_latency:g} s between read and write"
    return (
        f"Per row: one race run ({race_buyers} buyers, 1 ticket, {window}) and {repeat} "
        f"throughput run{'s' if repeat != 1 else ''} ({buyers} buyer processes, {buyers} "
        f"tickets, no latency; tickets/s is the median of sold / elapsed). × ceiling divides "
        f"it by the engine's ceiling: {buyers} client processes doing the conditional "
        f"decrement (SQL) or one Lua check-and-decrement (Redis) in a bare loop for the same "
        f"{buyers} sales, measured right before each throughput run (median). Seed {seed}."
    )


def matrix_markdown(rows: Sequence[MatrixRow], *, caption: str = "") -> str:
    """The matrix as a Markdown table (and its caption, if given, below it)."""
    lines = [
        "| " + " | ".join(HEADERS) + " |",
        "|" + "|".join("---:" if i >= 5 else "---" for i in range(len(HEADERS))) + "|",
    ]
    for row in rows:
        cells = list(_cells(row))
        cells[1] = f"`{cells[1]}`"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.races td.observed { color: #b00; font-weight: bold; }
tr.bug td { background: #fdd; }
tr.holds td.observed { color: #070; }
tr.fails td.observed { color: #a60; }
tr.engine-start td { border-top: 2px solid #888; }
caption { caption-side: bottom; text-align: left; padding-top: 1em; color: #555; }
"""


def _row_class(row: MatrixRow) -> str:
    word = observed(row)
    if word.startswith("BUG"):
        return "bug"
    return word.split(",")[0].split()[0]


def matrix_html(rows: Sequence[MatrixRow], *, title: str = "lab matrix", caption: str = "") -> str:
    """The matrix as one self-contained HTML page (inline CSS, nothing fetched)."""
    esc = html.escape
    head = "".join(
        f'<th class="n">{esc(h)}</th>' if i >= 5 else f"<th>{esc(h)}</th>"
        for i, h in enumerate(HEADERS)
    )
    body = []
    previous = None
    for row in rows:
        classes = [_row_class(row)]
        if row.engine != previous:
            classes.append("engine-start")
        previous = row.engine
        cells = []
        for i, cell in enumerate(_cells(row)):
            kind = "n" if i >= 5 else ("observed" if HEADERS[i] == "observed" else "")
            attr = f' class="{kind}"' if kind else ""
            tip = f' title="{esc(row.why)}"' if HEADERS[i] == "variant" and row.why else ""
            cells.append(f"<td{attr}{tip}>{esc(cell)}</td>")
        body.append(f'<tr class="{" ".join(classes)}">{"".join(cells)}</tr>')
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><h1>{esc(title)}</h1>\n"
        f"<table>{cap}<thead><tr>{head}</tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody></table></body></html>\n"
    )


_STYLE = {"races": "bold red", "fails": "yellow", "holds": "green", "bug": "bold white on red"}
#: The terminal's short names for the levels (Hermitage's abbreviations).
_SHORT_ISOLATION = {
    "READ COMMITTED": "RC",
    "REPEATABLE READ": "RR",
    "SERIALIZABLE": "SER",
    "SERIALIZABLE (one writer)": "SER",
}
#: The terminal table's columns: 80 columns wide with the longest names.
_TERMINAL_HEADERS: tuple[str, ...] = (
    "variant", "iso", "result", "over", "lost", "under", "retry", "err", "t/s", "ceil", "×",
)  # fmt: skip
_LEGEND = (
    "iso: isolation (RC read committed, RR repeatable read, SER serializable; SQLite runs "
    "one writer at a time) · over: oversold · lost: lost updates · under: undersold · "
    "retry: aborted and retried · err: errors · t/s: tickets/s · ceil: the engine's "
    "ceiling, tickets/s · ×: t/s ÷ ceil."
)


def _result_word(row: MatrixRow) -> str:
    """What the runs showed, and what was expected when that differs."""
    word = observed(row)
    if word.startswith("BUG"):
        return "BUG"
    if word == "holds, undersells":
        word = "undersells"
    expected = row.expected.split()[0]  # "holds (slow)" -> "holds"
    return word if word == expected else f"{word}, expected {row.expected}"


def matrix_table(rows: Sequence[MatrixRow], *, caption: str = "") -> Table:
    """The matrix as a rich table for the terminal: one section per engine, short headers."""
    table = Table(
        box=box.SIMPLE_HEAD,
        caption=" ".join(part for part in (_LEGEND, caption) if part),
        caption_justify="left",
        pad_edge=False,
        padding=(0, 0),
    )
    for i, header in enumerate(_TERMINAL_HEADERS):
        table.add_column(
            header,
            justify="right" if i >= 3 else "left",
            no_wrap=i != 2,
            min_width=10 if header == "result" else None,
        )
    previous = None
    for row in rows:
        if row.engine != previous:
            if previous is not None:
                table.add_section()
            table.add_row(Text(row.engine, style="bold"))
            previous = row.engine
        table.add_row(
            row.variant,
            _SHORT_ISOLATION.get(row.isolation, row.isolation),
            Text(_result_word(row), style=_STYLE.get(_row_class(row), "")),
            *_cells(row)[5:],
        )
    return table


def check_line(failing: Sequence[MatrixRow]) -> str:
    """One line naming the rows expected to hold that did not (``--check``)."""
    parts = []
    for row in failing:
        what = [
            f"{n} {label}"
            for n, label in (
                (row.oversold, "oversold"),
                (row.lost_updates, "lost updates"),
                (row.errors, "errors"),
            )
            if n
        ]
        parts.append(f"{row.label} ({', '.join(what) or 'ledger disagrees'})")
    return "lab matrix --check: expected to hold but did not: " + "; ".join(parts)
