"""What the terminal shows while buyers run: a progress bar and the ``--verbose`` lines.

:class:`LiveProgress` is the runner's :class:`~lab.harness.runner.Observer`
for ``lab run`` and ``lab compare``. It prints, so it lives in ``lab.ui``;
the lines it prints come from the pure renderer (:func:`lab.ui.render.event_line`).
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from lab.core.i18n import translator
from lab.core.interrupts import held
from lab.core.model import BuyerEvent
from lab.harness.runner import Observer
from lab.ui import render

__all__ = ["REORDER_S", "LiveProgress"]

#: --verbose lines wait this long (seconds of the run) before they are printed.
#: A buyer sends its reports in a batch before each wait, so one buyer's line
#: can arrive after a later line of another's; held lines print in time order.
REORDER_S = 0.25


class LiveProgress(Observer):
    """Progress bar and --verbose lines while buyers run."""

    def __init__(
        self, console: Console, lang: render.Lang, *, verbose: bool, bar: bool, total_runs: int = 1
    ) -> None:
        self.console = console
        self.lang: render.Lang = lang
        self.verbose = verbose
        self.bar = bar
        self.total_runs = total_runs
        self.progress: Progress | None = None
        self.runs_finished = 0
        self.buyers_task: Any = None
        self.runs_task: Any = None
        self._held: list[tuple[float, int, BuyerEvent]] = []  # a heap, by time
        self._arrived = 0

    def started(self, buyers: int) -> None:
        # Started only now, after the buyers are forked: the bar's refresh thread
        # must not exist while the runner forks.
        if not self.bar:
            return
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        if self.total_runs > 1:
            self.runs_task = self.progress.add_task(
                "runs", total=self.total_runs, completed=self.runs_finished
            )
        self.buyers_task = self.progress.add_task("buyers", total=buyers)
        with held:  # an interrupt never leaves the bar half started (or half stopped, below)
            self.progress.start()

    def event(self, event: BuyerEvent) -> None:
        if self.verbose:
            heapq.heappush(self._held, (event.t, self._arrived, event))
            self._arrived += 1

    def tick(self, now: float) -> None:
        self._print_held(until=now - REORDER_S)

    def _print_held(self, until: float = math.inf) -> None:
        while self._held and self._held[0][0] <= until:
            _, _, event = heapq.heappop(self._held)
            with held:  # never cut a print in half (lab.core.interrupts)
                self.console.print(render.event_line(event, self.lang))

    def waiting(self, why: str) -> None:
        # The runner's only wait after its buyers: for the other runs of a --join sale.
        if self.verbose or self.bar:
            self._print_held()
            _, _n = translator(self.lang)
            text = _("waiting for the other runs selling from this sale to finish…")
            with held:
                self.console.print(Text(text, style="dim"))

    def finished(self, buyer: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.buyers_task)

    def run_done(self, label: str) -> None:
        # Stop the bar (and its refresh thread) between runs: the next run forks
        # its buyers, and a process that forks must not have other threads.
        self.runs_finished += 1
        self.stop()

    def stop(self) -> None:
        self._print_held()  # the run is over: the rest, in time order
        if self.progress is not None:
            with held:
                self.progress.stop()
            self.progress = None
