"""The CLI, in-process: ``main(argv) -> int`` with captured output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from filelock import FileLock

from lab import __version__
from lab.ui.cli import locale_lang, main
from lab.variants import VARIANTS

JSON_KEYS = {
    "variant",
    "buyers",
    "tickets",
    "sold",
    "remaining",
    "oversold",
    "lost_updates",
    "double_sold",
    "errors",
    "elapsed_s",
    "receipts",
}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


BAD_INPUT = [
    (["run", "nosuch"], "invalid choice: 'nosuch'"),
    (["run", "naive", "--buyers", "0"], "--buyers"),
    (["run", "naive", "--buyers", "-3"], "--buyers"),
    (["run", "naive", "--buyers", "ten"], "--buyers"),
    (["run", "naive", "--tickets", "-1"], "--tickets"),
    (["run", "naive", "--latency", "fast"], "--latency"),
    (["run", "naive", "--latency", "3-1"], "--latency"),
    (["run", "naive", "--scenario", "nosuch"], "no scenario named 'nosuch'"),
    (["run", "naive", "--lock", "spin"], "--lock"),
    (["bogus"], "invalid choice: 'bogus'"),
]


@pytest.mark.parametrize(
    ("argv", "named"), BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_bad_input_is_one_line_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert named in err
    assert err.count("\n") == 1 and err.startswith("lab")
    assert "Traceback" not in err + out


def test_run_json_has_the_keys_and_one_receipt_per_buyer(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run_cli(
        capsys,
        "run",
        "queue",
        "--buyers",
        "5",
        "--tickets",
        "2",
        "--latency",
        "0",
        "--json",
        "--data",
        str(tmp_path / "data.json"),
    )
    assert code == 0
    data = json.loads(out)
    assert data.keys() >= JSON_KEYS
    assert len(data["receipts"]) == 5
    assert (data["sold"], data["remaining"], data["oversold"]) == (2, 0, 0)


def test_check_fails_on_oversell_and_passes_when_consistent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run_cli(
        capsys,
        "run",
        "naive",
        "--buyers",
        "4",
        "--latency",
        "0",
        "--lockstep",
        "--check",
        "--json",
        "--data",
        str(tmp_path / "a.json"),
        "--tickets",
        "1",
    )
    assert code == 1 and json.loads(out)["oversold"] == 3
    code, _, _ = run_cli(
        capsys,
        "run",
        "naive",
        "--buyers",
        "4",
        "--latency",
        "0",
        "--lockstep",
        "--json",
        "--data",
        str(tmp_path / "b.json"),
        "--tickets",
        "1",
    )
    assert code == 0  # without --check the race is reported, not a failure
    code, _, _ = run_cli(
        capsys,
        "run",
        "locked",
        "--buyers",
        "4",
        "--latency",
        "0",
        "--check",
        "--data",
        str(tmp_path / "c.json"),
        "--tickets",
        "1",
    )
    assert code == 0


def test_run_report_shows_file_and_verdict(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    code, out, _ = run_cli(
        capsys,
        "run",
        "naive",
        "--buyers",
        "10",
        "--latency",
        "0",
        "--lockstep",
        "--data",
        str(data),
        "--tickets",
        "1",
        "--seed",
        "7",
    )
    assert code == 0
    assert "OVERSOLD: 1 ticket sold 10 times" in out
    assert "data.json" in out and '{"ticket_num": 0}' in out
    assert "seed 7" in out


def test_data_file_count_is_kept_without_tickets(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 3}')
    code, out, _ = run_cli(
        capsys, "run", "locked", "--buyers", "2", "--latency", "0", "--json", "--data", str(data)
    )
    assert code == 0
    assert json.loads(out)["tickets"] == 3
    assert data.read_text() == '{"ticket_num": 1}'


def test_corrupt_data_file_is_one_line_and_untouched(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_bytes(b'{"ticket_num": "lots"}')
    code, _, err = run_cli(
        capsys, "run", "locked", "--buyers", "2", "--latency", "0", "--data", str(data)
    )
    assert code == 2
    assert str(data) in err and "whole number" in err and err.count("\n") == 1
    assert data.read_bytes() == b'{"ticket_num": "lots"}'


def test_verbose_prints_the_notes_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run_cli(
        capsys,
        "run",
        "naive",
        "--buyers",
        "3",
        "--latency",
        "0",
        "--lockstep",
        "-v",
        "--lang",
        "zh",
        "--data",
        str(tmp_path / "d.json"),
        "--tickets",
        "1",
    )
    assert code == 0
    for i in range(3):
        assert f"用户{i}在查票 当前余票为:1" in out
        assert f"用户{i}买票成功" in out


def test_scenario_loads_and_flags_override(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run_cli(
        capsys,
        "run",
        "naive",
        "--scenario",
        "classroom",
        "--buyers",
        "3",
        "--latency",
        "0",
        "--json",
        "--data",
        str(tmp_path / "d.json"),
    )
    data = json.loads(out)
    assert (
        code == 0
        and data["scenario"] == "classroom"
        and data["buyers"] == 3
        and data["tickets"] == 1
    )


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("buyers = 3\ncolour = 'red'\n", "unknown field 'colour'"),
        ("buyers = 0\n", "buyers"),
        ("latency = 'soon'\n", "latency"),
        ("lockstep = 'yes'\n", "lockstep"),
        ("buyers = [\n", "not valid TOML"),
    ],
)
def test_bad_scenario_file_names_the_field(
    toml: str, named: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(toml)
    code, _, err = run_cli(capsys, "run", "naive", "--scenario", str(path))
    assert code == 2 and named in err and str(path) in err and err.count("\n") == 1


def test_variants_and_scenarios_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "variants")
    assert code == 0 and all(name in out for name in VARIANTS)
    code, out, _ = run_cli(capsys, "scenarios")
    assert code == 0 and "notes" in out and "classroom" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and __version__ in out


def test_second_run_on_the_same_data_file_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 1}')
    with FileLock(str(data) + ".run.lock"):
        code, _, err = run_cli(
            capsys, "run", "naive", "--buyers", "2", "--latency", "0", "--data", str(data)
        )
    assert code == 2 and "another lab run or server" in err and "is using this file" in err


def test_readme_variants_table_is_the_generated_one(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's variants table is `lab variants --markdown`, byte for byte."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    begin = "<!-- variants table: generated by `lab variants --markdown`"
    end = "<!-- end of variants table -->"
    assert begin in readme and end in readme
    in_readme = readme.split(begin, 1)[1].split("-->\n", 1)[1].split(end, 1)[0]
    assert main(["variants", "--markdown"]) == 0
    generated = capsys.readouterr().out
    assert in_readme == generated, "README.md is stale: paste in `lab variants --markdown`"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "zh_TW.UTF-8"}, "zh"),
        ({"LANGUAGE": "en:zh", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LANGUAGE": "zh_CN:en", "LANG": "C"}, "zh"),
        ({"LC_MESSAGES": "zh_CN", "LANG": "en_GB"}, "zh"),
    ],
)
def test_the_language_follows_the_locale_as_gettext_reads_it(
    environ: dict[str, str], expected: str
) -> None:
    assert locale_lang(environ) == expected


def test_check_says_in_one_line_why_it_failed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = str(tmp_path / "data.json")
    argv = ["run", "naive", "--buyers", "3", "--latency", "0", "--lockstep", "--check"]
    assert main([*argv, "--data", data, "--tickets", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("lab: --check: naive did not hold: OVERSOLD: 1 ticket sold 3 times")
    assert main([*argv, "--data", data, "--tickets", "1", "--lang", "zh"]) == 1
    assert "naive 没有成立: 超卖: 1张票卖了3次" in capsys.readouterr().err
    # A fix that holds passes --check without a word on stderr.
    assert (
        main(
            [
                "run",
                "locked",
                "--buyers",
                "3",
                "--latency",
                "0",
                "--check",
                "--data",
                data,
                "--tickets",
                "1",
            ]
        )
        == 0
    )
    assert capsys.readouterr().err == ""
