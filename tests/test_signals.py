"""Ctrl-C and SIGTERM at any moment: no traceback, every child reaped, exit 130 or 143.

Each case starts a real ``python -m lab`` in its own session, waits for a
phase by what the process has observably done (not by a clock), and sends
SIGINT or SIGTERM to the main process or to its whole process group (what a
terminal's Ctrl-C does). The children inherit the main process's stdout and
stderr, so reading both pipes to EOF reads every process's output, and EOF
itself means no process of the run still holds them.

The exit status is checked as a shell reports it: 130 for SIGINT, 143 for
SIGTERM, whether the lab returned it or the signal's default action ended the
process (``returncode`` -2 / -15), which a shell shows as the same number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.helpers import assert_session_empty
from tests.test_kill import children, lab_env

#: Every wait in these tests is bounded by this.
WAIT_S = 60.0
#: The smallest pipe Linux allows (a page): the lab blocks writing its report into it.
PIPE_MIN = 4096
SIGNALS = {"INT": (signal.SIGINT, 130), "TERM": (signal.SIGTERM, 143)}


@dataclass
class Drain:
    """Reads a pipe to EOF on a thread (so a child writing a lot never blocks on us)."""

    pipe: IO[bytes]
    chunks: list[bytes] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := os.read(self.pipe.fileno(), 65536):
            self.chunks.append(chunk)

    def text(self) -> str:
        # EOF: every process that inherited the pipe (the lab and all its children) closed it.
        assert self.thread is not None
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "a process of the run still holds the output pipe"
        return b"".join(self.chunks).decode(errors="replace")


@contextlib.contextmanager
def lab(tmp_path: Path, *argv: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", *argv],
        cwd=tmp_path,
        env=lab_env(tmp_path, f"signals-{os.getpid()}"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(WAIT_S)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    """Poll until ``ready()`` (the phase has begun); fail if the process ends first."""
    deadline = time.monotonic() + WAIT_S
    while not ready():
        assert proc.poll() is None, f"the lab exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S:g} s"
        time.sleep(0.001)


def importing(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """The lab's modules are being imported: ctypes' extension is mapped (``lab.buyer``
    imports it, after rich and before the rest of ``lab.ui.cli``), so Python's own
    signal handling is in place and the command has not started yet."""

    def ready() -> bool:
        try:
            return b"_ctypes" in (Path("/proc") / str(proc.pid) / "maps").read_bytes()
        except OSError:
            return False

    return ready


def send(proc: subprocess.Popen[bytes], signum: int, target: str) -> None:
    if target == "group":
        os.killpg(proc.pid, signum)  # what Ctrl-C in a terminal does
    else:
        os.kill(proc.pid, signum)


def check(proc: subprocess.Popen[bytes], out: Drain, err: Drain, signum: int, code: int) -> str:
    """The common verdict: no traceback anywhere, the right status, nothing left."""
    text = out.text() + err.text()
    proc.wait(WAIT_S)
    assert "Traceback" not in text, text[-3000:]
    assert proc.returncode in (code, -signum), (proc.returncode, text[-2000:])
    assert_session_empty(proc.pid)
    return text


def case(*values: str, phase: str, sig: str) -> Any:
    """One parameter set, named for the command, the phase and the signal."""
    return pytest.param(*values, phase, sig, id="-".join((*values, phase, sig)))


RUN_PHASES = ("imports", "fork", "run", "render")
EXPLORE_PHASES = [
    ("explore", "imports"),
    ("explore", "running"),
    ("step", "running"),
    ("replay", "running"),
]


@pytest.mark.parametrize("target", ["main", "group"])
@pytest.mark.parametrize(
    ("phase", "sig"), [case(phase=p, sig=s) for p in RUN_PHASES for s in sorted(SIGNALS)]
)
def test_run_interrupted(phase: str, sig: str, target: str, tmp_path: Path) -> None:
    signum, code = SIGNALS[sig]
    data = tmp_path / "data.json"
    # Many buyers make the fork phase last about a second; long latencies keep
    # them running; the report at the end is much larger than a page.
    latency = "0.3-0.6" if phase == "render" else "2-3"
    buyers = 300 if phase == "render" else 600
    argv = ["run", "naive", "--buyers", str(buyers), "--latency", latency]
    argv += ["--tickets", "100", "--data", str(data)]
    with lab(tmp_path, *argv) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        if phase == "render":
            # A one-page stdout we do not read yet: the lab blocks writing its
            # report into it, i.e. it is in the middle of rendering.
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_MIN)
        err = Drain(proc.stderr)
        err.start()
        out = Drain(proc.stdout)
        if phase == "imports":
            wait_for("the imports", importing(proc), proc)
        elif phase == "fork":
            wait_for("buyers", lambda: children(proc.pid) >= 50, proc)
        elif phase == "run":
            wait_for("buyers", lambda: children(proc.pid) >= buyers, proc)
            first = data.stat().st_mtime_ns if data.exists() else None
            # A buyer has written data.json: the gun has fired, the run is under way.
            wait_for("a sale", lambda: data.exists() and data.stat().st_mtime_ns != first, proc)
        else:
            wait_for("buyers", lambda: children(proc.pid) >= buyers, proc)
            # Every buyer reaped, and the lab stuck writing its report into the full pipe.
            wait_for(
                "the report",
                lambda: children(proc.pid) == 0 and "pipe_write" in wchan(proc.pid),
                proc,
            )
        send(proc, signum, target)
        out.start()
        text = check(proc, out, err, signum, code)
    if phase in ("run", "render") and proc.returncode == code:
        assert "INTERRUPTED" in text or "interrupted" in text


def wchan(pid: int) -> str:
    """Where in the kernel ``pid`` sleeps (``pipe_write``: blocked writing to a full pipe)."""
    try:
        return (Path("/proc") / str(pid) / "wchan").read_text()
    except OSError:
        return ""


@pytest.mark.parametrize("target", ["main", "group"])
@pytest.mark.parametrize(
    ("command", "phase", "sig"),
    [case(c, phase=p, sig=s) for c, p in EXPLORE_PHASES for s in sorted(SIGNALS)],
)
def test_explore_replay_step_interrupted(
    command: str, phase: str, sig: str, target: str, tmp_path: Path
) -> None:
    signum, code = SIGNALS[sig]
    scratch = tmp_path / "tmp"  # the lab's TMPDIR (lab_env): its scratch directories go here
    if command == "explore":
        argv = ["explore", "naive", "--buyers", "5", "--max-schedules", "1000000"]
    elif command == "step":
        argv = ["step", "naive", "--buyers", "3"]  # waits for our input, which never comes
    else:
        argv = ["replay", "naive", "--buyers", "12", "--schedule", "b0.read b1.read"]
    for _attempt in range(20):
        with lab(tmp_path, *argv) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            out, err = Drain(proc.stdout), Drain(proc.stderr)
            out.start()
            err.start()
            if phase == "imports":
                wait_for("the imports", importing(proc), proc)
            else:
                # Its scratch directory exists: the buyers' threads are running.
                deadline = time.monotonic() + WAIT_S
                while not any(scratch.glob("lab-explore-*")) and proc.poll() is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.0005)
            if proc.poll() is not None and command == "replay":
                # A replay is over in a blink; this one ended before the signal. Again.
                out.text(), err.text()
                continue
            send(proc, signum, target)
            check(proc, out, err, signum, code)
        break
    else:
        pytest.fail("every replay finished before it could be interrupted")
    assert list(scratch.iterdir()) == []  # the scratch directory is gone
