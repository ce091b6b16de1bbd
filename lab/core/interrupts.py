"""Ctrl-C and SIGTERM as one ``KeyboardInterrupt``, held back where it would break something.

Python raises ``KeyboardInterrupt`` at the next bytecode boundary of the main
thread, wherever that is. Most places survive it: the runner catches it, reaps
its buyers and reports a partial tally. A few do not. Landing inside rich's
``Console.print``, between the console entering its buffer and leaving it,
leaves the console buffering for good: the run ends with status 130 and the
interrupted tally is never shown (seen once in 600 interrupted runs).

While :data:`held` is entered, the handler :func:`installed` puts in place
only notes the signal; leaving the outermost ``with held:`` raises the
``KeyboardInterrupt`` then. Blocking the signal with ``pthread_sigmask`` is not
enough for this: it masks the calling thread only, and while rich's refresh
thread runs, the kernel hands the signal to that thread and Python still runs
the handler in the main thread, mid-print.

::

    SIGINT / SIGTERM --> handler --(not held)--> raise KeyboardInterrupt now
                                 \\-(held)-----> note it --> `with held:` ends --> raise
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

__all__ = ["EXIT_STATUS", "Held", "held", "installed", "last_signal"]

#: What each interrupt ends the lab with: 128 + the signal's number, as a shell reports it.
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Held:
    """``with held:`` delays an interrupt until the block ends (main thread, handler installed).

    Reentrant: only the outermost block raises. Entering and leaving do no call
    between reading and writing the depth, so no handler can run in between.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False
        self.signal = signal.SIGINT

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.depth -= 1
        if self.depth == 0 and self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum)
        if self.depth > 0:
            self.pending = True
            return
        raise KeyboardInterrupt


#: The process's one hold (the handler is process-wide, so is the hold).
held = Held()


def last_signal() -> signal.Signals:
    """The interrupt that arrived last (SIGINT if none has)."""
    return held.signal


@contextmanager
def installed() -> Iterator[Held]:
    """Route SIGINT and SIGTERM through :data:`held` until the block ends.

    SIGTERM then takes Ctrl-C's path (reap, partial tally, exit 143) instead of
    the default action's silent death. A no-op off the main thread, where
    Python cannot install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {s: signal.signal(s, held.handler) for s in EXIT_STATUS}
    try:
        yield held
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
