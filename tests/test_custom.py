"""lab run custom: the learner's own buyer, including the notes' program unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.ui.cli import main

# Section 8 of the notes, verbatim apart from a shorter sleep: the read happens
# before the sleep, every buyer reads within milliseconds of the start gun, and
# the sleep is at least 1 s, so every buyer reads 1 before anyone writes.
NOTES = """
from multiprocessing import Process
import time
import json
import random


# 查票
def search(name):
    with open(r'data.json', 'r', encoding='utf8') as f:
        data = json.load(f)
    print('%s在查票 当前余票为:%s' % (name, data.get('ticket_num')))


# 买票
def buy(name):
    # 再次确认票
    with open(r'data.json', 'r', encoding='utf8') as f:
        data = json.load(f)
    # 模拟网络延迟
    time.sleep(random.randint(1, 2))
    # 判断是否有票 有就买
    if data.get('ticket_num') > 0:
        data['ticket_num'] -= 1
        with open(r'data.json', 'w', encoding='utf8') as f:
            json.dump(data, f)
        print('%s买票成功' % name)
    else:
        print('%s很倒霉 没有抢到票' % name)


def run(name):
    search(name)
    buy(name)


if __name__ == '__main__':
    for i in range(10):
        p = Process(target=run, args=('用户%s'%i, ))
        p.start()
"""

# A learner's fix: the same program, with an exclusive flock around search() and buy().
# (Locking buy() alone is not enough here: the notes' open('w') empties data.json
# before json.dump refills it, so an unlocked search() can read a torn file.)
LOCKED = NOTES.replace(
    "def run(name):\n    search(name)\n    buy(name)",
    "import fcntl\n\n"
    "def run(name):\n"
    "    with open('data.json.lock', 'w') as lock:\n"
    "        fcntl.flock(lock, fcntl.LOCK_EX)\n"
    "        search(name)\n"
    "        buy(name)\n",
).replace("time.sleep(random.randint(1, 2))", "time.sleep(random.uniform(0, 0.02))")


def run_program(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any]]:
    """Write ``source`` to a file and judge its ``run`` with the notes' success line."""
    program = tmp_path / "program.py"
    program.write_text(source, encoding="utf-8")
    argv = ["run", "custom", "--buyer", f"{program}:run", "--success-regex", "买票成功"]
    code = main([*argv, *args, "--json", "--check"])
    return code, json.loads(capsys.readouterr().out)


def test_the_notes_program_is_caught_overselling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run_program(NOTES, tmp_path, capsys, "--buyers", "4", "--tickets", "1")
    assert code == 1
    assert (data["sold"], data["oversold"], data["lost_updates"], data["remaining"]) == (4, 3, 3, 0)


def test_a_learners_locked_version_is_not_caught(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = run_program(LOCKED, tmp_path, capsys, "--buyers", "6", "--tickets", "2")
    assert code == 0
    assert (data["sold"], data["remaining"], data["oversold"], data["lost_updates"]) == (2, 0, 0, 0)


def test_truthy_return_counts_without_a_regex(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program = tmp_path / "mine.py"
    program.write_text("def buy(name):\n    print(name, 'tries')\n    return name.endswith('0')\n")
    code = main(
        [
            "run",
            "custom",
            "--buyer",
            f"{program}:buy",
            "--buyers",
            "3",
            "--tickets",
            "3",
            "--json",
            "-v",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["sold"] == 1


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("nosuch.py:run", "does not exist"),
        ("{bad}:run", "cannot be imported: SyntaxError"),
        ("{good}:nope", "has no function 'nope'"),
        ("justafile", "expected FILE.py:FUNC"),
    ],
)
def test_bad_buyer_is_one_line(
    spec: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.py").write_text("def run(:\n")
    (tmp_path / "good.py").write_text("def run(name):\n    return True\n")
    spec = spec.format(bad=tmp_path / "bad.py", good=tmp_path / "good.py")
    code = main(["run", "custom", "--buyer", spec, "--buyers", "2"])
    err = capsys.readouterr().err
    assert code == 2 and named in err and err.count("\n") == 1 and "Traceback" not in err


def test_custom_without_buyer_says_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "custom", "--buyers", "2"]) == 2
    assert "--buyer FILE.py:FUNC" in capsys.readouterr().err


#: Buyer files that misbehave at import; each must be one line and exit 2, never a
#: traceback, a hang or a dead CLI.
HOSTILE_IMPORTS = {
    "sys.exit": "import sys\nsys.exit(3)\n",
    "SystemExit(None)": "raise SystemExit\n",
    "BaseException": "raise BaseException('multi\\nline')\n",
    "GeneratorExit": "raise GeneratorExit\n",
    "recursion": "def f():\n    return f()\nf()\n",
    "syntax": "def run(:\n",
    "nested parens": "x = " + "(" * 5000 + ")" * 5000 + "\n",
    "prints forever": "while True:\n    print('spam')\n",
    "reads stdin": "input()\n",
    "bad __str__": (
        "class E(Exception):\n    def __str__(self):\n        raise ValueError\nraise E\n"
    ),
    "not UTF-8": "x = '\udcff'\n",
    "NUL byte": "x = 1\0\n",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("source", list(HOSTILE_IMPORTS.values()), ids=list(HOSTILE_IMPORTS))
def test_a_buyer_file_misbehaving_at_import_is_one_line(
    source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program = tmp_path / "mine.py"
    program.write_bytes(source.encode("utf-8", "surrogateescape"))
    code = main(["run", "custom", "--buyer", f"{program}:run", "--buyers", "1", "--latency", "0"])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and "--buyer" in err and "Traceback" not in out + err
    assert "spam" not in out  # what it printed at import is not the report


def test_a_huge_buyer_file_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program = tmp_path / "big.py"
    program.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    assert main(["run", "custom", "--buyer", f"{program}:run", "--buyers", "1"]) == 2
    err = capsys.readouterr().err
    assert "the limit is 1048576" in err and err.count("\n") == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "body",
    ["raise SystemExit(1)", "raise BaseException('x')", "while True:\n        print('spam')"],
    ids=["sys.exit", "BaseException", "prints forever"],
)
def test_a_buyer_function_misbehaving_is_that_buyers_error(
    body: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    program = tmp_path / "mine.py"
    program.write_text(f"def run(name):\n    {body}\n")
    argv = ["run", "custom", "--buyer", f"{program}:run", "--buyers", "2", "--latency", "0"]
    code = main([*argv, "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["errors"] == 2 and data["sold"] == 0
