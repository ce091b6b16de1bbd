"""Faults: buyers killed mid-purchase, dead lock holders, torn writes, corrupt data.json, bad input.

Crash points are chosen by a seeded plan (``runner.crash_plan``); where a test
needs one exact fault it swaps the plan, and the buyers, forked afterwards,
follow it. Nothing here depends on timing to show the fault.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.core.errors import DataFileBusy, UsageError
from lab.core.model import Latency, Scenario
from lab.harness import runner
from lab.net.server import ServerConfig, TicketServer
from lab.stores.jsonfile import Store
from lab.ui.cli import main
from lab.ui.render import render_result
from lab.variants import VARIANTS
from tests.helpers import case_id, place, safe_cases
from tests.test_render import text_of
from tests.test_store import BAD_FILES

CRASH_SAFE = [c for c in safe_cases() if VARIANTS[c[0]].crash_safe]


def plan(*steps: str | None) -> object:
    """A crash plan that kills buyer i at steps[i] (and nobody else)."""
    return lambda scenario, seed: [
        steps[i] if i < len(steps) else None for i in range(scenario.buyers)
    ]


@pytest.mark.parametrize("case", CRASH_SAFE, ids=case_id)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_safe_variants_survive_crashes(
    case: tuple[str, str | None], seed: int, tmp_path: Path
) -> None:
    """30% of buyers SIGKILLed at random steps: the file stays valid and nothing is oversold."""
    name, lock = case
    scenario = Scenario(
        buyers=30, tickets=10, latency=Latency(0, 0.002), seed=seed, crash=0.3, lock=lock or "file"
    )
    data, scenario = place(name, tmp_path, scenario)
    # Only a dead multiprocessing.Lock holder can stall; a short timeout finds it fast,
    # a long one keeps a loaded machine from faking a stall for the others.
    result = runner.run(
        VARIANTS[name], scenario, data=data, stall_timeout=2.0 if lock == "mp" else 30.0
    )
    if data is not None:
        assert json.loads(data.read_text())["ticket_num"] == result.remaining  # valid, every time
    else:  # an engine: its own orders ledger agrees with the count and the buyers
        assert result.orders is not None and result.ledger_agrees
    assert result.oversold == 0
    assert result.lost_updates == 0
    assert result.errors == 0
    # The invariant: sold + remaining + taken-by-killed == tickets, every unconfirmed sale
    # owned by a buyer whose outcome is unknown.
    assert result.sold + result.remaining + result.unknown_consumed == result.tickets  # type: ignore[operator]
    assert result.unknown_consumed <= result.unknown
    assert result.accounted
    if result.stalled:  # only a multiprocessing.Lock can be left held by a dead holder
        assert lock == "mp" and "died holding the lock" in result.stalled, result.stalled
    else:
        assert result.consistent


def test_crash_plan_is_seeded_and_kills_the_fraction_asked() -> None:
    s = Scenario(buyers=1000, crash=0.3)
    first, again = runner.crash_plan(s, 7), runner.crash_plan(s, 7)
    assert first == again
    assert 240 < sum(step is not None for step in first) < 360
    assert set(first) - {None} <= set(runner.CRASH_STEPS)


def test_killed_buyers_are_reported_with_their_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "crash_plan", plan("search", None, "bought"))
    result = runner.run(
        VARIANTS["locked"],
        Scenario(buyers=3, tickets=3, latency=Latency(0, 0), seed=1),
        data=tmp_path / "data.json",
    )
    steps = {r.buyer: r.crashed_at for r in result.receipts}
    assert steps[0] == "search"
    assert steps[2] == "bought, holding the lock"  # wrote, then died before reporting
    assert (result.killed, result.killed_in_critical_section, result.unknown) == (2, 1, 2)
    assert (result.sold, result.remaining, result.unknown_consumed) == (1, 1, 1)
    assert result.consistent


def test_torn_write_is_an_error_in_the_tally_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notes' truncate-and-write, killed in between: the next buyer reads an empty file.

    naive-joined runs buyers strictly one after another, so buyer 1 reads
    exactly what dead buyer 0 left behind.
    """
    monkeypatch.setattr(runner, "crash_plan", plan("mid-write"))
    result = runner.run(
        VARIANTS["naive-joined"],
        Scenario(buyers=3, tickets=2, latency=Latency(0, 0), seed=1),
        data=tmp_path / "data.json",
    )
    assert result.killed == 1
    assert result.errors == 2
    assert all("is empty" in (r.error or "") for r in result.receipts[1:])
    assert result.remaining is None and result.final_text == ""
    out = text_of(render_result(result))
    assert "A torn read" in out and "UNREADABLE" in out


