"""Paths a user hands the lab: only regular files are data, and reads are bounded.

Every path option (``--data``, ``--scenario``, ``--buyer``, ``--html``,
``--markdown``) goes through here *before* anything is opened for writing,
backed up, created beside it, or read. A device node, a FIFO, a socket or a
directory is refused with one line naming the option and what the path is.

Why ``O_NONBLOCK`` on every open: opening a FIFO for reading blocks until a
writer appears, so a plain ``open()`` of a FIFO hangs the lab. Checking with
``stat`` first is not enough on its own either: the path can be swapped
between the check and the open, so the open itself never blocks and the
opened file is checked again with ``fstat``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lab.core.errors import UsageError

__all__ = ["check_input_file", "check_output_path", "describe_mode", "read_input_file"]


def describe_mode(mode: int) -> str:
    """What kind of file a ``st_mode`` says this is, in a learner's words."""
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISREG, "a regular file"),
    )
    for test, name in kinds:
        if test(mode):
            return name
    return "not a regular file"


def _name(path: Path | str) -> str:
    # A path may hold any bytes (surrogate-escaped); show it without failing to print.
    return os.fsdecode(path).encode("utf-8", "backslashreplace").decode("utf-8")


def check_input_file(path: Path, option: str) -> os.stat_result:
    """Refuse ``path`` unless it is an existing regular file (symlinks are followed).

    Raises:
        UsageError: one line naming ``option``, the path and what is wrong.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError(f"{option} {_name(path)}: does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{option} {_name(path)}: cannot be used ({_why(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(
            f"{option} {_name(path)}: is {describe_mode(st.st_mode)}, not a regular file"
        )
    return st


def read_input_file(path: Path, option: str, max_bytes: int) -> bytes:
    """Read a regular file of at most ``max_bytes``, never blocking and never loading more.

    Raises:
        UsageError: not a regular file, unreadable, or larger than ``max_bytes``.
    """
    check_input_file(path, option)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{option} {_name(path)}: cannot be read ({_why(exc)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped after the check above
            raise UsageError(
                f"{option} {_name(path)}: is {describe_mode(st.st_mode)}, not a regular file"
            )
        if st.st_size > max_bytes:
            raise UsageError(
                f"{option} {_name(path)}: is {st.st_size} bytes; the limit is {max_bytes}"
            )
        try:
            raw = os.read(fd, max_bytes + 1)
        except OSError as exc:
            raise UsageError(f"{option} {_name(path)}: cannot be read ({_why(exc)})") from None
        if len(raw) > max_bytes:  # grew since the fstat (or /proc-like, with st_size 0)
            raise UsageError(f"{option} {_name(path)}: is larger than {max_bytes} bytes")
        return raw
    finally:
        os.close(fd)


def check_output_path(path: Path, option: str) -> None:
    """Refuse ``path`` unless it is a regular file or a new name in an existing directory.

    Nothing is created here: the caller writes the file once it has something
    to write, so a refused run leaves no empty report behind.

    Raises:
        UsageError: one line naming ``option`` and the path.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{option} {_name(path)}: cannot be used ({_why(exc)})") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(
                f"{option} {_name(path)}: is {describe_mode(st.st_mode)}, not a regular file"
            )
        return
    if os.path.islink(path):
        raise UsageError(f"{option} {_name(path)}: is a symbolic link to nothing")
    parent = Path(path).parent
    try:
        pst = os.stat(parent)
    except (OSError, ValueError):
        raise UsageError(f"{option} {_name(path)}: its directory does not exist") from None
    if not stat.S_ISDIR(pst.st_mode):
        raise UsageError(f"{option} {_name(path)}: its directory does not exist")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, ValueError):
        return "the path holds a NUL byte"
    return type(exc).__name__
