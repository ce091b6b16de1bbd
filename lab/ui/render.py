"""Results -> rich renderables. Pure: nothing here prints.

Tests render into ``Console(file=io.StringIO(), width=100)`` and read the
text. The CLI is the only place that prints what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lab.core.contracts import Expectation, Ledger, VariantInfo, Verdict
from lab.core.explored import Exploration
from lab.core.model import OWN_PROGRAM_VARIANT, BuyerEvent, Result, Scenario
from lab.core.stats import ANOMALIES, VariantStats

__all__ = [
    "COMPARE_HEADERS",
    "Lang",
    "anomaly_table",
    "buyer_name",
    "compare_rows",
    "compare_sentences",
    "compare_table",
    "event_line",
    "evidence",
    "exploration",
    "fix_hint",
    "format_buyers",
    "histogram",
    "markdown_table",
    "render_result",
    "run_header",
    "scenario_blurb",
    "scenarios_table",
    "variants_table",
    "verdict",
]

Lang = Literal["en", "zh"]

#: Above this many buyers the per-buyer table shows the interesting rows only.
TABLE_ROWS = 20


def buyer_name(index: int, lang: Lang = "en") -> str:
    """``buyer 3``, or the notes' ``用户3``."""
    return f"用户{index}" if lang == "zh" else f"buyer {index}"


def format_buyers(indices: Iterable[int]) -> str:
    """Compress runs of buyers: ``[0..9]`` -> ``0–9``; ``[1, 2, 3, 7]`` -> ``1–3 and 7``."""
    nums = sorted(set(indices))
    parts: list[str] = []
    start = prev = None
    for n in [*nums, None]:
        if start is not None and prev is not None and (n is None or n != prev + 1):
            parts.append(f"{start}" if start == prev else f"{start}–{prev}")
            start = None
        if n is not None and start is None:
            start = n
        prev = n
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def event_line(event: BuyerEvent, lang: Lang = "en") -> Text:
    """One buyer report as the notes print it (``--verbose``)."""
    who = buyer_name(event.buyer, lang)
    stamp = Text(f"[{event.t:8.3f}s] ", style="dim")
    if lang == "zh":
        words = {
            "search": f"{who}在查票 当前余票为:{event.count}",
            "read": f"{who}再次确认票 余票为:{event.count}",
            "bought": f"{who}买票成功",
            "sold_out": f"{who}很倒霉 没有抢到票",
            "error": f"{who}出错: {event.detail}",
            "lockstep_broken": f"{who}: 锁步屏障超时 (锁让其他用户无法同时进入)",
            "said": f"{who}: {event.detail}",
            "acquired": f"{who}拿到了锁",
            "released": f"{who}释放了锁",
            "crash": f"{who}被杀死 ({event.detail}{', 持有锁' if event.count == 1 else ''})",
            "retried": f"{who}冲突, 重试 ({event.detail})",
            "gave_up": f"{who}冲突, 放弃 ({event.detail})",
        }
    else:
        words = {
            "search": f"{who} searched: ticket_num={event.count}",
            "read": f"{who} read ticket_num={event.count} before buying",
            "bought": f"{who} bought"
            + (f" ticket #{event.count}" if event.count is not None else ""),
            "sold_out": f"{who} was unlucky: no ticket"
            + (f" (ticket_num was {event.count})" if event.count is not None else ""),
            "error": f"{who} failed: {event.detail}",
            "lockstep_broken": f"{who}: lockstep barrier timed out (a lock kept the others out)",
            "said": f"{who} printed: {event.detail}",
            "acquired": f"{who} took the lock",
            "released": f"{who} released the lock",
            "crash": f"{who} was killed by --crash ({event.detail}"
            + (", holding the lock)" if event.count == 1 else ")"),
            "retried": f"{who} lost a conflict and retries ({event.detail})",
            "gave_up": f"{who} lost a conflict and gave up ({event.detail})",
        }
    style = {
        "bought": "green",
        "sold_out": "yellow",
        "error": "red",
        "crash": "magenta",
        "gave_up": "yellow",
        "retried": "yellow",
    }.get(event.kind, "dim" if event.kind in ("acquired", "released") else "")
    return stamp + Text(words[event.kind], style=style)


