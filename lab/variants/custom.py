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
import importlib.util
import io
import os
import random
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lab._buyer import Buyer
from lab.errors import UsageError
from lab.variants.protocol import RunEnv, Stage

__all__ = ["Custom", "load_buyer", "run"]


def load_buyer(spec: str) -> Callable[[str], object]:
    """Import ``FILE.py:FUNC`` and return the function; a one-line UsageError if it cannot."""
    path, sep, func = spec.rpartition(":")
    if not sep or not path or not func:
        raise UsageError(f"--buyer: expected FILE.py:FUNC, got {spec!r}")
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise UsageError(f"--buyer: {file} does not exist")
    name = "lab_custom_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    module = sys.modules.get(name)
    if module is None:
        loader_spec = importlib.util.spec_from_file_location(name, file)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"--buyer: {file} is not a Python file")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:  # anything the learner's file raises at import
            raise UsageError(
                f"--buyer: {file} cannot be imported: {type(exc).__name__}: {exc}"
            ) from None
        sys.modules[name] = module
    fn = getattr(module, func, None)
    if not callable(fn):
        raise UsageError(f"--buyer: {file} has no function {func!r}")
    return fn  # type: ignore[no-any-return]


class _Lines(io.StringIO):
    """Stands in for stdout: keeps everything printed, and reports each line as it is
    completed, so ``--verbose`` shows a print at the moment it happened."""

    def __init__(self, me: Buyer) -> None:
        super().__init__()
        self._me = me
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *done, self._partial = self._partial.split("\n")
        for line in done:
            self._me.said(line)
        return super().write(text)


def run(me: Buyer, spec: str, pattern: str | None) -> None:
    """Call the learner's function as the notes' loop would, and report what it did."""
    fn = load_buyer(spec)
    os.chdir(me.store.path.parent)  # the notes open r'data.json' relative to the cwd
    random.seed(f"{me.seed}:{me.index}")  # the program's own random draws repeat with --seed
    printed = _Lines(me)
    with contextlib.redirect_stdout(printed):
        value = fn(f"用户{me.index}")  # the notes call run('用户%s' % i)
    text = printed.getvalue()
    if printed._partial:
        me.said(printed._partial)
    succeeded = re.search(pattern, text) is not None if pattern else bool(value)
    if succeeded:
        me.bought(ticket=None)
    else:
        me.sold_out(None)


class Custom:
    name = "custom"
    summary = "your own buyer function: --buyer FILE.py:FUNC [--success-regex REGEX]"
    safe = False
    caveat = "yours to judge: the lab reports what your program did"
    requires = "--buyer"
    locks: tuple[str, ...] = ()
    why = (
        "it runs your program; the tally from its reports and the final file says whether it holds"
    )

    @contextmanager
    def stage(self, env: RunEnv) -> Iterator[Stage]:
        spec = env.scenario.buyer_program
        if not spec:
            raise UsageError("custom: give your buyer with --buyer FILE.py:FUNC")
        load_buyer(spec)  # fail here, once, with one line, rather than in every buyer
        pattern = env.scenario.success_regex
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UsageError(f"--success-regex: {exc}") from None
        yield Stage(program=run, shared=(spec, pattern))
