"""The ticket server against hostile input: every byte, every field, every token.

What must hold (docs/protocol.md, "Hostile input"): any frame gets a
``bad_request`` or ``unauthorized`` reply, or a hang-up, and never a handler
traceback; an unusable ``--token`` / ``$LAB_TOKEN`` is one line and exit 2;
``--connect`` text is an address or one line; and while other clients hold
every slot, a well-behaved client is still served.

Inputs come from hypothesis (derandomized in conftest.py). One server per
test, not per example: each example opens its own connection, sends its
bytes, half-closes (so the server never waits out a frame timeout for a
truncated frame) and reads every reply until the server hangs up.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lab.core.errors import LabError, UsageError
from lab.net.server import ServerConfig, TicketServer
from lab.net.wire import (
    MAX_MESSAGE_BYTES,
    MAX_TOKEN_CHARS,
    Client,
    check_reply,
    check_token,
    parse_address,
    recv_message,
)
from lab.stores.jsonfile import Store
from lab.ui.cli import main

#: Bound on every socket operation and on every wait below; never an assertion about speed.
TIMEOUT = 10.0
TOKEN = "s3cret"
#: The outcomes a hostile request may get.
REFUSALS = {"bad_request", "unauthorized"}
# The server is shared by all examples of a test, so hypothesis must not fret
# that a function-scoped fixture is not reset between them.
SHARED = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# -- fixtures: one server per test, and a record of anything that escaped a thread ----------


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every exception that escapes a thread during the test (a handler traceback)."""
    escaped: list[str] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        escaped.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}")

    monkeypatch.setattr(threading, "excepthook", hook)
    return escaped


@pytest.fixture
def server(
    tmp_path: Path, thread_errors: list[str], capfd: pytest.CaptureFixture[str]
) -> Iterator[TicketServer]:
    """A token-protected safe server on port 0; checked for escaped errors once it stops."""
    store = Store(tmp_path / "data.json")
    store.reset(1_000_000)
    log: list[str] = []
    # A logging server, so --verbose lines with hostile buyer names are exercised too.
    srv = TicketServer(
        ServerConfig(store=store, token=TOKEN, max_latency=0.0, idle_timeout=TIMEOUT),
        log=log.append,
    )
    srv.start()
    try:
        yield srv
        # The server must still answer a well-behaved client after all that.
        with Client(*srv.address, token=TOKEN, timeout=TIMEOUT) as c:
            assert c.search() >= 0
    finally:
        srv.stop()
    assert not thread_errors, f"a server thread raised: {thread_errors}"
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    ledger = srv.stats()
    assert ledger["remaining"] == 1_000_000 - ledger["sold"]  # nothing sold twice or lost


def exchange(address: tuple[str, int], data: bytes) -> list[dict[str, Any]]:
    """Send ``data`` on a fresh connection, half-close, and return every reply until hang-up.

    A reply that is not a decodable frame fails the test (ProtocolError
    propagates): the server must only ever send well-formed frames.
    """
    replies: list[dict[str, Any]] = []
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # EOF: a truncated frame is cut short now
        except OSError:  # the server hung up first (e.g. after an oversized header)
            pass
        while True:
            try:
                reply = recv_message(sock, TIMEOUT)
            except ConnectionError:  # a reset is a hang-up too
                return replies
            if reply is None:
                return replies
            replies.append(reply)


def assert_refused_or_closed(replies: list[dict[str, Any]]) -> None:
    for reply in replies:
        assert reply.get("ok") is False, reply
        assert reply.get("error") in REFUSALS, reply
        assert isinstance(reply.get("message"), str), reply


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


# -- strategies -------------------------------------------------------------------------------

