"""Results -> rich renderables. Pure: nothing here prints.

Tests render into ``Console(file=io.StringIO(), width=100)`` and read the
text. The CLI is the only place that prints what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from lab.core.contracts import Expectation, Ledger, VariantInfo, Verdict
from lab.core.explored import Exploration
from lab.core.i18n import N_, Lang, translator
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

#: Above this many buyers the per-buyer table shows the interesting rows only.
TABLE_ROWS = 20


def buyer_name(index: int, lang: Lang = "en") -> str:
    """``buyer 3``, or the notes' ``用户3``."""
    _, _n = translator(lang)
    return _("buyer {n}").format(n=index)


def format_buyers(indices: Iterable[int], lang: Lang = "en") -> str:
    """Compress runs of buyers: ``[0..9]`` -> ``0–9``; ``[1, 2, 3, 7]`` -> ``1–3 and 7``."""
    _, _n = translator(lang)
    nums = sorted(set(indices))
    parts: list[str] = []
    start = prev = None
    for n in [*nums, None]:
        if start is not None and prev is not None and (n is None or n != prev + 1):
            if start == prev:
                parts.append(f"{start}")
            elif prev == start + 1:  # two in a row read better as two: "0 and 1", not "0–1"
                parts += [f"{start}", f"{prev}"]
            else:
                parts.append(f"{start}–{prev}")
            start = None
        if n is not None and start is None:
            start = n
        prev = n
    if len(parts) <= 1:
        return "".join(parts)
    return _("{some} and {last}").format(some=", ".join(parts[:-1]), last=parts[-1])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _event_words(event: BuyerEvent, who: str, lang: Lang) -> str:
    """What one report says, in the notes' words where they have them."""
    _, _n = translator(lang)
    count, detail = event.count, event.detail
    match event.kind:
        case "search":
            return _("{who} searched: ticket_num={count}").format(who=who, count=count)
        case "read":
            return _("{who} read ticket_num={count} before buying").format(who=who, count=count)
        case "bought" if count is not None:
            return _("{who} bought ticket #{count}").format(who=who, count=count)
        case "bought":
            return _("{who} bought").format(who=who)
        case "sold_out" if count is not None:
            return _("{who} was unlucky: no ticket (ticket_num was {count})").format(
                who=who, count=count
            )
        case "sold_out":
            return _("{who} was unlucky: no ticket").format(who=who)
        case "error":
            return _("{who} failed: {detail}").format(who=who, detail=detail)
        case "lockstep_broken":
            return _("{who}: lockstep barrier timed out (a lock kept the others out)").format(
                who=who
            )
        case "said":
            return _("{who} printed: {detail}").format(who=who, detail=detail)
        case "acquired":
            return _("{who} took the lock").format(who=who)
        case "released":
            return _("{who} released the lock").format(who=who)
        case "crash" if count == 1:
            return _("{who} was killed by --crash ({detail}, holding the lock)").format(
                who=who, detail=detail
            )
        case "crash":
            return _("{who} was killed by --crash ({detail})").format(who=who, detail=detail)
        case "retried":
            return _("{who} lost a conflict and retries ({detail})").format(who=who, detail=detail)
        case "gave_up":
            return _("{who} lost a conflict and gave up ({detail})").format(who=who, detail=detail)
    return f"{who}: {event.kind}"  # pragma: no cover - every EventKind is matched above


def event_line(event: BuyerEvent, lang: Lang = "en") -> Text:
    """One buyer report as the notes print it (``--verbose``)."""
    who = buyer_name(event.buyer, lang)
    stamp = Text(f"[{event.t:8.3f}s] ", style="dim")
    style = {
        "bought": "green",
        "sold_out": "yellow",
        "error": "red",
        "crash": "magenta",
        "gave_up": "yellow",
        "retried": "yellow",
    }.get(event.kind, "dim" if event.kind in ("acquired", "released") else "")
    return stamp + Text(_event_words(event, who, lang), style=style)


