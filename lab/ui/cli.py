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
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, overload

from lab import __version__
from lab.core import argtypes, interrupts, scenarios
from lab.core.errors import LabError, UsageError
from lab.core.i18n import translator
from lab.core.interrupts import EXIT_STATUS, last_signal
from lab.core.model import MAX_TICKETS, Scenario
from lab.core.paths import check_output_path, read_input_file
from lab.stores import rundirs

if TYPE_CHECKING:
    from rich.console import Console

    from lab.core.contracts import VariantInfo
    from lab.core.model import Result
    from lab.core.stats import VariantStats
    from lab.harness.compare import Case
    from lab.variants.protocol import Variant

# `lab --help` and `lab variants` start in well under 0.25 s
# (benchmarks/bench_startup.py): the runner, the explorer, the variants, the
# server, rich's progress bar and the HTML report are imported by the commands
# that use them, not here.

__all__ = ["build_parser", "main"]

#: The most buyers one command may start in all: --buyers x --repeat x variants.
#: Time and the run directories' churn grow with it; 10 buyers x 10,000 runs fit.
MAX_BUYER_RUNS = 200_000


def _variants() -> dict[str, Variant]:
    """The registry, imported on first use (it brings every variant and the server)."""
    from lab.variants import VARIANTS  # noqa: PLC0415 - lazy: see the note on the imports

    return VARIANTS


def _variant_names() -> list[str]:
    return sorted(_variants())


def _steppable_names() -> list[str]:
    """The variants ``lab explore``, ``replay`` and ``step`` can pause at every step."""
    from lab.harness.explore import explorable  # noqa: PLC0415 - lazy

    return sorted(n for n, v in _variants().items() if explorable(v))


class _Choices(Sequence[str]):
    """An argparse ``choices`` list computed on first use.

    argparse reads ``choices`` only to check a value (``in``) and to show it
    (iteration; help strings name it as ``%(choices)s``), so building the
    parser, and ``lab --help``, never import the registry.
    """

    def __init__(self, load: Callable[[], list[str]]) -> None:
        self._load = load
        self._names: list[str] | None = None

    def _get(self) -> list[str]:
        if self._names is None:
            self._names = self._load()
        return self._names

    def __contains__(self, value: object) -> bool:
        return value in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._get()[index]