def verdict(result: Result, lang: Lang = "en") -> Text:
    """The run in one plain sentence: :attr:`Result.verdict`, in words and a colour."""
    r = result
    zh = lang == "zh"
    match r.verdict:
        case Verdict.INTERRUPTED:
            head = Text("中断: " if zh else "INTERRUPTED: ", style="bold yellow")
            return head + Text(f"{r.sold} sold before the run was stopped; this tally is partial")
        case Verdict.STALLED:
            return Text("STALLED: ", style="bold red") + Text(r.stalled or "")
        case Verdict.MISMATCH if r.remaining is not None and r.remaining < 0:
            return Text(
                f"MISMATCH: the count ended at {r.remaining}, below zero: a decrement was "
                "never undone (a buyer killed between DECR and its compensating INCR?)",
                style="bold red",
            )
        case Verdict.MISMATCH if r.orders is not None and (
            r.ledger_double_sold or not r.ledger_agrees
        ):
            return Text(
                f"MISMATCH: the engine's orders ledger ({len(r.orders)} orders, "
                f"{r.ledger_double_sold} tickets recorded twice) disagrees with the count "
                f"({r.visible_sales} sold by the count) or with the buyers' reports",
                style="bold red",
            )
        case Verdict.MISMATCH:
            return Text(
                f"MISMATCH: data.json went down by {r.unknown_consumed} more than the {r.sold} "
                "sales reported, and no vanished buyer can account for it",
                style="bold red",
            )
        case Verdict.OVERSOLD:
            if zh:
                return Text(f"超卖: {r.tickets}张票卖了{r.sold}次", style="bold red")
            return Text(
                f"OVERSOLD: {_plural(r.tickets, 'ticket')} sold {r.sold} times", style="bold red"
            )
        case Verdict.UNREADABLE:
            return Text(f"UNREADABLE: data.json at the end {r.final_problem}", style="bold red")
        case Verdict.LOST_UPDATES:
            gone = r.visible_sales or 0
            if zh:
                return Text(
                    f"丢失更新: 卖出{r.sold}张, 但data.json只减少了{gone}张", style="bold red"
                )
            return Text(
                f"LOST UPDATES: {r.sold} sold, but data.json went down by only {gone} "
                f"({r.remaining} of {r.tickets} still on offer)",
                style="bold red",
            )
        case Verdict.ERRORS:
            if zh:
                return Text(f"出错: {r.buyers}个用户中{r.errors}个失败", style="bold red")
            return Text(f"ERRORS: {r.errors} of {r.buyers} buyers failed", style="bold red")
        case Verdict.UNKNOWN:
            return Text(
                f"UNKNOWN: {r.unknown} buyers vanished before reporting", style="bold yellow"
            )
        case Verdict.HELD_DESPITE_KILLS:
            return Text(
                f"consistent despite {_plural(r.killed, 'killed buyer')}: {r.sold} sold, "
                f"{r.remaining} remaining, {r.unknown_consumed} taken by killed buyers",
                style="bold green",
            )
        case Verdict.UNDERSOLD:
            if zh:
                return Text(
                    f"少卖: 数据一致, 但还剩{r.remaining}张票, {r.gave_up}个想买的用户放弃了",
                    style="bold yellow",
                )
            return Text(
                f"UNDERSOLD: consistent, but {_plural(r.undersold, 'ticket')} unsold although "
                f"{r.gave_up} buyers wanted one (they lost a compare-and-set and did not retry)",
                style="bold yellow",
            )
        case Verdict.HOLDS:
            if zh:
                return Text(f"一致: 卖出{r.sold}张, 剩余{r.remaining}张", style="bold green")
            return Text(f"consistent: {r.sold} sold, {r.remaining} remaining", style="bold green")