def verdict(result: Result, lang: Lang = "en") -> Text:
    """The run in one plain sentence: :attr:`Result.verdict`, in words and a colour."""
    r = result
    _, n_ = translator(lang)
    match r.verdict:
        case Verdict.INTERRUPTED:
            head = Text(_("INTERRUPTED: "), style="bold yellow")
            return head + Text(
                _("{sold} sold before the run was stopped; this tally is partial").format(
                    sold=r.sold
                )
            )
        case Verdict.STALLED:
            return Text(_("STALLED: "), style="bold red") + Text(r.stalled or "")
        case Verdict.MISMATCH if r.remaining is not None and r.remaining < 0:
            return Text(
                _(
                    "MISMATCH: the count ended at {remaining}, below zero: a decrement was "
                    "never undone (a buyer killed between DECR and its compensating INCR?)"
                ).format(remaining=r.remaining),
                style="bold red",
            )
        case Verdict.MISMATCH if r.orders is not None and (
            r.ledger_double_sold or not r.ledger_agrees
        ):
            return Text(
                _(
                    "MISMATCH: the engine's orders ledger ({orders} orders, {twice} tickets "
                    "recorded twice) disagrees with the count ({visible} sold by the count) "
                    "or with the buyers' reports"
                ).format(
                    orders=len(r.orders) + r.sold_elsewhere,
                    twice=r.ledger_double_sold,
                    visible=r.visible_sales,
                ),
                style="bold red",
            )
        case Verdict.MISMATCH:
            return Text(
                _(
                    "MISMATCH: data.json went down by {extra} more than the {sold} sales "
                    "reported, and no vanished buyer can account for it"
                ).format(extra=r.unknown_consumed, sold=r.sold),
                style="bold red",
            )
        case Verdict.OVERSOLD:
            return Text(
                n_(
                    "OVERSOLD: {tickets} ticket sold {sold} times",
                    "OVERSOLD: {tickets} tickets sold {sold} times",
                    r.tickets,
                ).format(tickets=r.tickets, sold=r.sold + r.sold_elsewhere),
                style="bold red",
            )
        case Verdict.UNREADABLE:
            return Text(
                _("UNREADABLE: data.json at the end {problem}").format(problem=r.final_problem),
                style="bold red",
            )
        case Verdict.LOST_UPDATES:
            return Text(
                _(
                    "LOST UPDATES: {sold} sold, but data.json went down by only {gone} "
                    "({remaining} of {tickets} still on offer)"
                ).format(
                    sold=r.sold, gone=r.visible_sales or 0, remaining=r.remaining, tickets=r.tickets
                ),
                style="bold red",
            )
        case Verdict.ERRORS:
            return Text(
                _("ERRORS: {errors} of {buyers} buyers failed").format(
                    errors=r.errors, buyers=r.buyers
                ),
                style="bold red",
            )
        case Verdict.UNKNOWN:
            return Text(
                _("UNKNOWN: {unknown} buyers vanished before reporting").format(unknown=r.unknown),
                style="bold yellow",
            )
        case Verdict.HELD_DESPITE_KILLS:
            return Text(
                n_(
                    "consistent despite {killed} killed buyer: {sold} sold, {remaining} "
                    "remaining, {taken} taken by killed buyers",
                    "consistent despite {killed} killed buyers: {sold} sold, {remaining} "
                    "remaining, {taken} taken by killed buyers",
                    r.killed,
                ).format(
                    killed=r.killed, sold=r.sold, remaining=r.remaining, taken=r.unknown_consumed
                ),
                style="bold green",
            )
        case Verdict.UNDERSOLD:
            return Text(
                n_(
                    "UNDERSOLD: consistent, but {unsold} ticket unsold although {gave_up} "
                    "buyers wanted one (they lost a compare-and-set and did not retry)",
                    "UNDERSOLD: consistent, but {unsold} tickets unsold although {gave_up} "
                    "buyers wanted one (they lost a compare-and-set and did not retry)",
                    r.undersold,
                ).format(unsold=r.undersold, gave_up=r.gave_up),
                style="bold yellow",
            )
        case Verdict.HOLDS:
            return Text(
                _("consistent: {sold} sold, {remaining} remaining").format(
                    sold=r.sold, remaining=r.remaining
                ),
                style="bold green",
            )


