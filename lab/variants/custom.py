"""custom: your own buyer function, run by the lab like any other variant.

``lab run custom --buyer notes.py:run --success-regex 买票成功`` runs the
learner's function in every buyer process, exactly as the notes' loop would
(``Process(target=run, args=(name,))``), but with the lab's start gun, reaping
and tally around it:

* it is called with the notes' buyer name (``用户3`` for buyer 3), inside the
  run directory, so a program that opens ``data.json`` by a relative path (the
  notes' does) works as written;
* a purchase counts when the function returns something truthy, or, with
  ``--success-regex``, when what it printed matches (the notes' program only
  prints 买票成功, so it is judged unchanged);
* the tally comes from those reports and the final file: a program that
  oversells is caught whatever it claims.

Whether it races is up to your program; the lab only reports what happened.
Its ``random`` module is seeded per buyer from ``--seed``, so its own sleeps
repeat. What it prints reaches ``--verbose`` line by line, as it prints it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.buyer import Buyer
from lab.core.errors import UsageError
from lab.core.model import Scenario
from lab.core.paths import _name, check_input_file, read_input_file
from lab.variants.protocol import RunEnv, Stage, VariantBase

__all__ = ["MAX_BUYER_BYTES", "Custom", "CustomKit", "load_buyer", "run", "split_spec"]


#: The largest buyer file the lab reads (a learner's program is a few KiB).
MAX_BUYER_BYTES = 1024 * 1024
#: What the buyer file may print while it is imported, and what one buyer's
#: function may print, before it is stopped: printing must not fill memory.
MAX_PRINTED_CHARS = 1024 * 1024
#: Seconds the buyer file may take to import before it is stopped.
IMPORT_TIMEOUT_S = 10.0


class _Stopped(BaseException):
    """Raised inside the learner's code to stop it (it printed too much, or took too long).

    A BaseException so that the learner's own ``except Exception`` cannot swallow it.
    """


def split_spec(spec: str) -> tuple[Path, str]:
    """``FILE.py:FUNC`` -> (the file, checked to be a regular file, and FUNC).

    Raises:
        UsageError: not ``FILE.py:FUNC``, or the file is missing or not a regular file.
    """
    path, sep, func = spec.rpartition(":")
    if not sep or not path or not func:
        raise UsageError(f"--buyer: expected FILE.py:FUNC, got {spec!r}")
    try:
        file = Path(path).expanduser().absolute()
    except (OSError, RuntimeError, ValueError):
        raise UsageError(f"--buyer: expected FILE.py:FUNC, got {spec!r}") from None
    check_input_file(file, "--buyer")
    return file, func


def _exec_bounded(code: types.CodeType, module: types.ModuleType) -> None:
    """Run the module's code with stdin empty, what it prints bounded, and a time limit.

    The time limit (SIGALRM) applies on the main thread only, where signals arrive.
    """
    printed = _Bounded()
    on_main = threading.current_thread() is threading.main_thread()
    previous: Any = None

    def too_slow(signum: int, frame: object) -> None:
        raise _Stopped(f"it ran for more than {IMPORT_TIMEOUT_S:g} s")

    if on_main:
        previous = signal.signal(signal.SIGALRM, too_slow)
        signal.setitimer(signal.ITIMER_REAL, IMPORT_TIMEOUT_S)
    try:
        with (
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
            _stdin_empty(),
        ):
            exec(code, module.__dict__)  # running the learner's buyer is the point
    finally:
        if on_main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@contextmanager
def _stdin_empty() -> Iterator[None]:
    # A file that calls input() at import would otherwise wait for the terminal forever.
    saved = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        yield
    finally:
        sys.stdin = saved


def load_buyer(spec: str) -> Callable[[str], object]:
    """Import ``FILE.py:FUNC`` and return the function; a one-line UsageError if it cannot.

    Whatever the file does at import (raise anything, ``sys.exit()``, recurse,
    print forever, wait on stdin) is one line naming the file, never a
    traceback or a hang. Ctrl-C still interrupts.
    """
    file, func = split_spec(spec)
    name = "lab_custom_" + hashlib.sha1(os.fsencode(file)).hexdigest()[:12]
    module = sys.modules.get(name)
    shown = _name(file)
    if module is None:
        # Read here (bounded, never blocking on a FIFO), not by importlib, which
        # would open whatever the path is and read all of it.
        source = read_input_file(file, "--buyer", MAX_BUYER_BYTES)
        module = types.ModuleType(name)
        module.__file__ = os.fsdecode(file)
        # In sys.modules while it runs, as importlib does (dataclasses look it up there).
        sys.modules[name] = module
        try:
            code = compile(source, os.fsdecode(file), "exec", dont_inherit=True)
            _exec_bounded(code, module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise  # Ctrl-C is the user's, not the file's: the CLI says "interrupted"
            raise UsageError(f"--buyer: {shown} cannot be imported: {_describe(exc)}") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UsageError(f"--buyer: {shown} has no function {func!r}")
    return fn  # type: ignore[no-any-return]


def _describe(exc: BaseException) -> str:
    """``SystemExit: 3`` -- one line, however long or multi-line the message is."""
    try:
        text = str(exc)
    except Exception:  # a learner's exception whose __str__ itself fails
        text = ""
    text = " ".join(text.split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Bounded(io.StringIO):
    """Stands in for stdout at import: keeps nothing, and stops a file that prints too much."""

    def __init__(self) -> None:
        super().__init__()
        self._chars = 0

    def write(self, text: str) -> int:
        self._chars += len(text)
        if self._chars > MAX_PRINTED_CHARS:
            raise _Stopped(f"it printed more than {MAX_PRINTED_CHARS} characters")
        return len(text)


class _Lines(io.StringIO):
    """Stands in for stdout: keeps everything printed, and reports each line as it is
    completed, so ``--verbose`` shows a print at the moment it happened.

    Bounded: past :data:`MAX_PRINTED_CHARS` the function is stopped, so a
    buyer that prints forever neither fills memory nor keeps the run alive."""

    def __init__(self, me: Buyer) -> None:
        super().__init__()
        self._me = me
        self._partial = ""
        self._chars = 0

    def write(self, text: str) -> int:
        self._chars += len(text)
        if self._chars > MAX_PRINTED_CHARS:
            raise _Stopped(f"it printed more than {MAX_PRINTED_CHARS} characters")
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        for line in done:
            self._me.said(line)
        return super().write(text)

    def flush_partial(self) -> None:
        """Report the last line if it was printed without a newline (``print(..., end="")``)."""
        if self._partial:
            self._me.said(self._partial)
            self._partial = ""


@dataclass(frozen=True)
class CustomKit:
    """What every buyer of a custom run is handed: the learner's program and how to judge it."""

    #: ``--buyer FILE.py:FUNC``
    spec: str
    #: ``--success-regex``: a purchase counts when what it printed matches (None: when it
    #: returned something truthy)
    pattern: str | None