def evidence(result: Result) -> list[str]:
    """Sentences naming buyers that explain the verdict, from the same receipts as the tally."""
    r = result
    lines: list[str] = []
    for conflict in r.conflicts[:3]:
        who = format_buyers(conflict.buyers)
        t = conflict.ticket
        two = len(conflict.buyers) == 2
        if conflict.all_read_before_first_write:
            lines.append(
                f"Buyers {who} both read ticket_num={t} before either wrote."
                if two
                else f"Buyers {who} all read ticket_num={t} before any of them wrote."
            )
        else:
            lines.append(f"Buyers {who} each read ticket_num={t} and each sold ticket #{t}.")
        first, second = conflict.buyers[0], conflict.buyers[1]
        more = len(conflict.buyers) - 2
        tail = (
            f" ({_plural(more, 'more write')} overwrote the one before in the same way)"
            if more
            else ""
        )
        lines.append(
            f"Buyer {second} overwrote buyer {first}'s write: both read ticket_num={t} "
            f"and both wrote {t - 1}.{tail}"
        )
    if len(r.conflicts) > 3:
        lines.append(f"…and {len(r.conflicts) - 3} more tickets were sold more than once.")
    torn = [x for x in r.receipts if x.outcome == "error"]
    if torn:
        first_err = torn[0]
        lines.append(
            f"Buyer {first_err.buyer} failed: {first_err.error}"
            + (f" ({len(torn) - 1} more like it)" if len(torn) > 1 else "")
        )
        if any(x.torn_read for x in torn):
            lines.append(
                "A torn read: the notes' open('w') empties data.json before json.dump refills it, "
                "and a buyer read it in between."
            )
            if not r.raced and not r.expected_safe:
                lines.append(
                    "To see the oversell itself, widen the window: --latency 0.05-0.2, "
                    "or force it with --lockstep."
                )
    if r.killed:
        inside = r.killed_in_critical_section
        lines.append(
            f"--crash killed {_plural(r.killed, 'buyer')}"
            + (
                f", {inside} of them inside the critical section (holding the lock)"
                if inside
                else ""
            )
            + f". Their outcome is unknown: {r.unknown_consumed} of their sales reached data.json, "
            "so the books balance as sold + remaining + taken-by-killed = "
            f"{r.sold} + {r.remaining} + {r.unknown_consumed} = {r.tickets}"
            + (" ✓." if r.accounted else " ✗ (they do not balance).")
        )
    if r.lockstep_broken:
        if r.lock:
            lines.append(
                "Lockstep could not gather every buyer in the race window: the lock let only one "
                "in at a time, which is the fix working."
            )
        else:
            lines.append(
                "Lockstep timed out before every buyer reached the race window (late arrivals or "
                "killed buyers), so this run did not force every buyer to overlap."
            )
    if r.stalled:
        lines.append("The runner stopped the stalled buyers and reaped every process.")
    if r.own_program and r.visible_sales is not None and r.unknown_consumed and not r.sold:
        lines.append(
            "data.json went down, but no buyer reported a sale: does your function return "
            "something truthy for a sale, or should --success-regex match what it prints?"
        )
    if r.consistent and not r.raced:
        if r.own_program:
            lines.append(
                "Your program held this time; --repeat and --lockstep make a race likelier."
            )
        elif r.expected_safe:
            taken = sorted((x.ticket for x in r.receipts if x.ticket is not None), reverse=True)
            if taken:
                sales = (
                    f"The one sale took ticket #{taken[0]}"
                    if len(taken) == 1
                    else f"Every sale took a different ticket (#{taken[0]}…#{taken[-1]})"
                )
                lines.append(
                    f"{sales}; {_plural(r.sold_out, 'buyer')} read ticket_num=0 and went without."
                )
        else:
            lines.append(
                "No race this time: races are intermittent, and every buyer happened to read "
                "after the previous write landed. Widen the window with --latency 0.05-0.2, "
                "or force the overlap with --lockstep."
            )
    return lines


def run_header(
    variant: str | VariantInfo,
    scenario: Scenario,
    tickets: int | str,
    seed: int | str,
    lock: str | None,
    *,
    own_program: bool | None = None,
) -> Text:
    """One line saying what is about to run (or ran).

    ``own_program``: the buyers run the learner's program, whose latency is its
    own. When None it is read from ``variant``: a :class:`VariantInfo` says it
    (:class:`Expectation` ``YOURS``); for a bare name the core decides
    (:data:`~lab.core.model.OWN_PROGRAM_VARIANT`, until every caller passes it).
    """
    name = variant if isinstance(variant, str) else variant.name
    if own_program is None:
        if isinstance(variant, str):
            own_program = variant == OWN_PROGRAM_VARIANT
        else:
            own_program = _expectation(variant) is Expectation.YOURS
    parts = [name + (f" (--lock {lock})" if lock else ""), _plural(scenario.buyers, "buyer")]
    parts.append(_plural(tickets, "ticket") if isinstance(tickets, int) else f"{tickets} tickets")
    parts.append("latency: your program's own" if own_program else f"latency {scenario.latency}")
    if scenario.lockstep:
        parts.append("lockstep")
    parts.append(f"seed {seed}")
    return Text(" · ".join(parts), style="bold")


