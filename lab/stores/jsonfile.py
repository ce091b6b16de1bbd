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
non-negative ``ticket_num`` is a :class:`~lab.core.errors.StoreCorrupted` that
names the file and the problem.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from lab.core.errors import DataFileBusy, StoreCorrupted, TornRead
from lab.core.model import MAX_TICKETS
from lab.core.paths import describe_mode
from lab.stores.protocol import Snapshot, StorePlace

__all__ = ["MAX_TICKETS", "Claim", "Store", "open_store"]

#: data.json is a few bytes; refuse to slurp something huge by mistake.
_MAX_BYTES = 64 * 1024
#: Numbers this process's temporary files (``.data.json.<pid>-<n>.tmp``).
_TEMP_SERIAL = itertools.count()


class Claim:
    """One run's (or one server's) hold on a data.json: an ``flock`` on ``data.json.run.lock``.

    The lock belongs to the open file description, and forked buyers inherit
    the descriptor, so the claim lasts until the *last* process holding it is
    gone: a buyer orphaned by a killed runner still holds it, and a second run
    is refused until it has exited. That is why :meth:`close` only closes
    this process's descriptor and never calls ``LOCK_UN``, which would release
    the lock for the children too.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # The runner used to hold a FileLock; the old name still works.
    release = close


class Store:
    """data.json at ``path``, plus the lock file beside it.

    A symlinked data.json is read and written *through* to its target: the
    link itself is never replaced (an atomic write replaces the target, in
    the target's directory). A data.json with more than one hard link is
    refused, because an atomic replace would silently split it from its other
    names. Anything that is not a regular file is refused before it is opened.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, step: Callable[[str], None] | None = None
    ) -> None:
        # A buyer rebuilds its Store after the fork; reusing the Path skips pathlib's
        # parsing, which in a fresh child means page faults on every object it touches.
        self.path = path if isinstance(path, Path) else Path(path)
        # Called mid-write ("mid-write") so a buyer can be killed at the worst
        # moment (``--crash``); a no-op unless a buyer installs it.
        self._step = step
        #: The temporary file an atomic write has made and not yet renamed (its
        #: exact name, so a crash can be cleaned up without guessing).
        self.temp_in_flight: str | None = None

    def __getstate__(self) -> dict[str, object]:
        # The step hook belongs to one buyer process; never pickle it across.
        return {"path": self.path, "_step": None, "temp_in_flight": None}

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @property
    def target(self) -> Path:
        """The file really read and written: ``path`` with symlinks resolved."""
        if os.path.islink(self.path):
            return Path(os.path.realpath(self.path))
        return self.path

    @property
    def lock_path(self) -> Path:
        """Where the ``locked`` variant's file lock lives: beside data.json, never inside it.

        Beside the *target*, so two names for one file share one lock.
        """
        target = self.target
        return target.with_name(target.name + ".lock")

    def check_usable(self, *, must_exist: bool) -> None:
        """Refuse a data.json that is not a regular file, before anything touches it.

        Allowed: an existing regular file with one link (through symlinks), or,
        unless ``must_exist``, a new name in an existing directory.

        Raises:
            StoreCorrupted: one line naming the path and what it is.
        """
        name = str(self.path)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if os.path.islink(self.path):
                raise StoreCorrupted(name, "is a symbolic link to nothing") from None
            if must_exist:
                raise StoreCorrupted(name, "does not exist") from None
            parent = self.path.parent
            if not parent.is_dir():
                raise StoreCorrupted(name, "is in a directory that does not exist") from None
            return
        except (OSError, ValueError) as exc:
            raise StoreCorrupted(name, f"cannot be used: {_why(exc)}") from None
        if not stat.S_ISREG(st.st_mode):
            raise StoreCorrupted(name, f"is {describe_mode(st.st_mode)}, not a regular file")
        if st.st_nlink > 1:
            raise StoreCorrupted(
                name,
                f"has {st.st_nlink} hard links; an atomic write would split it from the others",
            )

    def claim(self) -> Claim:
        """Take ``data.json.run.lock`` for one run or server, or refuse at once.

        Two runs (or a run and a ``lab serve``) on one data.json would sell the
        same tickets without knowing of each other, and tally each other's sales.
        The claim is keyed on the file's identity: its lock lives beside the
        symlink-resolved target (so two names for one file meet at one lock,
        and hard-linked files are refused by :meth:`check_usable`). The caller
        closes the returned :class:`Claim` when it is done.

        Raises:
            DataFileBusy: another run or server holds it.
            StoreCorrupted: data.json or the lock file cannot be used.
        """
        self.check_usable(must_exist=False)
        target = self.target
        lock = target.with_name(target.name + ".run.lock")
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(lock, flags, 0o644)
        except OSError as exc:
            raise StoreCorrupted(
                str(self.path), f"cannot be used: {_why(exc)} (its lock file {lock.name})"
            ) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreCorrupted(str(self.path), f"its lock file {lock} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DataFileBusy(
                    f"{self.path}: another lab run or server (or a buyer of one) is using this file"
                ) from None
            # Forked buyers inherit it: the claim outlives a killed runner until they exit.
            os.set_inheritable(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return Claim(fd, lock)

    # -- reading ---------------------------------------------------------------

    def read(self) -> int:
        """Return ``ticket_num``; raise :class:`StoreCorrupted` naming the problem."""
        return self.parse(self._read_text())

    def read_text(self) -> str:
        """The file's text as it is, for showing the user what it holds."""
        return self._read_text()

    def _read_text(self) -> str:
        name = str(self.path)
        # Never open what is not a regular file: opening a device can have effects of
        # its own (a watchdog, a tape's rewind), and opening a FIFO waits for a writer.
        with contextlib.suppress(OSError, ValueError):
            mode = os.stat(self.path).st_mode
            if not stat.S_ISREG(mode):
                raise StoreCorrupted(name, f"is {describe_mode(mode)}, not a regular file")
        # O_NONBLOCK as well, in case the path is swapped for a FIFO after that check.
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            raise StoreCorrupted(name, "does not exist") from None
        except IsADirectoryError:
            raise StoreCorrupted(name, "is a directory, not a regular file") from None
        except PermissionError:
            raise StoreCorrupted(name, "cannot be read: permission denied") from None
        except (OSError, ValueError) as exc:
            raise StoreCorrupted(name, f"cannot be read: {_why(exc)}") from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise StoreCorrupted(name, f"is {describe_mode(mode)}, not a regular file")
            try:
                raw = os.read(fd, _MAX_BYTES + 1)
            except OSError as exc:
                raise StoreCorrupted(name, f"cannot be read: {_why(exc)}") from None
        finally:
            os.close(fd)
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
            raise TornRead(name, "is empty (read between another writer's truncate and its write?)")
        try:
            data = json.loads(text, object_pairs_hook=_no_repeated_keys)
        except _RepeatedKey as exc:
            # {"ticket_num": 1, "ticket_num": 5}: which is the inventory? Refuse to guess.
            raise StoreCorrupted(
                name, f"gives the key {exc.key!r} more than once; the count is ambiguous"
            ) from None
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
        """Replace data.json whole: temp file, fsync, ``os.replace``. Never torn.

        Through a symlink the *target* is replaced, never the link.
        """
        target = self.target
        fd, tmp = self._create_temp(target)
        self.temp_in_flight = tmp
        try:
            # The temp file is made 0600; keep data.json's own mode across the replace.
            os.fchmod(fd, self._mode(target))
            with os.fdopen(fd, "w", encoding="utf8") as f:
                f.write(self._encode(count))
                f.flush()
                os.fsync(f.fileno())
            if self._step is not None:
                self._step("mid-write")  # the new count is only in the temp file
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            self.temp_in_flight = None

    @staticmethod
    def _create_temp(target: Path) -> tuple[int, str]:
        """A new, private temporary file beside data.json (``O_EXCL``: never someone else's).

        Named by pid and a counter rather than ``tempfile.mkstemp``'s random
        name: mkstemp seeds a fresh random generator in every new process, and a
        buyer writes once in its life, inside the lock.
        """
        head, name = os.path.split(os.fspath(target))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        while True:
            tmp = os.path.join(head, f".{name}.{os.getpid()}-{next(_TEMP_SERIAL)}.tmp")
            try:
                return os.open(tmp, flags, 0o600), tmp
            except FileExistsError:
                continue  # someone else's file by that name: never touch it, take the next

    def remove_temps(self, names: list[str]) -> int:
        """Remove temporary files this lab's writers made and a crash left behind.

        ``names`` are the exact paths a killed writer reported (``temp_in_flight``);
        nothing is matched by pattern, so a file the lab did not make is never removed.
        Returns how many were removed.
        """
        head = os.path.dirname(os.fspath(self.target))
        removed = 0
        for tmp in names:
            if os.path.dirname(tmp) != head:
                continue  # not beside our data.json: not one of ours
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(tmp).st_mode):
                    os.unlink(tmp)
                    removed += 1
        return removed

    # -- the TicketStore contract (lab.stores.protocol) ------------------------------

    def for_buyer(self, step: Callable[[str], None]) -> Store:
        """This store as one buyer uses it: calling back at its own steps ("mid-write")."""
        return Store(self.path, step=step)

    def seed(self, tickets: int) -> None:
        """``--tickets``: :meth:`reset` (an unreadable file is backed up first)."""
        self.reset(tickets)

    def discard(self, leftovers: Sequence[str]) -> None:
        """Remove killed writers' temporary files, by the exact names they reported."""
        self.remove_temps(list(leftovers))

    def snapshot(self) -> Snapshot:
        """data.json at the end of a run: its count and text, or why it cannot be read."""
        text = ""
        try:
            text = self.read_text()
            return Snapshot(remaining=self.parse(text), text=text, where=str(self.path))
        except StoreCorrupted as exc:
            # The text, when it could be read, shows the learner what broke.
            return Snapshot(remaining=None, text=text, problem=exc.problem, where=str(self.path))

    @staticmethod
    def _mode(target: Path) -> int:
        try:
            return stat.S_IMODE(os.stat(target).st_mode)
        except OSError:
            return 0o644  # a new data.json: what open('w') gives under the usual umask

    def reset(self, count: int) -> Path | None:
        """Put ``count`` tickets in data.json (``--tickets``), creating it if needed.

        If the file exists but is unreadable, it is first copied to a backup
        beside it, whose path is returned, so a reset never destroys data.
        Anything but a regular file (or a new name in an existing directory)
        is refused before anything is read, copied or created.
        """
        if not 0 <= count <= MAX_TICKETS:
            raise ValueError(f"tickets must be 0..{MAX_TICKETS}, got {count}")
        self.check_usable(must_exist=False)
        backup = None
        target = self.target
        if target.exists():
            try:
                self.read()
            except StoreCorrupted:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                backup = target.with_name(f"{target.name}.bak-{stamp}-{os.getpid()}")
                try:
                    # copyfile, not copy2: the source is known to be a regular file, and
                    # the backup must be new (never overwrite a file of the same name).
                    with open(target, "rb") as src, open(backup, "xb") as dst:
                        shutil.copyfileobj(src, dst)
                except OSError as exc:
                    raise StoreCorrupted(
                        str(self.path),
                        f"is unreadable and could not be backed up ({_why(exc)})",
                    ) from None
        self.write_atomic(count)
        return backup


class _RepeatedKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise _RepeatedKey(key)
        seen[key] = value
    return seen


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, ValueError):
        return "the path holds a NUL byte"
    return type(exc).__name__


@contextlib.contextmanager
def open_store(place: StorePlace) -> Iterator[Store]:
    """data.json given with --data, or a fresh one in the run's directory."""
    if place.data is not None:
        yield Store(place.data)
    else:
        assert place.run_dir is not None, "a fresh data.json needs a run directory"
        yield Store(place.run_dir / "data.json")