#: Numbers as a JSON text may spell them, including what Python's json reads as inf,
#: nan or a digit-limit ValueError.
WEIRD_NUMBERS = st.sampled_from(
    [
        "1e999",
        "-1e999",
        "-0",
        "-0.0",
        "0e-99999999999",
        "1E+99999999999999999999",
        "NaN",
        "Infinity",
        "-Infinity",
        "1" + "0" * 5000,  # 10**5000: over int()'s digit limit
        "9" * 4300,
        "-" + "9" * 4301,
        "1.5e-324",
        "123456789012345678901234567890.5e-7",
        "true",
        "false",
        "null",
    ]
)
NUMBERS = st.one_of(
    WEIRD_NUMBERS,
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,25})?\Z"),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
#: One piece of a JSON string's text: a plain character, a lone surrogate escape, or any escape.
STRING_PIECES = st.one_of(
    st.characters(codec="utf-8", exclude_characters='"\\', min_codepoint=0x20),
    st.integers(0xD800, 0xDFFF).map(lambda n: f"\\u{n:04x}"),  # lone surrogates, as \udXXX
    st.integers(0, 0xFFFF).map(lambda n: f"\\u{n:04X}"),
    st.sampled_from(["\\n", "\\t", '\\"', "\\\\", "\\/", "\\u0000"]),
)
STRINGS = st.lists(STRING_PIECES, max_size=20).map(lambda pieces: '"' + "".join(pieces) + '"')
KEYS = st.one_of(STRINGS, st.sampled_from(['"op"', '"token"', '"latency"', '"buyer"']))


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(children, max_size=5).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.lists(st.tuples(KEYS, children), max_size=5).map(
            lambda kvs: "{" + ",".join(f"{k}:{v}" for k, v in kvs) + "}"
        ),
    )


#: Any JSON value, as raw text (so it can hold what json.dumps never writes).
JSON_TEXT = st.recursive(NUMBERS | STRINGS, _containers, max_leaves=20)
#: Objects shaped like requests, so the hostile values reach every field's check.
REQUEST_TEXT = st.fixed_dictionaries(
    {},
    optional={
        '"op"': st.one_of(st.sampled_from(['"search"', '"buy"', '"stats"']), JSON_TEXT),
        '"token"': st.one_of(st.just(json.dumps(TOKEN)), JSON_TEXT),
        '"latency"': st.one_of(NUMBERS, JSON_TEXT),
        '"buyer"': st.one_of(STRINGS, JSON_TEXT),
    },
).map(lambda d: "{" + ",".join(f"{k}:{v}" for k, v in d.items()) + "}")


# -- frames and messages ----------------------------------------------------------------------


@SHARED
@given(
    data=st.one_of(
        st.binary(max_size=64),
        # a header announcing any length, then a body of any (usually different) size
        st.builds(
            lambda n, body: struct.pack("!I", n) + body,
            st.one_of(st.integers(0, 2**32 - 1), st.integers(0, 80)),
            st.binary(max_size=80),
        ),
        # a valid frame cut short anywhere
        st.builds(
            lambda body, cut: frame(body)[:cut],
            st.binary(min_size=1, max_size=40),
            st.integers(0, 44),
        ),
        st.just(struct.pack("!I", MAX_MESSAGE_BYTES + 1)),
        st.just(struct.pack("!I", 2**32 - 1) + b"x" * 100),
    )
)
def test_any_bytes_get_a_refusal_or_a_hang_up(server: TicketServer, data: bytes) -> None:
    assert_refused_or_closed(exchange(server.address, data))


@SHARED
@given(text=JSON_TEXT)
def test_any_json_value_gets_a_refusal_or_a_hang_up(server: TicketServer, text: str) -> None:
    # surrogatepass: the raw text may hold no surrogates itself, but never fail the test here
    body = text.encode("utf-8", "surrogatepass")
    assume(len(body) <= MAX_MESSAGE_BYTES)
    assert_refused_or_closed(exchange(server.address, frame(body)))


@SHARED
@given(text=REQUEST_TEXT)
def test_any_request_field_is_answered_or_refused(server: TicketServer, text: str) -> None:
    """With the right token a request may succeed; otherwise a refusal, never a crash."""
    body = text.encode("utf-8")
    for reply in exchange(server.address, frame(body)):
        if reply.get("ok") is True:
            check_reply(reply, reply["op"])  # a success must be a well-formed one
        else:
            assert_refused_or_closed([reply])