def _tally_table(r: Result) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False)
    # A program that reports no ticket numbers (custom) cannot show double sales.
    numbered = all(x.ticket is not None for x in r.receipts if x.outcome == "bought")
    columns: dict[str, object] = {"sold": r.sold}
    if r.orders_elsewhere:
        # --join: the other runs' sales, from the engine's ledger, close the books.
        columns["sold elsewhere"] = r.sold_elsewhere
    columns |= {
        "remaining": "?" if r.remaining is None else r.remaining,
        "oversold": r.oversold,
        "lost updates": "?" if r.lost_updates is None else r.lost_updates,
        "double-sold": r.double_sold if numbered else "?",
        "errors": r.errors,
    }
    if r.killed:
        columns["killed"] = r.killed  # their sales and the books are in the sentence above
    if r.vanished:
        columns["vanished"] = r.vanished
    for name in columns:
        table.add_column(name, justify="right")
    bad = {"oversold", "lost updates", "double-sold", "errors", "unknown"}
    table.add_row(
        *[
            Text(str(v), style="bold red" if k in bad and v not in (0, "0") else "")
            for k, v in columns.items()
        ]
    )
    return table


def _receipts_table(r: Result) -> Table:
    table = Table(title="who read what", title_justify="left", show_edge=False, pad_edge=False)
    for name, justify in (
        ("buyer", "right"),
        ("searched", "right"),
        ("read at buy", "right"),
        ("outcome", "left"),
        ("took ticket", "right"),
        ("wrote", "right"),
        ("done at", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    contested = {b for c in r.conflicts for b in c.buyers}
    rows = list(r.receipts)
    if len(rows) > TABLE_ROWS:
        # Show the evidence first: double-sold buyers, then failures, then the rest.
        rows.sort(key=lambda x: (x.buyer not in contested, x.outcome != "error", x.buyer))
    for x in rows[:TABLE_ROWS]:
        style = {
            "bought": "green",
            "sold_out": "yellow",
            "error": "red",
            "unknown": "magenta",
            "gave_up": "yellow",
        }[x.outcome]
        ticket = (
            f"#{x.ticket}" + (" (double)" if x.buyer in contested else "")
            if x.ticket is not None
            else ""
        )
        table.add_row(
            str(x.buyer),
            "" if x.searched is None else str(x.searched),
            "" if x.read is None else str(x.read),
            Text(x.outcome, style=style),
            Text(ticket, style="bold red" if x.buyer in contested else ""),
            "" if x.ticket is None else f"ticket_num={x.ticket - 1}",
            "" if x.t_done is None else f"{x.t_done:.3f}s",
        )
    if len(rows) > TABLE_ROWS:
        table.caption = f"…{len(rows) - TABLE_ROWS} more buyers (see --json for all)"
        table.caption_justify = "left"
    return table


def _ledger_line(ledger: Ledger) -> Text:
    """The server's own account of the run, next to the buyers' (clients may disagree with it)."""
    counts: tuple[tuple[str, int | None], ...] = ()
    if ledger.error is None:  # an unreadable account has no counts to show
        counts = (
            ("sold", ledger.sold),
            ("sold out", ledger.sold_out),
            ("remaining", ledger.remaining),
            ("lost updates", ledger.lost_updates),
            ("errors", ledger.errors),
            ("peak connections", ledger.peak_connections),
        )
    shown = " · ".join(f"{label} {n}" for label, n in counts if n is not None)
    where = ledger.server
    head = f"server ledger{f' ({where})' if where else ''}: "
    return Text("\n" + head, style="bold") + Text(shown or "(empty)")


def fix_hint(result: Result, variant: VariantInfo, lang: Lang = "en") -> Text | None:
    """For a run that raced: what would fix it, and the command that shows the fix holding.

    The command repeats the run's own options (buyers, tickets, latency, lockstep,
    seed), so the learner sees the same race met by the fix. Printed unwrapped:
    it must survive copy and paste at any width.
    """
    r = result
    # A torn read is the same missing lock showing itself (a read between another
    # buyer's truncate and write): it needs the same fix, even when nothing oversold.
    if not (r.raced or r.torn_reads) or not variant.fixed_by:
        return None
    sc = r.scenario
    low, high = sc.latency.low, sc.latency.high
    latency = f"{low:g}" if low == high else f"{low:g}-{high:g}"
    command = (
        f"lab run {variant.fixed_by} --buyers {r.buyers} --tickets {r.tickets} "
        f"--latency {latency}{' --lockstep' if sc.lockstep else ''} --seed {r.seed}"
    )
    if sc.store_url is not None:
        option = "--redis-url" if variant.store.startswith("redis") else "--dsn"
        command += f" {option} '{sc.store_url}'"
    head = "修复方法: " if lang == "zh" else "The fix: "
    text = Text(head, style="bold green")
    text.append(variant.fix)
    text.append("\n" + ("看它成立: " if lang == "zh" else "See it hold on the same seed: "))
    text.append(command, style="bold")
    return text


def render_result(
    result: Result, lang: Lang = "en", *, table: bool | None = None, header: bool = True
) -> RenderableType:
    """The summary panel (verdict + evidence), the per-buyer table and the tally."""
    r = result
    body = Text()
    body.append_text(verdict(r, lang))
    for sentence in evidence(r):
        body.append("\n" + sentence)
    if r.own_program:
        title = f"{r.variant}: your program, judged by the tally"
    else:
        title = f"{r.variant}: {'expected to hold' if r.expected_safe else 'expected to race'}"
    border = "green" if r.consistent else "red"
    parts: list[RenderableType] = [
        Panel(body, title=title, title_align="left", border_style=border),
    ]
    if header:
        parts.insert(
            0,
            run_header(r.variant, r.scenario, r.tickets, r.seed, r.lock, own_program=r.own_program),
        )
    if table if table is not None else r.buyers <= TABLE_ROWS or not r.consistent:
        parts.append(_receipts_table(r))
    parts.append(Text())
    parts.append(_tally_table(r))
    if r.ledger is not None:
        parts.append(_ledger_line(r.ledger))
    where = Text(f"\n{'data.json' if r.orders is None else 'store'}: {r.data_path}\n", style="dim")
    where.append(f"now holds: {r.final_text.strip() or '(empty)'}", style="")
    parts.append(where)
    if r.schedule_driven:
        parts.append(
            Text("a schedule-driven run: the interleaving, not the clock, decided", style="dim")
        )
        return Group(*parts)
    parts.append(
        Text(
            f"elapsed {r.elapsed_s:.3f} s after the start gun · {r.start_method} · seed {r.seed}",
            style="dim",
        )
    )
    return Group(*parts)


def _expectation(variant: VariantInfo) -> Expectation:
    return Expectation.of(variant.safe, variant.caveat, variant.undersells, variant.fails)


def variants_table(variants: Mapping[str, VariantInfo]) -> Table:
    """``lab variants``: each variant, whether it should hold, and why."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("variant", style="bold")
    table.add_column("expected")
    table.add_column("what it is")
    for name in sorted(variants):
        v = variants[name]
        expectation = _expectation(v)
        style = {Expectation.RACES: "red", Expectation.YOURS: "yellow"}.get(expectation, "green")
        table.add_row(name, Text(expectation, style=style), v.summary)
    return table


def scenarios_table(scenarios: Sequence[Scenario]) -> Table:
    """``lab scenarios``: each preset and what it teaches."""
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("scenario", style="bold")
    table.add_column("buyers", justify="right")
    table.add_column("tickets", justify="right")
    table.add_column("latency")
    table.add_column("what it teaches")
    for s in scenarios:
        table.add_row(
            s.name,
            str(s.buyers),
            "" if s.tickets is None else str(s.tickets),
            str(s.latency),
            s.description,
        )
    return table


# -- many runs: lab compare, lab run --repeat ------------------------------------------


def _expected(stats: VariantStats) -> Text:
    if not stats.expected_safe:
        return Text("unsafe", style="red")
    slow = stats.expectation is Expectation.HOLDS_SLOW
    return Text("safe (slow)" if slow else "safe", style="green")


def compare_rows(stats: Sequence[VariantStats]) -> list[list[str]]:
    """The comparison as plain cells, shared by the terminal table and the Markdown file."""
    rows = []
    for s in stats:
        rows.append(
            [
                s.label,
                "safe" if s.expected_safe else "unsafe",
                str(s.runs),
                f"{s.oversold_runs} ({s.oversold_rate:.0%})",
                f"{s.mean_oversold:.1f} / {s.max_oversold}",
                str(s.lost_updates),
                str(s.double_sold),
                str(s.errors),
                f"{s.median_elapsed:.3f} s",
                f"{s.tickets_per_s:,.0f}",
                s.verdict,
            ]
        )
    return rows


COMPARE_HEADERS = [
    "variant", "expected", "runs", "oversold runs", "oversold mean/max",
    "lost updates", "double-sold", "errors", "median elapsed", "tickets/s", "verdict",
]  # fmt: skip


def compare_table(stats: Sequence[VariantStats], *, hangs: bool = False) -> Table:
    """One row per variant: which races, how often, how badly, and what each fix costs.

    Compact enough for 80 columns; the Markdown and JSON outputs carry every
    figure (runs, mean oversold) under full names. ``hangs`` adds a column of
    runs that stalled (``--crash``: a dead lock holder).
    """
    runs = max((s.runs for s in stats), default=0)
    # 80 columns: right padding only, no outer edge, short headers. The legend
    # under the title spells them out.
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0),
        title=f"{runs} run{'s' if runs != 1 else ''} of each variant · raced: runs that "
        "oversold or lost an update · max: worst oversell · lost, dbl, err: lost updates, "
        "double-sold tickets, errors over all runs · sold/s: real tickets sold per second · "
        "hung: runs that stalled · secs: median elapsed",
        title_justify="left", title_style="dim",
    )  # fmt: skip
    headers = ["variant", "safe", "raced", "max", "lost", "dbl", "err"]
    headers += ["hung"] if hangs else []
    headers += ["secs", "sold/s", "verdict"]
    for header in headers:
        table.add_column(
            header, justify="left" if header in ("variant", "safe?", "verdict") else "right"
        )
    for s in stats:
        expected = _expected(s)
        expected.plain = {"unsafe": "no", "safe": "yes", "safe (slow)": "slow"}[expected.plain]
        row: list[RenderableType] = [
            Text(s.label, style="bold"),
            expected,
            Text(f"{s.raced_runs}/{s.runs}", style="red" if s.raced_runs else ""),
            str(s.max_oversold),
            str(s.lost_updates),
            str(s.double_sold),
            str(s.errors),
        ]
        if hangs:
            row.append(Text(str(s.hangs), style="bold red" if s.hangs else ""))
        row += [
            f"{s.median_elapsed:.2f}" if s.median_elapsed < 100 else f"{s.median_elapsed:.0f}",
            f"{s.tickets_per_s:,.0f}",
            Text(s.verdict, style="bold green" if s.held else "bold red"),
        ]
        table.add_row(*row)
    return table


def compare_sentences(stats: Sequence[VariantStats]) -> Text:
    """Under the table: one sentence per variant saying why."""
    text = Text()
    for s in stats:
        style = "red" if s.betrayed else ("" if s.held or not s.expected_safe else "red")
        text.append("• " + s.sentence() + "\n", style=style)
    return text


def anomaly_table(stats: Sequence[VariantStats]) -> Table:
    """Variants x anomalies: each cell is "—" or ×count (runs that showed it / runs)."""
    table = Table(
        title="variants × anomalies", title_justify="left", show_edge=False, pad_edge=False
    )
    table.add_column("variant", style="bold")
    for name in ANOMALIES:
        table.add_column(name, justify="center")
    for s in stats:
        cells = []
        for name in ANOMALIES:
            runs, count = s.anomaly(name)
            seen = Text(f"×{count} ({runs}/{s.runs})", style="red")
            cells.append(seen if runs else Text("—", style="dim"))
        table.add_row(Text(s.label, style="bold"), *cells)
    return table


def histogram(stats: VariantStats, width: int = 40) -> Text:
    """Runs by how many tickets they oversold, as a bar per count."""
    hist = stats.histogram
    most = max(hist.values(), default=1)
    text = Text(f"oversold per run, over {stats.runs} runs of {stats.label}:\n", style="bold")
    for oversold in range(0, max(hist, default=0) + 1):
        n = hist.get(oversold, 0)
        bar = "█" * max(1 if n else 0, round(width * n / most))
        text.append(f"{oversold:>4} │ ", style="dim")
        text.append(bar, style="red" if oversold else "green")
        text.append(f" {n}\n")
    return text


def scenario_blurb(scenario: Scenario) -> Text:
    """The scenario's name, shape and what it teaches."""
    # compare and --repeat always start from a fresh data.json: 1 ticket unless told.
    tickets = _plural(1 if scenario.tickets is None else scenario.tickets, "ticket")
    head = Text(
        ("" if scenario.name == "flags" else f"scenario {scenario.name}: ")
        + f"{_plural(scenario.buyers, 'buyer')}, {tickets}, "
        f"latency {scenario.latency}"
        + (f", arrivals {scenario.arrival:g} s apart" if scenario.arrival else "")
        + (", lockstep" if scenario.lockstep else ""),
        style="bold",
    )
    if scenario.description:
        head.append("\n" + scenario.description, style="italic")
    return head


def markdown_table(stats: Sequence[VariantStats], scenario: Scenario) -> str:
    """The comparison as a Markdown table (``lab compare --markdown``) for a README or a slide."""
    tickets = "the file's" if scenario.tickets is None else scenario.tickets
    lines = [
        f"**{scenario.name}**: {scenario.buyers} buyers, {tickets} tickets, "
        f"latency {scenario.latency}",
        "",
        "| " + " | ".join(COMPARE_HEADERS) + " |",
        "|" + "|".join("---" for _ in COMPARE_HEADERS) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in compare_rows(stats)]
    lines.append("")
    lines += [f"- {s.sentence()}" for s in stats]
    return "\n".join(lines) + "\n"


def exploration(e: Exploration) -> RenderableType:
    """``lab explore``: how many schedules, how many failed, and the shortest failing one."""
    how = (
        f"every schedule ({e.explored})"
        if e.complete
        else (
            f"a random sample of {e.explored} schedules (seed {e.seed}): not exhaustive"
            if e.mode == "sampled"
            else f"the first {e.explored} schedules depth-first: stopped at --max-schedules"
        )
    )
    per = 1000 * e.elapsed_s / max(1, e.explored)
    lines = [
        Text(
            f"explore {e.variant}: {_plural(e.buyers, 'buyer')}, {_plural(e.tickets, 'ticket')}",
            style="bold",
        ),
        Text(f"explored {how} in {e.elapsed_s:.2f} s ({per:.1f} ms per schedule)"),
    ]
    failing = e.failing
    style = "bold red" if failing else "bold green"
    lines.append(
        Text(
            f"{e.oversold} oversold · {e.lost_update} lost an update · {e.deadlocked} deadlocked · "
            f"{e.errored} had errors",
            style=style,
        )
    )
    shortest = e.shortest_failing
    if shortest is not None:
        lines.append(Text("shortest failing schedule:", style="bold"))
        lines.append(Text("  " + " ".join(shortest.steps), style="red", overflow="fold"))
        lines.append(
            Text(
                f"replay it: lab replay {e.variant} --buyers {e.buyers} --tickets {e.tickets} "
                f'--schedule "{" ".join(shortest.steps)}"',
                style="dim",
                no_wrap=True,
                overflow="ignore",  # one line, so it can be copied and pasted whole
            )
        )
    elif e.complete:
        lines.append(Text(f"every possible interleaving holds: {e.variant} cannot oversell here."))
    else:
        lines.append(Text("no failing schedule found in the part explored."))
    return Group(*lines)
