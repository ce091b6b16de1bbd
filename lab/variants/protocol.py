"""The contract every variant implements, and what the runner hands it.

A variant is the notes' program with one mechanism swapped in or out. It
does not start buyers or count anything: the runner does that, the same way
for every variant, so that differences in the tally come from the mechanism
alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from lab.buyer import Bare, BareProgram, Host, Program
from lab.core.contracts import VariantInfo
from lab.core.errors import UsageError
from lab.core.model import Scenario

__all__ = [
    "MpContext",
    "OneProcessVariant",
    "RunEnv",
    "Stage",
    "Variant",
    "VariantBase",
    "VariantInfo",
]

K = TypeVar("K")

#: A multiprocessing context (fork, spawn or forkserver). typeshed's
#: BaseContext lacks ``Process``, which every concrete context has.
MpContext = Any


@dataclass(frozen=True)
class RunEnv:
    """What the runner gives a variant to set up its shared machinery."""

    #: the multiprocessing context (start method chosen by the runner)
    mp: MpContext
    store: Any  # the run's TicketStore; each variant knows its backend (lab.stores)
    scenario: Scenario
    buyers: int
    #: the longest any single wait (a reply, a lock, a join) may block before it is an error
    timeout: float


def _run_by_host(me: Any, kit: Any) -> None:
    """A hosted stage's per-seat program: never called, the host runs every buyer."""
    raise AssertionError("this stage's buyers run through Stage.host")


@dataclass(frozen=True)
class Stage(Generic[K]):
    """What a variant hands back: the program each buyer runs, and its kit.

    Each buyer calls ``program(me, kit)``: the one ``kit`` every buyer shares
    (a lock, a server's address), or its own ``per_buyer[i]`` (the queue's
    reply pipe). The program is a module-level function, so that it also
    crosses a ``spawn`` start; a program that needs only ``me`` is staged with
    :meth:`alone`. mypy checks that the kit is what the program takes.
    """

    program: Program[K]
    kit: K
    per_buyer: Sequence[K] | None = None
    #: the mutex in use, for the report ("file", "mp"), if the variant has one
    lock: str | None = None
    #: buyers seated in one process, each on its own thread. 1 (the notes: one
    #: process per buyer) unless the buyers share nothing but a socket.
    buyers_per_process: int = 1
    #: start each buyer only after the previous one finished (``p.start();
    #: p.join()`` in the loop): the mistake that hides the race
    sequential: bool = False
    #: runs every buyer seated in a process its own way (gevent's ``joinall``),
    #: instead of one thread per seat; see :data:`lab.buyer.Host`
    host: Host | None = None
    #: filled by the variant while it tears down; the runner copies
    #: ``extra["ledger"]`` (a server's or seller's own account) into the Result
    extra: dict[str, Any] = field(default_factory=dict)

    def kit_for(self, index: int) -> K:
        """Buyer ``index``'s kit: its own if the stage has one per buyer, else the shared one."""
        return self.kit if self.per_buyer is None else self.per_buyer[index]

    @staticmethod
    def hosted(host: Host, kit: K, *, buyers_per_process: int) -> Stage[K]:
        """The stage of buyers that one process runs its own way (``host``): a loop, a hub."""
        return Stage(
            program=_run_by_host, kit=kit, buyers_per_process=buyers_per_process, host=host
        )

    @staticmethod
    def alone(
        program: BareProgram,
        *,
        buyers_per_process: int = 1,
        sequential: bool = False,
        lock: str | None = None,
    ) -> Stage[None]:
        """The stage of a program that needs nothing but its buyer: ``naive.run(me)``."""
        return Stage(
            program=Bare(program),
            kit=None,
            lock=lock,
            buyers_per_process=buyers_per_process,
            sequential=sequential,
        )


class Variant(VariantInfo, Protocol):
    """One way to run the ticket grab: what it says of itself (:class:`VariantInfo`),
    a check of the options it is given, and the machinery it sets up."""

    def check(self, scenario: Scenario) -> None:
        """Refuse options this variant cannot run with (one-line ``UsageError``).

        The runner calls it before it creates anything: no run directory, no claim.
        """
        ...

    def stage(self, env: RunEnv) -> AbstractContextManager[Stage[Any]]:
        """Set up shared machinery (a lock, a seller process) for one run; tear it down on exit."""
        ...


class VariantBase:
    """Defaults for the attributes most variants do not need to say anything about.

    A variant class inherits this and sets ``name``, ``summary``, ``safe``,
    ``why`` and ``stage``; the rest default to the common case.
    """

    locks: tuple[str, ...] = ()
    #: where the tickets are kept: a backend of lab.stores.BACKENDS
    store: str = "json"
    undersells: bool = False
    fails: bool = False
    fix: str = ""
    fixed_by: str | None = None
    caveat: str = ""
    requires: str | None = None
    explorable: bool = True
    crash_safe: bool = True
    many_buyers_per_process: bool = False
    needs_fork: bool = False

    def check(self, scenario: Scenario) -> None:
        """No option to refuse beyond what the CLI already checks."""


class OneProcessVariant(VariantBase):
    """Every buyer of the run seated in one process (threads, tasks, greenlets, a pool).

    ``--crash`` SIGKILLs a buyer, and none of these can be killed alone: killing
    the process would kill every buyer. It is refused, in one line that says
    how the buyers run (:attr:`runs_as`).
    """

    name: str
    #: how the buyers run, for ``--crash``'s refusal
    runs_as: str = "buyers in one process; a buyer cannot be killed alone"
    locks: tuple[str, ...] = ()
    crash_safe = False
    many_buyers_per_process = True

    def check(self, scenario: Scenario) -> None:
        if scenario.crash > 0:
            raise UsageError(f"--crash: {self.name} runs its buyers as {self.runs_as}")
