"""The only code that touches data.json.

The file is the notes' ``{"ticket_num": N}``. Two ways to write it are kept
side by side on purpose:

* :meth:`Store.write_in_place` is the notes' ``open('w')`` + ``json.dump``. The
  open truncates the file first, so for a moment it is empty: a buyer that
  reads then sees a *torn* file. The naive variant keeps it to show that.
* :meth:`Store.write_atomic` writes a temporary file beside it, fsyncs it and
  ``os.replace``-s it over data.json. A reader sees the old file or the new
  one, never half of one, and a writer killed mid-write leaves the old file.
  Every safe variant uses it.

Reads are strict: anything but a JSON object holding exactly one whole,
non-negative ``ticket_num`` is a :class:`~lab.errors.StoreCorrupted` that
names the file and the problem.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from lab.errors import DataFileBusy, StoreCorrupted

__all__ = ["MAX_TICKETS", "Store"]

#: A count above this is a corrupt or hostile file, not a ticket sale.
MAX_TICKETS = 1_000_000_000
#: data.json is a few bytes; refuse to slurp something huge by mistake.
_MAX_BYTES = 64 * 1024
#: Numbers this process's temporary files (``.data.json.<pid>-<n>.tmp``).
_TEMP_SERIAL = itertools.count()


class Store:
    """data.json at ``path``, plus the lock file beside it."""

    def __init__(
        self, path: str | os.PathLike[str], *, step: Callable[[str], None] | None = None
    ) -> None:
        # A buyer rebuilds its Store after the fork; reusing the Path skips pathlib's
        # parsing, which in a fresh child means page faults on every object it touches.
        self.path = path if isinstance(path, Path) else Path(path)
        # Called mid-write ("mid-write") so a buyer can be killed at the worst
        # moment (``--crash``); a no-op unless a buyer installs it.
        self._step = step

    def __getstate__(self) -> dict[str, object]:
        # The step hook belongs to one buyer process; never pickle it across.
        return {"path": self.path, "_step": None}

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def lock_path(self) -> Path:
        """Where the ``locked`` variant's file lock lives: beside data.json, never inside it."""
        return self.path.with_name(self.path.name + ".lock")

    def claim(self) -> FileLock:
        """Take ``data.json.run.lock`` for one run or server, or refuse at once.

        Two runs (or a run and a ``lab serve``) on one data.json would sell the
        same tickets without knowing of each other, and tally each other's sales.
        The caller releases the returned lock when it is done.

        Raises:
            DataFileBusy: another run or server holds it.
            StoreCorrupted: the lock file cannot be created beside data.json.
        """
        lock = FileLock(str(self.path) + ".run.lock", timeout=0)
        try:
            lock.acquire()
        except FileLockTimeout:
            raise DataFileBusy(
                f"{self.path}: another lab run or server is using this file"
            ) from None
        except OSError as exc:
            raise StoreCorrupted(
                str(self.path), f"cannot be used: {exc.strerror or exc} (its directory)"
            ) from None
        return lock

    # -- reading ---------------------------------------------------------------

    def read(self) -> int:
        """Return ``ticket_num``; raise :class:`StoreCorrupted` naming the problem."""
        return self.parse(self._read_text())

    def read_text(self) -> str:
        """The file's text as it is, for showing the user what it holds."""
        return self._read_text()

    def _read_text(self) -> str:
        name = str(self.path)
        try:
            with open(self.path, "rb") as f:
                raw = f.read(_MAX_BYTES + 1)
        except FileNotFoundError:
            raise StoreCorrupted(name, "does not exist") from None
        except IsADirectoryError:
            raise StoreCorrupted(name, "is a directory, not a file") from None
        except PermissionError:
            raise StoreCorrupted(name, "cannot be read: permission denied") from None
        except OSError as exc:
            raise StoreCorrupted(name, f"cannot be read: {exc.strerror or exc}") from None
        if len(raw) > _MAX_BYTES:
            raise StoreCorrupted(name, f"is larger than {_MAX_BYTES} bytes; not a ticket file")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreCorrupted(name, "is not UTF-8 text") from None

    def parse(self, text: str) -> int:
        """Validate the text of data.json and return its ``ticket_num``."""
        name = str(self.path)
        if not text.strip():
            raise StoreCorrupted(
                name, "is empty (read between another writer's truncate and its write?)"
            )
        try:
            data = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, and int() digit limits
            raise StoreCorrupted(name, f"is not valid JSON ({exc})") from None
        except RecursionError:
            raise StoreCorrupted(name, "is not valid JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise StoreCorrupted(
                name, f'must hold an object like {{"ticket_num": 1}}, found {type(data).__name__}'
            )
        if "ticket_num" not in data:
            raise StoreCorrupted(name, 'has no "ticket_num" key')
        extra = sorted(str(k) for k in data if k != "ticket_num")
        if extra:
            raise StoreCorrupted(name, f"has unexpected keys: {', '.join(extra)}")
        count = data["ticket_num"]
        # bool is an int subclass: reject true/false explicitly.
        if isinstance(count, bool) or not isinstance(count, int):
            raise StoreCorrupted(name, f"ticket_num must be a whole number, got {count!r}")
        if count < 0:
            raise StoreCorrupted(name, f"ticket_num must not be negative, got {count}")
        if count > MAX_TICKETS:
            raise StoreCorrupted(name, f"ticket_num {count} is larger than {MAX_TICKETS}")
        return count

    # -- writing ---------------------------------------------------------------

    @staticmethod
    def _encode(count: int) -> str:
        return json.dumps({"ticket_num": count})

    def write_in_place(self, count: int) -> None:
        """The notes' write: ``open('w')`` truncates, then ``json.dump`` fills it.

        Between the two, data.json is empty; a concurrent reader sees a torn file.
        """
        with open(self.path, "w", encoding="utf8") as f:
            if self._step is not None:
                f.flush()
                self._step("torn")  # the file is empty right now
            json.dump({"ticket_num": count}, f)

    def write_atomic(self, count: int) -> None:
        """Replace data.json whole: temp file, fsync, ``os.replace``. Never torn."""
        fd, tmp = self._create_temp()
        try:
            # The temp file is made 0600; keep data.json's own mode across the replace.
            os.fchmod(fd, self._mode())
            with os.fdopen(fd, "w", encoding="utf8") as f:
                f.write(self._encode(count))
                f.flush()
                os.fsync(f.fileno())
            if self._step is not None:
                self._step("mid-write")  # the new count is only in the temp file
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _create_temp(self) -> tuple[int, str]:
        """A new, private temporary file beside data.json (``O_EXCL``: never someone else's).

        Named by pid and a counter rather than ``tempfile.mkstemp``'s random
        name: mkstemp seeds a fresh random generator in every new process, and a
        buyer writes once in its life, inside the lock.
        """
        path = os.fspath(self.path)
        head, name = os.path.split(path)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = os.path.join(head, f".{name}.{os.getpid()}-{next(_TEMP_SERIAL)}.tmp")
            try:
                return os.open(tmp, flags, 0o600), tmp
            except FileExistsError:
                continue  # left by a killed writer that had this pid: take the next name

    def _mode(self) -> int:
        try:
            return stat.S_IMODE(os.stat(self.path).st_mode)
        except OSError:
            return 0o644  # a new data.json: what open('w') gives under the usual umask

    def reset(self, count: int) -> Path | None:
        """Put ``count`` tickets in data.json (``--tickets``), creating it if needed.

        If the file exists but is unreadable, it is first copied to a backup
        beside it, whose path is returned, so a reset never destroys data.
        """
        if not 0 <= count <= MAX_TICKETS:
            raise ValueError(f"tickets must be 0..{MAX_TICKETS}, got {count}")
        backup = None
        if self.path.is_dir():
            raise StoreCorrupted(str(self.path), "is a directory, not a file")
        if self.path.exists():
            try:
                self.read()
            except StoreCorrupted:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                backup = self.path.with_name(f"{self.path.name}.bak-{stamp}-{os.getpid()}")
                try:
                    shutil.copy2(self.path, backup)
                except OSError as exc:
                    raise StoreCorrupted(
                        str(self.path), f"is unreadable and could not be backed up ({exc.strerror})"
                    ) from None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A writer killed between its temp file and the replace (--crash) leaves
        # the temp file behind; a reset is the moment to sweep them.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        self.write_atomic(count)
        return backup
