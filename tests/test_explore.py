"""lab explore / replay / step, the timeline and the HTML report."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.core.errors import UsageError
from lab.harness.explore import ScheduleError, explore, parse_schedule, replay
from lab.ui.cli import main
from lab.ui.timeline import TimelineView
from lab.variants import VARIANTS, _mutex
from tests.helpers import run_variant
from tests.test_render import text_of


def test_explore_naive_finds_the_classic_lost_update() -> None:
    e = explore(VARIANTS["naive"], 2, 1)
    assert e.complete and e.mode == "exhaustive" and e.explored == 6
    assert e.oversold == 4 and e.lost_update == 4 and e.deadlocked == 0
    assert e.shortest_failing is not None
    assert " ".join(e.shortest_failing.steps) == "b0.read(1) b1.read(1) b0.write(0) b1.write(0)"


def test_explore_locked_covers_every_schedule_and_none_fails() -> None:
    e = explore(VARIANTS["locked"], 3, 1)
    assert e.complete
    assert e.explored == 270
    assert e.failing == 0 and e.errored == 0


def test_explore_finds_the_write_only_lock_mistake() -> None:
    e = explore(VARIANTS["locked-write-only"], 2, 1)
    assert e.complete and e.oversold > 0
    assert e.shortest_failing is not None and "acquire" in " ".join(e.shortest_failing.steps)


def test_explore_goes_red_when_the_lock_is_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The explorer's verdict on `locked` can fail: take the lock away and it finds the race."""
    monkeypatch.setitem(_mutex.LOCKS, "file", lambda me, kit: contextlib.nullcontext())
    e = explore(VARIANTS["locked"], 2, 1)
    assert e.oversold > 0


def test_explore_above_three_buyers_samples_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "naive", "--buyers", "4", "--max-schedules", "30", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert "a random sample of 30 schedules (seed 5): not exhaustive" in out


def test_explore_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explore", "locked", "--buyers", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] is True and data["failing"] == 0 and data["explored"] == 10


def test_replaying_a_failing_schedule_five_times_gives_five_identical_tallies() -> None:
    schedule = "b0.read b1.read b0.write b1.write"
    tallies = set()
    for _ in range(5):
        result, steps = replay(VARIANTS["naive"], 2, 1, schedule)
        tallies.add(
            (result.sold, result.remaining, result.oversold, result.lost_updates, tuple(steps))
        )
    assert tallies == {(2, 0, 1, 1, ("b0.read(1)", "b1.read(1)", "b0.write(0)", "b1.write(0)"))}


def test_replay_finishes_an_unfinished_schedule_in_order() -> None:
    result, steps = replay(VARIANTS["naive"], 2, 1, "b1.read")
    assert steps == ["b1.read(1)", "b0.read(1)", "b0.write(0)", "b1.write(0)"]
    assert result.oversold == 1


def test_replay_refuses_a_step_blocked_on_the_lock() -> None:
    with pytest.raises(
        ScheduleError, match=r"step 4 'b1.acquire'.*buyer 1 is blocked: buyer 0 holds the lock"
    ):
        replay(VARIANTS["locked"], 2, 1, "b0.search b0.acquire b1.search b1.acquire")


def test_replay_checks_the_counts_it_is_given() -> None:
    with pytest.raises(ScheduleError, match=r"step 1 'b0.read\(7\)' does not match: .*read\(1\)"):
        replay(VARIANTS["naive"], 2, 1, "b0.read(7)")
    result, _ = replay(VARIANTS["naive"], 2, 1, "b0.read(1) b1.read(1) b0.write(0) b1.write(0)")
    assert result.oversold == 1


def test_replay_names_a_step_by_its_first_part() -> None:
    with pytest.raises(ScheduleError, match="does not match"):
        replay(VARIANTS["locked"], 1, 1, "b0.search b0.acquire b0.read b0.release")
    replay(VARIANTS["locked"], 1, 1, "b0.search b0.acquire b0.read b0.write")


def test_variants_whose_steps_cannot_be_paused_are_not_explorable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("queue", "server", "server-naive", "custom"):
        assert main(["explore", name]) == 2
        assert "invalid choice" in capsys.readouterr().err


def test_replay_refuses_a_step_the_buyer_is_not_at() -> None:
    with pytest.raises(
        ScheduleError, match=r"step 1 'b0.write' does not match: buyer 0's next step was read\(1\)"
    ):
        replay(VARIANTS["naive"], 2, 1, "b0.write")


