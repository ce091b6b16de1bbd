from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.engines import ENGINES
from tests.helpers import children_of

# Tests never write outside their tmp_path: no example database in the working directory.
settings.register_profile("lab", database=None, derandomize=True)
settings.load_profile("lab")


@pytest.fixture(autouse=True)
def temp_inside_pytests_tmp(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner's default run directory (tempfile.mkdtemp) lands in pytest's own temp
    area, beside the test's tmp_path, never in the system's /tmp."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("runs")))


def _multiprocessing_singleton(pid: int) -> bool:
    """Whether ``pid`` is a helper multiprocessing starts once and keeps on purpose.

    spawn and forkserver start a resource tracker (and forkserver its server)
    on first use; they live until the interpreter exits and are not the lab's.
    Told apart by their command line, which multiprocessing documents as
    ``python -c 'from multiprocessing.<module> import main; main(...)'``: a
    public, observable fact, not a private attribute.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return any(
        f"from multiprocessing.{module} import main".encode() in cmdline
        for module in ("resource_tracker", "forkserver")
    )


@pytest.fixture(scope="session", autouse=True)
def shared_engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The engine servers the registry-wide tests share (tests/engines.py), stopped at the end."""
    ENGINES.base = tmp_path_factory.mktemp("engines")
    try:
        yield
    finally:
        ENGINES.stop_all()


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Every test must leave no child process behind: the runner reaps in ``finally``."""
    before = set(children_of(os.getpid()))
    yield
    new = set(children_of(os.getpid())) - before - ENGINES.pids()
    left = {pid for pid in new if not _multiprocessing_singleton(pid)}
    assert not left, f"processes left behind by this test: {sorted(left)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI nothing may skip: a skipped test there is a failed one.

    A test that cannot run (no browser, no server binary, no permission) would
    otherwise pass CI silently; .ci/run installs everything every test needs.
    """
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where every test must run: {report.longrepr}"
