"""Hostile input: whatever a user types or points the lab at, the answer is a result or
one line on stderr with exit 2 (1 for the machine saying no) -- never a traceback,
a hang, unbounded memory, or files the lab did not say it would write.

Generated inputs call ``lab.ui.cli.main`` in-process. So that a generated command
that happens to be valid cannot start a long run, :func:`sandbox` caps what
actually runs (after every refusal was checked on the real values): at most 3
buyers, no latency, no arrival gaps, one run per row, two rows, three explored
schedules, and a server that stops as soon as it has started.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import math
import os
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lab.harness.compare
import lab.harness.explore
import lab.harness.runner
import lab.net.server
import lab.ui.cli
from lab.core.model import Latency, Scenario
from lab.ui.cli import build_parser, main
from lab.variants.protocol import Variant

ZERO = Latency(0.0, 0.0)


def fuzz(examples: int) -> settings:
    """``examples`` generated inputs; each example makes its own directory under the test's
    tmp_path, so the function-scoped fixtures are safe to share between examples."""
    return settings(
        max_examples=examples,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        deadline=None,
    )


#: Names the sandbox directory holds before each generated command.
DATA = '{"ticket_num": 1}'
PATH_OPTIONS = {"--data", "--html", "--markdown", "--scenario", "--buyer"}


# ----------------------------------------------------------------------------- sandbox


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cap what a generated command may actually run (see the module docstring)."""
    real_run = lab.harness.runner.run

    def small_run(variant: Variant, scenario: Scenario, **kw: Any) -> Any:
        lab.harness.runner.refuse_early(variant, scenario)  # the real refusals, on the real values
        small = dataclasses.replace(
            scenario, buyers=min(scenario.buyers, 3), latency=ZERO, arrival=0.0
        )
        kw["stall_timeout"] = min(kw.get("stall_timeout") or 20.0, 20.0)
        return real_run(variant, small, **kw)

    real_compare = lab.harness.compare.compare

    def small_compare(cases: Sequence[Any], scenario: Scenario, repeat: int, **kw: Any) -> Any:
        return real_compare(list(cases)[:2], scenario, min(repeat, 1), **kw)

    real_explore = lab.harness.explore.explore

    def small_explore(*args: Any, **kw: Any) -> Any:
        kw["max_schedules"] = min(kw.get("max_schedules", 3), 3)
        return real_explore(*args, **kw)

    # The CLI imports each command's machinery when the command runs, so patching
    # the defining modules reaches it.
    monkeypatch.setattr(lab.harness.runner, "run", small_run)
    monkeypatch.setattr(lab.harness.compare, "run", small_run)
    monkeypatch.setattr(lab.harness.compare, "compare", small_compare)
    monkeypatch.setattr(lab.harness.explore, "explore", small_explore)
    # The server answers nothing: it stops as soon as it has started listening.
    monkeypatch.setattr(lab.net.server.TicketServer, "wait", lambda self, timeout=None: True)
    # `lab step` reads its choices from stdin: give it end-of-file.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    monkeypatch.delenv("LAB_TOKEN", raising=False)


def fresh_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new directory for one generated example, made the working directory, holding
    a data.json, a subdirectory and a FIFO (which a generated path may name)."""
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    (work / "data.json").write_text(DATA)
    (work / "sub").mkdir()
    os.mkfifo(work / "fifo")
    monkeypatch.chdir(work)
    return work


def snapshot(work: Path) -> dict[str, bytes | None]:
    """Every name in ``work`` with a regular file's bytes (None for anything else)."""
    found: dict[str, bytes | None] = {}
    for entry in os.scandir(work):
        found[entry.name] = (
            Path(entry.path).read_bytes() if entry.is_file(follow_symlinks=False) else None
        )
    return found


def documented(name: str, argv: Sequence[str]) -> bool:
    """A new name in the working directory the command said it may write: a path option's
    file, its locks (``NAME.lock``, ``NAME.run.lock``) or a backup of it (``NAME.bak-*``)."""
    wanted = set()
    for option, value in itertools.pairwise(argv):
        if option in PATH_OPTIONS | {"--data"}:
            wanted.add(os.path.basename(value))
    wanted.add("data.json")  # `lab serve`'s default --data
    return any(
        name == w or name in (f"{w}.lock", f"{w}.run.lock") or name.startswith(f"{w}.bak-")
        for w in wanted
        if w
    )