@pytest.mark.parametrize("bad", ["", "x0.read", "b0.", "b0.read(1"])
def test_bad_schedule_text_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError, match="--schedule"):
        parse_schedule(bad)


def test_replay_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "replay",
            "locked",
            "--buyers",
            "2",
            "--schedule",
            "b0.search b0.acquire b1.search b1.acquire",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "b1.acquire" in err


def test_replay_cli_draws_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "naive", "--schedule", "b0.read b1.read b0.write b1.write"]) == 0
    out = capsys.readouterr().out
    assert "OVERSOLD: 1 ticket sold 2 times" in out
    assert "Buyer 1 overwrote buyer 0's write: both read ticket_num=1 and both wrote 0" in out
    assert "ticket #1 (all read 1, all wrote 0): 0 ← 1" in out  # the timeline's chain


def test_timeline_at_width_80_names_the_conflicting_buyers(tmp_path: Path) -> None:
    result = run_variant("naive", tmp_path, buyers=30, tickets=1, lockstep=True)
    out = text_of(TimelineView(result), width=80)
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert sum(1 for line in lines if "│" in line) == 12  # stays readable: 12 lanes...
    assert "18 more buyers not shown" in out  # ...and a count of the rest
    # Every overwrite is named, as one chain in write order: never "…and 23 more".
    chain = " ".join(out.split("ticket #1 (all read 1, all wrote 0):", 1)[1].split())
    assert sorted(int(b) for b in chain.split(" ← ")) == list(range(30))
    assert "more overwrites" not in out


def test_run_timeline_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "run",
            "locked",
            "--buyers",
            "3",
            "--latency",
            "0.01",
            "--timeline",
            "--data",
            str(tmp_path / "d.json"),
            "--tickets",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "timeline:" in out and "═" in out  # the lock held, drawn


def _drive_step(argv: list[str], lines: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def test_step_mode_lets_the_learner_cause_an_oversell(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _drive_step(["step", "naive", "--buyers", "2"], "0\n1\n0\n1\n", monkeypatch)
    assert code == 0
    assert 'data.json: {"ticket_num": 1}' in out
    assert "buyer 0: read ticket_num=1" in out
    assert "OVERSOLD: 1 ticket sold 2 times" in out and "You caused that" in out


def test_step_mode_shows_the_lock_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _drive_step(["step", "locked", "--buyers", "2"], "0\n0\n1\n1\nx\na\n", monkeypatch)
    assert code == 0
    assert "cannot move buyer 1: buyer 1 is blocked: buyer 0 holds the lock" in out
    assert "'x' is not a buyer number" in out
    assert "consistent: 1 sold, 0 remaining" in out and "You caused that" not in out


def test_step_mode_quits_on_end_of_input(monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _drive_step(["step", "naive"], "0\n", monkeypatch)
    assert code == 0 and "stopped; nothing was tallied" in out


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_html_report_is_self_contained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "run.html"
    assert (
        main(
            [
                "run",
                "naive",
                "--buyers",
                "5",
                "--latency",
                "0",
                "--lockstep",
                "--html",
                str(page),
                "--data",
                str(tmp_path / "d.json"),
                "--tickets",
                "1",
            ]
        )
        == 0
    )
    text = page.read_text()
    assert "OVERSOLD: 1 ticket sold 5 times" in text
    assert text.count('<g class="lane"') == 5
    # No network fetches: nothing is loaded from anywhere (the SVG namespace is an identifier).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "@import" not in text and "url(" not in text


@pytest.mark.skipif(
    _chromium() is None and not os.environ.get("CI"), reason="no chromium here (CI installs it)"
)
def test_html_report_in_headless_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = _chromium()
    assert browser is not None, "CI must install chromium (.ci/run does)"
    page = tmp_path / "compare.html"
    assert (
        main(
            [
                "compare",
                "--variants",
                "naive,locked",
                "--buyers",
                "4",
                "--latency",
                "0",
                "--repeat",
                "1",
                "--lock",
                "file",
                "--html",
                str(page),
            ]
        )
        == 0
    )
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()],
        check=False,
        capture_output=True,
        text=True,
        timeout=90,
    )
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None, dom.stderr[-2000:]
    assert 'data-ready="1"' in body.group(0)
    assert 'data-errors="0"' in body.group(0)
    assert 'data-lanes="8"' in body.group(0)  # one lane per buyer: 4 naive + 4 locked
    assert "Uncaught" not in dom.stderr
    shot = tmp_path / "compare.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1600", page.as_uri()],
        capture_output=True,
        timeout=90,
        check=False,
    )
    assert shot.exists() and shot.stat().st_size > 5_000
