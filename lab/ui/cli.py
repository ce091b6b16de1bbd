"""Argument parsing only: ``main(argv) -> int``.

Bad input never shows a traceback: argparse errors and every
:class:`~lab.core.errors.LabError` become one line on stderr naming the input,
with exit status 2 (1 for ``--check`` failures and stalls, 130/143 when
interrupted by SIGINT/SIGTERM).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import heapq
import json
import math
import os
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
from rich.text import Text

from lab import __version__
from lab.core import argtypes, scenarios
from lab.core.errors import LabError, UsageError
from lab.core.model import BuyerEvent, Result, Scenario
from lab.core.paths import check_output_path, read_input_file
from lab.core.stats import VariantStats
from lab.harness.compare import Case, cases_for, compare
from lab.harness.explore import explorable, explore, parse_schedule, replay
from lab.harness.runner import Observer, check_data, run, with_seed
from lab.net.wire import check_token
from lab.stores import rundirs
from lab.stores.jsonfile import MAX_TICKETS
from lab.ui import render, report_html
from lab.ui.stepper import step_session
from lab.ui.timeline import TimelineView
from lab.variants import VARIANTS
from lab.variants.custom import MAX_BUYER_BYTES, split_spec

__all__ = ["build_parser", "main"]

#: SIGINT / SIGTERM -> the conventional 128 + signal number exit status.
_INTERRUPTED: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
#: The most buyers one command may start in all: --buyers x --repeat x variants.
#: Time and the run directories' churn grow with it; 10 buyers x 10,000 runs fit.
MAX_BUYER_RUNS = 200_000


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line naming the input, not argparse's usage block.
        raise UsageError(f"{self.prog}: {message}")


def _variant_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variant {(unknown or [text])[0]!r} "
            f"(choose from: {', '.join(sorted(VARIANTS))})"
        )
    return names


def _add_scenario_options(p: argparse.ArgumentParser) -> None:
    """The options that shape a run; ``run`` and ``compare`` share them."""
    p.add_argument(
        "--scenario", metavar="NAME|PATH", help="a preset from `lab scenarios`, or a TOML file"
    )
    p.add_argument(
        "--buyers",
        type=argtypes.whole(
            1, scenarios.MAX_BUYERS, f"a whole number of buyers from 1 to {scenarios.MAX_BUYERS}"
        ),
        help="buyers (default 10)",
    )
    p.add_argument(
        "--tickets",
        type=argtypes.whole(0, MAX_TICKETS, "a whole number of tickets, 0 or more"),
        help="tickets in data.json at the start (default 1; with --data, resets the file)",
    )
    p.add_argument(
        "--latency",
        type=argtypes.latency,
        metavar="SPEC",
        help="simulated network latency in seconds: 0, 0.2 or 0.05-0.2 (default 1-3, as the notes)",
    )
    p.add_argument(
        "--arrival",
        type=argtypes.seconds(0, 60),
        metavar="SECONDS",
        help="space the buyers' arrivals this far apart (default 0: all at the start gun)",
    )
    p.add_argument(
        "--seed",
        type=argtypes.whole(0, 2**62, "a whole number, 0 or more"),
        help="seed for the latency draws (default: random, and reported)",
    )
    p.add_argument(
        "--lock",
        choices=["file", "mp"],
        help="for `locked`: file = filelock.FileLock (default), mp = multiprocessing.Lock",
    )
    p.add_argument(
        "--crash",
        type=argtypes.fraction,
        metavar="P",
        help="SIGKILL a seeded fraction P of buyers at a random step of their purchase",
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
        "--buyer",
        dest="buyer_program",
        metavar="FILE.py:FUNC",
        help="for `custom`: your own buyer function, called with the buyer's name",
    )
    p.add_argument(
        "--success-regex",
        metavar="REGEX",
        help="for `custom`: count a purchase when the buyer's output matches",
    )
    p.add_argument(
        "--connect",
        metavar="HOST:PORT",
        help="for server variants: drive an external `lab serve` instead of starting one",
    )
    p.add_argument(
        "--token",
        metavar="SECRET",
        help="for server variants: the shared secret (default: $LAB_TOKEN)",
    )
    p.add_argument(
        "--start-method",
        choices=["fork", "spawn", "forkserver"],
        help="multiprocessing start method (default fork where available)",
    )
    p.add_argument(
        "--stall-timeout",
        type=argtypes.seconds(0.1, 86_400),
        metavar="SECONDS",
        help="declare the run stalled after this long without progress",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of the report")
    p.add_argument("--lang", choices=["en", "zh"], default="en", help="zh: the notes' own wording")


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
    _add_scenario_options(p)
    p.add_argument(
        "--data",
        type=Path,
        metavar="PATH",
        help="use this data.json (default: a fresh one in a new temporary directory)",
    )
    p.add_argument(
        "--repeat",
        type=argtypes.whole(1, 10_000, "a whole number of runs, 1 or more"),
        default=1,
        metavar="K",
        help="run K times and show how often it raced",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", help="print each buyer's lines as the notes do"
    )
    p.add_argument(
        "--timeline",
        action="store_true",
        help="draw one lane per buyer on a shared time axis, with every lost update",
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="also write a self-contained HTML report (timeline as SVG)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if anything was oversold, lost or failed (for your own CI)",
    )

    c = sub.add_parser(
        "compare",
        help="run every variant on one scenario, K times each, in one table",
        description="Run the variants side by side on the same scenario and show which race, "
        "how often, how badly, and what each fix costs.",
    )
    c.add_argument(
        "--variants",
        type=_variant_list,
        metavar="A,B,...",
        help="only these variants (default: every one in the registry)",
    )
    c.add_argument(
        "--repeat",
        type=argtypes.whole(1, 10_000, "a whole number of runs, 1 or more"),
        default=3,
        metavar="K",
        help="runs per variant (default 3)",
    )
    _add_scenario_options(c)
    c.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table as Markdown")
    c.add_argument(
        "--anomalies", action="store_true", help="also show the variants x anomalies matrix"
    )
    c.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="also write a self-contained HTML report with each variant's timeline",
    )
    c.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a variant expected to be safe ever oversold, lost an update or failed",
    )

    steppable = sorted(n for n, v in VARIANTS.items() if explorable(v))

    def step_target(p: argparse.ArgumentParser, max_buyers: int, buyers: int | None) -> None:
        """The variant and the small run that explore, replay and step share."""
        p.add_argument(
            "variant", choices=steppable, metavar="VARIANT", help=f"one of: {', '.join(steppable)}"
        )
        p.add_argument(
            "--buyers",
            default=buyers,
            type=argtypes.whole(1, max_buyers, f"a whole number of buyers from 1 to {max_buyers}"),
            help="default: as many as the schedule names" if buyers is None else None,
        )
        p.add_argument(
            "--tickets",
            default=1,
            type=argtypes.whole(0, 100, "a whole number of tickets from 0 to 100"),
        )

    e = sub.add_parser(
        "explore",
        help="try every interleaving of the buyers' steps and tally each",
        description="Run the variant's own buyer code one step at a time, in every order "
        "(every schedule for up to 3 buyers, a seeded sample above), and report which fail.",
    )
    step_target(e, 12, 2)
    e.add_argument(
        "--max-schedules",
        type=argtypes.whole(1, 1_000_000, "a whole number, 1 or more"),
        default=20_000,
        metavar="M",
        help="stop after M schedules (default 20000)",
    )
    e.add_argument(
        "--seed",
        type=argtypes.whole(0, 2**62, "a whole number, 0 or more"),
        default=0,
        help="seed for the random sample above 3 buyers",
    )
    e.add_argument("--json", action="store_true", help="print JSON instead of the report")

    r = sub.add_parser(
        "replay",
        help='run exactly one interleaving, e.g. --schedule "b0.read b1.read b0.write b1.write"',
        description="Run one schedule of steps exactly, then tally and draw it. The same schedule "
        "gives the same result every time.",
    )
    step_target(r, _REPLAY_MAX_BUYERS, None)
    r.add_argument(
        "--schedule",
        required=True,
        metavar="STEPS",
        help='steps such as "b0.read b1.read b0.write b1.write" (as lab explore prints them)',
    )
    r.add_argument("--json", action="store_true", help="print JSON instead of the report")

    st = sub.add_parser(
        "step",
        help="you are the scheduler: pick which buyer moves next",
        description="An interactive walk-through: at each step pick which buyer moves next, and "
        "watch data.json and each buyer's view. Reads one choice per line from stdin.",
    )
    step_target(st, 6, 2)

    s = sub.add_parser(
        "serve",
        help="run a TCP ticket server that owns data.json",
        description="Serve data.json over TCP so buyers on many machines can grab tickets. "
        "Protocol: docs/protocol.md.",
    )
    from lab.net import server  # noqa: PLC0415 - the server's options live with the server

    server.add_arguments(s)

    sub.add_parser("variants", help="list the variants, and whether each should hold")
    sub.add_parser("scenarios", help="list the scenario presets and what each teaches")
    sub.add_parser(
        "clean",
        help="remove the run directories runs without --data left in the temporary directory",
        description=f"Each run without --data keeps its data.json in a lab-* directory in the "
        f"system's temporary directory; the newest {rundirs.KEEP} are kept anyway. This "
        "removes every one not in use. Directories holding files the lab did not make are kept.",
    )
    return parser


_SCENARIO_FLAGS = (
    "buyers", "tickets", "latency", "arrival", "seed", "lockstep", "lock", "crash",
    "connect", "token", "buyer_program", "success_regex",
)  # fmt: skip


def _scenario(args: argparse.Namespace) -> Scenario:
    base = scenarios.load(args.scenario) if args.scenario else Scenario()
    overrides = {f: getattr(args, f) for f in _SCENARIO_FLAGS if getattr(args, f, None) is not None}
    if "token" in overrides:
        check_token(overrides["token"], "--token")
    elif os.environ.get("LAB_TOKEN"):  # empty counts as unset, as in `lab serve`
        overrides["token"] = check_token(os.environ["LAB_TOKEN"], "$LAB_TOKEN")
    scenario = dataclasses.replace(base, **overrides)
    scenarios.check_bounds(scenario)
    return scenario


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse every path option that is not a regular file (or a new name in an
    existing directory) before anything is read, created, backed up or run.

    Only kinds and sizes are checked here; the scenario and the buyer file are
    read (bounded, never blocking) when they are used.
    """
    for option, dest in (("--data", "data"), ("--html", "html"), ("--markdown", "markdown")):
        path = getattr(args, dest, None)
        if path is not None:
            check_output_path(path, option)
    spec = getattr(args, "buyer_program", None)
    if spec:
        file, _ = split_spec(spec)
        read_input_file(file, "--buyer", MAX_BUYER_BYTES)  # its size, before any run starts


