"""Ctrl-C and SIGTERM: the run stops, reaps every child, and says it was interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import in_session


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("variant", ["naive", "locked", "queue"])
def test_interrupt_reaps_everything(signum: int, code: int, variant: str, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab",
            "run",
            variant,
            "--buyers",
            "8",
            "--latency",
            "30",
            "--data",
            str(data),
            "--tickets",
            "2",
            "-v",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        # Wait until the buyers are running (the first --verbose line), then interrupt.
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if "searched" in line:
                break
        else:
            pytest.fail(f"no buyer started: {seen}")
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == code, err
    assert "INTERRUPTED" in out
    assert "Traceback" not in err + out
    # Nothing of the run survives: no process is left in its session.
    deadline = time.monotonic() + 10
    while in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_session(proc.pid) == []
    if variant != "naive":
        assert data.read_text() in ('{"ticket_num": 2}', '{"ticket_num": 1}', '{"ticket_num": 0}')


def test_interrupted_compare_reaps_and_says_so(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab",
            "compare",
            "--variants",
            "locked,naive",
            "--buyers",
            "6",
            "--latency",
            "30",
            "--repeat",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        assert "scenario" in proc.stdout.readline()  # the blurb: the first run is starting
        # Wait until the buyers of the first run exist (children of the lab process).
        deadline = time.monotonic() + 60
        while len(in_session(proc.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, err
    assert "INTERRUPTED" in out and "Traceback" not in out + err
    deadline = time.monotonic() + 10
    while in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_session(proc.pid) == []
