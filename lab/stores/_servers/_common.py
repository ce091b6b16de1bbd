"""What the three engines share: the handle, the error, spawning, ports, waiting, stopping.

Every server process is started by :func:`spawn`, which makes the kernel
SIGKILL it when the lab dies (``PR_SET_PDEATHSIG``), so no server outlives the
lab even when the lab itself is SIGKILLed and no ``finally`` runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from lab.core.errors import LabError

__all__ = [
    "LOOPBACK",
    "PrivateServer",
    "ServerProcess",
    "ServerStartError",
    "cleanup_on_error",
    "descendants",
    "free_port",
    "log_tail",
    "spawn",
]

#: Every private server listens here only: nothing outside this machine can reach it.
LOOPBACK = "127.0.0.1"
#: ``prctl(PR_SET_PDEATHSIG, sig)`` (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: How often a startup wait looks again (a server is ready in tens of milliseconds).
POLL_S = 0.01
#: How long a stopping server gets to exit before it is SIGKILLed.
STOP_GRACE_S = 5.0


class ServerStartError(LabError):
    """Raised by ``start_postgres`` / ``start_redis`` / ``start_redis_cluster`` when a
    private server cannot be started: the binary is missing, no port could be bound,
    initdb failed (with the last lines of its log), or it was not ready in time.

    One line, naming the engine and the reason, never a traceback.
    """

    def __init__(self, engine: str, reason: str) -> None:
        super().__init__(engine, reason)
        self.engine = engine
        # One line: a log tail arrives with newlines, and the CLI prints one line per error.
        self.reason = " | ".join(line.strip() for line in reason.splitlines() if line.strip())

    def __str__(self) -> str:
        return f"{self.engine}: could not start a private server: {self.reason}"

    def __reduce__(self) -> tuple[type[ServerStartError], tuple[str, str]]:
        # __init__ takes two fields, so pickle must pass them back as constructor args.
        return (type(self), (self.engine, self.reason))


def _resolve_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, resolved in the parent: the child between fork and exec
    should run as little Python as possible (no library loading there)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_PRCTL = _resolve_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A ``preexec_fn``: the kernel SIGKILLs the child when the process that spawned it dies.

    Same idea as ``lab.buyer.die_with_parent`` (which this layer may not import).
    It must run *after* subprocess switches the uid (it does: ``preexec_fn``
    runs after ``setreuid``), because the kernel clears the parent-death signal
    on any change of credentials. If the parent died between fork and prctl,
    no signal will ever come: the child leaves before exec.
    """

    def arm() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return arm


@dataclass
class ServerProcess:
    """One spawned server process, its log, and how it is asked to stop."""

    popen: subprocess.Popen[bytes]
    log: Path
    #: SIGTERM for redis (exits at once: nothing is saved), SIGQUIT for PostgreSQL
    #: (immediate shutdown: the data dir is thrown away, so no checkpoint is worth waiting for).
    stop_signal: signal.Signals = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.popen.pid

    def ask_to_stop(self) -> None:
        """Send the stop signal (if it still runs) without waiting."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)

    def stop(self) -> None:
        """Signal, wait, SIGKILL if it hangs, and reap: safe to call again."""
        if self.popen.poll() is None:
            self.ask_to_stop()
            try:
                self.popen.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.popen.wait()


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: Path,
    cwd: Path,
    user: int | None = None,
    group: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a server process that dies with this one; its stdout and stderr go to ``log``.

    ``user``/``group`` switch to an unprivileged account (PostgreSQL as root);
    ``extra_groups=[]`` then drops root's supplementary groups too. The log is
    opened here (by the lab) and inherited, so the server needs no right to it.
    """
    switch = user is not None
    with log.open("ab") as out:
        return subprocess.Popen(
            [os.fspath(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            user=user,
            group=group,
            extra_groups=[] if switch else None,
            # Its own session: a Ctrl-C on the lab's terminal reaches the lab, and the
            # lab stops the server in order (a stray SIGINT would make postgres shut down
            # while a store is still using it).
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - see _die_with_parent
        )


def log_tail(log: Path, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of a server's log, for a one-line error."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(kept) or f"(empty log {log})"


def free_port(*, also: int = 0) -> int:
    """A loopback TCP port the OS reports free (bind to port 0, read it, close).

    Another process may take it before the server binds it: callers retry with
    a new port when the server says "Address already in use". ``also`` asks for
    ``port + also`` to be free too (a Redis Cluster node's bus port is port + 10000).
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if not also:
            return port
        if port + also > 65535:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, port + also))
            except OSError:
                continue
        return port
    raise OSError("no free loopback port pair found")


def descendants(pid: int) -> list[int]:
    """Live processes below ``pid`` (children, grandchildren...), from /proc.

    A PostgreSQL postmaster forks its own workers; the handle reports them in
    ``pids`` so a caller (or a test) can check that every one of them is gone.
    """
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


@dataclass
class PrivateServer:
    """A running private server (or cluster): where to connect, and how to stop it.

    ``url`` is what a client library takes (``postgresql://...`` or
    ``redis://...``); ``dsn`` is PostgreSQL's conninfo string (the URL for
    redis); ``startup_nodes`` lists ``(host, port)`` of every node (one for a
    single server), what ``redis.cluster.RedisCluster`` needs. A context
    manager; :meth:`stop` is idempotent and meant for a ``finally``.
    """

    engine: str
    url: str
    dsn: str
    startup_nodes: tuple[tuple[str, int], ...]
    processes: list[ServerProcess]
    #: Directories the lab made for this server outside the caller's workdir: removed by stop().
    scratch: list[Path] = field(default_factory=list)
    _stopped: bool = field(default=False, repr=False)

    @property
    def host(self) -> str:
        return self.startup_nodes[0][0]

    @property
    def port(self) -> int:
        return self.startup_nodes[0][1]

    @property
    def pids(self) -> tuple[int, ...]:
        """Every live process of this server: the ones the lab spawned and their children."""
        if self._stopped:
            return ()
        pids: list[int] = []
        for proc in self.processes:
            if proc.popen.poll() is None:
                pids += [proc.pid, *descendants(proc.pid)]
        return tuple(pids)

    @property
    def logs(self) -> tuple[Path, ...]:
        return tuple(proc.log for proc in self.processes)

    def stop(self) -> None:
        """Stop every process, wait for all of them (and a postmaster's children), and
        remove the lab's scratch directories. Calling it again does nothing."""
        if self._stopped:
            return
        self._stopped = True
        stragglers: list[int] = []
        for proc in self.processes:
            if proc.popen.poll() is None:
                stragglers += descendants(proc.pid)
        # All at once, then wait for each: a cluster's nodes shut down in parallel.
        for proc in self.processes:
            proc.ask_to_stop()
        for proc in self.processes:
            proc.stop()
        _wait_gone(stragglers)
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], timeout: float = STOP_GRACE_S) -> None:
    """Wait for a postmaster's children (not ours to reap) to exit; SIGKILL any that hang.

    A postmaster normally waits for its children before it exits, so this
    returns at once; it matters only after the postmaster itself was SIGKILLed.
    """
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def cleanup_on_error(server_parts: list[ServerProcess], scratch: list[Path]) -> Iterator[None]:
    """Stop what was started so far when a startup step fails or is interrupted."""
    try:
        yield
    except BaseException:
        PrivateServer("partial", "", "", (), server_parts, scratch).stop()
        raise
