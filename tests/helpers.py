"""Plain helpers shared by the tests (filelock's ``process_helpers`` style)."""

from __future__ import annotations

import os
from pathlib import Path

from lab.model import Latency, Result, Scenario
from lab.runner import run
from lab.variants import VARIANTS

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
    """Run a registered variant on a fresh data.json in ``tmp_path``."""
    scenario = Scenario(**{"latency": ZERO, "seed": 1, **fields})  # type: ignore[arg-type]
    data = tmp_path / "data.json"
    if scenario.tickets is None:
        scenario = Scenario(**{**scenario.__dict__, "tickets": 1})
    return run(VARIANTS[name], scenario, data=data)


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


assert os.name == "posix", "the lab's tests use /proc and fork"
