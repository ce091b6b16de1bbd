from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from multiprocessing import forkserver, resource_tracker

import pytest
from hypothesis import settings

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


def _multiprocessing_singletons() -> set[int]:
    """Helpers multiprocessing starts once per process and keeps on purpose (not the lab's).

    spawn and forkserver start a resource tracker (and forkserver its server)
    on first use; they live until the interpreter exits.
    """
    pids: set[int] = set()
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    if tracker is not None and getattr(tracker, "_pid", None):
        pids.add(tracker._pid)
    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None):
        pids.add(server._forkserver_pid)
    return pids


@pytest.fixture(autouse=True)
def no_orphans() -> Iterator[None]:
    """Every test must leave no child process behind: the runner reaps in ``finally``."""
    before = set(children_of(os.getpid()))
    yield
    left = set(children_of(os.getpid())) - before - _multiprocessing_singletons()
    assert not left, f"processes left behind by this test: {sorted(left)}"
