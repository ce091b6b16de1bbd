"""SIGKILL the runner at any moment: its buyers die with it and write nothing afterwards.

A SIGKILLed runner runs no cleanup, so only the kernel can end its children:
every child the runner starts asks for SIGKILL when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, see ``lab.buyer.die_with_parent``). These
tests kill a real ``python -m lab run`` at seeded random moments (imports,
fork phase, at the gun, mid-run) and then look for anything of it left.

Processes of a run are found by an environment variable every one of them
inherits (``LAB_TEST_TAG``), read from ``/proc/*/environ``: orphans leave the
runner's process group tree (they are re-parented), but keep the environment.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.core.errors import DataFileBusy
from lab.stores.jsonfile import Store
from tests.helpers import in_session

#: Runs per chunk, and chunks (separate tests, so xdist can spread them over cores).
RUNS_PER_CHUNK = 10
CHUNKS = 5
#: The generous bound for every process of a killed run to be gone (not a timing claim:
#: the observed figure is printed, and is milliseconds).
GONE_WITHIN_S = 10.0
#: Buyers per run: enough that the fork phase lasts a few hundred milliseconds.
BUYERS = 200
#: Every wait in these tests is bounded by this.
WAIT_S = 60.0


def tagged(tag: str) -> list[int]:
    """Live processes whose environment carries ``LAB_TEST_TAG=tag`` (zombies excluded)."""
    needle = f"LAB_TEST_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # A zombie's environ reads empty: it can run nothing, so it is not counted.
            env = (entry / "environ").read_bytes()
        except OSError:
            continue  # exited while we looked, or not ours to read
        if needle in env.split(b"\0"):
            found.append(int(entry.name))
    return found


def of_run(sid: int, tag: str) -> set[int]:
    """Every live process of the run started as session ``sid``.

    By session (orphans keep it when re-parented; a process already exiting,
    whose environment is gone but whose descriptors, the claim among them, are
    not yet closed, is still in it) and by tag (anything that left the session).
    """
    return set(in_session(sid)) | set(tagged(tag))


def children(pid: int) -> int:
    """How many children ``pid`` has right now (the kernel's list; cheap to poll)."""
    try:
        return len((Path("/proc") / str(pid) / "task" / str(pid) / "children").read_text().split())
    except OSError:
        return 0


def lab_env(tmp_path: Path, tag: str) -> dict[str, str]:
    """The environment of a lab subprocess: tagged, with its temporary directory inside tmp_path."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "LAB_TEST_TAG": tag, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def lab_process(
    tmp_path: Path, tag: str, *argv: str, **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m lab ARGV`` in its own session (so a group signal reaches only it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab", *argv],
        cwd=tmp_path,
        env=lab_env(tmp_path, tag),
        start_new_session=True,
        **kwargs,  # type: ignore[call-overload]
    )
    try:
        yield proc
    finally:
        # Whatever happened, nothing of the run outlives the test.
        if proc.poll() is None:
            proc.kill()
        proc.wait(WAIT_S)
        for pid in of_run(proc.pid, tag):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


#: /proc/PID/stat flags: the task is exiting (``PF_EXITING``, include/linux/sched.h).
PF_EXITING = 0x4
#: The bit for SIGKILL in /proc/PID/status signal masks.
KILL_BIT = 1 << (signal.SIGKILL - 1)
#: SIGINT and SIGTERM in /proc/PID/status signal masks.
INTERRUPT_BITS = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))


def fate(pid: int) -> str:
    """What a process left behind by a killed runner can still do.

    ``gone``: nothing. ``doomed``: SIGKILL is pending or it is exiting, so it
    runs no more code of its own (a system call already under way completes,
    e.g. a truncate queued behind other writers' inode lock: that is why a
    snapshot of data.json cannot tell late writes from in-flight ones, and
    this test looks at the processes instead). ``unstarted``: forked but still
    holding SIGINT/SIGTERM blocked as the runner forked it, i.e. it has not
    reached ``die_with_parent``, which will see its parent gone and exit
    before any buyer code runs. ``alive``: free to run and write: a bug.
    """
    proc = Path("/proc") / str(pid)
    try:
        fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        status = (proc / "status").read_text()
    except OSError:
        return "gone"
    state, flags = fields[0], int(fields[6])
    if state in ("Z", "X") or flags & PF_EXITING:
        return "doomed"
    masks = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    pending = int(masks.get("SigPnd", "0"), 16) | int(masks.get("ShdPnd", "0"), 16)
    if pending & KILL_BIT:
        return "doomed"
    if int(masks.get("SigBlk", "0"), 16) & INTERRUPT_BITS == INTERRUPT_BITS:
        return "unstarted"
    return "alive"


def wait_until_gone(sid: int, tag: str, bound: float) -> float | None:
    """Seconds until no process of the run is left (polled often), or None after ``bound``."""
    start = time.monotonic()
    while of_run(sid, tag):
        if time.monotonic() - start > bound:
            return None
        time.sleep(0.002)
    return time.monotonic() - start


#: Which variants, how many children each has once all are forked (200 buyers).
VARIANTS = {"naive": BUYERS, "locked": BUYERS, "queue": BUYERS + 1, "server": 17}
PHASES = ("imports", "fork", "gun", "run")


def kill_moment(rng: random.Random, variant: str) -> tuple[str, float, int]:
    """A phase, and for it: a delay after start, or a child count to wait for (then a delay)."""
    full = VARIANTS[variant]
    phase = rng.choice(PHASES)
    if phase == "imports":
        return phase, rng.uniform(0.0, 0.3), 0  # before any child exists
    if phase == "fork":
        return phase, 0.0, rng.randint(1, max(1, full - 1))
    if phase == "gun":
        return phase, 0.0, full  # every buyer forked: at the ready wait, around the gun
    return phase, rng.uniform(0.0, 0.3), full  # buyers running their latencies


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_sigkilled_runner_takes_its_buyers_with_it(chunk: int, tmp_path: Path) -> None:
    rng = random.Random(f"kill:{chunk}")
    data = tmp_path / "data.json"
    worst = 0.0
    survivors = 0
    unstarted = 0
    phases: dict[str, int] = {}
    for n in range(RUNS_PER_CHUNK):
        variant = rng.choice(sorted(VARIANTS))
        phase, delay, count = kill_moment(rng, variant)
        phases[phase] = phases.get(phase, 0) + 1
        tag = uuid.uuid4().hex
        argv = ["run", variant, "--buyers", str(BUYERS), "--latency", "0.05-0.2"]
        argv += ["--tickets", "100", "--seed", str(n + 1), "--data", str(data), "--json"]
        err_path = tmp_path / f"stderr-{n}"
        with (
            err_path.open("wb") as err,
            lab_process(tmp_path, tag, *argv, stdout=subprocess.DEVNULL, stderr=err) as proc,
        ):
            deadline = time.monotonic() + WAIT_S
            # Wait for the moment by what the runner has done (its children), not by a clock.
            while children(proc.pid) < count and proc.poll() is None:
                assert time.monotonic() < deadline, f"run {n}: only {children(proc.pid)} children"
                time.sleep(0.001)
            time.sleep(delay)
            proc.kill()
            proc.wait(WAIT_S)
            # The runner is reaped: the kernel sent every child its parent-death
            # SIGKILL while the runner exited, before it could be reaped. So any
            # child still free to run its own code now could write after the kill.
            fates = {pid: fate(pid) for pid in of_run(proc.pid, tag)}
            free = sorted(pid for pid, f in fates.items() if f == "alive")
            assert not free, (
                f"run {n} ({variant}, {phase}): {len(free)} processes outlived the runner, "
                f"free to write (e.g. {free[:5]})"
            )
            outlived = wait_until_gone(proc.pid, tag, GONE_WITHIN_S)
            assert outlived is not None, f"run {n} ({variant}, {phase}): buyers outlived the runner"
            worst = max(worst, outlived)
            survivors = max(survivors, len(fates))
            unstarted = max(unstarted, sum(f == "unstarted" for f in fates.values()))
        assert b"Traceback" not in err_path.read_bytes()
        # Every holder of the run's claim is gone, so the file is free for the next run
        # (at once, or within the bound: a holder's descriptors close as it finishes exiting).
        deadline = time.monotonic() + GONE_WITHIN_S
        while True:
            try:
                Store(data).claim().close()
                break
            except DataFileBusy:
                assert time.monotonic() < deadline, f"run {n} ({variant}): the claim stayed held"
                time.sleep(0.01)
    print(
        f"\nchunk {chunk}: {RUNS_PER_CHUNK} runs {phases}; at most {survivors} children "
        f"seen after the runner was reaped (none free to run; at most {unstarted} not yet "
        f"past die_with_parent); the last was gone "
        f"{worst * 1000:.1f} ms later"
    )


def test_a_second_run_is_refused_while_an_orphan_holds_the_claim(tmp_path: Path) -> None:
    """The claim lasts while any process that inherited it lives (an orphaned buyer)."""
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 5}')
    claim = Store(data).claim()
    # Stands in for a buyer orphaned by a killed runner: it inherited the claim's
    # descriptor and outlives the process that took it.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[claim.fd]
    )
    try:
        claim.close()  # the "runner" is gone; only the orphan holds the claim now
        tag = uuid.uuid4().hex
        argv = ["run", "naive", "--buyers", "3", "--latency", "0", "--data", str(data)]
        with lab_process(
            tmp_path, tag, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        ) as proc:
            out, err = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 2, err
        assert err.decode().count("\n") == 1 and b"using this file" in err, err
        assert b"Traceback" not in out + err
        with pytest.raises(DataFileBusy):
            Store(data).claim()
    finally:
        orphan.kill()
        orphan.wait(WAIT_S)
    Store(data).claim().close()  # the orphan gone, the file is free again
    assert data.read_text() == '{"ticket_num": 5}'  # the refused run touched nothing
