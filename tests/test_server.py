"""The TCP ticket server (lab.net.server), its variants (lab.variants.tcp) and ``lab serve``.

Servers run on 127.0.0.1 port 0 with their data.json in the test's tmp_path,
so tests are independent under ``pytest -n auto``. In-process servers run on
threads and every test checks that none of them is left behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.core.errors import StoreCorrupted, UsageError
from lab.core.model import Latency
from lab.net import server as server_module
from lab.net.server import ServerConfig, TicketServer, is_loopback
from lab.net.wire import (
    MAX_MESSAGE_BYTES,
    Client,
    RequestRefused,
    ServerUnavailable,
    encode,
    recv_message,
)
from lab.stores.jsonfile import Store
from lab.ui.cli import main
from lab.variants import tcp
from tests.helpers import (
    assert_session_empty,
    interrupt_once_buyers_run,
    lab_subprocess,
    read_line,
    refusing_port,
    run_variant,
)

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parent.parent


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lab-server")]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., TicketServer]]:
    """Start TicketServers on port 0 with a fresh data.json each; stop them all afterwards."""
    servers: list[TicketServer] = []

    def make(tickets: int = 1, **fields: Any) -> TicketServer:
        store = Store(tmp_path / f"data{len(servers)}.json")
        store.reset(tickets)
        server = TicketServer(ServerConfig(store=store, **fields))
        servers.append(server)
        server.start()
        return server

    yield make
    for server in servers:
        server.stop()
    assert not server_threads(), "a server thread outlived its test"


def client(server: TicketServer, **kwargs: Any) -> Client:
    host, port = server.address
    return Client(host, port, timeout=TIMEOUT, **kwargs)


def raw(server: TicketServer) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=TIMEOUT)
    sock.settimeout(TIMEOUT)
    return sock


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until ``predicate()`` (bounded): for states, never for speed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def closed_by_server(sock: socket.socket) -> bool:
    """Read until EOF (any replies before it are fine): True if the server hung up,
    False if it kept the connection open past the socket's timeout."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def assert_still_serving(server: TicketServer) -> None:
    """The server answers a normal purchase, and data.json agrees with its ledger."""
    with client(server) as c:
        before = c.search()
        outcome, count = c.buy()
        assert count == before
        assert outcome == ("bought" if before > 0 else "sold_out")
        stats = c.stats()
    assert stats["remaining"] == server.store.read()  # readable, and what the server says
    assert stats["sold"] == stats["started_with"] - stats["remaining"]


def buy_all(server: TicketServer, n: int, **buy: Any) -> list[tuple[str, int]]:
    """n buyers on threads, each with its own connection, buying once."""
    results: list[tuple[str, int] | BaseException] = [ValueError("no result")] * n

    def one(i: int) -> None:
        try:
            with client(server) as c:
                results[i] = c.buy(buyer=f"buyer {i}", **buy)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results  # type: ignore[return-value]


# -- the protocol, end to end ------------------------------------------------------------


def test_search_buy_sold_out_and_stats(make_server: Callable[..., TicketServer]) -> None:
    server = make_server(tickets=2)
    with client(server) as c:
        assert c.search() == 2
        assert c.buy(buyer="用户1") == ("bought", 2)
        assert c.buy() == ("bought", 1)
        assert c.buy() == ("sold_out", 0)
        stats = c.stats()
    assert server.store.read() == 0
    assert (stats["started_with"], stats["remaining"], stats["sold"], stats["sold_out"]) == (
        2,
        0,
        2,
        1,
    )
    assert stats["searches"] == 1 and stats["mode"] == "safe" and stats["errors"] == 0


def test_buy_reply_carries_ok_count_outcome_and_ticket(
    make_server: Callable[..., TicketServer],
) -> None:
    server = make_server(tickets=1)
    with raw(server) as sock:
        for expected in (
            {"ok": True, "op": "buy", "outcome": "bought", "count": 1, "ticket": 1},
            {"ok": True, "op": "buy", "outcome": "sold_out", "count": 0, "ticket": None},
        ):
            sock.sendall(encode({"op": "buy", "buyer": "用户1"}))
            assert recv_message(sock, TIMEOUT) == expected


