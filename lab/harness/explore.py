"""Systematic interleavings: run the buyers' real code one step at a time, in every order.

``lab run`` lets the OS scheduler decide who goes when, so a race shows up
only "usually". Here the lab is the scheduler. Every buyer runs the *same*
program ``lab run`` runs (``naive.run``, ``locked.run``, ...), on its own
thread, and pauses at each step point (``Buyer.step``) until the scheduler
lets it take the next step::

    scheduler                         buyer threads (the variant's own code)
    ─────────                         ──────────────────────────────────────
    enabled(): who can move?          b0 ── paused at a gate ──┐
    step(b1) ───────── go ─────────►  b1 runs: read data.json  │  one step at a
                                      b1 ── paused at next gate│  time, nobody
    label: "b1.read(1)"  ◄── events ─                          │  else moves
    ...repeat until all are done, then tally (the same Result as lab run)

A *schedule* is the list of steps taken, e.g. ``b0.read(1) b1.read(1)
b0.write(0) b1.write(0)``. Steps are the points where buyers touch shared
state: the read of data.json before deciding (the search read is folded into
it: it changes what a buyer prints, never what it writes), the write (or
sold-out), taking the lock, and for a lock-only-around-the-write variant the
decision made before it. A buyer waiting to take a lock someone holds cannot
be scheduled.

:func:`explore` enumerates schedules depth-first, re-running the buyers from
scratch for each (nothing is modelled: the code itself runs), every schedule
for up to 3 buyers, a seeded random sample above that. :func:`replay` runs one
given schedule exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import multiprocessing
import os
import random
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from lab.buyer import Buyer, BuyerSpec, Program, decode, signals_deferred, to_event
from lab.core.errors import LabError, UsageError
from lab.core.explored import Exploration, Outcome
from lab.core.model import BuyerEvent, Latency, Result, Scenario
from lab.harness.result import build_result
from lab.harness.runner import default_start_method
from lab.stores.jsonfile import Store
from lab.variants.coroutines import CoroutineVariant, LoopKit, ProcessLoop
from lab.variants.greenlets import GeventKit, GreenletVariant, Hub
from lab.variants.protocol import RunEnv, Variant

__all__ = [
    "Exploration",
    "Gated",
    "GatedGreenlets",
    "GatedTasks",
    "ScheduleError",
    "StepHang",
    "explore",
    "gated",
    "parse_schedule",
    "replay",
    "scratch_dir",
]

#: The step points where a buyer pauses for the scheduler.
GATES = frozenset({"read", "want-lock", "acquired"})
#: Up to this many buyers, every schedule is explored.
EXHAUSTIVE_BUYERS = 3
#: How long one step may take before the buyer is declared stuck (a hang).
STEP_TIMEOUT_S = 10.0


class ScheduleError(LabError):
    """Raised by :func:`replay` and ``lab step`` when a schedule asks for an impossible step."""


class StepHang(Exception):
    """Raised by :meth:`Gated.step` when a buyer does not reach its next step point in time."""


class _Recorder:
    """Stands in for the report pipe: the buyers' reports, kept in memory, in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, int, float, int | None, str]] = []
        self._lock = threading.Lock()

    def send_bytes(self, raw: bytes) -> None:
        with self._lock:
            self.messages.extend(decode(raw))


