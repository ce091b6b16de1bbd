"""``lab serve``: the command that runs a :class:`~lab.net.server.TicketServer`.

The server itself (lab.net.server) never prints: it reports through the
``log`` callback it is given. This module owns the options, the one
``listening on HOST:PORT`` line, the warning for a non-loopback address and
the closing summary, because only lab.ui writes to the terminal.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from rich.console import Console

from lab.core import argtypes
from lab.core.errors import StoreCorrupted, UsageError
from lab.core.model import MAX_LATENCY_S, MAX_TICKETS, Latency
from lab.net.server import (
    DEFAULT_EVICT_AFTER_S,
    DEFAULT_MAX_CONNECTIONS,
    MODES,
    ServerConfig,
    ServerFailed,
    TicketServer,
    fd_budget,
    is_loopback,
    lockstep_wait_s,
)
from lab.net.wire import DEFAULT_PORT, check_token, format_address
from lab.stores.jsonfile import Store

__all__ = ["add_arguments", "serve_command"]


def _port(text: str) -> int:
    # isascii: str.isdigit() also accepts "²" and Arabic-Indic digits.
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 5 or int(digits) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _token_arg(text: str) -> str:
    try:
        return check_token(text, "--token")
    except UsageError as exc:
        # argparse prefixes "argument --token:" itself.
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--token: ")) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``lab serve``."""
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data.json"),
        metavar="PATH",
        help="the ticket file to own (default: data.json here, as the notes)",
    )
    parser.add_argument(
        "--tickets",
        type=argtypes.whole(0, MAX_TICKETS, "a whole number of tickets, 0 or more"),
        help="reset data.json to this many tickets first (default: keep its count)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"port to listen on (default {DEFAULT_PORT}; 0 = any free port, printed at start)",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="safe",
        help="naive: the notes' buy with no lock (races); safe: a lock around each purchase",
    )
    parser.add_argument(
        "--latency",
        type=argtypes.latency,
        default=Latency(0.0, 0.0),
        metavar="SPEC",
        help="delay between a purchase's read and write when the buyer names none: 0, 0.2 "
        "or 0.05-0.2 (default 0)",
    )
    parser.add_argument(
        "--max-latency",
        type=argtypes.seconds(0.0, MAX_LATENCY_S),
        default=3.0,
        metavar="SECONDS",
        help="the longest delay a buyer may ask for (default 3, the notes' worst case)",
    )
    parser.add_argument(
        "--lockstep",
        type=argtypes.whole(0, 100_000, "a whole number of purchases, 0 or more"),
        default=0,
        metavar="N",
        help="hold the first N purchases between read and write until all N have read: "
        "a naive server then oversells every time (default 0: off)",
    )
    parser.add_argument(
        "--token",
        type=_token_arg,
        metavar="SECRET",
        help="require this shared secret in every request (default: $LAB_TOKEN, else none)",
    )
    parser.add_argument(
        "--max-connections",
        type=argtypes.whole(1, 1_000_000, "a whole number of connections, 1 or more"),
        default=DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"connections served at once; more wait in the backlog (default "
        f"{DEFAULT_MAX_CONNECTIONS})",
    )
    parser.add_argument(
        "--idle-timeout",
        type=argtypes.seconds(0.01, 86_400.0),
        default=60.0,
        metavar="SECONDS",
        help="hang up a connection that sends nothing for this long (default 60)",
    )
    parser.add_argument(
        "--evict-after",
        type=argtypes.seconds(0.0, 86_400.0),
        default=DEFAULT_EVICT_AFTER_S,
        metavar="SECONDS",
        help="when every connection slot is taken and another client waits, hang up a "
        f"connection open this long at its next pause (default {DEFAULT_EVICT_AFTER_S:g})",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print a line for every search and purchase"
    )


def _config_from_args(args: argparse.Namespace, store: Store) -> ServerConfig:
    token = args.token
    if token is None:
        # An empty $LAB_TOKEN means "none", as for `lab run`.
        token = os.environ.get("LAB_TOKEN") or None
        if token is not None:
            check_token(token, "LAB_TOKEN")
    if args.latency.high > args.max_latency:
        raise UsageError(f"--latency: {args.latency} is above --max-latency {args.max_latency:g} s")
    budget = fd_budget()
    if args.max_connections > budget:
        raise UsageError(
            f"--max-connections: {args.max_connections} is above what this process may "
            f"open ({budget}); lower it or raise `ulimit -n`"
        )
    if args.lockstep > args.max_connections:
        raise UsageError(
            f"--lockstep: {args.lockstep} purchases can never be in flight together "
            f"with --max-connections {args.max_connections}"
        )
    return ServerConfig(
        store=store,
        mode=args.mode,
        host=args.host,
        port=args.port,
        latency=args.latency,
        max_latency=args.max_latency,
        token=token,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
        evict_after=args.evict_after,
        lockstep=args.lockstep,
        lockstep_timeout=lockstep_wait_s(args.lockstep),
    )


def _check_data(store: Store) -> None:
    try:
        store.read()
    except StoreCorrupted as exc:
        raise UsageError(f"--data: {exc} (pass --tickets T to start it afresh)") from None


def serve_command(args: argparse.Namespace, console: Console) -> int:
    """``lab serve``: own data.json and sell its tickets over TCP until interrupted.

    Prints exactly one ``listening on HOST:PORT`` line (the real port, also
    with ``--port 0``) once connections are accepted. Ctrl-C or SIGTERM (the
    CLI turns it into KeyboardInterrupt) stops it cleanly; returns 0.
    """
    store = Store(args.data)
    config = _config_from_args(args, store)
    if args.tickets is None:
        _check_data(store)  # before the lock, which would create a missing directory
    run_lock = store.claim()  # one owner per data.json: a run or a server
    try:
        if args.tickets is not None:
            try:
                store.reset(args.tickets)
            except StoreCorrupted as exc:
                raise UsageError(f"--data: {exc}") from None
            except OSError as exc:
                raise UsageError(f"--data: {store.path}: {exc.strerror or exc}") from None
        else:
            _check_data(store)

        def log(line: str) -> None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

        server = TicketServer(config, log=log if args.verbose else None)
        host, port = server.start()
        try:
            # A Ctrl-C (or SIGTERM, which the CLI turns into one) anywhere from here
            # on means "stop": the finally below answers or refuses what is in flight.
            with contextlib.suppress(KeyboardInterrupt):
                if not is_loopback(host):
                    # Loopback is the default for a reason: say so when it is left, and
                    # before the listening line, i.e. before anyone can have connected.
                    risk = (
                        "every request must carry --token"
                        if config.token is not None
                        else "no --token: anyone who can reach it can buy"
                    )
                    print(
                        f"lab serve: warning: {format_address(host, port)} is reachable "
                        f"from other machines; {risk}",
                        file=sys.stderr,
                        flush=True,
                    )
                console.print(
                    f"listening on {format_address(host, port)}",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
                console.file.flush()
                while not server.wait(0.5):
                    pass
        finally:
            server.stop()
        if server.failure is not None:
            raise ServerFailed(f"the server stopped accepting connections: {server.failure}")
        ledger = server.stats()
        console.print(
            f"stopped: {ledger['sold']} sold, {ledger['sold_out']} sold out, "
            f"data.json holds ticket_num={ledger['remaining']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 0
    finally:
        run_lock.release()
