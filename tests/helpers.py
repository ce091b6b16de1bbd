"""Plain helpers shared by the tests (filelock's ``process_helpers`` style)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from lab.core.model import Latency, Result, Scenario
from lab.harness.runner import run
from lab.variants import VARIANTS
from tests.engines import ENGINES

ZERO = Latency(0.0, 0.0)


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name may contain spaces and parentheses; fields follow the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        state, ppid = fields[0], int(fields[1])
        if ppid == pid and state != "Z":
            found.append(int(entry.name))
    return found


def in_session(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (a subprocess started with start_new_session)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def run_variant(name: str, tmp_path: Path, **fields: object) -> Result:
    """Run a registered variant on a fresh store: data.json in ``tmp_path`` for the file
    variants, a fresh run directory for SQLite, the worker's shared server otherwise."""
    scenario = Scenario(**{"latency": ZERO, "seed": 1, **fields})  # type: ignore[arg-type]
    if scenario.tickets is None:
        scenario = Scenario(**{**scenario.__dict__, "tickets": 1})
    data, scenario = place(name, tmp_path, scenario)
    return run(VARIANTS[name], scenario, data=data)


def place(name: str, tmp_path: Path, scenario: Scenario) -> tuple[Path | None, Scenario]:
    """Where variant ``name`` keeps its tickets in a test: (``data=``, the scenario)."""
    store = VARIANTS[name].store
    if store == "json":
        return tmp_path / "data.json", scenario
    url = ENGINES.url(store)
    return None, scenario if url is None else dataclasses.replace(scenario, store_url=url)


def safe_cases() -> list[tuple[str, str | None]]:
    """Every (variant, lock) pair the registry expects to hold: each lock kind is its own case."""
    return [
        (name, lock)
        for name, variant in sorted(VARIANTS.items())
        if variant.safe
        for lock in (variant.locks or (None,))
    ]


def case_id(case: tuple[str, str | None]) -> str:
    name, lock = case
    return name if lock is None else f"{name}[{lock}]"


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else can take it
    meanwhile) but never listening."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield probe.getsockname()[1]


def read_line(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """One line of the child's stdout, bounded in time (readline alone could block forever)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output from the child within {timeout:g} s")
    return proc.stdout.readline()


@contextlib.contextmanager
def lab_subprocess(*args: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """``python -m lab ARGS`` in its own session; the whole group is killed if the test fails."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        cwd=cwd,
        env={**os.environ, "TMPDIR": str(cwd)},  # its run directories stay inside the test's
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def interrupt_once_buyers_run(proc: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Wait for the first --verbose buyer line, send ``signum``, and collect the output."""
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = read_line(proc)
        seen.append(line)
        if "searched" in line:
            break
    else:
        raise AssertionError(f"no buyer started: {seen}")
    os.kill(proc.pid, signum)
    out, err = proc.communicate(timeout=60)
    return "".join(seen) + out, err


def assert_session_empty(sid: int, timeout: float = 10.0) -> None:
    """No process of the session ``sid`` survives (allowing ``timeout`` for the kernel to reap)."""
    deadline = time.monotonic() + timeout
    while in_session(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_session(sid) == [], "processes of the run outlived it"


assert os.name == "posix", "the lab's tests use /proc and fork"
