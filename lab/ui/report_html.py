"""One self-contained HTML file per run or comparison (``--html PATH``).

No network fetches: the CSS, the SVG timeline and the few lines of script
are inline, so the file works from a USB stick on a classroom projector.
Pure like :mod:`lab.ui.render`: these functions return a string; the CLI writes it.

The page holds the scenario, the tally, the evidence sentences and the
timeline as inline SVG, one lane per buyer. Hovering a lane shows that
buyer's events. The script records on ``<body>`` how many lanes it drew and
any script error (``data-lanes``, ``data-errors``), which the browser test reads.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from lab.core.model import Result
from lab.core.stats import VariantStats
from lab.ui.render import COMPARE_HEADERS, compare_rows, evidence, verdict
from lab.ui.timeline import overwrites

__all__ = ["compare_page", "run_page"]

#: Above this many buyers the SVG shows the first lanes only (and says so).
MAX_LANES = 300

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.verdict { font-weight: 700; font-size: 1.1rem; }
.bad { color: #b00020; } .good { color: #1b7d2d; }
table { border-collapse: collapse; margin: .6rem 0; }
td, th { border: 1px solid #ccc; padding: .2rem .55rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
svg.timeline { border: 1px solid #ddd; background: #fcfcfc; }
g.lane:hover rect.bg { fill: #fff3c4; }
#hover { position: sticky; bottom: 0; background: #fffbe6; border: 1px solid #e6d98c;
         padding: .4rem .7rem; min-height: 1.4em; font-family: ui-monospace, monospace; }
.legend span { margin-right: 1rem; } .muted { color: #777; }
"""

_SCRIPT = """
(function () {
  var errors = 0;
  window.addEventListener('error', function () {
    errors += 1; document.body.dataset.errors = String(errors);
  });
  var lanes = document.querySelectorAll('g.lane');
  var box = document.getElementById('hover');
  lanes.forEach(function (lane) {
    lane.addEventListener('mouseenter', function () { box.textContent = lane.dataset.events; });
  });
  document.body.dataset.lanes = String(lanes.length);
  document.body.dataset.errors = String(errors);
  document.body.dataset.ready = '1';
})();
"""

_COLORS = {
    "search": "#888",
    "read": "#222",
    "bought": "#1b7d2d",
    "sold_out": "#c98a00",
    "gave_up": "#c98a00",
    "retried": "#c98a00",
    "error": "#b00020",
    "crash": "#8e24aa",
    "acquired": "#0277bd",
    "released": "#0277bd",
}


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _svg(result: Result) -> str:
    receipts = result.receipts[:MAX_LANES]
    end = max((e.t for r in result.receipts for e in r.events), default=0.0) or 1e-9
    left, lane_h, width = 90, 22, 900
    height = lane_h * len(receipts) + 30
    contested = {b for c in result.conflicts for b in c.buyers}

    def x(t: float) -> float:
        return left + (width - left - 20) * t / end

    parts = [
        f'<svg class="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline, one lane per buyer">'
    ]
    for row, r in enumerate(receipts):
        y = 10 + row * lane_h
        story = "; ".join(
            f"{e.kind}{'' if e.count is None else ' ' + str(e.count)} @{e.t:.4f}s"
            + (f" ({e.detail})" if e.detail else "")
            for e in r.events
        )
        summary = f"buyer {r.buyer}: {r.outcome}" + (
            " (double sale)" if r.buyer in contested else ""
        )
        parts.append(
            f'<g class="lane" data-buyer="{r.buyer}" data-events="{_esc(summary + " — " + story)}">'
        )
        parts.append(f"<title>{_esc(summary + ': ' + story)}</title>")
        parts.append(
            f'<rect class="bg" x="0" y="{y - 2}" width="{width}" height="{lane_h}" fill="transparent"/>'
        )
        parts.append(f'<text x="6" y="{y + 13}" font-size="12">buyer {r.buyer}</text>')
        if r.t_read is not None:
            t_end = r.t_done if r.t_done is not None else end
            color = "#f2b632" if r.buyer in contested else "#cfd8dc"
            parts.append(
                f'<rect x="{x(r.t_read):.1f}" y="{y + 6}" width="{max(1.0, x(t_end) - x(r.t_read)):.1f}" '
                f'height="6" fill="{color}"/>'
            )
        for e in r.events:
            if e.kind in _COLORS:
                count = "" if e.count is None else f" {e.count}"
                tip = _esc(f"buyer {r.buyer} {e.kind}{count} @{e.t:.4f}s")
                parts.append(
                    f'<circle cx="{x(e.t):.1f}" cy="{y + 9}" r="4" fill="{_COLORS[e.kind]}">'
                    f"<title>{tip}</title></circle>"
                )
        parts.append("</g>")
    parts.append(
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="#777">0 s</text>'
        f'<text x="{width - 80}" y="{height - 6}" font-size="11" fill="#777">{end:.3f} s</text>'
    )
    parts.append("</svg>")
    if len(result.receipts) > MAX_LANES:
        parts.append(
            f'<p class="muted">{len(result.receipts) - MAX_LANES} more buyers not drawn.</p>'
        )
    return "\n".join(parts)