def assert_answered(code: object, out: str, err: str) -> None:
    """The contract: exit 0, 1 or 2; on failure exactly one line on stderr; no traceback."""
    assert code in (0, 1, 2), (code, err)
    assert "Traceback" not in out + err
    if code != 0:
        assert err.count("\n") == 1 and err.startswith("lab"), err


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[object, str, str]:
    try:
        code: object = main(argv)
    except SystemExit as exc:  # allowed, as long as the status is one of ours
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def check_dir_after(
    work: Path, before: dict[str, bytes | None], argv: list[str], code: object
) -> None:
    after = snapshot(work)
    for name in set(after) - set(before):
        assert documented(name, argv), f"{name!r} appeared in the working directory"
    assert set(before) <= set(after), "a file the lab did not make was removed"
    if code == 2:
        # A refused command touched nothing that was there.
        assert {k: after[k] for k in before} == before


# ----------------------------------------------------------------------------- generated argv

ODD = ["\udcff", "\udc80x", "\u202e", "\n", "\x1b[31m", "用户", "\ufeff", "\u0663", " "]
SPECIAL = [
    "",
    "0",
    "-1",
    "1",
    "3",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "-0",
    "1_0",
    " 2 ",
    "0x10",
    "9" * 5000,
    "1" + "0" * 30,
    "0.05-0.2",
    "0.2",
    "3600",
    "3601",
    "60",
    "86400",
    "127.0.0.1:1",
    "[::1]:1",
    ":",
    "a:b",
    "file",
    "mp",
    "fork",
    "spawn",
    "forkserver",
    "en",
    "zh",
    "naive",
    "locked",
    "naive,locked",
    "custom",
    ",",
    "notes",
    "flash-sale",
    "data.json",
    "sub",
    "fifo",
    "nosuchdir/x",
    "out.html",
    "/dev/null",
    "/dev/zero",
    ".",
    "..",
    "b0.read b1.read b0.write b1.write",
    "b0.read(1)",
    "x.py:run",
    "(a+)+$",
]
#: Values each option accepts (or nearly), so generated commands also reach the run.
PLAUSIBLE = {
    "--buyers": ["1", "2", "3", "5001", "20000"],
    "--tickets": ["0", "1", "2"],
    "--latency": ["0", "0-0.01", "0.001"],
    "--arrival": ["0", "0.001"],
    "--seed": ["1", "7", str(2**62)],
    "--lock": ["file", "mp"],
    "--crash": ["0", "0.5", "1"],
    "--repeat": ["1", "2", "10000"],
    "--start-method": ["fork", "forkserver"],
    "--stall-timeout": ["5", "0.1"],
    "--lang": ["en", "zh"],
    "--variants": ["naive", "naive,locked", "custom", "tcp"],
    "--max-schedules": ["1", "3"],
    "--port": ["0"],
    "--host": ["127.0.0.1", "::1", "localhost", "0.0.0.0"],
    "--mode": ["naive", "safe"],
    "--max-latency": ["0", "1"],
    "--idle-timeout": ["1"],
    "--max-connections": ["1", "5"],
    "--lockstep": ["0", "2"],
    "--data": ["data.json", "new.json", "fifo", "sub"],
    "--html": ["out.html", "data.json"],
    "--markdown": ["out.md"],
    "--scenario": ["notes", "flash-sale", "fifo", "sub", "data.json"],
    "--token": ["s3cret"],
    "--connect": ["127.0.0.1:1", "localhost:1"],
    "--buyer": ["fifo:run", "data.json:run", "sub:run"],
    "--success-regex": ["买票成功", "(a+)+$", "a{99999999999}", "("],
}
TEXT = st.text(st.characters(exclude_characters="\x00"), max_size=20)
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    TEXT,
    st.builds(lambda a, b: a + b, st.sampled_from(SPECIAL), st.sampled_from(ODD)),
    st.integers().map(str),
    st.floats().map(repr),
)


