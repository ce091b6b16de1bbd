"""Rules of docs/architecture.md that a test can check.

**Only ``lab.ui`` writes to stdout or stderr.** Every module of ``lab``
outside ``lab/ui/`` is parsed, and its syntax tree searched for code that
*writes* to the terminal:

- a call of the built-in ``print`` (unless its ``file=`` is something other
  than a standard stream: a sink in memory is not the terminal);
- any *read* of ``sys.stdout``, ``sys.stderr``, ``sys.__stdout__`` or
  ``sys.__stderr__`` (however ``sys`` or the name was imported): holding the
  real stream is what writing needs;
- a rich console or anything that makes one (``rich.console``,
  ``rich.print``, ``rich.progress``, ``rich.live``, ...);
- ``os.write`` to file descriptor 1 or 2, ``input()`` (it prints its prompt),
  ``traceback.print_*`` and ``pprint.pprint``.

**Capturing is not writing.** Code outside ``lab.ui`` may take a learner's
program's output away from the terminal: ``contextlib.redirect_stdout(sink)``
(or ``redirect_stderr``), or assigning a sink *to* ``sys.stdout``. Those
never read the real stream, so they pass; saving the real stream to put it
back (``saved = sys.stdout``) is a read, and fails: use the context managers.
The rule is about what the code does, so there is no list of exempt modules.

``lab/__main__.py`` is not searched: it is the ``lab`` command's entry point,
above ``lab.ui`` (it imports ``lab.ui.cli``), and it prints its one line
("lab: interrupted") exactly when a Ctrl-C lands while ``lab.ui`` is still
importing, when no ``lab.ui`` code can be relied on to be loaded.

**``import lab.core.model`` stays light**: it imports no runner, variant,
buyer, server or store.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lab

LAB = Path(lab.__file__).parent

#: Streams the process writes to the terminal through.
_STREAMS = {f"sys.{n}" for n in ("stdout", "stderr", "__stdout__", "__stderr__")}
#: Qualified names whose use writes (or makes something that writes) to the terminal.
_WRITERS = {
    "builtins.print",
    "builtins.input",
    "rich.print",
    "rich.print_json",
    "rich.inspect",
    "rich.get_console",
    "rich.reconfigure",
    "pprint.pprint",
    "pprint.pp",
    "rich.pretty.pprint",
}
#: Whole modules any use of which writes to the terminal.
_WRITER_MODULES = (
    "rich.console",
    "rich.live",
    "rich.progress",
    "rich.status",
    "rich.prompt",
    "rich.traceback",
    "rich.logging",
)
_WRITER_PREFIXES = ("traceback.print_",)


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, from every import in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    names[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` resolved through the imports; builtins (when not shadowed) as ``builtins.X``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    base = aliases.get(node.id, f"builtins.{node.id}")
    return ".".join([base, *reversed(parts)])


def _is_writer(name: str) -> bool:
    return (
        name in _STREAMS
        or name in _WRITERS
        or any(name == m or name.startswith(m + ".") for m in _WRITER_MODULES)
        or any(name.startswith(p) for p in _WRITER_PREFIXES)
    )


def terminal_writes(source: str) -> list[str]:
    """Each place in ``source`` that writes to the terminal, as ``line: what``."""
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found: list[str] = []
    sink_prints: set[int] = set()  # print(..., file=<not a standard stream>): capturing
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases)
        if name == "builtins.print":
            file = next((k.value for k in node.keywords if k.arg == "file"), None)
            if file is not None and _qualified(file, aliases) not in _STREAMS:
                sink_prints.add(id(node.func))
        elif name == "os.write" and node.args:
            fd = node.args[0]
            if isinstance(fd, ast.Constant) and fd.value in (1, 2):
                found.append(f"{node.lineno}: os.write({fd.value}, ...)")
        elif name == "builtins.getattr" and len(node.args) >= 2:
            obj, attr = node.args[0], node.args[1]
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                target = f"{_qualified(obj, aliases)}.{attr.value}"
                if target in _STREAMS:
                    found.append(f"{node.lineno}: getattr -> {target}")
    for node in ast.walk(tree):
        # A name or attribute read (Load), not a target (Store: capturing) nor an import.
        if not isinstance(node, ast.Name | ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        if (
            isinstance(node, ast.Name)
            and node.id not in aliases
            and node.id
            not in {
                "print",
                "input",
            }
        ):
            continue
        name = _qualified(node, aliases)
        if name is None or not _is_writer(name) or id(node) in sink_prints:
            continue
        # Report the outermost match only (sys.stdout.write: sys.stdout, once).
        found.append(f"{node.lineno}: {name}")
    # A module that names a writer only in an import statement still gets it from there.
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                name = f"{node.module}.{a.name}"
                if _is_writer(name) or _is_writer(node.module):
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _is_writer(a.name)]
    return sorted(set(found), key=lambda s: (int(s.split(":")[0]), s))


def _outside_ui() -> list[Path]:
    return sorted(
        p
        for p in LAB.rglob("*.py")
        if p.relative_to(LAB).parts[0] != "ui" and p.relative_to(LAB) != Path("__main__.py")
    )


def test_the_search_covers_every_layer_below_ui() -> None:
    packages = {p.relative_to(LAB).parts[0] for p in _outside_ui()}
    assert {"core", "stores", "net", "variants", "harness", "buyer.py"} <= packages


@pytest.mark.parametrize("path", _outside_ui(), ids=lambda p: str(p.relative_to(LAB.parent)))
def test_only_ui_writes_to_the_terminal(path: Path) -> None:
    writes = terminal_writes(path.read_text(encoding="utf-8"))
    assert not writes, (
        f"{path.relative_to(LAB.parent)} writes to the terminal; only lab.ui may "
        f"(return the text or a renderable and let lab.ui print it): {writes}"
    )


WRITING = {
    "print": "print('x')\n",
    "print to stderr": "import sys\nprint('x', file=sys.stderr)\n",
    "stream write": "import sys\nsys.stdout.write('x')\n",
    "aliased sys": "import sys as s\ns.stderr.flush()\n",
    "from sys": "from sys import stderr\n",
    "saving the stream": "import sys\nsaved = sys.stdout\n",
    "getattr": "import sys\ngetattr(sys, 'stdout')\n",
    "rich console": "from rich.console import Console\nConsole().print('x')\n",
    "rich module": "import rich.console\n",
    "rich print": "from rich import print as rprint\nrprint('x')\n",
    "rich progress": "from rich.progress import track\n",
    "os.write": "import os\nos.write(2, b'x')\n",
    "traceback": "import traceback\ntraceback.print_exc()\n",
    "input": "input('your name? ')\n",
    "a console parameter": "from rich.console import Console\ndef f(c: Console) -> None: ...\n",
}

CAPTURING = {
    "redirect_stdout": "import contextlib, io\n"
    "with contextlib.redirect_stdout(io.StringIO()):\n    pass\n",
    "redirect_stderr": "from contextlib import redirect_stderr\n"
    "with redirect_stderr(sink):\n    pass\n",
    "assigning a sink": "import io, sys\nsys.stdout = io.StringIO()\n",
    "print to a sink": "import io\nbuf = io.StringIO()\nprint('x', file=buf)\n",
    "a local called print": "from mylib import print\nprint('x')\n",
    "stdin": "import sys\nline = sys.stdin.readline()\n",
    "rich renderables": "from rich.table import Table\nfrom rich.text import Text\n",
    "os.write to a file": "import os\nos.write(fd, b'x')\n",
}


@pytest.mark.parametrize("source", WRITING.values(), ids=WRITING.keys())
def test_the_search_finds_writing(source: str) -> None:
    assert terminal_writes(source)


@pytest.mark.parametrize("source", CAPTURING.values(), ids=CAPTURING.keys())
def test_capturing_is_not_writing(source: str) -> None:
    assert terminal_writes(source) == []


def test_importing_the_model_stays_light() -> None:
    code = textwrap.dedent(
        """
        import sys
        import lab.core.model
        heavy = ("lab.harness", "lab.variants", "lab.buyer", "lab.net", "lab.stores", "lab.ui")
        print(sorted(m for m in sys.modules if m.startswith(heavy)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