def _label(messages: Sequence[tuple[str, int, float, int | None, str]], gate: str | None) -> str:
    """Name one step by what the buyer did in it: ``read(1)``, ``write(0)``, ``acquire``..."""
    parts: list[str] = []
    kinds = [m[0] for m in messages]
    for kind, _, _, count, _ in messages:
        if kind == "read":
            parts.append(f"read({count})")
        elif kind == "acquired":
            parts.append("acquire")
        elif kind == "bought":
            parts.append(f"write({count - 1})" if count is not None else "write")
        elif kind == "sold_out":
            parts.append("sold-out")
        elif kind == "released":
            parts.append("release")
        elif kind == "error":
            parts.append("error")
    if not parts and "search" in kinds:
        parts.append(f"search({next(m[3] for m in messages if m[0] == 'search')})")
    if not parts:
        parts.append("decide" if gate == "want-lock" else "finish")
    # Read the step in the order things happen to the ticket, whatever order the reports came in.
    order = (
        "search",
        "read",
        "decide",
        "acquire",
        "write",
        "sold-out",
        "error",
        "release",
        "finish",
    )
    return "+".join(sorted(parts, key=lambda p: order.index(p.split("(")[0])))


def _scenario(buyers: int, tickets: int) -> Scenario:
    """What an explored run reports as its scenario: no latency, the schedule decides."""
    return Scenario(name="explore", buyers=buyers, tickets=tickets, latency=Latency(0, 0), seed=0)


class _Schedule:
    """What :class:`Gated` (threads) and :class:`GatedTasks` (coroutines) share: the
    buyers' positions, who may move, how a step is named, and the tally."""

    variant: Variant
    buyers: int
    tickets: int
    store: Store
    scenario: Scenario
    steps: list[str]
    sequential: bool
    #: where each buyer is paused: "start", a gate name, None while running, "end"
    at: list[str | None]
    holder: int | None
    _recorder: _Recorder
    _t0: float

    def _setup(self, variant: Variant, buyers: int, tickets: int, workdir: Path) -> None:
        """A fresh data.json and every buyer at its start (Gated's dataclass does its own)."""
        self.variant = variant
        self.buyers = buyers
        self.tickets = tickets
        self.scenario = _scenario(buyers, tickets)
        self.store = Store(workdir / "data.json")
        self.store.reset(tickets)
        self.steps = []
        self.sequential = False
        self._recorder = _Recorder()
        self.at = ["start"] * buyers
        self.holder = None
        self._t0 = time.monotonic()

    def enabled(self) -> list[int]:
        """Buyers that can take a step now (not finished, not waiting for a held lock)."""
        alive = [i for i in range(self.buyers) if self.at[i] != "end"]
        if self.sequential:
            return alive[:1]
        return [
            i for i in alive if not (self.at[i] == "want-lock" and self.holder not in (None, i))
        ]

    def blocked_reason(self, i: int) -> str | None:
        """Why buyer ``i`` cannot move now, or None if it can."""
        if not 0 <= i < self.buyers:
            return f"there is no buyer {i} (buyers are 0..{self.buyers - 1})"
        if self.at[i] == "end":
            return f"buyer {i} has already finished"
        if i not in self.enabled():
            if self.sequential:
                return f"buyer {i} has not started: buyers run one at a time"
            return f"buyer {i} is blocked: buyer {self.holder} holds the lock"
        return None

    def step(self, i: int) -> str:
        """Let buyer ``i`` run to its next step point; return the step as ``b{i}.label``."""
        mark = len(self._recorder.messages)
        gate_before = self.at[i]
        if not self._advance(i):
            raise StepHang(f"buyer {i} did not reach its next step within {STEP_TIMEOUT_S:g} s")
        return self._named(i, mark, gate_before)

    def _advance(self, i: int) -> bool:
        """Let paused buyer ``i`` go, and wait until it pauses again or ends (False: it
        did not within :data:`STEP_TIMEOUT_S`). Each schedule lets go its own way."""
        raise NotImplementedError

    def _named(self, i: int, mark: int, gate_before: str | None) -> str:
        """Name buyer ``i``'s step by the reports it made since ``mark``; track the lock."""
        new = self._recorder.messages[mark:]
        for kind, *_ in new:
            if kind == "acquired":
                self.holder = i
            elif kind == "released":
                self.holder = None
        label = f"b{i}.{_label(new, self.at[i] if gate_before != 'want-lock' else 'acquired')}"
        self.steps.append(label)
        return label

    @property
    def finished(self) -> bool:
        return all(a == "end" for a in self.at)

    def view(self, i: int) -> str:
        """What buyer ``i`` knows: the counts it has read, and where it is."""
        seen = [m for m in self._recorder.messages if m[1] == i and m[0] in ("search", "read")]
        last = f"read ticket_num={seen[-1][3]}" if seen else "has read nothing yet"
        where = {
            "start": "not started",
            "end": "done",
            "want-lock": "waiting to take the lock",
            "acquired": "holding the lock",
            "read": "about to decide and write",
        }.get(self.at[i] or "", self.at[i] or "running")
        return f"buyer {i}: {last}; {where}"

    # -- the tally -----------------------------------------------------------------

    def events(self) -> list[BuyerEvent]:
        t0 = self._recorder.messages[0][2] if self._recorder.messages else self._t0
        return [to_event(k, b, t - t0, c, d) for k, b, t, c, d in self._recorder.messages]

    def result(self, hang: str | None = None) -> Result:
        events = self.events()
        return build_result(
            self.variant,
            self.scenario,
            buyers=self.buyers,
            tickets=self.tickets,
            events=events,
            final=self.store.snapshot(),
            elapsed_s=max((e.t for e in events), default=0.0),
            seed=0,
            start_method="threads (lab explore)",
            lock=self.scenario.lock if self.variant.locks else None,
            stalled=hang,
            schedule_driven=True,
        )


