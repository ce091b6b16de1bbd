"""The race, drawn: one swimlane per buyer on a shared time axis (``--timeline``).

Pure, like :mod:`lab.ui.render`: it turns a :class:`~lab.core.model.Result` into a
rich renderable and prints nothing. The layout is computed at render time
from the console's width, so the same timeline fits 80 columns or 200.

Each lane reads left to right::

    buyer 3 │s r·········W✓      s search-read   r read before buying
    buyer 7 │s  r═══════════W✓    · waiting out the latency with a stale count
                                  ═ the same wait, holding the lock
                                  W write   ✓ bought   ✗ sold out   ! error   † killed

Under the lanes, every lost update is named as a pair: who overwrote whose
write, and what both had read.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from lab.core.model import Receipt, Result

__all__ = ["Overwrite", "TimelineView", "overwrites"]

LEGEND = (
    "s search, r read, ═ lock held, · waiting on a stale count, W write, ✓ bought, "
    "✗ sold out, ! error, † killed"
)


@dataclass(frozen=True)
class Overwrite:
    """One lost update: ``later`` wrote over ``earlier``'s write, both having read ``count``."""

    earlier: int
    later: int
    count: int

    def sentence(self) -> str:
        return (
            f"buyer {self.later} overwrote buyer {self.earlier}'s write: both read "
            f"ticket_num={self.count} and both wrote {self.count - 1}"
        )


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

    def __init__(self, result: Result, *, max_lanes: int = 12, max_pairs: int = 6) -> None:
        self.result = result
        self.max_lanes = max_lanes
        self.max_pairs = max_pairs

    def lanes(self, width: int) -> tuple[list[Text], int]:
        """The lanes that fit, and how many buyers were left out."""
        r = self.result
        shown = _interesting_first(r)[: self.max_lanes]
        shown.sort(key=lambda x: x.buyer)
        label_width = max((len(f"buyer {x.buyer}") for x in shown), default=7)
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
            line = Text(f"{f'buyer {x.buyer}':>{label_width}} │", style="dim")
            for ch, st in zip(cells, styles, strict=True):
                line.append(ch, style=st)
            lines.append(line)
        return lines, len(r.receipts) - len(shown)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        r = self.result
        end = max((e.t for x in r.receipts for e in x.events), default=0.0)
        yield Text(f"timeline: 0 → {end:.3f} s after the start gun", style="bold")
        yield Text(LEGEND, style="dim", overflow="fold")
        lines, hidden = self.lanes(width)
        yield from lines
        if hidden:
            yield Text(
                f"… {hidden} more buyers not shown "
                "(double-sold, failed and killed buyers come first)",
                style="dim",
            )
        pairs = overwrites(r)
        if pairs:
            yield Text("lost updates:", style="bold red")
            for pair in pairs[: self.max_pairs]:
                yield Text("  " + pair.sentence())
            if len(pairs) > self.max_pairs:
                yield Text(f"  …and {len(pairs) - self.max_pairs} more overwrites", style="dim")
