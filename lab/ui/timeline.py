"""The race, drawn: one swimlane per buyer on a shared time axis (``--timeline``).

Pure, like :mod:`lab.ui.render`: it turns a :class:`~lab.core.model.Result` into a
rich renderable and prints nothing. The layout is computed at render time
from the console's width, so the same timeline fits 80 columns or 200.

Each lane reads left to right::

    buyer 3 │s r·········W✓      s search-read   r read before buying
    buyer 7 │s  r═══════════W✓    · waiting out the latency with a stale count
                                  ═ the same wait, holding the lock
                                  W write   ✓ bought   ✗ sold out   ! error   † killed

Under the lanes, every lost update is named: per ticket sold twice, the chain
of buyers in write order (``0 ← 3 ← 5``: 3 overwrote 0's write, 5 overwrote
3's), every one of them, never "and 3 more".
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from lab.core.i18n import Lang, translator
from lab.core.model import Receipt, Result

__all__ = ["Overwrite", "TimelineView", "overwrites"]


@dataclass(frozen=True)
class Overwrite:
    """One lost update: ``later`` wrote over ``earlier``'s write, both having read ``count``."""

    earlier: int
    later: int
    count: int

    def sentence(self, lang: Lang = "en") -> str:
        _, _n = translator(lang)
        return _(
            "buyer {later} overwrote buyer {earlier}'s write: both read ticket_num={count} "
            "and both wrote {wrote}"
        ).format(later=self.later, earlier=self.earlier, count=self.count, wrote=self.count - 1)


def _pack(items: list[str], sep: str, width: int) -> list[str]:
    """Greedy lines of ``items`` joined by ``sep``, each at most ``width`` cells if it can be."""
    lines: list[str] = []
    for item in items:
        if lines and cell_len(lines[-1] + sep + item) <= width:
            lines[-1] += sep + item
        else:
            if lines:
                lines[-1] += sep.rstrip()
            lines.append(item)
    return lines


def overwrites(result: Result) -> list[Overwrite]:
    """Every lost update in write order, from the same conflicts the tally counts."""
    pairs = []
    for conflict in result.conflicts:
        for earlier, later in zip(conflict.buyers, conflict.buyers[1:], strict=False):
            pairs.append(Overwrite(earlier, later, conflict.ticket))
    return pairs


def _interesting_first(result: Result) -> list[Receipt]:
    contested = {b for c in result.conflicts for b in c.buyers}

    def rank(r: Receipt) -> tuple[int, int]:
        if r.buyer in contested:
            return (0, r.buyer)
        if r.outcome in ("error", "unknown"):
            return (1, r.buyer)
        return (2, r.buyer)

    return sorted(result.receipts, key=rank)


class TimelineView:
    """A rich renderable: ``console.print(TimelineView(result))``."""

    def __init__(self, result: Result, *, max_lanes: int = 12, lang: Lang = "en") -> None:
        self.result = result
        self.max_lanes = max_lanes
        self.lang: Lang = lang

    def _label(self, buyer: int) -> str:
        _, _n = translator(self.lang)
        return _("buyer {n}").format(n=buyer)

    def lanes(self, width: int) -> tuple[list[Text], int]:
        """The lanes that fit, and how many buyers were left out."""
        r = self.result
        shown = _interesting_first(r)[: self.max_lanes]
        shown.sort(key=lambda x: x.buyer)
        # Cells, not characters: 用户7 is three characters and five columns wide.
        label_width = max((cell_len(self._label(x.buyer)) for x in shown), default=7)
        cols = max(10, width - label_width - 3)
        end = max((e.t for x in r.receipts for e in x.events), default=0.0) or 1e-9

        def col(t: float) -> int:
            return min(cols - 1, max(0, round(t / end * (cols - 1))))

        lines = []
        for x in shown:
            cells = [" "] * cols
            styles = [""] * cols
            t_read = x.t_read
            held_from = next((e.t for e in x.events if e.kind == "acquired"), None)
            held_to = next((e.t for e in x.events if e.kind == "released"), None)
            t_end = x.t_done if x.t_done is not None else end
            if t_read is not None:
                for c in range(col(t_read), col(t_end) + 1):
                    cells[c], styles[c] = "·", "yellow"
            if held_from is not None:
                for c in range(col(held_from), col(held_to if held_to is not None else t_end) + 1):
                    cells[c], styles[c] = "═", "cyan"
            marks = {
                "search": ("s", "dim"),
                "read": ("r", "bold"),
                "error": ("!", "bold red"),
                "crash": ("†", "bold magenta"),
                "sold_out": ("✗", "yellow"),
                "gave_up": ("✗", "yellow"),
                "retried": ("↻", "yellow"),
            }
            for e in x.events:
                if e.kind in marks:
                    cells[col(e.t)], styles[col(e.t)] = marks[e.kind]
                elif e.kind == "bought":
                    c = col(e.t)
                    bad = any(x.buyer in conflict.buyers for conflict in r.conflicts)
                    cells[max(0, c - 1)], styles[max(0, c - 1)] = "W", "bold red" if bad else "bold"
                    cells[c], styles[c] = "✓", "bold red" if bad else "green"
            label = self._label(x.buyer)
            line = Text(" " * (label_width - cell_len(label)) + label + " │", style="dim")
            for ch, st in zip(cells, styles, strict=True):
                line.append(ch, style=st)
            lines.append(line)
        return lines, len(r.receipts) - len(shown)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        _, n_ = translator(self.lang)
        width = options.max_width
        r = self.result
        end = max((e.t for x in r.receipts for e in x.events), default=0.0)
        yield Text(_("timeline: 0 → {end:.3f} s after the start gun").format(end=end), style="bold")
        yield Text(
            _("the start gun: the moment every buyer, forked and waiting, is let go at once"),
            style="dim",
        )
        legend = _(
            "s search, r read, ═ lock held, · waiting on a stale count, W write, ✓ bought, "
            "✗ sold out, ! error, † killed"
        )
        # Wrap between items, never inside one ("✗ sold out" stays whole).
        for line in _pack(legend.split(", "), ", ", width):
            yield Text(line, style="dim")
        lines, hidden = self.lanes(width)
        yield from lines
        if hidden:
            yield Text(
                n_(
                    "… {n} more buyer not shown (double-sold, failed and killed buyers come first)",
                    "… {n} more buyers not shown "
                    "(double-sold, failed and killed buyers come first)",
                    hidden,
                ).format(n=hidden),
                style="dim",
            )
        if r.conflicts:
            yield Text(
                _("lost updates, in write order (each write overwrote the one on its left):"),
                style="bold red",
            )
            for conflict in r.conflicts:
                chain = " ← ".join(str(b) for b in conflict.buyers)
                yield Text(
                    "  "
                    + _("ticket #{t} (all read {t}, all wrote {wrote}): {chain}").format(
                        t=conflict.ticket, wrote=conflict.ticket - 1, chain=chain
                    )
                )
