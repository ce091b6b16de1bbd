"""Many runs of one variant, summarized: how often it raced, how badly, what it cost.

One run of a race proves little: races are intermittent. :class:`VariantStats`
holds every :class:`~lab.core.model.Result` of one variant on one scenario and
derives the rates from them, the same way ``Result`` derives its tallies from
receipts: nothing is counted twice in two places.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.core.contracts import Expectation, RunsVerdict
from lab.core.model import Result

__all__ = ["ANOMALIES", "VariantStats", "case_label"]

#: The anomaly matrix's columns: name -> how many of it one run showed.
ANOMALIES: dict[str, Callable[[Result], int]] = {
    "oversell": lambda r: r.oversold,
    "lost update": lambda r: (r.lost_updates or 0) + r.hidden_lost_updates,
    "double sale": lambda r: r.double_sold,
    # a torn read, or a torn data.json left at the end (a writer killed mid-write)
    "torn read/error": lambda r: r.errors + (1 if r.remaining is None else 0),
    "hang": lambda r: 1 if r.stalled else 0,
}


def case_label(variant: str, lock: str | None) -> str:
    """``locked[mp]`` for a variant run with a given lock kind, else the variant's name."""
    return f"{variant}[{lock}]" if lock else variant


@dataclass(frozen=True)
class VariantStats:
    """K runs of one variant (and lock kind) on one scenario."""

    variant: str
    lock: str | None
    expected_safe: bool
    why: str
    caveat: str
    results: tuple[Result, ...]
    undersells: bool = False
    fails: bool = False

    @property
    def label(self) -> str:
        return case_label(self.variant, self.lock)

    @property
    def expectation(self) -> Expectation:
        """What the variant is expected to do: races, holds, holds (slow), or yours to judge."""
        return Expectation.of(self.expected_safe, self.caveat, self.undersells, self.fails)

    @property
    def runs(self) -> int:
        return len(self.results)

    @property
    def interrupted(self) -> int:
        """Runs cut short by Ctrl-C/SIGTERM: reported, but not evidence for or against the fix."""
        return sum(1 for r in self.results if r.interrupted)

    @property
    def finished(self) -> tuple[Result, ...]:
        return tuple(r for r in self.results if not r.interrupted)

    @property
    def oversold_runs(self) -> int:
        return sum(1 for r in self.results if r.oversold > 0)

    @property
    def raced_runs(self) -> int:
        """Runs that oversold, lost an update or double-sold a ticket (:attr:`Result.raced`)."""
        return sum(1 for r in self.results if r.raced)

    @property
    def oversold_rate(self) -> float:
        return self.oversold_runs / self.runs if self.runs else 0.0

    @property
    def mean_oversold(self) -> float:
        return statistics.fmean(r.oversold for r in self.results) if self.results else 0.0

    @property
    def max_oversold(self) -> int:
        return max((r.oversold for r in self.results), default=0)

    @property
    def lost_updates(self) -> int:
        """Lost updates over all runs, including those a kill hid (Result.hidden_lost_updates)."""
        return sum((r.lost_updates or 0) + r.hidden_lost_updates for r in self.results)

    @property
    def unreadable_runs(self) -> int:
        """Runs that ended with data.json unreadable (torn by a writer killed mid-write)."""
        return sum(1 for r in self.results if r.remaining is None)

    @property
    def double_sold(self) -> int:
        return sum(r.double_sold for r in self.results)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.results)

    @property
    def hangs(self) -> int:
        return sum(1 for r in self.results if r.stalled)

    @property
    def median_elapsed(self) -> float:
        return statistics.median(r.elapsed_s for r in self.results) if self.results else 0.0

    @property
    def tickets_per_s(self) -> float:
        """Median of real tickets sold per second (an oversell sells no extra ticket)."""
        rates = [min(r.sold, r.tickets) / r.elapsed_s for r in self.finished if r.elapsed_s > 0]
        return statistics.median(rates) if rates else 0.0

    @property
    def histogram(self) -> Counter[int]:
        """How many runs oversold by 0, 1, 2, ... tickets."""
        return Counter(r.oversold for r in self.results)

    def anomaly(self, name: str) -> tuple[int, int]:
        """(runs that showed it, total count over all runs) for one ANOMALIES column."""
        counts = [ANOMALIES[name](r) for r in self.results]
        return sum(1 for c in counts if c), sum(counts)

    @property
    def held(self) -> bool:
        """Never oversold, lost an update, double-sold, failed or hung in any finished run."""
        return all(r.consistent and not r.raced for r in self.finished)

    @property
    def verdict(self) -> RunsVerdict:
        """``holds``; else what went wrong: ``races`` (oversell, lost update or
        double sale), ``hangs`` (a run stalled) or ``fails`` (buyers errored)."""
        if self.held:
            return RunsVerdict.HOLDS
        if self.raced_runs:
            return RunsVerdict.RACES
        return RunsVerdict.HANGS if self.hangs else RunsVerdict.FAILS

    @property
    def betrayed(self) -> bool:
        """Expected to be safe, yet some finished run oversold, lost an update or had an error."""
        return self.expected_safe and not self.held

    def sentence(self) -> str:
        """One sentence on why this row says what it says."""
        n = len(self.finished)
        cut = f" ({self.interrupted} more interrupted)" if self.interrupted else ""
        if not n:
            return f"{self.label}: interrupted before any run finished."
        if self.held:
            return f"{self.label} held in all {n} finished runs{cut}: {self.why}."
        parts = []
        if self.oversold_runs:
            worst = self.max_oversold
            parts.append(f"oversold in {self.oversold_runs} of {n} runs (up to {worst})")
        if self.lost_updates:
            parts.append(f"lost {self.lost_updates} updates")
        if self.errors:
            parts.append(f"had {self.errors} errors")
        if self.hangs:
            parts.append(f"hung in {self.hangs} runs")
        if self.unreadable_runs:
            parts.append(f"left data.json unreadable in {self.unreadable_runs} runs")
        vanished = sum(r.vanished for r in self.finished)
        if vanished:
            parts.append(f"lost track of {vanished} buyers")
        if not parts:
            parts.append("did not balance its books")
        head = f"{self.label} " + ", ".join(parts)
        if self.expected_safe:
            return head + ": it was expected to hold, so this is a bug in the fix."
        return head + f": {self.why}."

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "lock": self.lock,
            "label": self.label,
            "expected_safe": self.expected_safe,
            "runs": self.runs,
            "oversold_runs": self.oversold_runs,
            "raced_runs": self.raced_runs,
            "interrupted_runs": self.interrupted,
            "unreadable_runs": self.unreadable_runs,
            "oversold_rate": self.oversold_rate,
            "mean_oversold": self.mean_oversold,
            "max_oversold": self.max_oversold,
            "lost_updates": self.lost_updates,
            "double_sold": self.double_sold,
            "errors": self.errors,
            "hangs": self.hangs,
            "median_elapsed_s": self.median_elapsed,
            "tickets_per_s": self.tickets_per_s,
            "verdict": self.verdict,
            "histogram": {str(k): v for k, v in sorted(self.histogram.items())},
            "anomalies": {
                name: {"runs": runs, "count": count}
                for name, (runs, count) in ((a, self.anomaly(a)) for a in ANOMALIES)
            },
            "why": self.sentence(),
        }