COMMANDS = build_parser().commands


def _options(command: str) -> list[tuple[str, bool]]:
    """(flag, takes a value) for every option of ``command``, straight from the parser."""
    found = []
    for action in COMMANDS[command].declared:
        for flag in action.option_strings:
            found.append((flag, action.nargs != 0))
    return found


def _positionals(command: str) -> list[list[str]]:
    return [
        list(action.choices or [])
        for action in COMMANDS[command].declared
        if not action.option_strings
    ]


@st.composite
def argv_for(draw: st.DrawFn, command: str) -> list[str]:
    argv = [command]
    if command == "matrix":
        # Small first (a whole matrix takes half a minute); drawn options may override it.
        argv += ["--engines", "sqlite", "--repeat", "1", "--buyers", "2"]
    for choices in _positionals(command):
        argv.append(draw(st.one_of(st.sampled_from(choices), VALUES)))
    options = _options(command)
    for flag, takes_value in draw(st.lists(st.sampled_from(options), max_size=5)):
        argv.append(flag)
        if takes_value:
            # Half the time a plausible value, so that many commands get past the parser.
            argv.append(draw(st.one_of(VALUES, st.sampled_from(PLAUSIBLE.get(flag, SPECIAL)))))
    if command in ("run", "compare") and draw(st.booleans()):
        # Often valid enough to run: small and instant (the sandbox caps it anyway).
        argv += ["--buyers", "2", "--latency", "0"]
    if command == "replay" and "--schedule" not in argv and draw(st.booleans()):
        argv += ["--schedule", draw(SCHEDULES)]
    return argv


#: Generated commands per command (hypothesis max_examples).
ARGV_EXAMPLES = {
    "run": 60,
    "compare": 30,
    "explore": 40,
    "replay": 40,
    "step": 40,
    "serve": 40,
    "variants": 10,
    "scenarios": 10,
    "clean": 10,
    "matrix": 15,
}
assert set(ARGV_EXAMPLES) == set(COMMANDS), "a new command needs generated inputs too"


def _argv_test(command: str) -> Callable[..., None]:
    @pytest.mark.usefixtures("sandbox")
    @fuzz(ARGV_EXAMPLES[command])
    @given(argv=argv_for(command))
    def test(
        argv: list[str],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        work = fresh_dir(tmp_path, monkeypatch)
        before = snapshot(work)
        code, out, err = call(argv, capsys)
        event(f"exit {code}")  # --hypothesis-show-statistics: how many got past validation
        assert_answered(code, out, err)
        check_dir_after(work, before, argv, code)

    test.__name__ = f"test_generated_argv_for_{command}_is_answered"
    return cast("Callable[..., None]", test)


for _command in ARGV_EXAMPLES:
    _t = _argv_test(_command)
    globals()[_t.__name__] = pytest.mark.timeout(120)(_t)


# ----------------------------------------------------------------------------- --schedule

STEP = st.builds(
    lambda b, what, count: f"b{b}.{what}" + ("" if count is None else f"({count})"),
    st.one_of(st.integers(0, 13), st.sampled_from([99999, 10**40])),
    st.sampled_from(["read", "write", "want-lock", "acquired", "sold-out", "write+release", "x"]),
    st.one_of(st.none(), st.integers(-1, 3), TEXT.filter(lambda t: ")" not in t)),
)
SCHEDULES = st.one_of(
    st.lists(STEP, max_size=12).map(" ".join),
    st.lists(STEP, max_size=4).map(",".join),
    TEXT,
    st.sampled_from(["", " ", "b0.read " * 2000, "b" + "9" * 5000 + ".read"]),
)


@pytest.mark.usefixtures("sandbox")
@pytest.mark.timeout(120)
@fuzz(80)
@given(schedule=SCHEDULES, variant=st.sampled_from(["naive", "locked"]))
def test_generated_schedules_are_answered(
    schedule: str,
    variant: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = fresh_dir(tmp_path, monkeypatch)
    before = snapshot(work)
    argv = ["replay", variant, "--schedule", schedule, "--json"]
    code, out, err = call(argv, capsys)
    assert_answered(code, out, err)
    assert code in (0, 2)
    check_dir_after(work, before, argv, code)


# ----------------------------------------------------------------------------- data.json bytes

DATA_BYTES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{}",
            b"[]",
            b"null",
            b'{"ticket_num": -1}',
            b'{"ticket_num": 1e999}',
            b'{"ticket_num": NaN}',
            b'{"ticket_num": "1"}',
            b'{"ticket_num": true}',
            b'{"ticket_num": 1, "ticket_num": 2}',
            b'{"ticket_num": ' + b"9" * 5000 + b"}",
            b"[" * 100_000,
            b'{"ticket_num": 1}\x00',
            b"\xef\xbb\xbf" + DATA.encode(),
            b'{"ticket_num": 2}',
            b'{"ticket_num": 0}',
        ]
    ),
    st.integers().map(lambda n: b'{"ticket_num": %d}' % n),
)


