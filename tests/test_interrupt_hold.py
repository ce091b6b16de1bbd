"""An interrupt never lands mid-print: ``lab.core.interrupts.held`` and the lab's console."""

from __future__ import annotations

import io
import os
import signal
from collections.abc import Callable

import pytest
from rich.console import Console, ConsoleOptions, RenderResult
from rich.text import Text

from lab.core import interrupts
from lab.core.interrupts import held
from lab.ui._console import HeldConsole


class Interrupting:
    """Renders one line, sending the lab ``signum`` halfway through."""

    def __init__(self, signum: int) -> None:
        self.signum = signum

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text("first half, ")
        os.kill(os.getpid(), self.signum)
        yield Text("second half")


def _raised(body: Callable[[], None]) -> bool:
    """Run ``body`` with the lab's handlers; True if it ended in KeyboardInterrupt."""
    with interrupts.installed():
        try:
            body()
        except KeyboardInterrupt:
            return True
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_held_interrupt_is_raised_when_the_block_ends(signum: int) -> None:
    reached = []

    def body() -> None:
        with held:
            os.kill(os.getpid(), signum)
            reached.append("after the signal")  # the handler only noted it
        reached.append("never: raised as the block ended")

    assert _raised(body)
    assert reached == ["after the signal"]
    assert interrupts.last_signal() == signum
    assert interrupts.EXIT_STATUS[interrupts.last_signal()] == 128 + signum


def test_outside_a_hold_the_interrupt_is_raised_at_once() -> None:
    reached = []

    def body() -> None:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a call: Python runs the handler here
        reached.append("never")

    assert _raised(body)
    assert reached == []


def test_only_the_outermost_hold_raises() -> None:
    reached = []

    def body() -> None:
        with held:
            with held:
                os.kill(os.getpid(), signal.SIGINT)
            reached.append("the inner block ended quietly")

    assert _raised(body)
    assert reached == ["the inner block ended quietly"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_lab_console_finishes_the_line_then_raises(signum: int) -> None:
    out = io.StringIO()
    console = HeldConsole(file=out, width=80)
    with interrupts.installed(), pytest.raises(KeyboardInterrupt):
        console.print(Interrupting(signum))
    assert out.getvalue() == "first half, \nsecond half\n"
    console.print("and the console still prints")  # not left buffering
    assert out.getvalue().endswith("and the console still prints\n")


def test_a_plain_console_is_cut_mid_line() -> None:
    """The control: without the hold, the interrupt lands inside the print."""
    out = io.StringIO()
    console = Console(file=out, width=80)
    with interrupts.installed(), pytest.raises(KeyboardInterrupt):
        console.print(Interrupting(signal.SIGINT))
    assert "second half" not in out.getvalue()


def test_installed_restores_the_previous_handlers() -> None:
    before = {s: signal.getsignal(s) for s in interrupts.EXIT_STATUS}
    with interrupts.installed():
        assert all(signal.getsignal(s) == held.handler for s in interrupts.EXIT_STATUS)
    assert {s: signal.getsignal(s) for s in interrupts.EXIT_STATUS} == before