def evidence(result: Result, lang: Lang = "en") -> list[str]:
    """Sentences naming buyers that explain the verdict, from the same receipts as the tally."""
    r = result
    _, n_ = translator(lang)
    lines: list[str] = []
    for conflict in r.conflicts[:3]:
        who = format_buyers(conflict.buyers, lang)
        t = conflict.ticket
        two = len(conflict.buyers) == 2
        if conflict.all_read_before_first_write:
            lines.append(
                (
                    _("Buyers {who} both read ticket_num={t} before either wrote.")
                    if two
                    else _("Buyers {who} all read ticket_num={t} before any of them wrote.")
                ).format(who=who, t=t)
            )
        else:
            lines.append(
                _("Buyers {who} each read ticket_num={t} and each sold ticket #{t}.").format(
                    who=who, t=t
                )
            )
        first, second = conflict.buyers[0], conflict.buyers[1]
        more = len(conflict.buyers) - 2
        tail = (
            n_(
                " ({more} more write overwrote the one before in the same way)",
                " ({more} more writes overwrote the one before in the same way)",
                more,
            ).format(more=more)
            if more
            else ""
        )
        lines.append(
            _(
                "Buyer {second} overwrote buyer {first}'s write: both read ticket_num={t} "
                "and both wrote {wrote}."
            ).format(second=second, first=first, t=t, wrote=t - 1)
            + tail
        )
    if len(r.conflicts) > 3:
        lines.append(
            _("…and {more} more tickets were sold more than once.").format(
                more=len(r.conflicts) - 3
            )
        )
    torn = [x for x in r.receipts if x.outcome == "error"]
    if torn:
        first_err = torn[0]
        line = _("Buyer {buyer} failed: {error}").format(
            buyer=first_err.buyer, error=first_err.error
        )
        if len(torn) > 1:
            line += _(" ({more} more like it)").format(more=len(torn) - 1)
        lines.append(line)
        if any(x.torn_read for x in torn):
            lines.append(
                _(
                    "A torn read: the notes' open('w') empties data.json before json.dump "
                    "refills it, and a buyer read it in between."
                )
            )
            if not r.raced and not r.expected_safe:
                lines.append(
                    _(
                        "To see the oversell itself, widen the window: --latency 0.05-0.2, "
                        "or force it with --lockstep."
                    )
                )
    if r.killed:
        inside = r.killed_in_critical_section
        line = n_("--crash killed {killed} buyer", "--crash killed {killed} buyers", r.killed)
        line = line.format(killed=r.killed)
        if inside:
            line += _(", {inside} of them inside the critical section (holding the lock)").format(
                inside=inside
            )
        line += _(
            ". Their outcome is unknown: {taken} of their sales reached data.json, so the "
            "books balance as sold + remaining + taken-by-killed = "
            "{sold} + {remaining} + {taken} = {tickets}"
        ).format(taken=r.unknown_consumed, sold=r.sold, remaining=r.remaining, tickets=r.tickets)
        line += " ✓." if r.accounted else _(" ✗ (they do not balance).")
        lines.append(line)
    if r.lockstep_broken:
        if r.lock:
            lines.append(
                _(
                    "Lockstep could not gather every buyer in the race window: the lock let "
                    "only one in at a time, which is the fix working."
                )
            )
        else:
            lines.append(
                _(
                    "Lockstep timed out before every buyer reached the race window (late "
                    "arrivals or killed buyers), so this run did not force every buyer to overlap."
                )
            )
    if r.stalled:
        lines.append(_("The runner stopped the stalled buyers and reaped every process."))
    if r.own_program and r.visible_sales is not None and r.unknown_consumed and not r.sold:
        lines.append(
            _(
                "data.json went down, but no buyer reported a sale: does your function return "
                "something truthy for a sale, or should --success-regex match what it prints?"
            )
        )
    if r.sold_elsewhere:
        books = dict(
            elsewhere=r.sold_elsewhere, tickets=r.tickets, sold=r.sold, remaining=r.remaining
        )
        if r.accounted:
            line = _(
                "Other runs (--join) sold {elsewhere} of the {tickets} tickets; the engine's "
                "ledger names them, and the books count them: {sold} + {elsewhere} + "
                "{remaining} = {tickets}."
            )
        else:
            line = _(
                "Other runs (--join) recorded {elsewhere} sales of the {tickets} tickets in "
                "the engine's ledger; with this run's, the books do not balance: {sold} + "
                "{elsewhere} + {remaining} ≠ {tickets}."
            )
        lines.append(line.format(**books))
    if r.consistent and not r.raced:
        if r.own_program:
            lines.append(
                _("Your program held this time; --repeat and --lockstep make a race likelier.")
            )
        elif r.expected_safe:
            taken = sorted((x.ticket for x in r.receipts if x.ticket is not None), reverse=True)
            if taken:
                sales = (
                    _("The one sale took ticket #{first}")
                    if len(taken) == 1
                    else _("Every sale took a different ticket (#{first}…#{last})")
                ).format(first=taken[0], last=taken[-1])
                if r.sold_out:
                    sales += n_(
                        "; {n} buyer read ticket_num=0 and went without.",
                        "; {n} buyers read ticket_num=0 and went without.",
                        r.sold_out,
                    ).format(n=r.sold_out)
                lines.append(sales + ("" if r.sold_out else "."))
        elif r.tickets > 0:
            lines.append(
                _(
                    "No race this time: races are intermittent, and every buyer happened to "
                    "read after the previous write landed. Widen the window with --latency "
                    "0.05-0.2, or force the overlap with --lockstep."
                )
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
    lang: Lang = "en",
) -> Text:
    """One line saying what is about to run (or ran).

    ``own_program``: the buyers run the learner's program, whose latency is its
    own. When None it is read from ``variant``: a :class:`VariantInfo` says it
    (:class:`Expectation` ``YOURS``); for a bare name the core decides
    (:data:`~lab.core.model.OWN_PROGRAM_VARIANT`, until every caller passes it).
    ``tickets`` is a count, or a word for whose count it is ("the file's").
    """
    _, n_ = translator(lang)
    name = variant if isinstance(variant, str) else variant.name
    if own_program is None:
        if isinstance(variant, str):
            own_program = variant == OWN_PROGRAM_VARIANT
        else:
            own_program = _expectation(variant) is Expectation.YOURS
    buyers = scenario.buyers
    parts = [
        name + (f" (--lock {lock})" if lock else ""),
        n_("{n} buyer", "{n} buyers", buyers).format(n=buyers),
    ]
    if isinstance(tickets, int):
        parts.append(n_("{n} ticket", "{n} tickets", tickets).format(n=tickets))
    else:
        parts.append(_("{whose} tickets").format(whose=_(tickets)))
    if own_program:
        parts.append(_("latency: your program's own"))
    else:
        parts.append(_("latency {latency}").format(latency=scenario.latency))
    if scenario.lockstep:
        parts.append(_("lockstep"))
    parts.append(_("seed {seed}").format(seed=seed))
    return Text(" · ".join(parts), style="bold")