def _check_total(buyers: int, runs: int) -> None:
    """Refuse a command that would start more than MAX_BUYER_RUNS buyers in all."""
    if buyers * runs > MAX_BUYER_RUNS:
        raise UsageError(
            f"--repeat x --buyers: {runs} runs of {buyers} buyers is {buyers * runs} buyers in "
            f"all; the limit is {MAX_BUYER_RUNS}"
        )


#: --verbose lines wait this long (seconds of the run) before they are printed.
#: A buyer sends its reports in a batch before each wait, so one buyer's line
#: can arrive after a later line of another's; held lines print in time order.
_REORDER_S = 0.25


class _Live(Observer):
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
        self.progress.start()

    def event(self, event: BuyerEvent) -> None:
        if self.verbose:
            heapq.heappush(self._held, (event.t, self._arrived, event))
            self._arrived += 1

    def tick(self, now: float) -> None:
        self._print_held(until=now - _REORDER_S)

    def _print_held(self, until: float = math.inf) -> None:
        while self._held and self._held[0][0] <= until:
            _, _, event = heapq.heappop(self._held)
            self.console.print(render.event_line(event, self.lang))

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
            self.progress.stop()
            self.progress = None


@contextmanager
def _sigterm_as_interrupt() -> Iterator[dict[str, int]]:
    """Let SIGTERM take the same path as Ctrl-C: reap, partial tally, exit 143."""
    seen = {"signal": int(signal.SIGINT)}
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


