"""The wire between a buyer and the ticket server: frames, messages, a small client.

The notes' client does ``client.send(...)`` and ``client.recv(1024)``. That
works for one short greeting, but TCP is a byte stream, not a message stream:
one ``recv`` may return half a message, or two (粘包, "sticky packets"). So
every message here is a *frame*::

    +----------------------+-----------------------------------------+
    | length: 4 bytes      | body: `length` bytes of UTF-8 JSON,     |
    | unsigned, big-endian |       one object, e.g. {"op": "search"} |
    +----------------------+-----------------------------------------+

A reader first reads exactly 4 bytes, then exactly ``length`` more. A length
above :data:`MAX_MESSAGE_BYTES` is refused before a byte of the body is read,
so a hostile or confused peer cannot make the other side allocate gigabytes.
Every read and write here has a deadline: a silent peer is an error after the
timeout, never a hang. docs/protocol.md describes the messages.

This module knows the shapes of messages (:func:`parse_request`,
:func:`check_reply`); what a request *does* to data.json is
:mod:`lab.net.server`'s business.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from lab.core.errors import LabError, UsageError
from lab.core.model import MAX_LATENCY_S

__all__ = [
    "DEFAULT_PORT",
    "ERROR_CODES",
    "HEADER",
    "MAX_MESSAGE_BYTES",
    "MAX_NAME_CHARS",
    "MAX_TOKEN_CHARS",
    "OPS",
    "Client",
    "Op",
    "ProtocolError",
    "Request",
    "RequestRefused",
    "ServerUnavailable",
    "check_reply",
    "check_token",
    "decode",
    "encode",
    "format_address",
    "parse_address",
    "parse_request",
    "recv_message",
    "send_message",
]

#: The notes' server listens on 8080.
DEFAULT_PORT = 8080
#: The frame header: the body's length as an unsigned 32-bit big-endian integer.
HEADER = struct.Struct("!I")
#: The largest body either side accepts. A real message is under 300 bytes;
#: 64 KiB leaves room for long names yet bounds what a peer can make us buffer.
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 256
MAX_NAME_CHARS = 100

Op = Literal["search", "buy", "stats"]
OPS: tuple[Op, ...] = ("search", "buy", "stats")

#: Every ``"error"`` a server may answer with (``{"ok": false, "error": CODE, "message": ...}``).
ERROR_CODES = (
    "bad_request",  # the frame or the message is malformed; the message says how
    "unauthorized",  # missing or wrong token; the server closes the connection
    "store",  # data.json could not be read or written (a torn read, a full disk)
    "shutting_down",  # the server is stopping; nothing was changed for this request
    "internal",  # a bug in the server; nothing was changed for this request
)

_REQUEST_KEYS = frozenset({"op", "token", "latency", "buyer"})


class ProtocolError(LabError):
    """Raised by :mod:`lab.net.wire` when a peer sends bytes that are not a valid frame or message.

    The server answers it with ``bad_request``; a client raises it when a
    reply makes no sense (which means it is not talking to a lab server).
    """


class ServerUnavailable(LabError):
    """Raised by :class:`Client` when the server cannot be reached or stops answering.

    Covers a refused or timed-out connect, a reply that does not arrive within
    the timeout, and a connection closed before the reply was complete. Whether
    a ``buy`` in flight took effect is then unknown, so the client never
    retries it on its own.
    """


class RequestRefused(LabError):
    """Raised by :class:`Client` when the server answers ``{"ok": false, ...}``.

    ``code`` is one of :data:`ERROR_CODES`; ``message`` is the server's
    explanation. A refused request changed nothing on the server.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"the server refused ({self.code}): {self.message}"

    def __reduce__(self) -> tuple[type[RequestRefused], tuple[str, str]]:
        # __init__ needs both fields, so pickle must pass them back as constructor args.
        return (type(self), (self.code, self.message))