#: What ``run_header`` may say instead of a count (the CLI passes these words).
WHOSE_TICKETS = (N_("the server's"), N_("the sale's"), N_("the file's"))


def _tally_table(r: Result, lang: Lang = "en") -> Table:
    _, _n = translator(lang)
    table = Table(box=None, pad_edge=False, show_edge=False)
    # A program that reports no ticket numbers (custom) cannot show double sales.
    numbered = all(x.ticket is not None for x in r.receipts if x.outcome == "bought")
    # (key, heading, value): the key says which numbers are bad news when not 0.
    columns: list[tuple[str, str, object]] = [("sold", _("sold"), r.sold)]
    if r.orders_elsewhere:
        # --join: the other runs' sales, from the engine's ledger, close the books.
        columns.append(("elsewhere", _("sold elsewhere"), r.sold_elsewhere))
    columns += [
        ("remaining", _("remaining"), "?" if r.remaining is None else r.remaining),
        ("oversold", _("oversold"), r.oversold),
        ("lost", _("lost updates"), "?" if r.lost_updates is None else r.lost_updates),
        # The engine's ledger sees other runs' sales too (--join): the larger count.
        ("double", _("double-sold"), max(r.double_sold, r.ledger_double_sold) if numbered else "?"),
        ("errors", _("errors"), r.errors),
    ]
    if r.killed:
        columns.append(("killed", _("killed"), r.killed))  # their books: the sentence above
    if r.vanished:
        columns.append(("vanished", _("vanished"), r.vanished))
    for _key, heading, _value in columns:
        table.add_column(heading, justify="right")
    bad = {"oversold", "lost", "double", "errors"}
    table.add_row(
        *[
            Text(str(v), style="bold red" if k in bad and v not in (0, "0") else "")
            for k, _heading, v in columns
        ]
    )
    return table


def _outcome_word(outcome: str, lang: Lang) -> str:
    _, _n = translator(lang)
    words = {
        "bought": _("bought"),
        "sold_out": _("sold out"),
        "error": _("error"),
        "unknown": _("unknown"),
        "gave_up": _("gave up"),
    }
    return words.get(outcome, outcome)


