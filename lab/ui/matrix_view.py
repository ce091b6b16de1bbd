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

from lab.core.i18n import N_, Lang, translator
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
    N_("engine"),
    N_("variant"),
    N_("isolation"),
    N_("expected"),
    N_("observed"),
    N_("oversold"),
    N_("lost updates"),
    N_("undersold"),
    N_("aborted & retried"),
    N_("errors"),
    N_("tickets/s"),
    N_("ceiling/s"),
    N_("× ceiling"),
)
#: What a row is expected to do (``Expectation`` values), for the catalog.
_EXPECTED = (
    N_("races"),
    N_("holds"),
    N_("holds (slow)"),
    N_("yours"),
    N_("undersells"),
    N_("fails"),
)


def observed(row: MatrixRow) -> str:
    """What the runs showed, in one word or two (English: the page's styles key on it)."""
    if row.failed_check:
        return N_("BUG: did not hold")
    if row.oversold or row.lost_updates:
        return N_("races")
    if row.errors:
        return N_("fails")
    if not row.held:
        return N_("did not balance")
    if row.undersold:
        return N_("holds, undersells")
    return N_("holds")


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def _cells(row: MatrixRow, lang: Lang = "en") -> tuple[str, ...]:
    _, _n = translator(lang)
    return (
        row.engine,
        row.variant,
        row.isolation,
        _(row.expected),
        _(observed(row)),
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
    lang: Lang = "en",
) -> str:
    """One sentence on how the rows were measured (a caption for every output)."""
    _, n_ = translator(lang)
    if lockstep:
        window = _("held in lockstep")
    else:
        window = _("{latency:g} s between read and write").format(latency=race_latency)
    return n_(
        "Per row: one race run ({race_buyers} buyers, 1 ticket, {window}) and {repeat} "
        "throughput run ({buyers} buyer processes, {buyers} tickets, no latency; tickets/s is "
        "the median of sold / elapsed). × ceiling divides it by the engine's ceiling: {buyers} "
        "client processes doing the conditional decrement (SQL) or one Lua check-and-decrement "
        "(Redis) in a bare loop for the same {buyers} sales, measured right before each "
        "throughput run (median). Seed {seed}.",
        "Per row: one race run ({race_buyers} buyers, 1 ticket, {window}) and {repeat} "
        "throughput runs ({buyers} buyer processes, {buyers} tickets, no latency; tickets/s is "
        "the median of sold / elapsed). × ceiling divides it by the engine's ceiling: {buyers} "
        "client processes doing the conditional decrement (SQL) or one Lua check-and-decrement "
        "(Redis) in a bare loop for the same {buyers} sales, measured right before each "
        "throughput run (median). Seed {seed}.",
        repeat,
    ).format(race_buyers=race_buyers, window=window, repeat=repeat, buyers=buyers, seed=seed)


def matrix_markdown(rows: Sequence[MatrixRow], *, caption: str = "", lang: Lang = "en") -> str:
    """The matrix as a Markdown table (and its caption, if given, below it)."""
    _, _n = translator(lang)
    lines = [
        "| " + " | ".join(_(h) for h in HEADERS) + " |",
        "|" + "|".join("---:" if i >= 5 else "---" for i in range(len(HEADERS))) + "|",
    ]
    for row in rows:
        cells = list(_cells(row, lang))
        cells[1] = f"`{cells[1]}`"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if caption:
        lines += ["", caption]
    return "\n".join(lines) + "\n"


#: The page's ``<html lang>``, so a browser picks CJK fonts for Chinese.
_HTML_LANG: dict[Lang, str] = {"en": "en", "zh": "zh-CN"}

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


def matrix_html(
    rows: Sequence[MatrixRow], *, title: str = "lab matrix", caption: str = "", lang: Lang = "en"
) -> str:
    """The matrix as one self-contained HTML page (inline CSS, nothing fetched)."""
    _, _n = translator(lang)
    esc = html.escape
    head = "".join(
        f'<th class="n">{esc(_(h))}</th>' if i >= 5 else f"<th>{esc(_(h))}</th>"
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
        for i, cell in enumerate(_cells(row, lang)):
            kind = "n" if i >= 5 else ("observed" if HEADERS[i] == "observed" else "")
            attr = f' class="{kind}"' if kind else ""
            tip = f' title="{esc(row.why)}"' if HEADERS[i] == "variant" and row.why else ""
            cells.append(f"<td{attr}{tip}>{esc(cell)}</td>")
        body.append(f'<tr class="{" ".join(classes)}">{"".join(cells)}</tr>')
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{_HTML_LANG[lang]}"><head><meta charset="utf-8">'
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
    N_("variant"), N_("iso"), N_("result"), N_("over"), N_("lost"), N_("under"),
    N_("retry"), N_("err"), N_("t/s"), N_("ceil"), N_("×"),
)  # fmt: skip
_LEGEND = N_(
    "iso: isolation (RC read committed, RR repeatable read, SER serializable; SQLite runs "
    "one writer at a time) · over: oversold · lost: lost updates · under: undersold · "
    "retry: aborted and retried · err: errors · t/s: tickets/s · ceil: the engine's "
    "ceiling, tickets/s · ×: t/s ÷ ceil."
)


def _result_word(row: MatrixRow, lang: Lang = "en") -> str:
    """What the runs showed, and what was expected when that differs."""
    _, _n = translator(lang)
    word = observed(row)
    if word.startswith("BUG"):
        return "BUG"
    if word == "holds, undersells":
        word = "undersells"
    expected = row.expected.split()[0]  # "holds (slow)" -> "holds"
    if word == expected:
        return _(word)
    return _("{observed}, expected {expected}").format(observed=_(word), expected=_(row.expected))


def matrix_table(rows: Sequence[MatrixRow], *, caption: str = "", lang: Lang = "en") -> Table:
    """The matrix as a rich table for the terminal: one section per engine, short headers."""
    _, _n = translator(lang)
    table = Table(
        box=box.SIMPLE_HEAD,
        caption=" ".join(part for part in (_(_LEGEND), caption) if part),
        caption_justify="left",
        pad_edge=False,
        padding=(0, 0),
    )
    for i, header in enumerate(_TERMINAL_HEADERS):
        table.add_column(
            _(header),
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
            Text(_result_word(row, lang), style=_STYLE.get(_row_class(row), "")),
            *_cells(row, lang)[5:],
        )
    return table


def check_line(failing: Sequence[MatrixRow], lang: Lang = "en") -> str:
    """One line naming the rows expected to hold that did not (``--check``)."""
    _, _n = translator(lang)
    parts = []
    for row in failing:
        what = [
            f"{n} {label}"
            for n, label in (
                (row.oversold, _("oversold")),
                (row.lost_updates, _("lost updates")),
                (row.errors, _("errors")),
            )
            if n
        ]
        parts.append(f"{row.label} ({', '.join(what) or _('ledger disagrees')})")
    return _("lab matrix --check: expected to hold but did not: ") + "; ".join(parts)