def _legend() -> str:
    names = {
        "search": "search",
        "read": "read",
        "bought": "bought",
        "sold_out": "sold out",
        "error": "error",
        "crash": "killed",
        "acquired": "lock",
    }
    return "".join(
        f'<span><b style="color:{_COLORS[kind]}">●</b> {label}</span>'
        for kind, label in names.items()
    )


def _run_section(result: Result) -> str:
    r = result
    good = r.consistent
    tally = {
        "sold": r.sold,
        "remaining": r.remaining,
        "oversold": r.oversold,
        "lost updates": r.lost_updates,
        "double-sold": r.double_sold,
        "errors": r.errors,
    }
    if r.killed:
        tally["killed"] = r.killed
    rows = "".join(f"<th>{_esc(k)}</th>" for k in tally)
    vals = "".join(f"<td>{_esc('?' if v is None else v)}</td>" for v in tally.values())
    sentences = "".join(f"<li>{_esc(s)}</li>" for s in evidence(r))
    pairs = "".join(f"<li>{_esc(p.sentence())}</li>" for p in overwrites(r)[:50])
    return f"""
<section class="run" data-variant="{_esc(r.variant)}">
<h2>{_esc(r.variant)} · {r.buyers} buyer{"" if r.buyers == 1 else "s"} · {r.tickets} ticket{"" if r.tickets == 1 else "s"} · latency {_esc(r.scenario.latency)} · seed {r.seed}</h2>
<p class="verdict {"good" if good else "bad"}">{_esc(verdict(r).plain)}</p>
<ul class="evidence">{sentences}</ul>
<table class="tally"><tr>{rows}</tr><tr>{vals}</tr></table>
<p class="legend muted">{_legend()}
<span>bar: waiting out the latency (amber: on a count another buyer also sold)</span></p>
{_svg(r)}
{f'<h3>Lost updates</h3><ul class="overwrites">{pairs}</ul>' if pairs else ""}
<p class="muted">data.json: {_esc(r.data_path)} now holds {_esc(r.final_text.strip() or "(empty)")} ·
elapsed {r.elapsed_s:.3f} s · {_esc(r.start_method)}</p>
</section>"""


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title><style>{_CSS}</style></head>
<body data-lanes="0" data-errors="0">
<h1>{_esc(title)}</h1>
{body}
<div id="hover" class="muted">Hover over a buyer's lane to see what it read and did.</div>
<script>{_SCRIPT}</script>
</body></html>
"""


def run_page(result: Result) -> str:
    """The report for one run."""
    s = result.scenario
    intro = f"<p>{_esc(s.description)}</p>" if s.description else ""
    title = f"lab: {result.variant}" + ("" if s.name == "flags" else f" on {s.name}")
    return _page(title, intro + _run_section(result))


def compare_page(stats: Sequence[VariantStats], title: str, description: str = "") -> str:
    """The report for a comparison: the table, one sentence per variant, and each variant's first run."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in COMPARE_HEADERS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + "</tr>"
        for cells in compare_rows(stats)
    )
    sentences = "".join(f"<li>{_esc(s.sentence())}</li>" for s in stats)
    runs = "".join(
        f"<details{' open' if i == 0 else ''}><summary>{_esc(s.label)}: first of {s.runs} runs</summary>"
        f"{_run_section(s.results[0])}</details>"
        for i, s in enumerate(stats)
        if s.results
    )
    intro = f"<p>{_esc(description)}</p>" if description else ""
    body = f"{intro}<table class='compare'><tr>{head}</tr>{rows}</table><ul>{sentences}</ul>{runs}"
    return _page(title, body)