def test_naive_crash_run_through_the_cli_has_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "crash_plan", plan("mid-write"))
    code = main(
        [
            "run",
            "naive-joined",
            "--buyers",
            "3",
            "--tickets",
            "2",
            "--latency",
            "0",
            "--crash",
            "0.5",
            "--data",
            str(tmp_path / "data.json"),
            "--check",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "ERRORS" in out or "UNREADABLE" in out
    assert "Traceback" not in out + err


def test_dead_mp_lock_holder_is_a_detected_deadlock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every buyer dies as soon as it holds the lock: the first one to get it never lets go."""
    monkeypatch.setattr(runner, "crash_plan", plan(*["acquired"] * 5))
    code = main(
        [
            "run",
            "locked",
            "--lock",
            "mp",
            "--buyers",
            "5",
            "--latency",
            "0",
            "--stall-timeout",
            "1",
            "--data",
            str(tmp_path / "data.json"),
            "--tickets",
            "3",
        ]
    )
    out = capsys.readouterr().out.replace("\n", " ").replace("│", " ")
    out = " ".join(out.split())
    assert code == 1
    assert "deadlock: the lock holder (buyer" in out and "died holding the lock" in out
    assert json.loads((tmp_path / "data.json").read_text()) == {"ticket_num": 3}
    # the autouse no_orphans fixture proves every blocked buyer was reaped


def test_dead_file_lock_holder_is_released_by_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "crash_plan", plan(*["acquired"] * 5))
    result = runner.run(
        VARIANTS["locked"],
        Scenario(buyers=5, tickets=3, latency=Latency(0, 0), seed=1),
        data=tmp_path / "data.json",
        stall_timeout=5,
    )
    assert result.stalled is None  # each death freed the lock for the next buyer
    assert result.killed == 5 and result.killed_in_critical_section == 5
    assert result.remaining == 3


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_corrupt_data_file_gives_one_line_and_stays_byte_for_byte(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, problem = BAD_FILES[case]
    data = tmp_path / "data.json"
    data.write_bytes(content)
    code = main(["run", "locked", "--buyers", "2", "--latency", "0", "--data", str(data)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(data) in err and problem in err
    assert data.read_bytes() == content
    assert [p.name for p in tmp_path.iterdir()] == ["data.json"]  # nothing else was created


def test_missing_data_file_and_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "naive", "--buyers", "2", "--data", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "dir.json").mkdir()
    assert main(["run", "naive", "--buyers", "2", "--data", str(tmp_path / "dir.json")]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_reset_of_unreadable_file_keeps_a_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.json"
    data.write_bytes(b"not json at all")
    code = main(
        [
            "run",
            "queue",
            "--buyers",
            "2",
            "--latency",
            "0",
            "--data",
            str(data),
            "--tickets",
            "4",
            "--json",
        ]
    )
    assert code == 0 and json.loads(capsys.readouterr().out)["remaining"] == 2
    backups = list(tmp_path.glob("data.json.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == b"not json at all"


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=st.binary(max_size=64) | st.sampled_from([c for c, _ in BAD_FILES.values()]))
def test_any_bytes_as_data_file_give_a_run_or_a_clean_error(
    content: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("bytes") / "data.json"
    data.write_bytes(content)
    code, out, err = _cli(
        ["run", "queue", "--buyers", "2", "--latency", "0", "--data", str(data), "--json"]
    )
    assert "Traceback" not in out + err
    if code == 0:
        assert json.loads(out)["oversold"] == 0
    else:
        assert code == 2 and err.count("\n") == 1 and str(data) in err
        assert data.read_bytes() == content


# Flags whose valid values are cheap to run: any value is either a quick run or a clean error.
# (Expensive-but-valid values such as --latency 3600 are covered as bad-input cases in test_cli.)
@settings(max_examples=40, deadline=None)
@given(
    flag=st.sampled_from(
        ["--tickets", "--seed", "--crash", "--lock", "--scenario", "--lang", "--buyers"]
    ),
    value=st.text(min_size=0, max_size=12),
)
def test_any_option_value_gives_a_run_or_a_clean_error(flag: str, value: str) -> None:
    if flag == "--buyers" and value.strip().isdigit() and int(value) > 8:
        value = "8"  # valid, and cheap: the test is about parsing, not about forking thousands
    argv = ["run", "queue", "--buyers", "2", "--latency", "0", "--json", flag, value]
    code, out, err = _cli([*argv, "--latency", "0", "--arrival", "0"])
    assert "Traceback" not in out + err
    assert code in (0, 2)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("lab")


def test_two_runs_in_different_directories_do_not_touch_each_other(tmp_path: Path) -> None:
    dirs = [tmp_path / "a", tmp_path / "b"]
    procs = []
    for d in dirs:
        d.mkdir()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lab",
                    "run",
                    "locked",
                    "--buyers",
                    "20",
                    "--tickets",
                    "7",
                    "--latency",
                    "0-0.005",
                    "--data",
                    str(d / "data.json"),
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=d,
            )
        )
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["sold"] == 7
    for d in dirs:
        assert json.loads((d / "data.json").read_text()) == {"ticket_num": 0}
        assert sorted(p.name for p in d.iterdir()) == [
            "data.json",
            "data.json.lock",
            "data.json.run.lock",
        ]


# -- --connect, and refused runs ---------------------------------------------------------


def test_connect_never_touches_data(tmp_path: Path) -> None:
    """The server owns the count: --data is neither read, created, claimed nor reset."""
    theirs = Store(tmp_path / "server" / "data.json")
    theirs.path.parent.mkdir()
    theirs.reset(3)
    mine = tmp_path / "mine" / "data.json"  # its directory does not even exist
    with TicketServer(ServerConfig(store=theirs, mode="safe")) as server:
        host, port = server.address
        scenario = Scenario(buyers=2, latency=Latency(0, 0), seed=1, connect=f"{host}:{port}")
        runner.check_data(mine, scenario)  # nothing to check: never used
        result = runner.run(VARIANTS["server"], scenario, data=mine)
    assert not mine.parent.exists()  # no file, no claim, no lock: nothing local at all
    assert result.tickets == 3 and result.remaining == 1 and result.sold == 2
    # The report names the server's file and its mode, not a local placeholder.
    assert "mode safe" in result.data_path and str(mine) not in result.data_path


def test_a_refused_run_creates_nothing(tmp_path: Path) -> None:
    """Refusals (a bad option, a busy file) come before any directory or lock file exists."""
    base = Path(tempfile.gettempdir())  # the run directories' home (conftest: inside pytest's)
    before = sorted(base.iterdir())
    too_many = Scenario(buyers=runner.PROCESS_PER_BUYER_MAX + 1, tickets=1, latency=Latency(0, 0))
    with pytest.raises(UsageError, match="at most"):
        runner.run(VARIANTS["naive"], too_many)
    with pytest.raises(UsageError, match="--connect"):
        runner.run(VARIANTS["server"], Scenario(buyers=1, connect="no port here", tickets=None))
    data = tmp_path / "data.json"
    with pytest.raises(UsageError, match="at most"):
        runner.run(VARIANTS["naive"], too_many, data=data)
    assert sorted(base.iterdir()) == before
    assert list(tmp_path.iterdir()) == []  # no data.json, no data.json.run.lock
    data.write_text('{"ticket_num": 2}')
    claim = Store(data).claim()  # another run holds it
    try:
        with pytest.raises(DataFileBusy):
            runner.run(VARIANTS["naive"], Scenario(buyers=1, latency=Latency(0, 0)), data=data)
    finally:
        claim.close()
    assert sorted(base.iterdir()) == before
    assert data.read_text() == '{"ticket_num": 2}'