class _Parser(argparse.ArgumentParser):
    """argparse, answering bad input in one line, and remembering what it declared.

    ``declared`` (every argument, in order) and ``commands`` (each subcommand's
    parser) let the tests generate inputs for every option of every command
    without reaching into argparse's private attributes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Before argparse's own __init__, which already declares -h/--help.
        self.declared: list[argparse.Action] = []
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.declared.append(action)
        return action

    def error(self, message: str) -> NoReturn:
        # One line naming the input, not argparse's usage block.
        raise UsageError(f"{self.prog}: {message}")


def _variant_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    known = _variants()
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown variant {(unknown or [text])[0]!r} (choose from: {', '.join(sorted(known))})"
        )
    return names


def locale_lang(environ: Mapping[str, str] | None = None) -> Literal["en", "zh"]:
    """The language the locale asks for, as gettext reads it: the first of LANGUAGE,
    LC_ALL, LC_MESSAGES and LANG that is set (LANGUAGE may list several, ``zh_CN:en``)."""
    env = os.environ if environ is None else environ
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "")
        if value:
            first = value.split(":", 1)[0].lower()
            return "zh" if first.startswith("zh") else "en"
    return "en"


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
        "--dsn",
        type=_store_url("--dsn"),
        metavar="DSN",
        help="for pg-* variants: your own PostgreSQL (default: $LAB_DSN, else a private "
        "throw-away server); the lab uses only its tables lab_tickets and lab_orders there",
    )
    p.add_argument(
        "--redis-url",
        type=_store_url("--redis-url"),
        metavar="URL",
        help="for redis-*/cluster-* variants: your own Redis (default: $LAB_REDIS_URL, else a "
        "private throw-away server); the lab uses only keys under lab:{tickets}: there",
    )
    p.add_argument(
        "--join",
        action="store_const",
        const=True,
        default=None,
        help="with --dsn/--redis-url: sell from the sale another run seeded there (perhaps on "
        "another machine), alongside it; the tally reads the engine's ledger of every run",
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
    p.add_argument(
        "--lang",
        choices=["en", "zh"],
        default=locale_lang(),
        help="zh: the notes' own wording (default: from $LANGUAGE, $LC_ALL, $LC_MESSAGES or "
        "$LANG, else en)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lab",
        description="The ticket-grabbing race from the course notes, run naive and fixed.",
    )
    parser.add_argument("--version", action="version", version=f"lab {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    class _Commands:
        """``sub.add_parser`` that also records each command in ``parser.commands``."""

        @staticmethod
        def add_parser(name: str, **kwargs: Any) -> _Parser:
            command: _Parser = subparsers.add_parser(name, **kwargs)
            parser.commands[name] = command
            return command

    sub = _Commands()

    p = sub.add_parser(
        "run",
        help="run one variant and tally the result",
        description="Run one variant of the ticket grab and tally sold, remaining, oversold, "
        "lost updates, double sales and errors.",
    )
    p.add_argument(
        "variant",
        choices=_Choices(_variant_names),
        metavar="VARIANT",  # argparse's usage line then never lists (and so loads) the choices
        help="one of: %(choices)s (see `lab variants`)",
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
        help="only these variants (default: every data.json one; `lab matrix` runs the engines)",
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

    m = sub.add_parser(
        "matrix",
        help="engines x mechanisms: which race, which hold, at what cost (built by running)",
        description="Run every engine variant in the registry (SQLite, PostgreSQL, Redis, a "
        "Redis Cluster) on one private server per engine, and tabulate its isolation level, "
        "the anomalies its runs showed, its aborts and retries, and its throughput as a "
        "fraction of its engine's ceiling measured in the same run.",
    )
    m.add_argument(
        "--engines",
        type=_engine_list,
        metavar="A,B,...",
        help="only these engines: sqlite, postgres, redis, redis-cluster "
        "(default: every engine the registry has variants for)",
    )
    m.add_argument(
        "--buyers",
        type=argtypes.whole(1, 64, "a whole number of buyers from 1 to 64"),
        default=8,
        help="buyer processes per throughput run, and the ceiling's clients (default 8)",
    )
    m.add_argument(
        "--repeat",
        type=argtypes.whole(1, 100, "a whole number of runs from 1 to 100"),
        default=3,
        metavar="K",
        help="throughput runs per row, of which the median counts (default 3)",
    )
    m.add_argument(
        "--lockstep",
        action="store_true",
        help="hold the race runs' buyers at a barrier: a certain race, but a lock holder "
        "or a retrying buyer waits out the barrier's 5 s (about 40 s more in all)",
    )
    m.add_argument(
        "--seed",
        type=argtypes.whole(0, 2**62, "a whole number, 0 or more"),
        help="run k of every row uses seed + k (default: random, and reported)",
    )
    m.add_argument("--markdown", type=Path, metavar="PATH", help="also write the table as Markdown")
    m.add_argument(
        "--html", type=Path, metavar="PATH", help="also write the table as a self-contained page"
    )
    m.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if a row expected to hold oversold, lost an update, failed or "
        "disagreed with its engine's ledger",
    )
    m.add_argument(
        "--lang",
        choices=["en", "zh"],
        default=locale_lang(),
        help="zh: the table, its caption and its pages in Chinese (default: from the locale)",
    )

    steppable = _Choices(_steppable_names)

    def step_target(p: argparse.ArgumentParser, max_buyers: int, buyers: int | None) -> None:
        """The variant and the small run that explore, replay and step share."""
        p.add_argument("variant", choices=steppable, metavar="VARIANT", help="one of: %(choices)s")
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
    from lab.ui import serve  # noqa: PLC0415 - lazy: the server is heavy

    serve.add_arguments(s)

    v = sub.add_parser("variants", help="list the variants, and whether each should hold")
    v.add_argument(
        "--markdown",
        action="store_true",
        help="print the table as Markdown (the README's variants table is this output)",
    )
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
    "connect", "token", "buyer_program", "success_regex", "join",
)  # fmt: skip


#: A DSN or URL longer than this is a mistake (or an attack), not a server.
_MAX_URL_CHARS = 2048


def _store_url(option: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip() or len(text) > _MAX_URL_CHARS or "\x00" in text:
            raise argparse.ArgumentTypeError(
                f"expected a server address of 1 to {_MAX_URL_CHARS} characters"
            )
        return text

    parse.__name__ = option  # argparse names the type in its message
    return parse


def _store_url_of(args: argparse.Namespace) -> str | None:
    """--dsn or --redis-url (or $LAB_DSN / $LAB_REDIS_URL): at most one server."""
    dsn, url = getattr(args, "dsn", None), getattr(args, "redis_url", None)
    if dsn is not None and url is not None:
        raise UsageError("--dsn and --redis-url: give one server, not both")
    variant = getattr(args, "variant", None) or ""
    if dsn is not None or url is not None:
        # Name the option the user typed: the runner sees only a URL, and would guess.
        option = "--dsn" if dsn is not None else "--redis-url"
        chosen = _variants().get(variant)
        store = chosen.store if chosen is not None else ""
        wanted = {"postgres": "--dsn", "redis": "--redis-url", "redis-cluster": "--redis-url"}
        if chosen is not None and option != wanted.get(store):
            where = wanted.get(store)
            kept = "data.json" if store == "json" else store
            raise UsageError(
                f"{option}: {variant} keeps its tickets "
                + (f"on a server named by {where}" if where else f"in {kept}, not on a server")
            )
        return dsn if dsn is not None else url
    env = "LAB_REDIS_URL" if variant.startswith(("redis", "cluster")) else "LAB_DSN"
    value = os.environ.get(env) if variant.startswith(("pg-", "redis", "cluster")) else None
    if not value:
        return None
    try:
        return _store_url(f"${env}")(value)
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"${env}: {exc}") from None


def _scenario(args: argparse.Namespace) -> Scenario:
    base = scenarios.load(args.scenario) if args.scenario else Scenario()
    overrides = {f: getattr(args, f) for f in _SCENARIO_FLAGS if getattr(args, f, None) is not None}
    from lab.net.wire import check_token  # noqa: PLC0415 - lazy

    if "token" in overrides:
        check_token(overrides["token"], "--token")
    elif os.environ.get("LAB_TOKEN"):  # empty counts as unset, as in `lab serve`
        overrides["token"] = check_token(os.environ["LAB_TOKEN"], "$LAB_TOKEN")
    store_url = _store_url_of(args)
    if store_url is not None:
        overrides["store_url"] = store_url
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
        from lab.variants.custom import MAX_BUYER_BYTES, split_spec  # noqa: PLC0415 - lazy

        file, _ = split_spec(spec)
        read_input_file(file, "--buyer", MAX_BUYER_BYTES)  # its size, before any run starts


def _check_total(buyers: int, runs: int) -> None:
    """Refuse a command that would start more than MAX_BUYER_RUNS buyers in all."""
    if buyers * runs > MAX_BUYER_RUNS:
        raise UsageError(
            f"--repeat x --buyers: {runs} runs of {buyers} buyers is {buyers * runs} buyers in "
            f"all; the limit is {MAX_BUYER_RUNS}"
        )


def _failed_check(result: Result) -> bool:
    return not result.consistent


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text  # noqa: PLC0415 - lazy, as every command's own imports below

    from lab.harness.compare import Case  # noqa: PLC0415
    from lab.harness.runner import check_data, refuse_early, run, with_seed  # noqa: PLC0415
    from lab.ui import render, report_html  # noqa: PLC0415
    from lab.ui.progress import LiveProgress  # noqa: PLC0415
    from lab.ui.timeline import TimelineView  # noqa: PLC0415

    _check_paths(args)
    scenario = with_seed(_scenario(args))
    variant = _variants()[args.variant]
    if args.repeat > 1:
        if args.data is not None:
            raise UsageError("--repeat: each repetition uses a fresh data.json; drop --data")
        return _cmd_compare(
            args, console, [Case(variant, scenario.lock if variant.locks else None)]
        )
    live = LiveProgress(
        console,
        args.lang,
        verbose=args.verbose and not args.json,
        bar=console.is_terminal and not args.json and not args.verbose,
    )
    # One line, before the header, for an option this variant refuses or a bad --data.
    refuse_early(variant, scenario, args.start_method)
    if args.data is not None:
        check_data(args.data, scenario)
    if not args.json:
        lock = scenario.lock if variant.locks else None
        tickets: int | str = 1
        if scenario.connect is not None:
            tickets = "the server's"
        elif scenario.join:
            tickets = "the sale's"
        elif scenario.tickets is not None:
            tickets = scenario.tickets
        elif args.data:
            tickets = "the file's"
        console.print(
            render.run_header(
                variant.name, scenario, tickets, scenario.seed or 0, lock, lang=args.lang
            )
        )
        if args.scenario and scenario.description:
            console.print(Text(scenario.description, style="italic"))
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
        hint = render.fix_hint(result, variant, args.lang)
        if hint is not None:
            console.print()
            console.print(hint, crop=False)  # the command line whole, at any width
        if args.timeline:
            console.print(TimelineView(result, lang=args.lang))
    if args.html:
        _write(args.html, report_html.run_page(result), "--html")
        if not args.json:
            console.print(Text(f"HTML report: {args.html}", style="dim"))
    if result.interrupted:
        return EXIT_STATUS[last_signal()]
    if result.stalled:
        return 1
    if args.check and _failed_check(result):
        # One line on stderr, for CI logs: which variant, and the verdict in words.
        _, _n = translator(args.lang)
        said = render.verdict(result, args.lang).plain
        line = _("--check: {variant} did not hold: {verdict}").format(
            variant=variant.name, verdict=said
        )
        print(f"lab: {_one_line(line)}", file=sys.stderr)
        return 1
    return 0


def _cmd_compare(
    args: argparse.Namespace, console: Console, cases: list[Case] | None = None
) -> int:
    from rich.text import Text  # noqa: PLC0415

    from lab.harness.compare import cases_for, compare  # noqa: PLC0415
    from lab.harness.runner import with_seed  # noqa: PLC0415
    from lab.ui import render  # noqa: PLC0415
    from lab.ui.progress import LiveProgress  # noqa: PLC0415

    _check_paths(args)
    scenario = with_seed(_scenario(args))
    if scenario.join:
        raise UsageError("--join: a run joins one sale once (lab run, without --repeat)")
    if cases is None:
        cases = cases_for(args.variants, lock=args.lock, have_buyer=bool(args.buyer_program))
    _check_total(scenario.buyers, len(cases) * args.repeat)
    if not args.json:
        console.print(render.scenario_blurb(scenario))
    live = LiveProgress(
        console,
        args.lang,
        verbose=False,
        bar=console.is_terminal and not args.json,
        total_runs=len(cases) * args.repeat,
    )
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
        return EXIT_STATUS[last_signal()]
    if args.check and any(s.betrayed for s in stats):
        _, _n = translator(args.lang)
        names = ", ".join(s.label for s in stats if s.betrayed)
        line = _("--check: expected to hold but did not: {variants}").format(variants=names)
        print(f"lab: {_one_line(line)}", file=sys.stderr)
        return 1
    return 0


def _engine_list(text: str) -> list[str]:
    """``--engines``: a comma-separated list (each name is checked by the matrix)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected engines like sqlite,postgres")
    return names