def _failed_check(result: Result) -> bool:
    return not result.consistent


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    _check_paths(args)
    scenario = with_seed(_scenario(args))
    variant = VARIANTS[args.variant]
    if args.repeat > 1:
        if args.data is not None:
            raise UsageError("--repeat: each repetition uses a fresh data.json; drop --data")
        return _cmd_compare(
            args, console, [Case(variant, scenario.lock if variant.locks else None)]
        )
    live = _Live(
        console,
        args.lang,
        verbose=args.verbose and not args.json,
        bar=console.is_terminal and not args.json and not args.verbose,
    )
    if args.data is not None:
        check_data(args.data, scenario)  # one line, before the header, for a bad --data
    if not args.json:
        lock = scenario.lock if variant.locks else None
        tickets: int | str = 1
        if scenario.connect is not None:
            tickets = "the server's"
        elif scenario.tickets is not None:
            tickets = scenario.tickets
        elif args.data:
            tickets = "the file's"
        console.print(render.run_header(variant.name, scenario, tickets, scenario.seed or 0, lock))
        if args.scenario and scenario.description:
            console.print(Text(scenario.description, style="italic"))
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
    if args.json:
        sys.stdout.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    else:
        console.print(render.render_result(result, args.lang, header=False))
        if args.timeline:
            console.print(TimelineView(result))
    if args.html:
        _write(args.html, report_html.run_page(result), "--html")
        if not args.json:
            console.print(Text(f"HTML report: {args.html}", style="dim"))
    if result.interrupted:
        return _INTERRUPTED.get(signal.Signals(seen["signal"]), 130)
    if result.stalled:
        return 1
    return 1 if args.check and _failed_check(result) else 0