@pytest.mark.usefixtures("sandbox")
@pytest.mark.timeout(120)
@fuzz(50)
@given(content=DATA_BYTES, tickets=st.sampled_from([[], ["--tickets", "2"]]))
def test_generated_data_files_are_answered_and_refused_ones_untouched(
    content: bytes,
    tickets: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = fresh_dir(tmp_path, monkeypatch)
    (work / "data.json").write_bytes(content)
    before = snapshot(work)
    argv = ["run", "naive", "--data", "data.json", "--buyers", "2", "--latency", "0", *tickets]
    code, out, err = call(argv, capsys)
    assert_answered(code, out, err)
    check_dir_after(work, before, argv, code)
    if code == 2:
        assert (work / "data.json").read_bytes() == content


# ----------------------------------------------------------------------------- scenario TOML

TOML_VALUES = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: "nan" if math.isnan(f) else ("inf" if f == float("inf") else repr(f))
    ),
    st.sampled_from(
        [
            "true",
            "false",
            "[]",
            "{}",
            "[1, 2]",
            '"0.05-0.2"',
            '"file"',
            '"mp"',
            "1979-05-27",
            '"1-3"',
            '"' + "x" * 1000 + '"',
            "20000",
            "5001",
            "60",
            "60.0001",
            "3600",
        ]
    ),
    TEXT.map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
FIELDS = ["description", "buyers", "tickets", "latency", "arrival", "seed", "lockstep", "lock"]
TOML_DOCS = st.one_of(
    st.dictionaries(
        st.one_of(st.sampled_from(FIELDS), st.sampled_from(["name", "buyer", "connect"])),
        TOML_VALUES,
        max_size=5,
    ).map(lambda d: "".join(f"{k} = {v}\n" for k, v in d.items())),
    TEXT,
    st.sampled_from(["a = " + "[" * 5000, "a = " + "{b = " * 3000, "\x00", "[x]\n[x]\n"]),
)


