"""``lab step``: you are the scheduler.

The buyers run the variant's real code (see :mod:`lab.harness.explore`), paused at
each step. At every pause the screen shows what data.json holds and what
each buyer has read, and you pick who moves next. Make two buyers read the
same count before either writes, and the lab shows you the oversell you
caused. Input is one line per choice, so a test (or a teacher with a
script) can drive it through stdin.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rich.console import Console
from rich.text import Text

from lab.core.model import Result
from lab.harness.explore import Gated, GatedGreenlets, GatedTasks, StepHang, gated, scratch_dir
from lab.ui.render import render_result
from lab.ui.timeline import TimelineView
from lab.variants.protocol import Variant

__all__ = ["step_session"]

HELP = "type a buyer number to move it one step, 'a' to let the lab finish in order, 'q' to quit"


def _show(run: Gated | GatedTasks | GatedGreenlets, console: Console) -> None:
    text = run.store.read_text().strip() or "(empty)"
    console.print(Text(f"data.json: {text}", style="bold"))
    for i in range(run.buyers):
        mark = "→ " if i in run.enabled() else "  "  # → can move now
        console.print(f"  {mark}{run.view(i)}")


def step_session(
    variant: Variant,
    buyers: int,
    tickets: int,
    read_line: Callable[[], str | None],
    console: Console,
) -> Result | None:
    """Run one interactive session; return the final Result, or None if the user quit."""
    with scratch_dir() as workdir, gated(variant, buyers, tickets, workdir) as run:
        console.print(
            Text(
                f"lab step {variant.name}: {buyers} buyer{'s' * (buyers != 1)}, "
                f"{tickets} ticket{'s' * (tickets != 1)}. {HELP}.",
                style="bold",
            )
        )
        auto = False
        while not run.finished:
            enabled = run.enabled()
            if not enabled:
                console.print(
                    Text("deadlock: every unfinished buyer waits for a lock", style="bold red")
                )
                return run.result("deadlock")
            if auto:
                choice = enabled[0]
            else:
                _show(run, console)
                console.print(
                    f"who moves next? {'/'.join(map(str, enabled))} (a = finish, q = quit) > ",
                    end="",
                )
                line = read_line()
                if line is None or line.strip().lower() in ("q", "quit", "exit"):
                    console.print("\nstopped; nothing was tallied.")
                    return None
                line = line.strip().lower()
                console.print(line)
                if line in ("a", "all"):
                    auto = True
                    continue
                if not line.isdigit():
                    console.print(Text(f"'{line}' is not a buyer number; {HELP}", style="yellow"))
                    continue
                choice = int(line)
                reason = run.blocked_reason(choice)
                if reason is not None:
                    console.print(Text(f"cannot move buyer {choice}: {reason}", style="yellow"))
                    continue
            try:
                label = run.step(choice)
            except StepHang as exc:
                console.print(Text(f"stuck: {exc}", style="bold red"))
                return run.result(str(exc))
            console.print(Text(f"→ {label}", style="cyan"))
        result = dataclasses.replace(run.result(), data_path="(scratch, removed)")
    console.print(Text("schedule: " + " ".join(run.steps), style="bold"))
    console.print(render_result(result, table=False))
    console.print(TimelineView(result))
    if result.oversold:
        console.print(
            Text(
                "You caused that: the buyers you let read before anyone wrote all saw a ticket, "
                "and each write overwrote the last. Try again and let each buyer write before the "
                f"next one reads, or try `lab step {variant.fixed_by or 'locked'}` and see the "
                "lock refuse you.",
                style="bold red",
            )
        )
    return result