# -- frames ----------------------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame: the 4-byte length, then the message as compact UTF-8 JSON."""
    try:
        body = json.dumps(
            message, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from None
    if len(body) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message is {len(body)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """The message in a frame's body: a JSON object, or :class:`ProtocolError` saying why not."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("message is not UTF-8") from None
    try:
        message = json.loads(text)
    except RecursionError:
        raise ProtocolError("message is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int() digit limits
        raise ProtocolError(f"message is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"message must be a JSON object, got {type(message).__name__}")
    return message


def send_message(sock: socket.socket, message: Mapping[str, Any], timeout: float) -> None:
    """Send one frame; ``TimeoutError`` if the peer does not take it within ``timeout`` s."""
    data = encode(message)
    sock.settimeout(timeout)
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int, deadline: float, started: bool) -> bytes | None:
    """Exactly ``n`` bytes by ``deadline``; None on a clean EOF before the first byte."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete message within the timeout ({got} of {n} bytes)")
        sock.settimeout(remaining)
        chunk = sock.recv(min(n - got, 65536))
        if not chunk:
            if got == 0 and not started:
                return None
            raise ProtocolError(f"connection closed in the middle of a message ({got} of {n})")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_message(
    sock: socket.socket,
    timeout: float,
    *,
    first_byte_timeout: float | None = None,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> dict[str, Any] | None:
    """Receive one frame and decode it.

    Args:
        timeout: the whole frame must arrive within this many seconds of its
            first byte (a peer trickling one byte a minute is cut off).
        first_byte_timeout: how long to wait for a frame to start (a server's
            idle timeout); defaults to ``timeout``.

    Returns:
        The message, or None if the peer closed the connection cleanly
        between messages.

    Raises:
        TimeoutError: nothing, or not all of the frame, arrived in time.
        ProtocolError: the frame is too large, cut short, or not a JSON object.
        OSError: the connection failed (reset, shut down).
    """
    wait = timeout if first_byte_timeout is None else first_byte_timeout
    sock.settimeout(wait)
    try:
        first = sock.recv(HEADER.size)
    except TimeoutError:
        raise TimeoutError(f"no message within {wait:g} s") from None
    if not first:
        return None
    deadline = time.monotonic() + timeout
    rest = _recv_exact(sock, HEADER.size - len(first), deadline, started=True)
    assert rest is not None
    (length,) = HEADER.unpack(first + rest)
    if length > max_bytes:
        raise ProtocolError(f"message of {length} bytes announced; the limit is {max_bytes}")
    body = _recv_exact(sock, length, deadline, started=True)
    assert body is not None
    return decode(body)


# -- messages ----------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One validated request, as the server acts on it."""

    op: Op
    token: str | None = None
    #: for ``buy``: seconds the server waits between its read and its write
    #: (the buyer's simulated network latency); None: the server draws one
    latency: float | None = None
    #: who is asking, for the server's ``--verbose`` lines; never trusted for anything
    buyer: str | None = None


def parse_request(message: Mapping[str, Any]) -> Request:
    """Check a request's shape; :class:`ProtocolError` names the first problem.

    Unknown keys are refused rather than ignored: a typo such as
    ``"latncy"`` would otherwise silently mean "no latency".
    """
    extra = sorted(str(k) for k in message if k not in _REQUEST_KEYS)
    if extra:
        raise ProtocolError(f"unknown keys: {', '.join(extra)}")
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError(f'"op" must be one of {", ".join(OPS)}; got {op!r}'[:200])
    token = message.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS):
        raise ProtocolError(f'"token" must be a string of at most {MAX_TOKEN_CHARS} characters')
    buyer = message.get("buyer")
    if buyer is not None and (not isinstance(buyer, str) or len(buyer) > MAX_NAME_CHARS):
        raise ProtocolError(f'"buyer" must be a string of at most {MAX_NAME_CHARS} characters')
    latency = message.get("latency")
    if latency is not None:
        if op != "buy":
            raise ProtocolError('"latency" belongs to "buy" only')
        # bool is an int subclass: reject true/false explicitly.
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ProtocolError(f'"latency" must be a number of seconds, got {latency!r}'[:200])
        if not (math.isfinite(latency) and 0 <= latency <= MAX_LATENCY_S):
            raise ProtocolError(f'"latency" must be 0..{MAX_LATENCY_S:g} s, got {latency!r}')
        latency = float(latency)
    return Request(op=op, token=token, latency=latency, buyer=buyer)


def check_token(token: str, source: str) -> str:
    """``token`` if it can be a shared secret; else :class:`UsageError` naming ``source``.

    A usable token is 1 to :data:`MAX_TOKEN_CHARS` printable characters: no
    NUL, no control characters, no lone surrogates (what ``os.environ`` makes
    of bytes that are not UTF-8), so it always encodes to the same UTF-8
    bytes on both sides. The message never repeats the token: it is a secret.
    """
    if not isinstance(token, str) or not token:
        raise UsageError(f"{source}: empty; expected 1 to {MAX_TOKEN_CHARS} characters")
    if len(token) > MAX_TOKEN_CHARS:
        raise UsageError(
            f"{source}: the token has {len(token)} characters; the limit is {MAX_TOKEN_CHARS}"
        )
    # isprintable() is False for control characters, NUL, separators other than
    # the space, and lone surrogates (category Cs): none of them can be typed
    # reliably or encoded to UTF-8.
    if not token.isprintable():
        bad = next(i for i, ch in enumerate(token) if not ch.isprintable())
        raise UsageError(
            f"{source}: the token has an unusable character at position {bad + 1} "
            "(a control character, NUL or a byte that is not UTF-8); use printable text"
        )
    return token


def _count(reply: Mapping[str, Any], key: str = "count") -> int:
    value = reply.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"reply has no whole {key!r}: {dict(reply)!r}"[:300])
    return value


