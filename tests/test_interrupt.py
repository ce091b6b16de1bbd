"""Ctrl-C and SIGTERM: the run stops, reaps every child, and says it was interrupted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers import (
    assert_session_empty,
    in_session,
    interrupt_once_buyers_run,
    lab_subprocess,
    read_line,
)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize(
    "variant",
    # The notes' processes, a lock, a seller; then one process hosting every buyer:
    # tasks on a loop, greenlets after patch_all, a pool of worker processes.
    ["naive", "locked", "queue", "asyncio-naive", "gevent-naive", "processpool-naive"],
)
def test_interrupt_reaps_everything(signum: int, code: int, variant: str, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    argv = ["run", variant, "--buyers", "8", "--latency", "30", "--tickets", "2", "-v"]
    with lab_subprocess(*argv, "--data", str(data), cwd=tmp_path) as proc:
        out, err = interrupt_once_buyers_run(proc, signum)
    assert proc.returncode == code, err
    assert "INTERRUPTED" in out
    assert "Traceback" not in out + err
    assert_session_empty(proc.pid)  # nothing of the run survives
    if variant in ("locked", "queue"):  # a safe variant never leaves data.json torn
        assert data.read_text() in ('{"ticket_num": 2}', '{"ticket_num": 1}', '{"ticket_num": 0}')


def test_interrupted_compare_reaps_and_says_so(tmp_path: Path) -> None:
    argv = [
        "compare",
        "--variants",
        "locked,naive",
        "--buyers",
        "6",
        "--latency",
        "30",
        "--repeat",
        "2",
    ]
    with lab_subprocess(*argv, cwd=tmp_path) as proc:
        assert "buyers" in read_line(proc)  # the blurb: the first run is starting
        # Wait until the buyers of the first run exist (children of the lab process).
        deadline = time.monotonic() + 60
        while len(in_session(proc.pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "INTERRUPTED" in out and "Traceback" not in out + err
    assert_session_empty(proc.pid)