def test_requests_pipelined_on_one_connection_are_answered_in_order(
    make_server: Callable[..., TicketServer],
) -> None:
    server = make_server(tickets=5)
    with raw(server) as sock:
        sock.sendall(encode({"op": "search"}) + encode({"op": "buy"}) + encode({"op": "search"}))
        replies = [recv_message(sock, TIMEOUT) for _ in range(3)]
    assert [r and r.get("count") for r in replies] == [5, 5, 4]


def test_safe_server_sells_each_ticket_once(make_server: Callable[..., TicketServer]) -> None:
    """40 buyers, 10 tickets, all at once: tickets 10..1 each sold exactly once."""
    server = make_server(tickets=10)
    results = buy_all(server, 40)
    assert sorted(t for outcome, t in results if outcome == "bought") == list(range(1, 11))
    assert sum(1 for outcome, _ in results if outcome == "sold_out") == 30
    assert server.store.read() == 0
    assert_still_serving(server)


@pytest.mark.parametrize("attempt", range(3))
def test_naive_server_oversells_deterministically_in_lockstep(
    attempt: int, make_server: Callable[..., TicketServer]
) -> None:
    """The barrier holds all 10 purchases between read and write: all read 1, all sell ticket 1."""
    server = make_server(tickets=1, mode="naive", lockstep=10, lockstep_timeout=60)
    results = buy_all(server, 10)
    assert results == [("bought", 1)] * 10
    assert server.store.read() == 0
    stats = server.stats()
    assert stats["sold"] == 10 and not stats["lockstep_broken"]
    assert stats["sold"] - (stats["started_with"] - stats["remaining"]) == 9  # lost updates


def test_safe_server_in_lockstep_breaks_the_barrier_instead_of_deadlocking(
    make_server: Callable[..., TicketServer],
) -> None:
    """The purchase lock keeps the others out, so the barrier can never fill: it breaks."""
    server = make_server(tickets=1, lockstep=3, lockstep_timeout=0.2)
    results = buy_all(server, 3)
    assert sorted(results) == [("bought", 1), ("sold_out", 0), ("sold_out", 0)]
    assert server.stats()["lockstep_broken"]