def check_reply(reply: Mapping[str, Any], op: Op) -> dict[str, Any]:
    """A reply to ``op`` as a dict, after checking its shape.

    Raises:
        RequestRefused: the server answered ``ok: false``.
        ProtocolError: the reply is not a lab server's answer to ``op``.
    """
    ok = reply.get("ok")
    if ok is False:
        code, message = reply.get("error"), reply.get("message", "")
        if not isinstance(code, str) or not isinstance(message, str):
            raise ProtocolError(f"malformed error reply: {dict(reply)!r}"[:300])
        raise RequestRefused(code, message)
    if ok is not True or reply.get("op") != op:
        raise ProtocolError(f"not a reply to {op!r}: {dict(reply)!r}"[:300])
    if op == "search":
        _count(reply)
    elif op == "buy":
        count = _count(reply)
        outcome, ticket = reply.get("outcome"), reply.get("ticket")
        if not (outcome == "bought" and ticket == count) and not (
            outcome == "sold_out" and ticket is None
        ):
            raise ProtocolError(f"malformed buy reply: {dict(reply)!r}"[:300])
    return dict(reply)


#: The longest host name DNS allows; also bounds what an error message quotes.
_MAX_HOST_CHARS = 253


def _quote(text: str, limit: int = 60) -> str:
    """``text`` for a one-line message: repr'd (so newlines and surrogates are escaped), cut."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:8080"`` for IPv6) as ``(host, port)``; ValueError says why not.

    Any text gets one of the two: the host is checked as far as can be done
    without a lookup (printable, at most 253 characters, encodable as a DNS
    name, a valid IPv6 address inside brackets), so a connect fails on the
    network, never on the text. The message is one short line.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {_quote(text)}")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    # isascii: str.isdigit() also accepts "²" and Arabic-Indic digits.
    if (
        not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5)
        or not 1 <= int(port_text) <= 65535
    ):
        raise ValueError(f"expected a port from 1 to 65535, got {_quote(port_text, 10)}")
    if not host or len(host) > _MAX_HOST_CHARS or not host.isprintable() or " " in host:
        raise ValueError(f"expected a host name or address, got {_quote(host)}")
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"expected an IPv6 address in brackets, got {_quote(host)}") from None
    else:
        try:
            host.encode("idna")  # what the resolver will do with it
        except UnicodeError:
            raise ValueError(f"expected a host name or address, got {_quote(host)}") from None
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    """The inverse of :func:`parse_address`: brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- the client ----------------------------------------------------------------------


class Client:
    """A blocking connection to a ticket server: the notes' client, with framing and timeouts.

    One request at a time; every reply is checked. Use it as a context
    manager so the socket is always closed::

        with Client("127.0.0.1", 8080, token="s3cret") as client:
            count = client.search()
            result, count = client.buy(latency=0.5)
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
    ) -> None:
        if token is not None:
            # Refused here, before any connection, rather than by every buyer's request.
            check_token(token, "token (--token or $LAB_TOKEN)")
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self._sock: socket.socket | None = None

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)

    def connect(self) -> Client:
        """Open the connection (the notes' ``client.connect``); bounded by ``connect_timeout``."""
        if self._sock is None:
            try:
                sock = socket.create_connection(
                    (self.host, self.port), timeout=self.connect_timeout
                )
            except (OSError, UnicodeError, ValueError) as exc:
                # UnicodeError/ValueError: a host the resolver cannot encode (or a NUL).
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise ServerUnavailable(f"cannot connect to {self.address}: {detail}") from None
            # A request is one small frame: send it now rather than wait for more (Nagle).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(self, op: Op, **fields: Any) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` (plus the token) and return the checked reply."""
        sock = self.connect()._sock
        assert sock is not None
        message: dict[str, Any] = {"op": op, **fields}
        if self.token is not None:
            message["token"] = self.token
        try:
            send_message(sock, message, self.timeout)
            reply = recv_message(sock, self.timeout)
        except TimeoutError:
            self.close()
            raise ServerUnavailable(
                f"{self.address} did not answer {op!r} within {self.timeout:g} s"
            ) from None
        except ProtocolError:
            self.close()  # the stream is out of step; never reuse it
            raise
        except OSError as exc:
            self.close()
            raise ServerUnavailable(
                f"connection to {self.address} failed during {op!r}: {exc.strerror or exc}"
            ) from None
        if reply is None:
            self.close()
            raise ServerUnavailable(f"{self.address} closed the connection before answering {op!r}")
        try:
            return check_reply(reply, op)
        except RequestRefused as exc:
            if exc.code in ("unauthorized", "bad_request", "shutting_down"):
                self.close()  # the server hangs up after these
            raise

    def search(self) -> int:
        """查票: the ``ticket_num`` the server read."""
        count: int = self.request("search")["count"]
        return count

    def buy(self, latency: float | None = None, buyer: str | None = None) -> tuple[str, int]:
        """买票: ``("bought", ticket)`` or ``("sold_out", count)``.

        The number is the count the server read for this purchase; a bought
        ticket is numbered by that count (the notes' ``ticket_num`` before the
        decrement).
        """
        fields: dict[str, Any] = {}
        if latency is not None:
            fields["latency"] = latency
        if buyer is not None:
            fields["buyer"] = buyer[:MAX_NAME_CHARS]
        reply = self.request("buy", **fields)
        return reply["outcome"], reply["count"]

    def stats(self) -> dict[str, Any]:
        """The server's own ledger (see docs/protocol.md)."""
        return self.request("stats")