def run(me: Buyer, kit: CustomKit) -> None:
    """Call the learner's function as the notes' loop would, and report what it did."""
    fn = load_buyer(kit.spec)
    os.chdir(me.store.path.parent)  # the notes open r'data.json' relative to the cwd
    random.seed(f"{me.seed}:{me.index}")  # the program's own random draws repeat with --seed
    printed = _Lines(me)
    try:
        with contextlib.redirect_stdout(printed), _stdin_empty():
            value = fn(f"用户{me.index}")  # the notes call run('用户%s' % i)
    except Exception:
        raise  # the buyer's error, reported as any variant's is
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        # sys.exit() or a bare BaseException in the learner's function: still the
        # buyer's error (one line in the tally), not a buyer process that dies unreported.
        raise RuntimeError(f"your buyer raised {_describe(exc)}") from None
    text = printed.getvalue()
    printed.flush_partial()
    succeeded = re.search(kit.pattern, text) is not None if kit.pattern else bool(value)
    if succeeded:
        me.bought(ticket=None)
    else:
        me.sold_out(None)


class Custom(VariantBase):
    name = "custom"
    summary = "your own buyer function: --buyer FILE.py:FUNC [--success-regex REGEX]"
    safe = False
    caveat = "yours to judge: the lab reports what your program did"
    requires: str | None = "--buyer"
    locks: tuple[str, ...] = ()
    why = (
        "it runs your program; the tally from its reports and the final file says whether it holds"
    )

    def check(self, scenario: Scenario) -> None:
        """Refuse a missing or broken ``--buyer`` or ``--success-regex`` before the run
        creates anything (the runner calls this first)."""
        spec = scenario.buyer_program
        if not spec:
            raise UsageError("custom: give your buyer with --buyer FILE.py:FUNC")
        load_buyer(spec)  # fail here, once, with one line, rather than in every buyer
        pattern = scenario.success_regex
        if pattern is not None:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:
                # OverflowError: a{99999999999}; RecursionError: thousands of nested groups.
                raise UsageError(f"--success-regex: {_describe(exc)}") from None

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage[Any]]:
        self.check(env.scenario)
        spec = env.scenario.buyer_program
        assert spec is not None, "check() refuses a run without --buyer"
        kit = CustomKit(spec, env.scenario.success_regex)
        yield Stage(program=run, kit=kit)
