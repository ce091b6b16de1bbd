"""Argument parsing only: ``main(argv) -> int``.

Bad input never shows a traceback: argparse errors and every
:class:`~lab.errors.LabError` become one line on stderr naming the input,
with exit status 2 (1 for ``--check`` failures and stalls, 130/143 when
interrupted by SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from lab import __version__, render, scenarios
from lab.errors import LabError, UsageError
from lab.model import BuyerEvent, Latency, Result, Scenario
from lab.runner import Observer, run, with_seed
from lab.store import MAX_TICKETS
from lab.variants import VARIANTS

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the input, not argparse's usage block.
        raise UsageError(f"{self.prog}: {message}")


def _whole(low: int, high: int, what: str) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _latency(text: str) -> Latency:
    try:
        return Latency.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 86400, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lab",
        description="The ticket-grabbing race from the course notes, run naive and fixed.",
    )
    parser.add_argument("--version", action="version", version=f"lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "run",
        help="run one variant and tally the result",
        description="Run one variant of the ticket grab and tally sold, remaining, oversold, "
        "lost updates, double sales and errors.",
    )
    p.add_argument(
        "variant",
        choices=sorted(VARIANTS),
        metavar="VARIANT",
        help=f"one of: {', '.join(sorted(VARIANTS))} (see `lab variants`)",
    )
    p.add_argument(
        "--scenario", metavar="NAME|PATH", help="a preset from `lab scenarios`, or a TOML file"
    )
    p.add_argument(
        "--buyers",
        type=_whole(
            1, scenarios.MAX_BUYERS, f"a whole number of buyers from 1 to {scenarios.MAX_BUYERS}"
        ),
        help="buyer processes (default 10)",
    )
    p.add_argument(
        "--tickets",
        type=_whole(0, MAX_TICKETS, "a whole number of tickets, 0 or more"),
        help="tickets in data.json at the start (default 1; with --data, resets the file)",
    )
    p.add_argument(
        "--latency",
        type=_latency,
        metavar="SPEC",
        help="simulated network latency in seconds: 0, 0.2 or 0.05-0.2 (default 1-3, as the notes)",
    )
    p.add_argument(
        "--seed",
        type=_whole(0, 2**63 - 1, "a whole number, 0 or more"),
        help="seed for the latency draws (default: random, and reported)",
    )
    p.add_argument(
        "--lock",
        choices=["file", "mp"],
        help="for `locked`: file = filelock.FileLock (default), mp = multiprocessing.Lock",
    )
    p.add_argument(
        "--lockstep",
        action="store_const",
        const=True,
        default=None,
        help="hold every buyer in the race window until all arrive: an unprotected "
        "read-check-write then races every time",
    )
    p.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="use this data.json (default: a fresh one in a new temporary directory)",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="print each buyer's lines as the notes do"
    )
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="zh: the notes' own wording")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the report"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if anything was oversold, lost or failed (for your own CI)",
    )
    p.add_argument(
        "--start-method",
        choices=["fork", "spawn", "forkserver"],
        help="multiprocessing start method (default fork where available)",
    )
    p.add_argument(
        "--stall-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="declare the run stalled after this long without progress",
    )

    sub.add_parser("variants", help="list the variants, and whether each should hold")
    sub.add_parser("scenarios", help="list the scenario presets and what each teaches")
    return parser


def _scenario(args: argparse.Namespace) -> Scenario:
    base = scenarios.load(args.scenario) if args.scenario else Scenario()
    overrides = {
        field: getattr(args, field)
        for field in ("buyers", "tickets", "latency", "seed", "lockstep", "lock")
        if getattr(args, field) is not None
    }
    return dataclasses.replace(base, **overrides)


class _Live(Observer):
    """Progress bar and --verbose lines while buyers run."""

    def __init__(self, console: Console, lang: render.Lang, verbose: bool, bar: bool) -> None:
        self.console = console
        self.lang: render.Lang = lang
        self.verbose = verbose
        self.progress: Progress | None = None
        self.task: Any = None
        self.bar = bar

    def started(self, buyers: int) -> None:
        # Started only now, after every buyer is forked: the bar's refresh
        # thread must not exist while the runner forks.
        if self.bar:
            self.progress = Progress(
                TextColumn("buyers"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.task = self.progress.add_task("buyers", total=buyers)
            self.progress.start()

    def event(self, event: BuyerEvent) -> None:
        if self.verbose:
            self.console.print(render.event_line(event, self.lang))

    def finished(self, buyer: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class _Terminated(Exception):
    pass


@contextmanager
def _sigterm_as_interrupt() -> Iterator[dict[str, int]]:
    """Let SIGTERM take the same path as Ctrl-C: reap, partial tally, exit 143."""
    seen = {"signal": 0}
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        seen["signal"] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    scenario = with_seed(_scenario(args))
    variant = VARIANTS[args.variant]
    live = _Live(
        console,
        args.lang,
        args.verbose and not args.json,
        bar=console.is_terminal and not args.json and not args.verbose,
    )
    if not args.json:
        lock = scenario.lock if variant.name == "locked" else None
        tickets = (
            scenario.tickets if scenario.tickets is not None else ("the file's" if args.data else 1)
        )
        console.print(render.run_header(variant.name, scenario, tickets, scenario.seed or 0, lock))
    with _sigterm_as_interrupt() as seen:
        try:
            result = run(
                variant,
                scenario,
                data=args.data,
                observer=live,
                start_method=args.start_method,
                stall_timeout=args.stall_timeout,
            )
        finally:
            live.stop()
    return _report(result, args, console, seen["signal"])


def _report(result: Result, args: argparse.Namespace, console: Console, signum: int) -> int:
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    else:
        console.print(render.render_result(result, args.lang, header=False))
    if result.interrupted:
        return 128 + (signum or signal.SIGINT)
    if result.stalled:
        return 1
    if args.check and (
        result.oversold or result.lost_updates != 0 or result.errors or result.unknown
    ):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lab`` command; returns the exit status."""
    console = Console(highlight=False)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "variants":
            console.print(render.variants_table(VARIANTS))
            return 0
        if args.command == "scenarios":
            console.print(render.scenarios_table(scenarios.available()))
            return 0
        raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover - argparse guards
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return 130