def _cmd_compare(
    args: argparse.Namespace, console: Console, cases: list[Case] | None = None
) -> int:
    _check_paths(args)
    scenario = with_seed(_scenario(args))
    if cases is None:
        cases = cases_for(args.variants, lock=args.lock, have_buyer=bool(args.buyer_program))
    _check_total(scenario.buyers, len(cases) * args.repeat)
    if not args.json:
        console.print(render.scenario_blurb(scenario))
    live = _Live(
        console,
        args.lang,
        verbose=False,
        bar=console.is_terminal and not args.json,
        total_runs=len(cases) * args.repeat,
    )
    with _sigterm_as_interrupt() as seen:
        try:
            stats, interrupted = compare(
                cases,
                scenario,
                args.repeat,
                observer=live,
                on_result=lambda case, result: live.run_done(case.variant.name),
                start_method=args.start_method,
                stall_timeout=args.stall_timeout,
            )
        finally:
            live.stop()
    _report_stats(stats, scenario, args, console)
    if interrupted:
        if not args.json:
            console.print(
                Text("INTERRUPTED: the table covers the runs finished so far.", style="bold yellow")
            )
        return _INTERRUPTED.get(signal.Signals(seen["signal"]), 130)
    if args.check and any(s.betrayed for s in stats):
        return 1
    return 0


def _write(path: Path, text: str, option: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option}: cannot write {path}: {exc.strerror}") from None