@SHARED
@given(
    token=st.one_of(
        st.text(max_size=MAX_TOKEN_CHARS + 20),
        st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=5),
        st.just(TOKEN + "\x00"),
        st.just("\x00" * len(TOKEN)),
    )
)
def test_any_token_in_a_request_is_unauthorized_or_bad(server: TicketServer, token: str) -> None:
    assume(token != TOKEN)
    # json.dumps escapes lone surrogates as \udXXX, so the server's decoder produces them again.
    body = json.dumps({"op": "buy", "token": token}).encode("ascii")
    replies = exchange(server.address, frame(body))
    assert_refused_or_closed(replies)
    assert replies, "a bad token must be answered before the hang-up"


def test_tokens_that_differ_only_after_encoding_are_refused(server: TicketServer) -> None:
    """Lone surrogates and NUL next to the real token: refused, and no purchase happens."""
    for token in ("\ud800", TOKEN + "\udfff", "\udcff" * 300, TOKEN + "\x00", "é" * 256):
        body = json.dumps({"op": "buy", "token": token}).encode("ascii")
        assert_refused_or_closed(exchange(server.address, frame(body)))
    assert server.stats()["sold"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"op": "search", "\\ud800": 1}',  # an unknown key the refusal quotes
        b'{"op": "\\udfff"}',  # an op the refusal quotes
        b'{"op": "search", "' + b"k" * 60_000 + b'": 1}',  # a refusal quoting a long key
        b'{"op": "buy", "latency": "\\udc80"}',
        b"[" * 60_000,  # nested past the recursion limit
        b'{"op": ' + b"[" * 900 + b"]" * 900 + b"}",  # just under it, and quoted back
        b'{"op": "buy", "latency": 1' + b"0" * 5000 + b"}",  # 10**5000
    ],
    ids=["key", "op", "long-key", "latency", "too-deep", "deep-op", "huge-int"],
)
def test_refusals_quoting_hostile_text_are_still_sent(server: TicketServer, body: bytes) -> None:
    replies = exchange(server.address, frame(body))
    assert [r["error"] for r in replies] == ["bad_request"]


# -- tokens given at start ------------------------------------------------------------------

UNUSABLE_TOKENS = ["", "\ud800", "ab\udcffcd", "a\x00b", "tab\there", "line\nbreak", "x" * 257]


@settings(max_examples=300, deadline=None)
@given(token=st.text(max_size=MAX_TOKEN_CHARS + 40))
def test_check_token_accepts_or_refuses_in_one_line(token: str) -> None:
    try:
        accepted = check_token(token, "--token")
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.startswith("--token")
        # A secret is never echoed back, not even a refused one.
        assert len(token) < 3 or token not in message
    else:
        assert accepted == token
        accepted.encode("ascii" if accepted.isascii() else "utf-8")  # usable on the wire


@pytest.mark.parametrize("token", UNUSABLE_TOKENS, ids=repr)
def test_lab_serve_refuses_an_unusable_token_in_one_line(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 1}')
    code = main(["serve", "--port", "0", "--data", str(data), "--token", token])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "--token" in err
    assert "Traceback" not in out + err


def _in_environ(token: str) -> bool:
    """Whether the environment can hold ``token``: no NUL, and surrogates only for raw bytes."""
    try:
        token.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return bool(token) and "\x00" not in token


