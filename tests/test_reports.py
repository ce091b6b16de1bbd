"""A buyer's reports: batched, but never held across a wait, and every write atomic."""

from __future__ import annotations

import io
import multiprocessing
import select
from pathlib import Path

import pytest
from rich.console import Console

from lab import buyer as _buyer
from lab.buyer import Buyer, BuyerSpec, decode
from lab.core.model import BuyerEvent
from lab.stores.jsonfile import Store
from lab.ui.cli import _Live

#: Linux's PIPE_BUF; POSIX guarantees at least 512, and the lab keeps below 4096.
PIPE_BUF = 4096


class Sink:
    """Stands in for the report pipe: the raw messages, in the order they were written."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def send_bytes(self, raw: bytes) -> None:
        self.messages.append(raw)

    def reports(self) -> list[tuple[str, int, float, int | None, str]]:
        return [r for raw in self.messages for r in decode(raw)]


def buyer(tmp_path: Path, sink: Sink, latency: float = 0.0) -> Buyer:
    spec = BuyerSpec(index=3, name="buyer 3", latency_s=latency)
    return Buyer(spec, Store(tmp_path / "data.json"), sink)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "detail",
    [
        "\x1b" * 5000,  # escapes to six bytes a character: the worst case
        "用户3在查票 当前余票为:1 " * 400,  # three bytes a character in UTF-8
        '"\\' * 3000,
    ],
)
def test_every_write_is_below_pipe_buf_and_keeps_order(tmp_path: Path, detail: str) -> None:
    sink = Sink()
    me = buyer(tmp_path, sink)
    for i in range(40):
        me.searched(i)
        me.said(detail) if i % 7 == 0 else me.failed(RuntimeError(detail))
    me.flush()
    assert sink.messages, "nothing was sent"
    assert max(len(m) for m in sink.messages) < PIPE_BUF
    reports = sink.reports()
    assert [k for k, *_ in reports] == [
        k for i in range(40) for k in ("search", "said" if i % 7 == 0 else "error")
    ]
    assert [c for k, _, _, c, _ in reports if k == "search"] == list(range(40))
    said = [d for k, _, _, _, d in reports if k == "said"]
    assert said == [detail[: _buyer._MAX_DETAIL]] * len(said)
    times = [t for _, _, t, _, _ in reports]
    assert times == sorted(times)


def test_reports_wait_for_a_wait_then_leave_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At latency 0 the reports travel together; a buyer about to wait sends them first."""
    sink = Sink()
    me = buyer(tmp_path, sink, latency=0.25)
    seen_before_sleep: list[list[str]] = []
    monkeypatch.setattr(
        _buyer.time, "sleep", lambda s: seen_before_sleep.append([r[0] for r in sink.reports()])
    )
    me.searched(1)
    me.read(1)
    assert sink.messages == []  # batched: the runner is not woken for each report
    me.network_latency()
    assert seen_before_sleep == [["search", "read"]]  # sent before the 模拟网络延迟 sleep
    me.bought(ticket=1)
    me.wants_lock()  # another wait: flushed again
    assert [r[0] for r in sink.reports()] == ["search", "read", "bought"]


def test_a_real_pipe_carries_a_batch_whole(tmp_path: Path) -> None:
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        me = Buyer(BuyerSpec(0, "buyer 0", 0.0), Store(tmp_path / "data.json"), writer)
        me.searched(1)
        me.read(1)
        me.bought(ticket=1)
        me.flush()
        assert select.select([reader.fileno()], [], [], 5.0)[0]
        assert [r[0] for r in decode(reader.recv_bytes())] == ["search", "read", "bought"]
        assert not reader.poll(0)
    finally:
        reader.close()
        writer.close()


def test_verbose_lines_print_in_time_order_though_batches_arrive_out_of_it() -> None:
    out = io.StringIO()
    live = _Live(Console(file=out, width=100), "en", verbose=True, bar=False)
    # Buyer 1's search batch arrives first; buyer 0's earlier lock turn arrives later.
    live.event(BuyerEvent(buyer=1, kind="search", t=0.005, count=1))
    live.event(BuyerEvent(buyer=0, kind="acquired", t=0.003))
    live.event(BuyerEvent(buyer=0, kind="read", t=0.004, count=1))
    live.tick(0.1)  # still inside the reorder window: nothing printed yet
    assert out.getvalue() == ""
    live.event(BuyerEvent(buyer=0, kind="bought", t=2.0, count=1))
    live.tick(1.0)  # the first three are old enough; the sale is not
    assert [line.split("] ")[1] for line in out.getvalue().splitlines()] == [
        "buyer 0 took the lock",
        "buyer 0 read ticket_num=1 before buying",
        "buyer 1 searched: ticket_num=1",
    ]
    live.stop()  # the run is over: the rest
    assert out.getvalue().splitlines()[-1].endswith("buyer 0 bought ticket #1")