@dataclass
class Gated(_Schedule):
    """One run of a variant's buyers, each on a thread, advanced one step at a time.

    Use as a context manager; :meth:`step` moves one buyer to its next step
    point and returns what it did. :meth:`result` tallies the run exactly as
    ``lab run`` would.
    """

    variant: Variant
    buyers: int
    tickets: int
    workdir: Path
    steps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = Store(self.workdir / "data.json")
        self.store.reset(self.tickets)
        self.scenario = _scenario(self.buyers, self.tickets)
        self._recorder = _Recorder()
        self._cond = threading.Condition()
        self._go = [threading.Semaphore(0) for _ in range(self.buyers)]
        #: where each buyer is paused: "start", a gate name, None while running, "end"
        self.at: list[str | None] = ["start"] * self.buyers
        self.holder: int | None = None
        self._threads: list[threading.Thread] = []
        self._exit = contextlib.ExitStack()
        self._t0 = time.monotonic()
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> Gated:
        mp = multiprocessing.get_context(default_start_method())
        env = RunEnv(
            mp=mp, store=self.store, scenario=self.scenario, buyers=self.buyers, timeout=5.0
        )
        stage = self._exit.enter_context(self.variant.stage(env))
        self.sequential = stage.sequential
        for i in range(self.buyers):
            spec = BuyerSpec(i, f"buyer {i}", 0.0, self.buyers)
            me = Buyer(spec, self.store, self._recorder, None)  # type: ignore[arg-type]
            me.on_step = self._gate_for(i)
            thread = threading.Thread(
                target=self._body, args=(i, me, stage.program, stage.kit_for(i)), daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # A second Ctrl-C (or a SIGTERM after one) waits until the buyers are stopped.
        with signals_deferred():
            self._close()

    def _close(self) -> None:
        # Stop gating: every buyer now runs to its end without pausing, so no
        # thread outlives the run (a schedule error or a quit leaves buyers mid-way).
        with self._cond:
            self._closing = True
        for go in self._go:
            go.release()
        for thread in self._threads:
            thread.join(STEP_TIMEOUT_S)
            # A buyer stuck in a lock is a daemon thread and gives up when its lock
            # times out; the stage below still tears down its processes.
        self._exit.close()

    def _gate_for(self, i: int) -> Callable[[str], None]:
        def gate(name: str) -> None:
            if name in GATES:
                self._pause(i, name)

        return gate

    def _pause(self, i: int, name: str) -> None:
        with self._cond:
            self.at[i] = name
            self._cond.notify_all()
            if self._closing:
                return
        # Bounded, like every wait: if nobody schedules this buyer, it finishes on its own.
        while not self._go[i].acquire(timeout=STEP_TIMEOUT_S):
            if self._closing:
                return

    def _body(self, i: int, me: Buyer, program: Program[Any], kit: Any) -> None:
        self._pause(i, "start")
        try:
            program(me, kit)
        except Exception as exc:  # the buyer's error, as in lab run
            me.failed(exc)
        finally:
            me.flush()  # its last reports, before the scheduler sees it finished
            with self._cond:
                self.at[i] = "end"
                self._cond.notify_all()

    # -- scheduling --------------------------------------------------------------

    def _advance(self, i: int) -> bool:
        with self._cond:
            self.at[i] = None
        self._go[i].release()
        with self._cond:
            return self._cond.wait_for(lambda: self.at[i] is not None, STEP_TIMEOUT_S)


class GatedTasks(_Schedule):
    """The same as :class:`Gated`, for coroutine buyers (``asyncio-*``): no threads at all.

    Every buyer is a task on an event loop of the explorer's own, and every
    switch point in the variant's code (:meth:`ProcessLoop.gate`) awaits the
    explorer's permission. :meth:`step` lets one task go and runs the loop
    until that task reaches its next switch point or ends; every other task
    is parked, so nothing else can run: a single-threaded loop makes the
    schedule the only thing that decides.
    """

    def __init__(self, variant: Variant, buyers: int, tickets: int, workdir: Path) -> None:
        assert isinstance(variant, CoroutineVariant)
        self._grab = type(variant).grab
        self._setup(variant, buyers, tickets, workdir)
        self._loop = asyncio.new_event_loop()
        self._go: list[asyncio.Event] = []
        self._parked: list[asyncio.Event] = []
        self._tasks: list[asyncio.Task[None]] = []

    def __enter__(self) -> GatedTasks:
        kit = LoopKit(timeout=STEP_TIMEOUT_S, lockstep=False, lockstep_timeout=0.0)
        grab = self._grab

        async def start() -> None:
            here = ProcessLoop(self.buyers)
            here.gated = self._gate
            self._go = [asyncio.Event() for _ in range(self.buyers)]
            self._parked = [asyncio.Event() for _ in range(self.buyers)]
            for i in range(self.buyers):
                me = Buyer(BuyerSpec(i, f"buyer {i}", 0.0, self.buyers), self.store, self._recorder)  # type: ignore[arg-type]
                me.on_step = lambda name: None  # flush at every step (the labels need it)
                self._tasks.append(asyncio.create_task(self._body(i, me, grab, kit, here)))
            await asyncio.gather(*(p.wait() for p in self._parked))  # all at "start"

        self._loop.run_until_complete(start())
        return self

    def __exit__(self, *exc: object) -> None:
        with signals_deferred():
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                self._loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            self._loop.close()

    async def _gate(self, i: int, name: str) -> None:
        self.at[i] = name
        self._parked[i].set()
        await self._go[i].wait()
        self._go[i].clear()

    async def _body(
        self, i: int, me: Buyer, grab: Callable[..., Awaitable[None]], kit: Any, here: Any
    ) -> None:
        await self._gate(i, "start")
        try:
            await grab(me, kit, here)
        except Exception as exc:  # the buyer's error, as in lab run
            me.failed(exc)
        finally:
            me.flush()
            self.at[i] = "end"
            self._parked[i].set()

    # -- scheduling: as Gated ------------------------------------------------------

    def _advance(self, i: int) -> bool:
        self.at[i] = None
        self._parked[i].clear()
        self._go[i].set()
        try:
            self._loop.run_until_complete(asyncio.wait_for(self._parked[i].wait(), STEP_TIMEOUT_S))
        except TimeoutError:
            return False
        return True


class GatedGreenlets(_Schedule):
    """The same as :class:`GatedTasks`, for greenlets (``gevent-*``), on a hub of our own.

    Nothing is monkey-patched: in a run ``patch_all`` makes the sleep yield,
    here the gates (:meth:`Hub.gate`) do the switching, at the same points.
    :meth:`step` wakes one greenlet and waits (in the main greenlet, which
    lets the hub run) until it parks again or ends; every other one is parked.
    """

    def __init__(self, variant: Variant, buyers: int, tickets: int, workdir: Path) -> None:
        assert isinstance(variant, GreenletVariant)
        variant.check(_scenario(buyers, tickets))  # without gevent: one line, before anything
        self._grab = type(variant).grab
        self._setup(variant, buyers, tickets, workdir)
        self._greenlets: list[Any] = []

    def __enter__(self) -> GatedGreenlets:
        import gevent  # noqa: PLC0415 - only when a gevent variant is explored
        import gevent.event  # noqa: PLC0415

        kit = GeventKit(timeout=STEP_TIMEOUT_S, lockstep=False, lockstep_timeout=0.0)
        hub = Hub(self.buyers)
        hub.gated = self._gate
        self._go = [gevent.event.Event() for _ in range(self.buyers)]
        self._parked = [gevent.event.Event() for _ in range(self.buyers)]
        for i in range(self.buyers):
            spec = BuyerSpec(i, f"buyer {i}", 0.0, self.buyers)
            me = Buyer(spec, self.store, self._recorder)  # type: ignore[arg-type]
            me.on_step = lambda name: None  # flush at every step (the labels need it)
            self._greenlets.append(gevent.spawn(self._body, i, me, kit, hub))
        for parked in self._parked:
            parked.wait(STEP_TIMEOUT_S)  # every greenlet at "start"
        return self

    def __exit__(self, *exc: object) -> None:
        import gevent  # noqa: PLC0415

        with signals_deferred():
            gevent.killall(self._greenlets, timeout=STEP_TIMEOUT_S)

    def _gate(self, i: int, name: str) -> None:
        self.at[i] = name
        self._parked[i].set()
        self._go[i].wait(STEP_TIMEOUT_S)
        self._go[i].clear()

    def _body(self, i: int, me: Buyer, kit: Any, hub: Any) -> None:
        self._gate(i, "start")
        try:
            self._grab(me, kit, hub)
        except Exception as exc:  # the buyer's error, as in lab run
            me.failed(exc)
        finally:
            me.flush()
            self.at[i] = "end"
            self._parked[i].set()

    def _advance(self, i: int) -> bool:
        self.at[i] = None
        self._parked[i].clear()
        self._go[i].set()
        return bool(self._parked[i].wait(STEP_TIMEOUT_S))  # the main greenlet waits: the hub runs


def gated(
    variant: Variant, buyers: int, tickets: int, workdir: Path
) -> Gated | GatedTasks | GatedGreenlets:
    """One step-by-step run of ``variant``: threads for most variants, tasks for
    coroutines, greenlets for gevent."""
    if isinstance(variant, CoroutineVariant):
        return GatedTasks(variant, buyers, tickets, workdir)
    if isinstance(variant, GreenletVariant):
        return GatedGreenlets(variant, buyers, tickets, workdir)
    return Gated(variant, buyers, tickets, workdir)


@contextlib.contextmanager
def _terminate_after_cleanup() -> Iterator[None]:
    """Let SIGTERM unwind (so ``finally`` blocks run) instead of killing on the spot.

    Only where SIGTERM still has its default action (the CLI may have installed
    its own) and in the main thread. The exit status is the default action's
    (143): SystemExit, which the CLI returns as the exit status.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A scratch directory, removed however the block ends (Ctrl-C and SIGTERM included).

    On tmpfs where there is one (fsync is free there), unless ``$TMPDIR`` names
    the place for temporary files.
    """
    base = None
    if "TMPDIR" not in os.environ and Path("/dev/shm").is_dir():
        base = "/dev/shm"
    with _terminate_after_cleanup():
        path: Path | None = None
        try:
            # Deferred: tempfile's first use probes the directory with a file of
            # its own, which an interrupt landing at the wrong moment would leave
            # behind. An interrupt held back here is delivered as the block ends,
            # so the ``try`` is already around it.
            with signals_deferred():
                path = Path(tempfile.mkdtemp(prefix="lab-explore-", dir=base))
            yield path
        finally:
            if path is not None:
                # A second Ctrl-C must not cut the removal short.
                with signals_deferred():
                    shutil.rmtree(path, ignore_errors=True)


def _execute(
    variant: Variant,
    buyers: int,
    tickets: int,
    workdir: Path,
    choose: Callable[[list[int], int], int],
) -> tuple[list[int], list[list[int]], Outcome, Result]:
    """Run one schedule; ``choose(enabled, position)`` picks who moves at each point."""
    choices: list[int] = []
    options: list[list[int]] = []
    hang = None
    with gated(variant, buyers, tickets, workdir) as run:
        try:
            while not run.finished:
                enabled = run.enabled()
                if not enabled:
                    hang = "deadlock: every unfinished buyer is waiting for a lock"
                    break
                pick = choose(enabled, len(choices))
                options.append(enabled)
                choices.append(pick)
                run.step(pick)
        except StepHang as exc:
            hang = str(exc)
        result = run.result(hang)
        steps = tuple(run.steps)
    outcome = Outcome(
        steps=steps,
        oversold=result.oversold,
        lost_updates=result.lost_updates or 0,
        errors=result.errors,
        hang=hang is not None,
    )
    return choices, options, outcome, result


def explore(
    variant: Variant,
    buyers: int,
    tickets: int,
    *,
    max_schedules: int = 20_000,
    seed: int = 0,
    on_schedule: Callable[[Outcome], None] | None = None,
) -> Exploration:
    """Enumerate interleavings of the buyers' steps and tally each.

    Up to :data:`EXHAUSTIVE_BUYERS` buyers, depth-first over every schedule
    (``complete`` says whether ``max_schedules`` cut it short); above that, a
    random sample of ``max_schedules`` schedules drawn with ``seed``.
    """
    if not explorable(variant):
        raise UsageError(f"explore: {variant.name} cannot be explored step by step")
    start = time.monotonic()
    outcomes: list[Outcome] = []
    with scratch_dir() as workdir:
        if buyers <= EXHAUSTIVE_BUYERS:
            prefix: list[int] = []
            complete = False
            while len(outcomes) < max_schedules:

                def follow(enabled: list[int], pos: int, p: list[int] = prefix) -> int:
                    # Replay the prefix, then always the lowest buyer: depth-first order.
                    return p[pos] if pos < len(p) else enabled[0]

                choices, options, outcome, _ = _execute(variant, buyers, tickets, workdir, follow)
                outcomes.append(outcome)
                if on_schedule is not None:
                    on_schedule(outcome)
                for pos in reversed(range(len(choices))):
                    later = [o for o in options[pos] if o > choices[pos]]
                    if later:
                        prefix = [*choices[:pos], later[0]]
                        break
                else:
                    complete = True
                    break
            mode = "exhaustive"
        else:
            rng = random.Random(seed)
            for _ in range(max_schedules):
                *_, outcome, _ = _execute(
                    variant, buyers, tickets, workdir, lambda enabled, pos: rng.choice(enabled)
                )
                outcomes.append(outcome)
                if on_schedule is not None:
                    on_schedule(outcome)
            complete, mode = False, "sampled"
    return Exploration(
        variant=variant.name,
        buyers=buyers,
        tickets=tickets,
        mode=mode,
        complete=complete,
        seed=None if mode == "exhaustive" else seed,
        outcomes=tuple(outcomes),
        elapsed_s=time.monotonic() - start,
    )


_STEP = re.compile(r"^b(?P<buyer>\d+)\.(?P<what>[a-z][a-z+-]*)(?:\((?P<count>[^)]*)\))?$")


def explorable(variant: Variant) -> bool:
    """Whether ``lab explore`` can pause this variant's buyers at every step that matters."""
    return variant.requires is None and variant.explorable


def parse_schedule(text: str) -> list[tuple[int, str, str | None]]:
    """``"b0.read b1.read(1)"`` -> ``[(0, "read", None), (1, "read", "1")]``.

    Bounded: at most 1,000 steps of at most 100 characters each, and a buyer
    number of at most 4 digits (int() of a 5,000-digit number raises, and a
    huge number would become a huge count of buyers).
    """
    max_steps, max_token = 1000, 100
    if len(text) > max_steps * (max_token + 1):
        raise UsageError(f"--schedule: longer than {max_steps * (max_token + 1)} characters")
    tokens = text.replace(",", " ").split()
    if len(tokens) > max_steps:
        raise UsageError(f"--schedule: {len(tokens)} steps; the limit is {max_steps}")
    steps = []
    for n, token in enumerate(tokens, start=1):
        match = _STEP.match(token) if len(token) <= max_token else None
        if match is None or len(match["buyer"]) > 4 or not match["buyer"].isascii():
            shown = token if len(token) <= max_token else token[:max_token] + "..."
            raise UsageError(f"--schedule: step {n} {shown!r} is not like b0.read or b1.write(0)")
        steps.append((int(match["buyer"]), match["what"], match["count"]))
    if not steps:
        raise UsageError("--schedule: no steps given")
    return steps


def _kind(label: str) -> str:
    """``b0.write(0)+release`` -> ``write+release``: a step's kind without counts."""
    return re.sub(r"\([^)]*\)", "", label.split(".", 1)[1])


def replay(variant: Variant, buyers: int, tickets: int, schedule: str) -> tuple[Result, list[str]]:
    """Run exactly ``schedule``, then finish any buyer it leaves unfinished, lowest first.

    Raises:
        ScheduleError: a step names a buyer that is blocked, finished or missing,
            or the buyer's next step is not the one the schedule names.
    """
    wanted = parse_schedule(schedule)
    with scratch_dir() as workdir, gated(variant, buyers, tickets, workdir) as run:
        for n, (buyer, what, count) in enumerate(wanted, start=1):
            token = f"b{buyer}.{what}" + (f"({count})" if count is not None else "")
            reason = run.blocked_reason(buyer)
            if reason is not None:
                raise ScheduleError(f"--schedule: step {n} {token!r} cannot be taken: {reason}")
            try:
                label = run.step(buyer)
            except StepHang as exc:
                raise ScheduleError(f"--schedule: step {n} {token!r} hung: {exc}") from None
            done = label.split(".", 1)[1]  # e.g. "write(0)+release"
            first = done.split("+")[0]  # "write(0)": a step is named by its first part
            kind_ok = what in (_kind(label), re.sub(r"\([^)]*\)", "", first))
            count_ok = count is None or first == f"{what.split('+')[0]}({count})"
            if not (kind_ok and count_ok):
                raise ScheduleError(
                    f"--schedule: step {n} {token!r} does not match: buyer {buyer}'s next step was "
                    f"{label.split('.', 1)[1]} (lab explore {variant.name} prints valid ones)"
                )
        while not run.finished:
            enabled = run.enabled()
            if not enabled:
                return run.result(
                    "deadlock: every unfinished buyer is waiting for a lock"
                ), run.steps
            run.step(enabled[0])
        result = run.result()
        steps = list(run.steps)
    # Point the report at a file that still exists after the scratch dir is gone.
    return dataclasses.replace(result, data_path="(scratch, removed)"), steps