def test_safe_server_without_its_lock_is_caught(
    make_server: Callable[..., TicketServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break the fix (the purchase lock becomes a no-op) and the same purchases oversell.

    The proof that the safe-server tests can fail: the only difference from
    ``test_safe_server_in_lockstep_breaks_the_barrier...`` is the lock.
    """
    monkeypatch.setitem(server_module.PURCHASE_LOCKS, "safe", contextlib.nullcontext)
    server = make_server(tickets=1, mode="safe", lockstep=10, lockstep_timeout=60)
    results = buy_all(server, 10)
    assert results == [("bought", 1)] * 10
    assert server.store.read() == 0  # atomic writes keep the file whole, not the count right


def test_latency_above_the_maximum_is_refused(make_server: Callable[..., TicketServer]) -> None:
    server = make_server(tickets=1, max_latency=0.5)
    with client(server) as c, pytest.raises(RequestRefused, match="max-latency") as info:
        c.buy(latency=0.6)
    assert info.value.code == "bad_request"
    assert server.store.read() == 1
    assert_still_serving(server)


def test_token_is_required_and_checked(make_server: Callable[..., TicketServer]) -> None:
    server = make_server(tickets=1, token="s3cret")
    for token in (None, "wrong", "s3cret-but-longer"):
        with client(server, token=token) as c, pytest.raises(RequestRefused) as info:
            c.buy()
        assert info.value.code == "unauthorized"
    assert server.store.read() == 1
    with client(server, token="s3cret") as c:
        assert c.buy() == ("bought", 1)
    assert server.stats()["unauthorized"] == 3


def test_unauthorized_request_is_disconnected(make_server: Callable[..., TicketServer]) -> None:
    server = make_server(tickets=1, token="s3cret")
    with raw(server) as sock:
        sock.sendall(encode({"op": "buy", "token": "guess"}))
        reply = recv_message(sock, TIMEOUT)
        assert reply is not None and reply["error"] == "unauthorized"
        assert recv_message(sock, TIMEOUT) is None  # hung up
    assert server.store.read() == 1


# -- bad input and faults: an error reply or a closed connection, and the server goes on ----------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json at all", "not JSON"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'{"op": "steal"}', '"op" must be one of'),
        (b'{"op": "buy", "latency": "slow"}', '"latency" must be a number'),
        (b"\xff\xfe\xfd", "not UTF-8"),
    ],
)
def test_bad_messages_get_an_error_reply(
    body: bytes, problem: str, make_server: Callable[..., TicketServer]
) -> None:
    server = make_server(tickets=1)
    with raw(server) as sock:
        sock.sendall(struct.pack("!I", len(body)) + body)
        reply = recv_message(sock, TIMEOUT)
        assert reply is not None
        assert (reply["ok"], reply["error"]) == (False, "bad_request")
        assert problem in reply["message"]
    assert server.store.read() == 1
    assert_still_serving(server)


def test_oversized_header_gets_an_error_and_a_hang_up(
    make_server: Callable[..., TicketServer],
) -> None:
    server = make_server(tickets=1)
    with raw(server) as sock:
        sock.sendall(struct.pack("!I", MAX_MESSAGE_BYTES + 1))
        reply = recv_message(sock, TIMEOUT)
        assert reply is not None and reply["error"] == "bad_request" and "limit" in reply["message"]
        assert closed_by_server(sock)
    assert_still_serving(server)


def test_header_then_a_short_body_then_disconnect(
    make_server: Callable[..., TicketServer],
) -> None:
    server = make_server(tickets=1)
    with raw(server) as sock:
        sock.sendall(struct.pack("!I", 100) + b'{"op": "bu')
    wait_for(
        lambda: server.stats()["connections"] == 1 and server.stats()["active_connections"] == 0,
        "the server to drop the half frame",
    )
    assert server.stats()["errors"] == 1
    assert_still_serving(server)


def test_silent_client_is_closed_by_the_idle_timeout(
    make_server: Callable[..., TicketServer],
) -> None:
    server = make_server(tickets=1, idle_timeout=0.2)
    with raw(server) as sock:
        assert closed_by_server(sock)
    assert_still_serving(server)


def test_trickling_client_is_closed_by_the_frame_timeout(
    make_server: Callable[..., TicketServer],
) -> None:
    """A byte every 20 ms never lets the idle timeout fire; the frame deadline still does."""
    server = make_server(tickets=1, idle_timeout=TIMEOUT, frame_timeout=0.2)
    with raw(server) as sock:
        sock.sendall(struct.pack("!I", 1000))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                sock.sendall(b" ")
            except OSError:
                break  # reset: the server hung up
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break  # EOF: the server hung up
        else:
            pytest.fail("the server kept a trickling connection open")
    assert_still_serving(server)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(seed: int, make_server: Callable[..., TicketServer]) -> None:
    server = make_server(tickets=1)
    junk = random.Random(seed).randbytes(random.Random(seed).randint(1, 5000))
    with raw(server) as sock:
        # The server may hang up mid-way (say the junk starts with a huge length),
        # which makes our side's send or shutdown fail: that is an allowed outcome.
        with contextlib.suppress(OSError):
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)  # no more: the server must reply or hang up
        assert closed_by_server(sock)
    assert server.store.read() == 1
    assert_still_serving(server)


_KILLED_CLIENT = """
import socket, struct, sys, json, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
body = json.dumps({"op": "buy", "buyer": "doomed"}).encode()
sock.sendall(struct.pack("!I", len(body)) + body)
print("sent", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("mode", ["naive", "safe"])
def test_client_killed_in_the_middle_of_a_purchase(
    mode: str, make_server: Callable[..., TicketServer], tmp_path: Path
) -> None:
    """The buyer dies after the server read the count and before it wrote: the sale completes,
    the reply has nowhere to go, and the server and data.json are fine."""
    server = make_server(tickets=2, mode=mode)
    gate = threading.Event()
    real_write = server._write

    def gated_write(store: Store, count: int) -> None:
        gate.wait(TIMEOUT)  # hold the purchase mid-way until the buyer is dead
        real_write(store, count)

    server._write = gated_write
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CLIENT, str(server.address[1])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: server.stats()["in_flight"] == 1, "the purchase to be in flight")
        proc.kill()
        proc.wait(TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()
        gate.set()
    wait_for(lambda: server.stats()["in_flight"] == 0, "the purchase to finish")
    assert server.store.read() == 1
    assert server.stats()["sold"] == 1
    assert_still_serving(server)


# -- limits and stopping -----------------------------------------------------------------


def test_at_max_connections_new_ones_wait_in_the_backlog(
    make_server: Callable[..., TicketServer],
) -> None:
    """Two slots, two idle connections: a third buyer is served only once a slot frees."""
    server = make_server(tickets=3, max_connections=2)
    first, second = client(server).connect(), client(server).connect()
    try:
        assert first.search() == 3 and second.search() == 3  # both hold a slot
        third: list[tuple[str, int]] = []

        def buy_third() -> None:
            with client(server) as c:
                third.append(c.buy())

        buyer = threading.Thread(target=buy_third)
        buyer.start()
        try:
            wait_for(lambda: server.stats()["active_connections"] == 2, "two connections")
            # Not served while both slots are held (peak_connections below is the hard check).
            buyer.join(0.5)
            assert not third, "a third connection was served beyond --max-connections"
            first.close()
            buyer.join(TIMEOUT)
            assert third == [("bought", 3)]
        finally:
            buyer.join(TIMEOUT)
    finally:
        first.close()
        second.close()
    assert server.stats()["peak_connections"] == 2


@pytest.mark.parametrize("mode", ["naive", "safe"])
def test_stop_refuses_purchases_in_flight_before_they_write(
    mode: str, make_server: Callable[..., TicketServer]
) -> None:
    server = make_server(tickets=5, mode=mode, max_latency=60)
    outcomes: list[BaseException | tuple[str, int]] = []

    def slow_buy() -> None:
        try:
            with client(server) as c:
                outcomes.append(c.buy(latency=60))
        except BaseException as exc:
            outcomes.append(exc)

    buyers = [threading.Thread(target=slow_buy) for _ in range(3)]
    for b in buyers:
        b.start()
    expected_in_flight = 3 if mode == "naive" else 1  # safe: the others wait for the lock
    wait_for(
        lambda: (
            server.stats()["requests"] == 3 and server.stats()["in_flight"] == expected_in_flight
        ),
        "all three purchases inside the server",
    )
    idle = client(server).connect()
    try:
        server.stop()
        for b in buyers:
            b.join(TIMEOUT)
        assert not any(b.is_alive() for b in buyers)
        assert len(outcomes) == 3
        for outcome in outcomes:
            assert isinstance(outcome, RequestRefused) and outcome.code == "shutting_down"
        with pytest.raises(ServerUnavailable):
            idle.search()  # hung up
    finally:
        idle.close()
    assert server.store.read() == 5  # nothing was half done
    assert not server_threads()


def test_a_dead_accept_loop_is_reported_not_silent(
    make_server: Callable[..., TicketServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: TicketServer, listener: socket.socket) -> None:
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(TicketServer, "_accept_ready", broken)
    server = make_server(tickets=1)
    socket.create_connection(server.address, timeout=TIMEOUT).close()  # wake the selector
    assert server.wait(TIMEOUT)
    assert server.failure is not None and "Bad file descriptor" in server.failure


def test_a_corrupt_data_json_is_a_store_error_not_a_crash(
    make_server: Callable[..., TicketServer],
) -> None:
    server = make_server(tickets=1)
    server.store.path.write_text("{oops")
    with client(server) as c:
        with pytest.raises(RequestRefused) as info:
            c.search()
        assert info.value.code == "store" and "not valid JSON" in info.value.message
        assert c.stats()["problem"] is not None  # the connection is still usable
    server.store.write_atomic(1)
    assert_still_serving(server)


def test_start_refuses_an_unreadable_data_json(tmp_path: Path) -> None:
    store = Store(tmp_path / "data.json")
    with pytest.raises(StoreCorrupted):
        TicketServer(ServerConfig(store=store)).start()
    assert not server_threads()


def test_port_in_use_names_the_option(tmp_path: Path) -> None:
    store = Store(tmp_path / "data.json")
    store.reset(1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=r"--port: .* already in use"):
            TicketServer(ServerConfig(store=store, port=port)).start()


@pytest.mark.parametrize(
    ("host", "expected"),
    [("127.0.0.1", True), ("::1", True), ("127.8.9.10", True), ("0.0.0.0", False)],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


# -- `lab serve` --------------------------------------------------------------------------


@contextlib.contextmanager
def lab_serve(tmp_path: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`lab serve` on a free port; yields the process and the port it printed."""
    with lab_subprocess("serve", "--port", "0", *args, cwd=tmp_path) as proc:
        line = read_line(proc)
        match = re.fullmatch(r"listening on (\S+):(\d+)\n", line)
        assert match, f"unexpected first line {line!r}"
        yield proc, int(match[2])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_lab_serve_sells_then_stops_cleanly(signum: int, tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    with lab_serve(tmp_path, "--data", str(data), "--tickets", "3", "--verbose") as (proc, port):
        with Client("127.0.0.1", port, timeout=TIMEOUT) as c:
            assert c.search() == 3
            assert c.buy(buyer="用户1") == ("bought", 3)
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert "Traceback" not in out + err
    assert "用户1 bought ticket 3" in out
    assert "stopped: 1 sold" in out
    assert json.loads(data.read_text()) == {"ticket_num": 2}


def test_lab_serve_refuses_an_in_flight_purchase_on_sigterm(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    args = ("--data", str(data), "--tickets", "1", "--max-latency", "60")
    with lab_serve(tmp_path, *args) as (proc, port):
        refused: list[BaseException] = []

        def slow_buy() -> None:
            try:
                with Client("127.0.0.1", port, timeout=60) as c:
                    c.buy(latency=60)
            except BaseException as exc:
                refused.append(exc)

        buyer = threading.Thread(target=slow_buy)
        buyer.start()
        try:
            with Client("127.0.0.1", port, timeout=TIMEOUT) as watcher:
                wait_for(lambda: watcher.stats()["in_flight"] == 1, "the purchase in flight")
            os.kill(proc.pid, signal.SIGTERM)
            proc.communicate(timeout=60)
        finally:
            buyer.join(60)
        assert proc.returncode == 0
        assert len(refused) == 1
        assert isinstance(refused[0], RequestRefused) and refused[0].code == "shutting_down"
    assert json.loads(data.read_text()) == {"ticket_num": 1}


def test_lab_serve_serves_the_file_as_it_is_and_warns_off_loopback(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 7}')
    args = ("--data", str(data), "--host", "0.0.0.0", "--token", "s3cret")
    with lab_serve(tmp_path, *args) as (proc, port):
        with Client("127.0.0.1", port, timeout=TIMEOUT, token="s3cret") as c:
            assert c.search() == 7
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert "warning" in err and "reachable from other machines" in err


SERVE_BAD_INPUT = [
    (["--port", "65536"], "--port"),
    (["--port", "http"], "--port"),
    (["--mode", "fast"], "--mode"),
    (["--latency", "soon"], "--latency"),
    (["--latency", "5", "--max-latency", "1"], "--latency"),
    (["--max-latency", "-1"], "--max-latency"),
    (["--max-connections", "0"], "--max-connections"),
    (["--max-connections", "100000000"], "--max-connections"),
    (["--lockstep", "5", "--max-connections", "2"], "--lockstep"),
    (["--tickets", "-1"], "--tickets"),
    (["--token", ""], "--token"),
    (["--token", "two\nlines"], "--token"),
    (["--token", "\udcff"], "--token"),  # argv bytes that are not UTF-8
    (["--token", "x" * 257], "--token"),
    (["--port", "\u0668\u0660"], "--port"),  # Arabic-Indic digits: isdigit(), not a port
    (["--port", "9" * 5000], "--port"),
    (["--evict-after", "-1"], "--evict-after"),
    (["--evict-after", "nan"], "--evict-after"),
    (["--host", "\ud800"], "--host"),
    (["--idle-timeout", "0"], "--idle-timeout"),
    # A label over 63 characters fails in the IDNA codec, before any DNS lookup.
    (["--host", "x" * 64 + ".invalid"], "--host"),
]


@pytest.mark.parametrize(("argv", "named"), SERVE_BAD_INPUT, ids=str)
def test_lab_serve_bad_input_is_one_line_naming_it(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data.json"
    data.write_text('{"ticket_num": 1}')
    code = main(["serve", "--port", "0", "--data", str(data), *argv])
    out, err = capsys.readouterr()
    assert code == 2
    assert named in err
    assert err.count("\n") == 1 and err.startswith("lab")
    assert "Traceback" not in out + err
    assert data.read_text() == '{"ticket_num": 1}'


@pytest.mark.parametrize("content", [None, "{torn", '{"ticket_num": -1}'])
def test_lab_serve_needs_a_readable_data_json_or_tickets(
    content: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "sub" / "data.json"
    if content is not None:
        data.parent.mkdir()
        data.write_text(content)
    code = main(["serve", "--port", "0", "--data", str(data)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("lab: error: --data") and err.count("\n") == 1
    if content is None:
        # The CLI's path check names the missing directory (and does not create it).
        assert "directory does not exist" in err
        assert not data.parent.exists()
    else:
        assert "--tickets" in err  # a bad file: say how to start it afresh


def test_lab_serve_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.json"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--data", str(data), "--tickets", "1"])
    _, err = capsys.readouterr()
    assert code == 2 and "--port" in err and "in use" in err


# -- the variants ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", range(3))
def test_server_naive_variant_oversells_deterministically(attempt: int, tmp_path: Path) -> None:
    result = run_variant(
        "server-naive", tmp_path, buyers=10, tickets=1, lockstep=True, seed=attempt
    )
    assert (result.sold, result.oversold, result.lost_updates, result.double_sold) == (10, 9, 9, 1)
    assert result.errors == 0
    assert result.ledger is not None
    assert (result.ledger["sold"], result.ledger["lost_updates"]) == (10, 9)
    assert result.ledger["mode"] == "naive" and not result.ledger["lockstep_broken"]


def test_server_variant_without_its_lock_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's server is forked after the patch, so it serves with no purchase lock."""
    monkeypatch.setitem(server_module.PURCHASE_LOCKS, "safe", contextlib.nullcontext)
    result = run_variant("server", tmp_path, buyers=10, tickets=1, lockstep=True)
    assert result.oversold == 9
    assert result.lost_updates == 9
    assert not result.consistent


def test_server_variant_ledger_agrees_with_the_tally(tmp_path: Path) -> None:
    result = run_variant("server", tmp_path, buyers=30, tickets=10, latency=Latency(0, 0.005))
    assert result.consistent and result.sold == 10
    ledger = result.ledger
    assert ledger is not None
    assert ledger["sold"] == result.sold and ledger["sold_out"] == result.sold_out
    assert (ledger["tickets_before"], ledger["remaining"]) == (10, result.remaining)
    assert ledger["lost_updates"] == 0 and ledger["errors"] == 0 and not ledger["external"]
    assert ledger["connections"] == 30


def test_large_runs_seat_many_buyers_per_process(tmp_path: Path) -> None:
    assert tcp.buyers_per_process(1) == 1
    assert tcp.buyers_per_process(tcp.ONE_PER_PROCESS_UP_TO) == 1
    assert tcp.buyers_per_process(10_000) == math.ceil(10_000 / tcp.PROCESSES_AT_SCALE)
    result = run_variant("server", tmp_path, buyers=200, tickets=50)
    assert (result.sold, result.remaining, result.errors) == (50, 0, 0)
    assert result.consistent


def test_large_runs_pool_their_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond the server's connection cap, each buyer process caps its own open connections."""
    assert tcp.connections_per_process(tcp.CONNECTIONS_CAP, lockstep=False) is None
    assert tcp.connections_per_process(10_000, lockstep=True) is None
    assert tcp.connections_per_process(10_000, lockstep=False) == 2 * tcp.CONNECTIONS_CAP // 16
    # A tiny cap makes a small run take the pooled path: 100 buyers in 15 processes,
    # one connection at a time each, against a server serving 16 at once.
    monkeypatch.setattr(tcp, "CONNECTIONS_CAP", 8)
    assert tcp.connections_per_process(100, lockstep=False) == 1
    result = run_variant("server", tmp_path, buyers=100, tickets=30)
    assert (result.sold, result.remaining, result.errors) == (30, 0, 0)
    assert result.consistent
    assert result.ledger is not None and result.ledger["peak_connections"] <= 16


@pytest.mark.parametrize(
    ("variant", "signum", "code"),
    [
        ("server", signal.SIGINT, 130),
        ("server", signal.SIGTERM, 143),
        ("server-naive", signal.SIGTERM, 143),
    ],
)
def test_interrupted_server_run_reaps_the_server_too(
    variant: str, signum: int, code: int, tmp_path: Path
) -> None:
    """Ctrl-C / SIGTERM mid-purchase: buyers and the run's server process are all reaped,
    and the purchases waiting out their latency are refused before they write."""
    data = tmp_path / "data.json"
    argv = ["run", variant, "--buyers", "4", "--tickets", "2", "--latency", "30", "-v"]
    with lab_subprocess(*argv, "--data", str(data), cwd=tmp_path) as proc:
        out, err = interrupt_once_buyers_run(proc, signum)
    assert proc.returncode == code, err
    assert "Traceback" not in out + err
    assert_session_empty(proc.pid)
    assert json.loads(data.read_text()) == {"ticket_num": 2}


def test_connect_drives_an_external_server(
    make_server: Callable[..., TicketServer], tmp_path: Path
) -> None:
    server = make_server(tickets=3, token="s3cret")
    host, port = server.address
    result = run_variant(
        "server", tmp_path, buyers=8, tickets=3, connect=f"{host}:{port}", token="s3cret"
    )
    assert result.sold == 3 and result.sold_out == 5 and result.errors == 0
    assert sorted(r.ticket for r in result.receipts if r.ticket is not None) == [1, 2, 3]
    assert server.store.read() == 0
    ledger = result.ledger
    assert ledger is not None and ledger["external"]
    assert (ledger["tickets_before"], ledger["remaining"], ledger["sold"]) == (3, 0, 3)
    # The tally is taken against the server's data.json, not the runner's placeholder.
    assert (result.tickets, result.remaining, result.lost_updates) == (3, 0, 0)
    assert result.consistent


def test_connect_tally_shows_the_external_servers_lost_updates(
    make_server: Callable[..., TicketServer], tmp_path: Path
) -> None:
    server = make_server(tickets=1, mode="naive", lockstep=4)
    host, port = server.address
    result = run_variant("server-naive", tmp_path, buyers=4, tickets=1, connect=f"{host}:{port}")
    assert (result.tickets, result.sold, result.remaining) == (1, 4, 0)
    assert (result.oversold, result.lost_updates) == (3, 3)


def test_connect_with_the_wrong_token_fails_before_any_buyer(
    make_server: Callable[..., TicketServer], tmp_path: Path
) -> None:
    server = make_server(tickets=3, token="s3cret")
    host, port = server.address
    with pytest.raises(RequestRefused, match="unauthorized"):
        run_variant("server", tmp_path, buyers=4, connect=f"{host}:{port}", token="guess")
    assert server.store.read() == 3


def test_connect_with_latency_above_the_servers_maximum_fails_before_any_buyer(
    make_server: Callable[..., TicketServer], tmp_path: Path
) -> None:
    server = make_server(tickets=3, max_latency=0.5)
    host, port = server.address
    with pytest.raises(UsageError, match=r"--latency: .* --max-latency"):
        run_variant("server", tmp_path, buyers=2, connect=f"{host}:{port}", latency=Latency(1, 2))
    assert server.store.read() == 3


def test_connect_to_nothing_is_an_error(tmp_path: Path) -> None:
    with refusing_port() as port, pytest.raises(ServerUnavailable, match="cannot connect"):
        run_variant("server", tmp_path, buyers=3, connect=f"127.0.0.1:{port}")
    with pytest.raises(UsageError, match="--connect"):
        run_variant("server", tmp_path, buyers=3, connect="no-port-here")


def test_connect_to_nothing_from_the_cli_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d.json")
    argv = ["run", "server", "--buyers", "3", "--latency", "0", "--tickets", "1", "--data", data]
    with refusing_port() as port:
        code = main([*argv, "--connect", f"127.0.0.1:{port}"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and "cannot connect" in err
    assert "Traceback" not in out + err


# -- docs/protocol.md --------------------------------------------------------------------------


def test_the_documented_session_works(
    make_server: Callable[..., TicketServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Run docs/protocol.md's plain-Python client against a real server; compare its output."""
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    texts = re.findall(r"```text\n(.*?)```", doc, re.S)
    server = make_server(tickets=3)
    port = str(server.address[1])
    namespace: dict[str, Any] = {}
    exec(blocks[0].replace("41235", port), namespace)  # the session, against our port
    assert capsys.readouterr().out == texts[0]
    exec(blocks[1].replace("41235", port), namespace)  # the lab's client, same server
    out = capsys.readouterr().out.splitlines()
    assert out == ["2", "('bought', 2)"]
    assert server.store.read() == 1
