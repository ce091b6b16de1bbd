"""Run directories: where a run without ``--data`` keeps its data.json.

Each run gets a fresh ``lab-*`` directory in the system's temporary
directory, left behind on purpose so a learner can open the data.json the
report names. They would pile up (``lab compare`` makes one per run), so the
number kept is bounded: making a new one removes the oldest beyond
:data:`KEEP`, and ``lab clean`` removes every idle one.

Only what the lab made is ever removed. A run directory is recognised by a
marker file the lab writes inside it, and inside it only the names the lab
itself gives are deleted; a directory that holds anything else is left
whole. A run in progress holds an flock on its marker, so pruning never
pulls a directory out from under a running ``lab`` (or its buyers, which
inherit the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["KEEP", "MARKER", "RunDir", "clean", "new_run_dir", "run_dirs"]

#: How many idle run directories are kept; older ones go when a new one is made.
KEEP = 20
#: The marker file inside every run directory (and its exact contents).
MARKER = ".lab-run"
_MARKER_TEXT = b"made by lab: a run directory, removed by `lab clean` or when 20 newer exist\n"
_PREFIX = "lab-"
#: Names a run writes inside its directory: data.json, its locks, its temps, a
#: backup; an engine's database file and its companions; a private server's logs
#: and cluster config (its data directory is removed when the server stops).
_OURS = re.compile(
    r"(data\.json|data\.json\.lock|data\.json\.run\.lock|\.data\.json\.\d+-\d+\.tmp|"
    r"tickets\.sqlite3(-wal|-shm|-journal|\.run\.lock)?|"
    r"(postgres|redis)[-\w]*\.(log|conf)|nodes-\d+\.conf|" + re.escape(MARKER) + r")\Z"
)
#: Subdirectories a run may make for a private server's files: the same names inside.
_OUR_DIRS = frozenset({"postgres", "redis", "redis-cluster"})


class RunDir:
    """A run directory held for one run: its marker is flock'ed until :meth:`close`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    def close(self) -> None:
        """Stop holding the directory (children that inherited the fd still hold it)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _base() -> Path:
    return Path(tempfile.gettempdir())


def new_run_dir(keep: int = KEEP) -> RunDir:
    """Make a new run directory (and prune old idle ones down to ``keep``)."""
    path = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=_base()))
    fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.write(fd, _MARKER_TEXT)
    # Held while the run lasts: pruning and `lab clean` skip a held directory.
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # Inherited by the buyers (fork), so an orphan buyer still protects its directory.
    os.set_inheritable(fd, True)
    _prune(keep, skip=path)
    return RunDir(path, fd)


def run_dirs() -> list[Path]:
    """The lab's run directories in the temporary directory, oldest first."""
    found: list[tuple[float, Path]] = []
    try:
        entries = list(os.scandir(_base()))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if _is_marked(Path(entry.path)):
            found.append((st.st_mtime, Path(entry.path)))
    return [p for _, p in sorted(found)]


def _is_marked(path: Path) -> bool:
    marker = path / MARKER
    try:
        st = os.lstat(marker)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(_MARKER_TEXT):
            return False
        return marker.read_bytes() == _MARKER_TEXT
    except OSError:
        return False


@contextlib.contextmanager
def _idle(path: Path) -> Iterator[bool]:
    """Yield True while holding the directory's marker lock (the directory is idle)."""
    try:
        fd = os.open(path / MARKER, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _only_ours(path: Path, names: list[str]) -> bool:
    """Whether every name is one a run writes (a server's subdirectory: one level deep)."""
    for name in names:
        if _OURS.match(name):
            continue
        child = path / name
        if name not in _OUR_DIRS or child.is_symlink() or not child.is_dir():
            return False
        try:
            inner = os.listdir(child)
        except OSError:
            return False
        if any(not _OURS.match(n) or not (child / n).is_file() for n in inner):
            return False
    return True


def _remove(path: Path) -> bool:
    """Remove a marked, idle run directory; leave it if it holds anything not ours."""
    with _idle(path) as idle:
        if not idle:
            return False
        try:
            names = os.listdir(path)
        except OSError:
            return False
        if not _only_ours(path, names):
            return False  # something the lab did not make: not ours to delete
        for name in names:
            child = path / name
            with contextlib.suppress(OSError):
                mode = os.lstat(child).st_mode
                if stat.S_ISREG(mode):
                    os.unlink(child)
                elif stat.S_ISDIR(mode):
                    for inner in os.listdir(child):
                        if stat.S_ISREG(os.lstat(child / inner).st_mode):
                            os.unlink(child / inner)
                    os.rmdir(child)
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


def _prune(keep: int, skip: Path) -> None:
    dirs = [p for p in run_dirs() if p != skip]
    excess = len(dirs) - max(0, keep - 1)
    for path in dirs[: max(0, excess)]:
        _remove(path)


def clean() -> tuple[int, int]:
    """Remove every idle run directory; return (removed, kept because busy or not ours)."""
    removed = kept = 0
    for path in run_dirs():
        if _remove(path):
            removed += 1
        else:
            kept += 1
    return removed, kept
