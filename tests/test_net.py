"""Framing and message validation (lab.net.wire), over socketpairs: no server, no ports."""

from __future__ import annotations

import json
import pickle
import socket
import struct
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.core.errors import LabError
from lab.net.wire import (
    HEADER,
    MAX_MESSAGE_BYTES,
    Client,
    ProtocolError,
    Request,
    RequestRefused,
    ServerUnavailable,
    check_reply,
    decode,
    encode,
    format_address,
    parse_address,
    parse_request,
    recv_message,
    send_message,
)
from tests.helpers import refusing_port

TIMEOUT = 10.0


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(TIMEOUT)
    b.settimeout(TIMEOUT)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


# -- frames ------------------------------------------------------------------------


def test_frame_is_a_big_endian_length_then_utf8_json() -> None:
    data = encode({"op": "buy", "buyer": "用户3"})
    (length,) = struct.unpack(">I", data[:4])
    assert length == len(data) - 4
    assert json.loads(data[4:].decode("utf-8")) == {"op": "buy", "buyer": "用户3"}
    assert HEADER.size == 4


def test_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    send_message(a, {"op": "search", "buyer": "用户1"}, TIMEOUT)
    assert recv_message(b, TIMEOUT) == {"op": "search", "buyer": "用户1"}


def test_message_split_across_many_sends(pair: tuple[socket.socket, socket.socket]) -> None:
    """One recv(1024) is not a message: a frame arriving a byte at a time is still one message."""
    a, b = pair
    message = {"op": "buy", "buyer": "用户" * 50, "latency": 0.5}
    data = encode(message)
    # Each one-byte send is its own packet; a writer thread keeps the reader reading
    # while the writer is still sending (the socket buffer counts packets, not bytes).
    writer = threading.Thread(target=lambda: [a.sendall(data[i : i + 1]) for i in range(len(data))])
    writer.start()
    try:
        assert recv_message(b, TIMEOUT) == message
    finally:
        writer.join(TIMEOUT)
    assert not writer.is_alive()


