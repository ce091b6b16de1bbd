"""lab compare and lab run --repeat: many runs, one table, and a --check that can gate CI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab.core import scenarios
from lab.core.model import Latency, Scenario
from lab.harness.compare import cases_for, compare
from lab.ui.cli import main
from lab.variants import VARIANTS
from lab.variants.naive import Naive
from lab.variants.protocol import RunEnv, Stage

SMALL = ["--buyers", "6", "--tickets", "2", "--latency", "0", "--repeat", "2", "--seed", "3"]


class NaiveWronglyMarkedSafe(Naive):
    """A throwaway registry entry: the naive program, claiming to be safe."""

    name = "naive-marked-safe"
    safe = True

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage]:
        with super().stage(env) as stage:
            yield stage


def test_check_passes_on_the_registrys_safe_variants(capsys: pytest.CaptureFixture[str]) -> None:
    safe = ",".join(
        n for n, v in sorted(VARIANTS.items()) if v.safe and not getattr(v, "requires", None)
    )
    code = main(["compare", "--variants", safe, *SMALL, "--check", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {row["verdict"] for row in data["variants"]} == {"holds"}


def test_check_fails_when_an_unsafe_variant_is_marked_safe(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(VARIANTS, "naive-marked-safe", NaiveWronglyMarkedSafe())
    code = main(["compare", "--variants", "naive-marked-safe", *SMALL, "--lockstep", "--check"])
    out = capsys.readouterr().out
    assert code == 1
    assert "expected to hold, so this is a bug in the fix" in out
    # The same run without --check reports it but does not fail.
    assert main(["compare", "--variants", "naive-marked-safe", *SMALL, "--lockstep"]) == 0


def test_compare_table_markdown_and_anomalies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    md = tmp_path / "table.md"
    code = main(
        [
            "compare",
            "--variants",
            "naive,queue",
            *SMALL,
            "--lockstep",
            "--anomalies",
            "--markdown",
            str(md),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "races" in out and "holds" in out
    assert "variants × anomalies" in out
    text = md.read_text()
    assert text.count("\n| naive |") == 1 and "| queue |" in text
    assert "| variant | expected | runs |" in text


def test_compare_rows_expand_lock_kinds() -> None:
    labels = [(c.variant.name, c.lock) for c in cases_for(["locked", "naive"])]
    assert labels == [("locked", "file"), ("locked", "mp"), ("naive", None)]
    assert [c.lock for c in cases_for(["locked"], lock="mp")] == ["mp"]
    assert "custom" not in {c.variant.name for c in cases_for(None)}  # needs --buyer


def test_compare_uses_the_same_latency_draws_per_repetition() -> None:
    stats, interrupted = compare(
        cases_for(["naive", "queue"]),
        Scenario(buyers=3, tickets=1, latency=Latency(0, 0.01), seed=11),
        2,
    )
    assert not interrupted
    seeds = [[r.seed for r in s.results] for s in stats]
    assert seeds == [[11, 12], [11, 12]]


def test_run_repeat_shows_a_histogram(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "naive", *SMALL, "--lockstep"])
    out = capsys.readouterr().out
    assert code == 0
    assert "oversold per run, over 2 runs of naive" in out
    assert "   4 │ " in out  # both runs oversold 6 buyers x 2 tickets by exactly 4


@pytest.mark.parametrize("name", sorted(p.stem for p in scenarios.directory().glob("*.toml")))
def test_every_scenario_loads_and_runs_small(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = scenarios.load(name)
    assert scenario.description, f"{name} must say what it teaches"
    code = main(
        [
            "run",
            "queue",
            "--scenario",
            name,
            "--buyers",
            "4",
            "--latency",
            "0",
            "--arrival",
            "0",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["scenario"] == name and data["buyers"] == 4
    assert data["oversold"] == 0


def test_scenarios_listing_shows_what_each_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios"]) == 0
    out = capsys.readouterr().out
    for name in (
        "notes",
        "classroom",
        "flash-sale",
        "thundering-herd",
        "phantom-inventory",
        "trickle",
    ):
        assert name in out


def test_phantom_inventory_scenario_loses_updates_without_overselling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "run",
            "naive",
            "--scenario",
            "phantom-inventory",
            "--latency",
            "0",
            "--lockstep",
            "--json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (data["tickets"], data["sold"], data["oversold"], data["remaining"]) == (100, 10, 0, 99)
    assert data["lost_updates"] == 9


def test_run_with_a_scenario_shows_what_it_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "run",
                "queue",
                "--scenario",
                "trickle",
                "--buyers",
                "2",
                "--arrival",
                "0",
                "--latency",
                "0",
            ]
        )
        == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    assert "which is why a test that does not force overlap misses the race" in out


def test_compare_with_crash_has_a_column_of_hangs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead multiprocessing.Lock holder hangs the run; the file lock's does not."""
    from lab.harness import runner  # noqa: PLC0415

    monkeypatch.setattr(runner, "crash_plan", lambda s, seed: ["acquired"] * s.buyers)
    argv = ["compare", "--variants", "locked", "--buyers", "3", "--latency", "0", "--repeat", "1",
            "--crash", "0.5", "--stall-timeout", "1"]  # fmt: skip
    code = main([*argv, "--json"])
    data = json.loads(capsys.readouterr().out)
    rows = {row["label"]: row for row in data["variants"]}
    assert code == 0
    assert rows["locked[mp]"]["hangs"] == 1 and rows["locked[file]"]["hangs"] == 0
    assert main(argv) == 0
    assert "hung" in capsys.readouterr().out