def _cmd_explore(args: argparse.Namespace, console: Console) -> int:
    result = explore(
        VARIANTS[args.variant],
        args.buyers,
        args.tickets,
        max_schedules=args.max_schedules,
        seed=args.seed,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        console.print(render.exploration(result))
    return 0


def _cmd_replay(args: argparse.Namespace, console: Console) -> int:
    steps = parse_schedule(args.schedule)
    highest = max(b for b, _, _ in steps)
    if highest >= (args.buyers or _REPLAY_MAX_BUYERS):
        # Checked here: the buyer count comes from the schedule, and each buyer is a thread.
        limit = args.buyers or _REPLAY_MAX_BUYERS
        raise UsageError(
            f"--schedule: names buyer b{highest}; buyers are b0 to b{limit - 1}"
            + ("" if args.buyers else f" (at most {_REPLAY_MAX_BUYERS} buyers)")
        )
    buyers = args.buyers or highest + 1
    result, done = replay(VARIANTS[args.variant], buyers, args.tickets, args.schedule)
    if args.json:
        payload = {**result.to_json(), "schedule": done}
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return 0
    console.print(Text("schedule: " + " ".join(done), style="bold"))
    console.print(render.render_result(result, table=False))
    console.print(TimelineView(result))
    return 0


#: The most buyers ``lab replay`` runs (one thread each, stepped one at a time).
_REPLAY_MAX_BUYERS = 12


def _cmd_clean(console: Console) -> int:
    removed, kept = rundirs.clean()
    line = f"removed {removed} run director{'y' if removed == 1 else 'ies'}"
    if kept:
        line += f" ({kept} busy or holding files the lab did not make were kept)"
    console.print(line, markup=False, highlight=False)
    return 0


def _cmd_step(args: argparse.Namespace, console: Console) -> int:
    def read_line() -> str | None:
        line = sys.stdin.readline()
        return line if line else None

    step_session(VARIANTS[args.variant], args.buyers, args.tickets, read_line, console)
    return 0


def _report_stats(
    stats: list[VariantStats], scenario: Scenario, args: argparse.Namespace, console: Console
) -> None:
    if getattr(args, "markdown", None):
        _write(args.markdown, render.markdown_table(stats, scenario), "--markdown")
    if getattr(args, "html", None):
        title = f"lab compare: {scenario.name}"
        _write(args.html, report_html.compare_page(stats, title, scenario.description), "--html")
    if args.json:
        payload = {
            "scenario": {
                "name": scenario.name,
                "buyers": scenario.buyers,
                "tickets": scenario.tickets,
                "latency": str(scenario.latency),
                "seed": scenario.seed,
            },
            "variants": [s.to_json() for s in stats],
        }
        sys.stdout.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    console.print(
        render.compare_table(stats, hangs=scenario.crash > 0 or any(s.hangs for s in stats))
    )
    console.print(render.compare_sentences(stats))
    if getattr(args, "anomalies", False):
        console.print(render.anomaly_table(stats))
    if args.command == "run":
        for s in stats:
            console.print(render.histogram(s))


def _one_line(message: str) -> str:
    """An error message as exactly one printable line.

    Paths and values may hold any character (a newline, an escape sequence,
    a surrogate from undecodable bytes); they are shown escaped.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def _tolerate_unencodable(stream: Any) -> None:
    """Let a path with undecodable bytes (a surrogate) print escaped instead of raising."""
    reconfigure = getattr(stream, "reconfigure", None)
    if callable(reconfigure):
        with contextlib.suppress(ValueError, OSError):  # closed or detached: leave it be
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lab`` command; returns the exit status."""
    _tolerate_unencodable(sys.stdout)
    console = Console(highlight=False)
    # SIGTERM takes Ctrl-C's path for the whole command (parsing and rendering too),
    # so it always ends in one line and 143, never in the default action's silence.
    with _sigterm_as_interrupt() as seen:
        return _main(argv, console, seen)


def _main(argv: Sequence[str] | None, console: Console, seen: dict[str, int]) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command == "run":
            return _cmd_run(args, console)
        if args.command == "compare":
            return _cmd_compare(args, console)
        if args.command == "explore":
            return _cmd_explore(args, console)
        if args.command == "replay":
            return _cmd_replay(args, console)
        if args.command == "step":
            return _cmd_step(args, console)
        if args.command == "serve":
            from lab.net import server  # noqa: PLC0415

            check_output_path(args.data, "--data")
            with _sigterm_as_interrupt():
                return server.serve_command(args, console)
        if args.command == "variants":
            console.print(render.variants_table(VARIANTS))
            return 0
        if args.command == "scenarios":
            console.print(render.scenarios_table(scenarios.available()))
            return 0
        if args.command == "clean":
            return _cmd_clean(console)
        raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover - argparse guards
    except LabError as exc:
        print(f"lab: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # The machine said no (no space, no permission, too many open files):
        # one line, as for bad input, but not the user's typo (exit 1).
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"lab: error: {_one_line(f'{exc.strerror or exc}{where}')}", file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        print("lab: interrupted", file=sys.stderr)
        return _INTERRUPTED.get(seen["signal"], 130)