@pytest.mark.usefixtures("sandbox")
@pytest.mark.timeout(120)
@fuzz(60)
@given(doc=TOML_DOCS)
def test_generated_scenarios_are_one_line_or_a_valid_run(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = fresh_dir(tmp_path, monkeypatch)
    (work / "mine.toml").write_text(doc, encoding="utf-8", errors="surrogateescape")
    before = snapshot(work)
    argv = ["run", "naive", "--scenario", "mine.toml", "--json"]
    code, out, err = call(argv, capsys)
    assert_answered(code, out, err)
    assert code in (0, 2)
    check_dir_after(work, before, argv, code)


def test_a_huge_scenario_is_one_line_and_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.toml").write_bytes(b"# " + b"x" * (4 << 20) + b"\n")
    code, _, err = call(["run", "naive", "--scenario", "big.toml"], capsys)
    assert code == 2 and "the limit is 65536" in err and err.count("\n") == 1


def test_a_schedule_naming_a_huge_buyer_is_refused_not_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = call(["replay", "naive", "--schedule", "b9999.read"], capsys)
    assert code == 2 and "b9999" in err and "at most 12" in err


def test_repeat_times_buyers_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["compare", "--repeat", "10000", "--buyers", "1000", "--latency", "0"]
    code, _, err = call(argv, capsys)
    assert code == 2 and "--repeat x --buyers" in err and "the limit is" in err


def test_arrival_times_buyers_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = call(["run", "naive", "--arrival", "60", "--buyers", "5000"], capsys)
    assert code == 2 and "--arrival x --buyers" in err


# ----------------------------------------------------------------------------- non-regular files


def _directory(path: Path) -> None:
    path.mkdir()


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the socket file stays: a path of kind "socket" with nobody listening


def _device(kind: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root (CI runs as root)")
        os.mknod(path, kind | 0o600, os.makedev(1, 3))  # 1,3 is /dev/null's numbers

    return make


KINDS: dict[str, Callable[[Path], None]] = {
    "directory": _directory,
    "FIFO": _fifo,
    "socket": _socket,
    "character device": _device(stat.S_IFCHR),
    "block device": _device(stat.S_IFBLK),
}
#: One command per path option; the option's value is put last.
OPTION_ARGV = {
    "--data": ["run", "naive", "--buyers", "2", "--latency", "0", "--tickets", "1", "--data"],
    "--scenario": ["run", "naive", "--buyers", "2", "--latency", "0", "--scenario"],
    "--html": ["run", "naive", "--buyers", "2", "--latency", "0", "--html"],
    "--markdown": [
        "compare",
        "--variants",
        "naive",
        "--buyers",
        "2",
        "--latency",
        "0",
        "--repeat",
        "1",
        "--markdown",
    ],
    "--buyer": ["run", "custom", "--buyers", "2", "--latency", "0", "--buyer"],
    "serve --data": ["serve", "--port", "0", "--tickets", "1", "--data"],
}


@pytest.mark.timeout(30)  # a lab that opened the FIFO would block here, and fail
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("option", list(OPTION_ARGV))
def test_a_path_that_is_not_a_regular_file_is_refused(
    option: str,
    kind: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lab.net.server.TicketServer, "wait", lambda self, timeout=None: True)
    target = tmp_path / "thing.py" if option == "--buyer" else tmp_path / "thing"
    KINDS[kind](target)
    before = sorted(os.listdir(tmp_path))
    value = f"{target}:run" if option == "--buyer" else str(target)
    code, out, err = call([*OPTION_ARGV[option], value], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert option.rsplit(maxsplit=1)[-1] in err and kind in err and "not a regular file" in err
    assert sorted(os.listdir(tmp_path)) == before  # nothing created beside it
    assert out == ""  # refused before the run's header was printed


@pytest.mark.parametrize("option", ["--data", "--html", "--markdown"])
def test_an_output_path_in_a_missing_directory_is_refused(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = OPTION_ARGV[option][:-1]
    code, _, err = call([*argv, option, str(tmp_path / "nosuch" / "x")], capsys)
    assert code == 2 and "directory does not exist" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_lab_clean_removes_idle_run_directories(capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        assert main(["run", "naive", "--buyers", "1", "--latency", "0", "--json"]) == 0
    capsys.readouterr()
    runs = [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("lab-")]
    assert len(runs) == 3
    assert main(["clean"]) == 0
    assert capsys.readouterr().out.strip() == "removed 3 run directories"
    assert [p for p in os.listdir(tempfile.gettempdir()) if p.startswith("lab-")] == []


def test_paths_with_any_bytes_are_written_or_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    odd = "\udcff\u202eout\n.html"  # an undecodable byte, a bidi override, a newline
    argv = ["run", "naive", "--buyers", "1", "--latency", "0", "--html", odd]
    code, out, err = call(argv, capsys)
    assert code == 0 and err == "" and "Traceback" not in out
    assert os.listdir(tmp_path) == [odd]
    code, _, err = call([*argv[:-1], f"{odd}/nosuch/x"], capsys)
    assert code == 2 and err.count("\n") == 1 and "\\n" in err
