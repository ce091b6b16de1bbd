"""Hostile input to the engine variants: whatever server address a user gives
(``--dsn``, ``--redis-url``, ``$LAB_DSN``, ``$LAB_REDIS_URL``) or whatever
``lab matrix`` is asked, the answer is a result or exactly one ``lab: error:``
line on stderr with exit 2 -- never a traceback, a hang or a process left behind.

Each generated command runs ``python -m lab`` in a subprocess of its own session,
with a timeout, so a hang is a failure (not a stuck suite) and any process it
leaves is found by its session id. Arguments are passed as bytes, so a lone
surrogate reaches the lab as the undecodable bytes a shell would give it; a NUL
cannot be in an argv or an environment at all, so those few run in-process.

No generated address may reach a real server by accident: hosts are 127.0.0.1
on a port that refuses, a reserved ``.invalid`` name (RFC 2606: it never
resolves), or a private server a test starts itself; libpq's defaults
(``$PGHOST``, ``$PGPORT``) point at the refusing port too.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg
import pytest
import redis
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from lab.stores._servers import PrivateServer, start_postgres, start_redis
from lab.ui.cli import main
from tests.helpers import assert_session_empty, refusing_port

#: A generated command must have answered within this long (a run of 2 instant buyers
#: on a server that answers, or a refusal, takes well under a second).
ANSWER_S = 60.0
#: Generated commands that do reach a server buy this much, instantly.
SMALL = ["--buyers", "2", "--tickets", "1", "--latency", "0"]


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
        deadline=None,
    )


# ----------------------------------------------------------------------------- running lab


def as_bytes(text: str) -> bytes:
    """``text`` as the bytes an argv or environment holds: a lone surrogate from
    undecodable input goes back to its byte; any other surrogate is encoded as is
    (invalid UTF-8, which the lab then sees as undecodable bytes)."""
    try:
        return os.fsencode(text)
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def lab(
    argv: list[str], cwd: Path, closed_port: int, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``python -m lab ARGV`` in its own session: (exit status, stdout, stderr).

    Fails the test if it does not finish within :data:`ANSWER_S` or leaves a process.
    """
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LAB_", "PG", "REDIS")) and k != "TMPDIR"
    }
    environ |= {
        "TMPDIR": str(cwd),  # its run directories stay in the test's
        "PGHOST": "127.0.0.1",  # a DSN that names no server reaches no real one
        "PGPORT": str(closed_port),
        "PGCONNECT_TIMEOUT": "5",
        "COLUMNS": "200",
    }
    environ |= env or {}
    proc = subprocess.Popen(
        [os.fsencode(sys.executable), b"-m", b"lab", *map(as_bytes, argv)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=cwd,
        env={as_bytes(k): as_bytes(v) for k, v in environ.items()},
    )
    try:
        out, err = proc.communicate(timeout=ANSWER_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        raise AssertionError(f"lab {argv!r} did not answer within {ANSWER_S:g} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert_session_empty(proc.pid)  # nothing of the run outlived it
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def assert_refused(code: int, out: str, err: str, *words: str) -> None:
    """Exit 2 and one non-empty ``lab: error:`` line on stderr naming ``words``; no traceback."""
    assert "Traceback" not in out + err, err
    assert code == 2, (code, err)
    assert err.endswith("\n") and len(err.splitlines()) == 1, err
    assert err.startswith("lab: error: ") and err.strip() != "lab: error:", err
    for word in words:
        assert word in err, err


def assert_answered(code: int, out: str, err: str, *words: str) -> None:
    """A result (exit 0, a server that let us in) or a refusal as :func:`assert_refused`."""
    event(f"exit {code}")
    if code == 0:
        assert "Traceback" not in out + err, err
    else:
        assert_refused(code, out, err, *words)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def closed_port() -> Iterator[int]:
    with refusing_port() as port:
        yield port


def example_dir(tmp_path: Path) -> Path:
    """A new directory for one generated example (its cwd and TMPDIR)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


# ----------------------------------------------------------------------------- generated addresses

#: Characters a shell can pass: anything but NUL (which the in-process test covers).
NOT_NUL = st.characters(exclude_characters="\x00")
ODD = [
    "\udcff",  # an undecodable byte
    "\ud800",  # a surrogate that is no byte at all (invalid UTF-8 in the argv)
    "\n",
    "\r",
    "\x1b[31m",
    "\u2028",
    "\x7f",
    "\t",
    "用户",
    "\u202e",
    " ",
    "%00",
    "%zz",
    "'",
    '"',
    "\\",
    "=",
    "@",
    ":",
    "/",
    "?",
    "#",
    "[",
    "]",
]
PORTS = st.one_of(
    st.sampled_from(["-1", "0", "65536", "99999", "1" + "0" * 30, "x", "", " 1", "1e3", "0x50"]),
    st.integers(-(2**70), 2**70).map(str),
)
INVALID_HOST = st.one_of(
    st.sampled_from(["h.invalid", "xn--zz.invalid", "-.invalid", "a..invalid", ".invalid"]),
    st.builds(lambda n: "a" * n + ".invalid", st.sampled_from([1, 63, 64, 300, 2000])),
    st.builds(lambda n: ("a" * 63 + ".") * n + "invalid", st.sampled_from([4, 31])),
    st.builds(lambda t: f"{t}.invalid", st.text(NOT_NUL, min_size=1, max_size=8)),
)
TEXT = st.text(NOT_NUL, max_size=30)
HUGE = st.builds(
    lambda head, n, tail: head + "a" * n + tail,
    st.sampled_from(["", "postgresql://", "redis://", "host=", "redis://u:"]),
    st.sampled_from([2040, 2049, 10_000, 100_000]),
    st.sampled_from(["", ".invalid", "@127.0.0.1:1/0"]),
)


def with_odd(base: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``base`` with an odd character spliced in somewhere."""
    return st.builds(
        lambda text, odd, where: text[:where] + odd + text[where:],
        base,
        st.sampled_from(ODD),
        st.integers(0, 40),
    )


def dsns(closed: int) -> st.SearchStrategy[str]:
    """PostgreSQL DSNs (URIs and key=value strings) that cannot reach a server."""
    hosts = st.one_of(INVALID_HOST, st.just("127.0.0.1"), st.just("[::1"), TEXT)
    ports = st.one_of(st.just(str(closed)), PORTS)
    uri = st.builds(
        lambda scheme, user, host, port, db, query: (
            f"{scheme}://{user}{host}{':' + port if port is not None else ''}/{db}{query}"
        ),
        st.sampled_from(["postgresql", "postgres", "POSTGRESQL", "pg", "http", "redis", "x"]),
        st.sampled_from(["", "u@", "u:pw@", ":@", "@@", "u:%zz@"]),
        hosts,
        st.one_of(st.none(), ports),
        st.one_of(st.just("postgres"), TEXT),
        st.sampled_from(
            [
                "",
                "?sslmode=require",
                "?sslmode=nonsense",
                "?connect_timeout=-1",
                "?connect_timeout=abc",
                "?target_session_attrs=x",
                "?options=-c%20lock_timeout%3Dx",
                "?passfile=/dev/zero",
                "?service=no-such-service",
                "?application_name=%0a%0d",
                "?x=y",
                "?host=h.invalid&host=h2.invalid",
            ]
        ),
    )
    keywords = st.builds(
        lambda host, port, rest: f"host={host} port={port} {rest}",
        st.one_of(INVALID_HOST, st.just("127.0.0.1"), st.just("'127.0.0.1'"), TEXT),
        ports,
        st.sampled_from(
            [
                "",
                "user=postgres dbname=postgres",
                "dbname='unterminated",
                "sslmode=verify-full sslrootcert=/dev/null",
                "passfile=/dev/zero password=",
                "hostaddr=999.1.1.1",
                "keepalives=x",
                "load_balance_hosts=random",
                "=",
                "nokey",
                "port=1 port=2",
            ]
        ),
    )
    closed_server = st.sampled_from(
        [
            f"postgresql://postgres@127.0.0.1:{closed}/postgres",
            f"host=127.0.0.1 port={closed} user=postgres",
            f"postgresql://postgres:wrong@127.0.0.1:{closed}/postgres?connect_timeout=2",
            f"postgresql://127.0.0.1:{closed},h.invalid:5432/postgres",
            f"host=localhost port={closed}",
        ]
    )
    return st.one_of(uri, keywords, closed_server, TEXT, HUGE, with_odd(uri), with_odd(keywords))


def redis_urls(closed: int) -> st.SearchStrategy[str]:
    """Redis URLs that cannot reach a server (never one that falls back to localhost:6379)."""
    hosts = st.one_of(INVALID_HOST, st.just("127.0.0.1"), st.just("[::1]"), st.just("[::1"))
    ports = st.one_of(st.just(str(closed)), PORTS)
    url = st.builds(
        lambda scheme, user, host, port, db, query: (
            f"{scheme}://{user}{host}{':' + port if port is not None else ''}{db}{query}"
        ),
        st.sampled_from(["redis", "rediss", "REDIS", "unix", "http", "valkey", "redis+sentinel"]),
        st.sampled_from(["", "u@", "u:pw@", ":pw@", "@@", ":%zz@", "default:@"]),
        hosts,
        st.one_of(st.just(str(closed)), ports),
        st.sampled_from(["", "/", "/0", "/15", "/16", "/-1", "/x", "/" + "9" * 40, "/0/1"]),
        st.sampled_from(
            [
                "",
                "?db=3",
                "?db=x",
                "?socket_timeout=abc",
                "?socket_timeout=-1",
                "?socket_connect_timeout=nan",
                "?socket_connect_timeout=1e999",
                "?health_check_interval=x",
                "?protocol=9",
                "?protocol=3",
                "?ssl_cert_reqs=foo",
                "?ssl_ca_certs=/dev/zero",
                "?decode_responses=maybe",
                "?retry_on_timeout=x",
                "?client_name=%0a",
                "?max_connections=-1",
                "?nosuch=1",
            ]
        ),
    )
    closed_server = st.sampled_from(
        [
            f"redis://127.0.0.1:{closed}/0",
            f"redis://:wrong@127.0.0.1:{closed}/0",
            f"rediss://127.0.0.1:{closed}",
            f"redis://localhost:{closed}/0",
            "unix:///nonexistent/redis.sock",
            "unix://",
        ]
    )
    return st.one_of(url, closed_server, TEXT, HUGE, with_odd(url)).filter(no_default_host)


def no_default_host(url: str) -> bool:
    """False for a redis:// URL with no host or port: redis-py would try localhost:6379,
    which may be a real server on a developer's machine."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return True  # refused before any connection
    if parts.scheme.lower() not in ("redis", "rediss"):
        return True
    return bool(parts.hostname) and port is not None and port != 0


# ----------------------------------------------------------------------------- properties


@pytest.mark.timeout(120)
@fuzz(30)
@given(data=st.data())
def test_generated_dsn_is_one_line(data: st.DataObject, work: Path, closed_port: int) -> None:
    dsn = data.draw(dsns(closed_port), label="dsn")
    argv = ["run", "pg-naive", "--dsn", dsn, *SMALL]
    code, out, err = lab(argv, example_dir(work), closed_port)
    assert_refused(code, out, err, "--dsn")
    assert "pw@" not in err and ":wrong@" not in err  # a password is never echoed


@pytest.mark.timeout(120)
@fuzz(30)
@given(data=st.data(), variant=st.sampled_from(["redis-lua", "cluster-lua"]))
def test_generated_redis_url_is_one_line(
    data: st.DataObject, variant: str, work: Path, closed_port: int
) -> None:
    url = data.draw(redis_urls(closed_port), label="url")
    argv = ["run", variant, "--redis-url", url, *SMALL]
    code, out, err = lab(argv, example_dir(work), closed_port)
    assert_refused(code, out, err, "--redis-url")
    assert ":wrong@" not in err and ":pw@" not in err


@pytest.mark.timeout(120)
@fuzz(25)
@given(data=st.data(), variant=st.sampled_from(["pg-naive", "redis-lua", "cluster-lua"]))
def test_generated_server_in_the_environment_is_one_line(
    data: st.DataObject, variant: str, work: Path, closed_port: int
) -> None:
    """$LAB_DSN / $LAB_REDIS_URL take the options' path (and their limits)."""
    if variant == "pg-naive":
        name, value = "LAB_DSN", data.draw(dsns(closed_port), label="LAB_DSN")
    else:
        name, value = "LAB_REDIS_URL", data.draw(redis_urls(closed_port), label="LAB_REDIS_URL")
    assume(value.strip())  # empty counts as unset: a private server would start
    argv = ["run", variant, *SMALL]
    code, out, err = lab(argv, example_dir(work), closed_port, env={name: value})
    assert_refused(code, out, err)
    assert name in err or ("--dsn" if name == "LAB_DSN" else "--redis-url") in err, err


#: (variant, an option it does not take): no server at all, or the other engine's option.
NOT_ITS_OPTION = [
    ("naive", "--dsn"),
    ("naive", "--redis-url"),
    ("sqlite-naive", "--dsn"),
    ("sqlite-naive", "--redis-url"),
    ("pg-naive", "--redis-url"),
    ("redis-lua", "--dsn"),
    ("cluster-lua", "--dsn"),
]


@pytest.mark.timeout(120)
@fuzz(25)
@given(data=st.data(), case=st.sampled_from(NOT_ITS_OPTION))
def test_a_server_option_the_variant_does_not_take_is_named(
    data: st.DataObject, case: tuple[str, str], work: Path, closed_port: int
) -> None:
    """The refusal names the option the user typed, whatever its value looks like."""
    variant, option = case
    value = data.draw(
        st.one_of(dsns(closed_port), redis_urls(closed_port), TEXT, HUGE), label="value"
    )
    argv = ["run", variant, option, value, *SMALL]
    code, out, err = lab(argv, example_dir(work), closed_port)
    assert_refused(code, out, err, option)


@pytest.mark.timeout(120)
@fuzz(40)
@given(value=st.one_of(TEXT, HUGE).map(lambda t: t[:100] + "\x00" + t[100:]))
def test_a_nul_in_a_server_address_is_one_line(
    value: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NUL cannot travel in an argv or an environment; in-process it is still refused."""
    for variant, option in (("pg-naive", "--dsn"), ("redis-lua", "--redis-url")):
        try:
            code: object = main(["run", variant, option, value, *SMALL])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        assert isinstance(code, int)
        assert_refused(code, out, err, option)
    for variant, name in (("pg-naive", "LAB_DSN"), ("cluster-lua", "LAB_REDIS_URL")):
        # monkeypatch.setenv (os.putenv) refuses a NUL itself: hand the CLI a plain mapping.
        monkeypatch.setattr(os, "environ", {**os.environ, name: value})
        code = main(["run", variant, *SMALL])
        out, err = capsys.readouterr()
        assert_refused(code, out, err, name)
        monkeypatch.undo()


# ----------------------------------------------------------------------------- lab matrix

ENGINE_NAMES = ["sqlite", "postgres", "redis", "redis-cluster"]


@st.composite
def matrix_argv(draw: st.DrawFn) -> list[str]:
    """``lab matrix`` options; a command valid in every part runs only SQLite, 1 buyer,
    once (2 s), so that no generated example starts a server or a long matrix."""
    argv = ["matrix"]
    names = draw(
        st.lists(
            st.one_of(st.sampled_from([*ENGINE_NAMES, "SQLite", " sqlite", "pg", ""]), TEXT),
            min_size=0,
            max_size=4,
        )
    )
    engines = draw(st.one_of(st.just(",".join(names)), with_odd(st.just(",".join(names))), HUGE))
    if {n.strip() for n in engines.split(",") if n.strip()} <= set(ENGINE_NAMES) and (
        engines.strip(", ") != "sqlite"
    ):
        engines += ",nope"  # every name an engine: keep it small (SQLite only) or refused
    argv += ["--engines", engines]
    wrong = st.one_of(
        st.sampled_from(["0", "-1", "65", "101", "1e3", "nan", "", " 1", "1_0", "9" * 5000]),
        TEXT,
    )
    argv += ["--buyers", draw(st.one_of(st.just("1"), wrong))]
    argv += ["--repeat", draw(st.one_of(st.just("1"), wrong))]
    if draw(st.booleans()):
        argv += ["--seed", draw(st.one_of(st.sampled_from(["0", "7", str(2**63), "-1"]), wrong))]
    paths = st.one_of(
        st.sampled_from(
            [
                "out.md",
                "out.html",
                "sub",
                "fifo",
                "nosuchdir/x",
                "/dev/null",
                "/dev/full",
                "/proc/self/status",
                ".",
                "x" * 300,
                "sub/" + "y" * 5000,
            ]
        ),
        TEXT.filter(bool),
        with_odd(st.just("out.md")),
    )
    for option in ("--markdown", "--html"):
        if draw(st.booleans()):
            argv += [option, draw(paths)]
    if draw(st.booleans()):
        argv.append("--lockstep")
    return argv


@pytest.mark.timeout(120)
@fuzz(25)
@given(argv=matrix_argv())
def test_generated_matrix_options_are_answered(
    argv: list[str], work: Path, closed_port: int
) -> None:
    where = example_dir(work)
    (where / "sub").mkdir()
    os.mkfifo(where / "fifo")
    code, out, err = lab(argv, where, closed_port)
    assert_answered(code, out, err)
    if code == 0:  # it ran: only the files it was asked for appeared
        asked = {Path(v).name for o, v in itertools.pairwise(argv) if o.startswith("--")}
        assert {p.name for p in where.iterdir()} - {"sub", "fifo"} <= asked | {
            p.name for p in where.iterdir() if p.name.startswith("lab-")
        }


# ----------------------------------------------------------------------------- real servers


@pytest.fixture
def guarded_postgres(tmp_path: Path) -> Iterator[PrivateServer]:
    """A private PostgreSQL where role ``ghost`` must give its password ``right``."""
    (tmp_path / "pg-server").mkdir()
    server = start_postgres(tmp_path / "pg-server", timeout=60.0)
    try:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE ROLE ghost LOGIN PASSWORD 'right'")
            row = conn.execute("SELECT current_setting('hba_file')").fetchone()
            assert row is not None
            hba = Path(row[0])
            hba.write_text(
                "host all ghost 127.0.0.1/32 scram-sha-256\n"
                "host all ghost ::1/128 scram-sha-256\n" + hba.read_text()
            )
            conn.execute("SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop()


@pytest.fixture
def guarded_redis(tmp_path: Path) -> Iterator[PrivateServer]:
    """A private Redis that wants the password ``right``."""
    (tmp_path / "redis-server").mkdir()
    server = start_redis(tmp_path / "redis-server", timeout=30.0)
    try:
        client = redis.Redis.from_url(server.url, socket_timeout=10)
        client.config_set("requirepass", "right")
        client.close()
        yield server
    finally:
        server.stop()


PASSWORDS = st.one_of(
    TEXT, st.sampled_from(["", "Right", "right ", "wrong", "x" * 1000, "righ\udcfft"])
).filter(lambda p: p != "right")


@pytest.mark.timeout(120)
@fuzz(12)
@given(password=PASSWORDS, as_uri=st.booleans())
def test_wrong_password_to_a_real_postgres_is_one_line(
    password: str,
    as_uri: bool,
    guarded_postgres: PrivateServer,
    work: Path,
    closed_port: int,
) -> None:
    host, port = guarded_postgres.startup_nodes[0]
    if as_uri:
        dsn = f"postgresql://ghost:{quote(as_bytes(password))}@{host}:{port}/postgres"
    else:
        escaped = password.replace("\\", "\\\\").replace("'", "\\'")
        dsn = f"host={host} port={port} user=ghost dbname=postgres password='{escaped}'"
    code, out, err = lab(["run", "pg-naive", "--dsn", dsn, *SMALL], example_dir(work), closed_port)
    assert_refused(code, out, err, "--dsn")
    if len(password) > 3 and password.isprintable():
        assert password not in err, "the password was echoed"


@pytest.mark.timeout(120)
@fuzz(12)
@given(
    password=PASSWORDS,
    case=st.tuples(
        st.sampled_from(["", "default", "ghost"]), st.sampled_from(["redis-lua", "cluster-lua"])
    ),
)
def test_wrong_password_to_a_real_redis_is_one_line(
    password: str,
    case: tuple[str, str],
    guarded_redis: PrivateServer,
    work: Path,
    closed_port: int,
) -> None:
    user, variant = case
    host, port = guarded_redis.startup_nodes[0]
    secret = quote(as_bytes(password), safe="")
    url = f"redis://{user}:{secret}@{host}:{port}/0"
    code, out, err = lab(
        ["run", variant, "--redis-url", url, *SMALL], example_dir(work), closed_port
    )
    assert_refused(code, out, err, "--redis-url")
    if len(secret) > 3:
        assert secret not in err, "the password was echoed"


def test_a_run_on_a_users_postgres_leaves_their_tables_alone(
    tmp_path: Path, closed_port: int
) -> None:
    """Their tables -- even ones named like the lab's, in another schema -- are untouched.

    (The Redis counterpart, an unrelated key, is tests/test_engine_redis.py's
    test_runner_leaves_the_users_keys_alone and test_the_lab_touches_only_its_own_keys.)
    """
    (tmp_path / "pg").mkdir()
    server = start_postgres(tmp_path / "pg", timeout=60.0)
    try:
        with psycopg.connect(server.dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, ticket_num int NOT NULL)")
            conn.execute("INSERT INTO tickets VALUES (1, 42)")
            conn.execute("CREATE SCHEMA theirs")
            conn.execute("CREATE TABLE theirs.lab_tickets (id int, note text)")
            conn.execute("INSERT INTO theirs.lab_tickets VALUES (7, 'keep me')")
        argv = ["run", "pg-naive", "--dsn", server.dsn, "--buyers", "4", "--tickets", "2"]
        code, out, err = lab([*argv, "--latency", "0"], tmp_path, closed_port)
        assert code in (0, 1), err  # 1: --check-like verdicts are not asked; a race is fine
        assert "Traceback" not in out + err
        with psycopg.connect(server.dsn, connect_timeout=10) as conn:
            assert conn.execute("SELECT id, ticket_num FROM tickets").fetchall() == [(1, 42)]
            assert conn.execute("SELECT id, note FROM theirs.lab_tickets").fetchall() == [
                (7, "keep me")
            ]
            tables = set(
                conn.execute(
                    "SELECT schemaname || '.' || tablename FROM pg_tables "
                    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
                ).fetchall()
            )
            assert tables == {
                ("public.tickets",),
                ("theirs.lab_tickets",),
                ("public.lab_tickets",),
                ("public.lab_orders",),
            }
    finally:
        server.stop()


def test_a_url_cannot_lift_the_labs_own_timeouts(work: Path, closed_port: int) -> None:
    """``?socket_timeout=1e9`` against a server that accepts and never answers: redis-py
    would wait that long, the lab strips it and answers within its own bound (one line)."""
    import socket  # noqa: PLC0415

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections queue in the backlog; nothing ever replies
        port = silent.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0?socket_timeout=1e9&socket_connect_timeout=1e9"
        code, out, err = lab(
            ["run", "redis-lua", "--buyers", "1", "--latency", "0", "--redis-url", url],
            work,
            closed_port,
        )
    assert_refused(code, out, err, "--redis-url")