@pytest.mark.parametrize("token", [t for t in UNUSABLE_TOKENS if _in_environ(t)], ids=repr)
def test_lab_serve_refuses_an_unusable_lab_token(
    token: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lone surrogate in the environment is what os.environ makes of a byte that is not UTF-8.
    monkeypatch.setenv("LAB_TOKEN", token)
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 1}')
    code = main(["serve", "--port", "0", "--data", str(data)])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "LAB_TOKEN" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("token", "connect"),
    [
        *(pytest.param(t, True, id=f"connect-{t!r}") for t in UNUSABLE_TOKENS),
        *(pytest.param(t, False, id=f"own-server-{t!r}") for t in UNUSABLE_TOKENS),
    ],
)
def test_lab_run_server_refuses_an_unusable_token_in_one_line(
    token: str, connect: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --connect to a port nobody listens on: the token must be refused before any connect.
    target = ["--connect", "127.0.0.1:9"] if connect else []
    code = main(
        [
            *("run", "server", "--buyers", "2", "--tickets", "1", "--token", token),
            *(*target, "--data", str(tmp_path / "data.json")),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2
    assert "token" in err.lower()
    assert "Traceback" not in out + err


def test_client_and_server_config_refuse_an_unusable_token(tmp_path: Path) -> None:
    for token in UNUSABLE_TOKENS:
        with pytest.raises(LabError):
            Client("127.0.0.1", 9, token=token)
        with pytest.raises(LabError):
            ServerConfig(store=Store(tmp_path / "data.json"), token=token)


# -- --connect addresses ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda host, port: f"{host}:{port}",
            st.text(max_size=30),
            st.one_of(st.integers().map(str), st.text(max_size=8), st.just("1" * 5000)),
        ),
        st.builds(lambda host: f"[{host}]:8080", st.text(max_size=30)),
    )
)
def test_parse_address_is_an_address_or_one_line(text: str) -> None:
    try:
        host, port = parse_address(text)
    except ValueError as exc:
        problem = str(exc)
    else:
        problem = ""
    if problem:
        assert "\n" not in problem and len(problem) < 300
        return
    assert 1 <= port <= 65535
    assert host and host.isprintable()
    host.encode("idna")  # what socket.getaddrinfo will do with it: it must not fail
    # And a Client built from it reports, never raises anything but a LabError.
    with pytest.raises(LabError):
        Client(host, port, timeout=0.01, connect_timeout=0.01).search()


def wait_for(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until true; fail after TIMEOUT (a bound, not a speed check)."""
    done = threading.Event()
    for _ in range(int(TIMEOUT / 0.01)):
        if condition():
            return
        done.wait(0.01)
    pytest.fail("condition not reached within the timeout")


# -- a full house: a well-behaved client is still served ---------------------------------------


def test_a_client_is_served_while_idle_connections_hold_every_slot(
    tmp_path: Path, thread_errors: list[str]
) -> None:
    """Every slot held by silent connections (idle timeout far away): the newcomer gets in.

    The server hangs up connections open longer than ``evict_after`` while
    someone waits for a slot; the bound here is generous and is not a speed test.
    """
    store = Store(tmp_path / "data.json")
    store.reset(1)
    config = ServerConfig(
        store=store, max_connections=3, idle_timeout=600.0, frame_timeout=600.0, evict_after=0.2
    )
    with TicketServer(config) as srv:
        hogs = [socket.create_connection(srv.address, timeout=TIMEOUT) for _ in range(3)]
        try:
            hogs[0].sendall(b"\x00\x00")  # one of them in the middle of a frame, forever
            with Client(*srv.address, timeout=30.0) as c:
                assert c.buy() == ("bought", 1)
            assert srv.stats()["evicted"] >= 1
        finally:
            for hog in hogs:
                hog.close()
    assert not thread_errors


def test_a_client_is_served_while_chatty_connections_hold_every_slot(tmp_path: Path) -> None:
    """Slot holders that keep sending requests (never idle) are hung up between two of them."""
    store = Store(tmp_path / "data.json")
    store.reset(1)
    config = ServerConfig(store=store, max_connections=2, idle_timeout=600.0, evict_after=0.2)
    stop = threading.Event()
    hung_up: list[str] = []

    def chatter() -> None:
        with Client(*srv.address, timeout=TIMEOUT) as c:
            try:
                while not stop.is_set():
                    c.stats()
            except LabError as exc:  # hung up: what the server does to old slot holders
                hung_up.append(str(exc))

    with TicketServer(config) as srv:
        threads = [threading.Thread(target=chatter) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: srv.stats()["active_connections"] == 2)  # both hold a slot
            with Client(*srv.address, timeout=30.0) as c:
                assert c.buy() == ("bought", 1)
        finally:
            stop.set()
            for t in threads:
                t.join(TIMEOUT)
    assert hung_up, "a chatty connection kept its slot while a buyer waited"