def _cmd_matrix(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text  # noqa: PLC0415

    from lab.harness.matrix import Settings, check, run_matrix  # noqa: PLC0415
    from lab.ui import matrix_view  # noqa: PLC0415

    _check_paths(args)
    settings = Settings(
        buyers=args.buyers, repeat=args.repeat, lockstep=args.lockstep, seed=args.seed
    )
    with console.status("lab matrix: starting") as status:
        rows, seed = run_matrix(
            args.engines,
            settings,
            progress=lambda text: status.update(f"lab matrix: {text}"),
        )
    caption = matrix_view.describe_runs(
        buyers=settings.buyers,
        race_buyers=settings.race_buyers,
        race_latency=settings.race_latency,
        lockstep=settings.lockstep,
        repeat=settings.repeat,
        seed=seed,
        lang=args.lang,
    )
    lang = args.lang
    if args.markdown:
        page = matrix_view.matrix_markdown(rows, caption=caption, lang=lang)
        _write(args.markdown, page, "--markdown")
    if args.html:
        _write(args.html, matrix_view.matrix_html(rows, caption=caption, lang=lang), "--html")
    console.print(matrix_view.matrix_table(rows, caption=caption, lang=lang))
    failing = check(rows)
    if args.check and failing:
        line = matrix_view.check_line(failing, lang)
        console.print(Text(line, style="bold red"), soft_wrap=True)
        return 1
    return 0


def _write(path: Path, text: str, option: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{option}: cannot write {path}: {exc.strerror}") from None


def _cmd_explore(args: argparse.Namespace, console: Console) -> int:
    from lab.harness.explore import explore  # noqa: PLC0415
    from lab.ui import render  # noqa: PLC0415

    result = explore(
        _variants()[args.variant],
        args.buyers,
        args.tickets,
        max_schedules=args.max_schedules,
        seed=args.seed,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        console.print(render.exploration(result), crop=False)  # the replay line, whole
    return 0


def _cmd_replay(args: argparse.Namespace, console: Console) -> int:
    from rich.text import Text  # noqa: PLC0415

    from lab.harness.explore import parse_schedule, replay  # noqa: PLC0415
    from lab.ui import render  # noqa: PLC0415
    from lab.ui.timeline import TimelineView  # noqa: PLC0415

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
    result, done = replay(_variants()[args.variant], buyers, args.tickets, args.schedule)
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
    from lab.ui.stepper import step_session  # noqa: PLC0415

    def read_line() -> str | None:
        line = sys.stdin.readline()
        return line if line else None

    step_session(_variants()[args.variant], args.buyers, args.tickets, read_line, console)
    return 0


def _report_stats(
    stats: list[VariantStats], scenario: Scenario, args: argparse.Namespace, console: Console
) -> None:
    from lab.ui import render, report_html  # noqa: PLC0415

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
    # SIGTERM takes Ctrl-C's path for the whole command (parsing and rendering too),
    # so it always ends in one line and 143, never in the default action's silence;
    # and neither lands in the middle of a print (lab.core.interrupts says why).
    try:
        with interrupts.installed():
            return _main(argv)
    except KeyboardInterrupt:
        # Landed between installing the handler and _main's own try (or after it):
        # the same one line and status, never the interpreter's death by SIGINT.
        print("lab: interrupted", file=sys.stderr)
        return EXIT_STATUS[last_signal()]


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        from lab.ui._console import HeldConsole  # noqa: PLC0415 - lazy: `lab --help` needs no rich

        return _dispatch(args, HeldConsole(highlight=False))
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
        return EXIT_STATUS[last_signal()]


def _dispatch(args: argparse.Namespace, console: Console) -> int:
    """Run the parsed command. Each command imports what it needs when it runs."""
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
        from lab.ui import serve  # noqa: PLC0415

        check_output_path(args.data, "--data")
        return serve.serve_command(args, console)
    if args.command == "matrix":
        return _cmd_matrix(args, console)
    if args.command == "variants":
        if args.markdown:
            sys.stdout.write(variants_markdown(_variants()))
            return 0
        from lab.ui import render  # noqa: PLC0415

        console.print(render.variants_table(_variants()))
        return 0
    if args.command == "scenarios":
        from lab.ui import render  # noqa: PLC0415

        console.print(render.scenarios_table(scenarios.available()))
        return 0
    if args.command == "clean":
        return _cmd_clean(console)
    raise UsageError(f"unknown command {args.command!r}")  # pragma: no cover - argparse guards


def expected_word(variant: VariantInfo) -> str:
    """What ``lab variants`` says of a variant: races, holds, holds (slow) or yours."""
    if not variant.safe:
        return "yours" if variant.caveat else "races"
    return "holds (slow)" if variant.caveat else "holds"


def variants_markdown(variants: Mapping[str, VariantInfo]) -> str:
    """``lab variants --markdown``: the README's variants table, in registry order.

    Columns: the variant (with the options it takes or needs), what it is
    expected to do, and why (each variant's own ``why``).
    """

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|")

    lines = ["| variant | expected | why |", "|---|---|---|"]
    for name, v in variants.items():
        label = f"`{name}`"
        if v.locks:
            label += " (" + " / ".join(f"`--lock {k}`" for k in v.locks) + ")"
        if v.requires:
            label += f" (needs `{v.requires}`)"
        lines.append(f"| {cell(label)} | {cell(expected_word(v))} | {cell(v.why)} |")
    return "\n".join(lines) + "\n"


def __getattr__(name: str) -> Any:
    # The progress observer moved to lab.ui.progress; the old private name still resolves
    # (lazily: importing it here would import the runner with the CLI).
    if name == "_Live":
        from lab.ui.progress import LiveProgress  # noqa: PLC0415

        return LiveProgress
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
