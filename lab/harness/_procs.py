"""Buyer processes started with ``os.fork()``, without multiprocessing's child list.

Why not ``multiprocessing.Process``: its ``start()`` first polls every live
child it has started (``waitpid`` on each), so holding 1,000 buyers at the
start gun costs about 500,000 system calls and a second of forking: O(n²).
The runner tracks and reaps its buyers itself, so under the ``fork`` start
method it forks them through the public ``os.fork()`` and waits on each pid
with ``os.waitpid`` (O(n) in all). Everything else a buyer uses (the pipe,
the gun Event, the semaphore, locks) is still made by the multiprocessing
context, exactly as the notes make their ``Process`` objects; a forked child
inherits them the same way ``Process.start()`` under fork would hand them
over (it also calls ``os.fork()``).

Under ``spawn`` and ``forkserver`` the runner keeps ``multiprocessing.Process``
(those methods cannot run a closure in a bare fork), and forking is O(n²) again:
they exist for platforms without fork and for tests, not for 1,000 buyers.

A :class:`ForkedProcess` offers the part of ``Process`` the runner uses:
``pid``, ``exitcode``, ``is_alive``, ``join``, ``terminate``, ``kill``, ``close``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

__all__ = ["ForkedProcess"]

#: How often ``join`` looks again while it waits (waitpid has no timeout).
_JOIN_POLL_S = 0.005


class ForkedProcess:
    """One child made by ``os.fork()`` that runs ``target(*args)`` and exits."""

    def __init__(self, target: Callable[..., object], args: tuple[Any, ...], name: str) -> None:
        self.name = name
        self._target = target
        self._args = args
        self.pid: int | None = None
        self._exitcode: int | None = None

    def start(self) -> None:
        pid = os.fork()
        if pid == 0:
            self._child()
        self.pid = pid

    def _child(self) -> None:
        code = 1
        try:
            # As multiprocessing does: a buyer never reads the terminal.
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.close(devnull)
            except OSError:
                pass
            self._target(*self._args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code = 1
        finally:
            # _exit: never run the parent's atexit handlers or finalizers in the child,
            # nor flush the copy of the parent's output buffers it inherited (which
            # the parent prints itself). Buyers report through the pipe, never stdout.
            os._exit(code)

    def _poll(self, flags: int) -> int | None:
        if self._exitcode is None and self.pid is not None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:
                # Reaped elsewhere (cannot happen in the lab; be safe).
                self._exitcode = -1
                return self._exitcode
            if pid != 0:
                self._exitcode = os.waitstatus_to_exitcode(status)
        return self._exitcode

    @property
    def exitcode(self) -> int | None:
        """As ``Process.exitcode``: None while it runs, else its status (-N: killed by signal N)."""
        return self._poll(os.WNOHANG)

    def is_alive(self) -> bool:
        return self.pid is not None and self._poll(os.WNOHANG) is None

    def join(self, timeout: float | None = None) -> None:
        if timeout is None:
            self._poll(0)
            return
        deadline = time.monotonic() + timeout
        while self._poll(os.WNOHANG) is None and time.monotonic() < deadline:
            time.sleep(_JOIN_POLL_S)

    def _signal(self, signum: int) -> None:
        if self.pid is not None and self._poll(os.WNOHANG) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def close(self) -> None:
        """Nothing to release: the pid is reaped by ``join``/``is_alive``."""