def _receipts_table(r: Result, lang: Lang = "en") -> Table:
    _, _n = translator(lang)
    table = Table(title=_("who read what"), title_justify="left", show_edge=False, pad_edge=False)
    for name, justify in (
        (_("buyer"), "right"),
        (_("searched"), "right"),
        (_("read at buy"), "right"),
        (_("outcome"), "left"),
        (_("took ticket"), "right"),
        (_("wrote"), "right"),
        (_("done at"), "right"),
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
            f"#{x.ticket}" + (_(" (double)") if x.buyer in contested else "")
            if x.ticket is not None
            else ""
        )
        table.add_row(
            str(x.buyer),
            "" if x.searched is None else str(x.searched),
            "" if x.read is None else str(x.read),
            Text(_outcome_word(x.outcome, lang), style=style),
            Text(ticket, style="bold red" if x.buyer in contested else ""),
            "" if x.ticket is None else f"ticket_num={x.ticket - 1}",
            "" if x.t_done is None else f"{x.t_done:.3f}s",
        )
    if len(rows) > TABLE_ROWS:
        table.caption = _("…{more} more buyers (see --json for all)").format(
            more=len(rows) - TABLE_ROWS
        )
        table.caption_justify = "left"
    return table


def _ledger_line(ledger: Ledger, lang: Lang = "en") -> Text:
    """The server's own account of the run, next to the buyers' (clients may disagree with it)."""
    _, _n = translator(lang)
    counts: tuple[tuple[str, int | None], ...] = ()
    if ledger.error is None:  # an unreadable account has no counts to show
        counts = (
            (_("sold"), ledger.sold),
            (_("sold out"), ledger.sold_out),
            (_("remaining"), ledger.remaining),
            (_("lost updates"), ledger.lost_updates),
            (_("errors"), ledger.errors),
            (_("peak connections"), ledger.peak_connections),
        )
    shown = " · ".join(f"{label} {n}" for label, n in counts if n is not None)
    where = ledger.server
    head = _("server ledger ({where}): ").format(where=where) if where else _("server ledger: ")
    return Text("\n" + head, style="bold") + Text(shown or _("(empty)"))


def fix_hint(result: Result, variant: VariantInfo, lang: Lang = "en") -> Group | None:
    """For a run that raced: what would fix it, and the command that shows the fix holding.

    The command repeats the run's own options (buyers, tickets, latency, lockstep,
    seed), so the learner sees the same race met by the fix. Printed unwrapped:
    it must survive copy and paste at any width.
    """
    r = result
    _, _n = translator(lang)
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
    text = Text(_("The fix: "), style="bold green")
    text.append(_(variant.fix))
    text.append("\n" + _("See it hold on the same seed: "))
    # The command is one unbroken line whatever the width (print with crop=False):
    # it must survive copy and paste. The prose above wraps.
    line = Text(command, style="bold", no_wrap=True, overflow="ignore")
    return Group(text, line)


def render_result(
    result: Result, lang: Lang = "en", *, table: bool | None = None, header: bool = True
) -> RenderableType:
    """The summary panel (verdict + evidence), the per-buyer table and the tally."""
    r = result
    _, _n = translator(lang)
    body = Text()
    body.append_text(verdict(r, lang))
    for sentence in evidence(r, lang):
        body.append("\n" + sentence)
    if r.own_program:
        title = _("{variant}: your program, judged by the tally").format(variant=r.variant)
    elif r.expected_safe:
        title = _("{variant}: expected to hold").format(variant=r.variant)
    else:
        title = _("{variant}: expected to race").format(variant=r.variant)
    border = "green" if r.consistent else "red"
    parts: list[RenderableType] = [
        Panel(body, title=title, title_align="left", border_style=border),
    ]
    if header:
        parts.insert(
            0,
            run_header(
                r.variant,
                r.scenario,
                r.tickets,
                r.seed,
                r.lock,
                own_program=r.own_program,
                lang=lang,
            ),
        )
    if table if table is not None else r.buyers <= TABLE_ROWS or not r.consistent:
        parts.append(_receipts_table(r, lang))
    parts.append(Text())
    parts.append(_tally_table(r, lang))
    if r.ledger is not None:
        parts.append(_ledger_line(r.ledger, lang))
    kind = _("data.json") if r.orders is None else _("store")
    where = Text(f"\n{kind}: {r.data_path}\n", style="dim")
    where.append(_("now holds: {text}").format(text=r.final_text.strip() or _("(empty)")), style="")
    parts.append(where)
    if r.schedule_driven:
        parts.append(
            Text(_("a schedule-driven run: the interleaving, not the clock, decided"), style="dim")
        )
        return Group(*parts)
    parts.append(
        Text(
            _("elapsed {elapsed:.3f} s after the start gun · {method} · seed {seed}").format(
                elapsed=r.elapsed_s, method=r.start_method, seed=r.seed
            ),
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