def test_several_messages_in_one_send(pair: tuple[socket.socket, socket.socket]) -> None:
    """Sticky packets (粘包): three frames in one send come out as three messages, in order."""
    a, b = pair
    a.sendall(encode({"n": 1}) + encode({"n": 2}) + encode({"n": 3}))
    assert [recv_message(b, TIMEOUT) for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_header_split_from_body(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    data = encode({"op": "stats"})
    a.sendall(data[:2])
    a.sendall(data[2:5])
    a.sendall(data[5:])
    assert recv_message(b, TIMEOUT) == {"op": "stats"}


def test_clean_close_between_messages_is_none(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.sendall(encode({"n": 1}))
    a.close()
    assert recv_message(b, TIMEOUT) == {"n": 1}
    assert recv_message(b, TIMEOUT) is None


@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_close_mid_frame_is_a_protocol_error(
    cut: int, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.sendall(encode({"op": "search", "buyer": "x" * 20})[:cut])
    a.close()
    with pytest.raises(ProtocolError, match="middle of a message"):
        recv_message(b, TIMEOUT)


def test_oversized_header_is_refused_without_reading_the_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    a.sendall(struct.pack("!I", MAX_MESSAGE_BYTES + 1))  # and no body at all
    with pytest.raises(ProtocolError, match="limit"):
        recv_message(b, TIMEOUT)


def test_encode_refuses_an_oversized_message() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        encode({"buyer": "x" * MAX_MESSAGE_BYTES})


def test_encode_refuses_what_json_cannot_carry() -> None:
    with pytest.raises(ProtocolError):
        encode({"latency": float("nan")})
    with pytest.raises(ProtocolError):
        encode({"x": object()})


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"search"', "must be a JSON object"),
        (b"", "not JSON"),
        (b"[" * 60_000, "nested too deeply"),
        (b"1" * 5000, "not JSON"),  # int() digit limit
    ],
)
def test_bad_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        decode(body)


def test_silence_times_out(pair: tuple[socket.socket, socket.socket]) -> None:
    _, b = pair
    with pytest.raises(TimeoutError):
        recv_message(b, 0.05)


def test_a_trickle_times_out_even_if_bytes_keep_coming(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The frame deadline runs from its first byte: a started frame must finish in time."""
    a, b = pair
    a.sendall(struct.pack("!I", 100) + b"{")  # promises 100 bytes, sends 1
    with pytest.raises(TimeoutError):
        recv_message(b, 0.05, first_byte_timeout=TIMEOUT)


@given(st.binary(max_size=300))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_random_bytes_never_escape_as_anything_but_protocol_error(data: bytes) -> None:
    try:
        message = decode(data)
    except ProtocolError:
        return
    assert isinstance(message, dict)


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.one_of(st.integers(), st.text(max_size=50), st.booleans(), st.none()),
        max_size=8,
    )
)
@settings(max_examples=100, deadline=None)
def test_any_object_round_trips(message: dict[str, object]) -> None:
    data = encode(message)
    (length,) = HEADER.unpack(data[:4])
    assert decode(data[4 : 4 + length]) == message


# -- requests --------------------------------------------------------------------------


def test_valid_requests() -> None:
    assert parse_request({"op": "search"}) == Request("search")
    assert parse_request({"op": "buy", "buyer": "用户1", "latency": 1, "token": "t"}) == Request(
        "buy", token="t", latency=1.0, buyer="用户1"
    )
    assert parse_request({"op": "stats", "token": "t"}) == Request("stats", token="t")


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ({}, '"op" must be one of'),
        ({"op": "steal"}, '"op" must be one of'),
        ({"op": 3}, '"op" must be one of'),
        ({"op": "search", "latncy": 1}, "unknown keys: latncy"),
        ({"op": "buy", "latency": -1}, '"latency" must be'),
        ({"op": "buy", "latency": float("nan")}, '"latency" must be'),
        ({"op": "buy", "latency": float("inf")}, '"latency" must be'),
        ({"op": "buy", "latency": 10_000}, '"latency" must be'),
        ({"op": "buy", "latency": True}, '"latency" must be a number'),
        ({"op": "buy", "latency": "1"}, '"latency" must be a number'),
        ({"op": "search", "latency": 1}, '"latency" belongs to "buy"'),
        ({"op": "buy", "token": 5}, '"token" must be a string'),
        ({"op": "buy", "token": "x" * 1000}, '"token" must be a string'),
        ({"op": "buy", "buyer": ["a"]}, '"buyer" must be a string'),
        ({"op": "buy", "buyer": "x" * 101}, '"buyer" must be a string'),
    ],
)
def test_invalid_requests_name_the_problem(message: dict[str, object], problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_request(message)


# -- replies --------------------------------------------------------------------------


def test_replies_are_checked() -> None:
    assert check_reply({"ok": True, "op": "search", "count": 2}, "search")["count"] == 2
    bought = {"ok": True, "op": "buy", "outcome": "bought", "count": 1, "ticket": 1}
    assert check_reply(bought, "buy") == bought
    sold_out = {"ok": True, "op": "buy", "outcome": "sold_out", "count": 0, "ticket": None}
    assert check_reply(sold_out, "buy") == sold_out


@pytest.mark.parametrize(
    ("reply", "op"),
    [
        ({"ok": True, "op": "search"}, "search"),
        ({"ok": True, "op": "search", "count": -1}, "search"),
        ({"ok": True, "op": "search", "count": True}, "search"),
        ({"ok": True, "op": "buy", "count": 1, "ticket": 1}, "buy"),
        ({"ok": True, "op": "buy", "outcome": "bought", "count": 1, "ticket": 2}, "buy"),
        ({"ok": True, "op": "buy", "outcome": "sold_out", "count": 0, "ticket": 0}, "buy"),
        ({"ok": True, "op": "stats"}, "search"),
        ({"op": "search", "count": 1}, "search"),
        ({"ok": False}, "search"),
    ],
)
def test_malformed_replies_are_protocol_errors(reply: dict[str, object], op: str) -> None:
    with pytest.raises(ProtocolError):
        check_reply(reply, op)  # type: ignore[arg-type]


def test_error_reply_raises_refused_and_survives_pickling() -> None:
    with pytest.raises(RequestRefused) as info:
        check_reply({"ok": False, "error": "unauthorized", "message": "wrong token"}, "buy")
    assert info.value.code == "unauthorized"
    assert "wrong token" in str(info.value)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.code, copy.message, str(copy)) == ("unauthorized", "wrong token", str(info.value))
    assert isinstance(copy, LabError)


# -- addresses and the client -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:1", ("localhost", 1)),
        ("[::1]:9000", ("::1", 9000)),
        (" example.org:65535 ", ("example.org", 65535)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert parse_address(format_address(*expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        *("nohost", ":8080", "h:", "h:0", "h:65536", "h:80a", "h:-1"),
        "h:\u0668\u0660",  # Arabic-Indic digits pass str.isdigit() but are no port
        "h:" + "1" * 5000,  # over int()'s digit limit
        "\ud800:80",  # a lone surrogate: the resolver cannot encode it
        "a\x00b:80",
        "a\nb:80",
        "a b:80",
        "x" * 64 + ".org:80",  # a DNS label over 63 characters
        "x" * 300 + ":80",
        "[not-ipv6]:80",
    ],
    ids=repr,
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected") as info:
        parse_address(text)
    # One short line, whatever the text: it ends up as `lab: error: --connect: ...`.
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_client_reports_a_refused_connection() -> None:
    with refusing_port() as port, pytest.raises(ServerUnavailable, match="cannot connect"):
        Client("127.0.0.1", port, timeout=TIMEOUT).connect()


def test_client_times_out_on_a_silent_server() -> None:
    """A listener that accepts (in the kernel) but never answers: the request times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        client = Client("127.0.0.1", port, timeout=0.1, connect_timeout=TIMEOUT)
        with client, pytest.raises(ServerUnavailable, match="did not answer"):
            client.search()


def test_client_rejects_a_peer_that_is_not_a_lab_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(TIMEOUT)
        port = listener.getsockname()[1]
        with Client("127.0.0.1", port, timeout=TIMEOUT) as client:
            conn, _ = listener.accept()
            with conn:
                conn.sendall(frame(b'{"hello": "world"}'))
                with pytest.raises(ProtocolError, match="not a reply"):
                    client.search()
