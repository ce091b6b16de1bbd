"""Threads, a thread pool, asyncio tasks and greenlets race like processes; their locks fix it.

The variants of :mod:`lab.variants.threads`, :mod:`lab.variants.coroutines`,
:mod:`lab.variants.process_pool` and :mod:`lab.variants.greenlets` seat every
buyer in one process. They are run here directly (not through the registry),
each on its own data.json in the test's tmp_path.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from lab.buyer import Buyer
from lab.core.errors import UsageError
from lab.core.model import Latency, Result, Scenario
from lab.harness.explore import ScheduleError, explore, replay
from lab.harness.runner import run
from lab.variants import greenlets, process_pool
from lab.variants.coroutines import ProcessLoop
from lab.variants.greenlets import GREENLET_VARIANTS
from lab.variants.process_pool import POOL_VARIANTS
from lab.variants.threads import THREAD_VARIANTS, ThreadLock

ONE_PROCESS = (*THREAD_VARIANTS, *POOL_VARIANTS, *GREENLET_VARIANTS)
BY_NAME = {v.name: v for v in ONE_PROCESS}
SAFE = sorted(n for n, v in BY_NAME.items() if v.safe)
UNSAFE = sorted(n for n, v in BY_NAME.items() if not v.safe)
ZERO = Latency(0, 0)


def grab(name: str, tmp_path: Path, **fields: object) -> Result:
    scenario = Scenario(**{"latency": ZERO, "seed": 1, **fields})  # type: ignore[arg-type]
    return run(BY_NAME[name], scenario, data=tmp_path / "data.json")


def test_names_and_flags() -> None:
    assert set(BY_NAME) == {
        "threads-naive",
        "threads-locked",
        "threadpool-naive",
        "threadpool-locked",
        "asyncio-naive",
        "asyncio-locked",
        "gevent-naive",
        "gevent-locked",
        "processpool-naive",
        "processpool-locked",
    }
    assert len(BY_NAME) == len(ONE_PROCESS)
    assert SAFE == [
        "asyncio-locked",
        "gevent-locked",
        "processpool-locked",
        "threadpool-locked",
        "threads-locked",
    ]
    for v in ONE_PROCESS:
        assert v.many_buyers_per_process and not v.crash_safe
        # A single-threaded event loop is a deterministic scheduler: explore drives it.
        assert v.explorable == v.name.startswith(("asyncio-", "gevent-", "threads-"))
        assert v.summary and v.why and v.locks == ()


@pytest.mark.parametrize("name", SAFE)
@pytest.mark.parametrize("repeat", range(3))
def test_safe_variant_never_oversells_at_latency_zero(
    name: str, repeat: int, tmp_path: Path
) -> None:
    """200 buyers, 50 tickets, no latency: everyone contends at once, and the books balance."""
    result = grab(name, tmp_path, buyers=200, tickets=50, seed=repeat)
    assert (result.sold, result.remaining) == (50, 0)
    assert result.sold_out == 150
    assert result.oversold == result.lost_updates == result.double_sold == result.errors == 0
    assert result.consistent and result.verdict.held


@pytest.mark.parametrize("name", UNSAFE)
@pytest.mark.parametrize("attempt", range(3))
def test_naive_variant_oversells_every_time_in_lockstep(
    name: str, attempt: int, tmp_path: Path
) -> None:
    """Every buyer reads before any writes: one ticket, ten sales, nine lost updates."""
    result = grab(name, tmp_path, buyers=10, tickets=1, lockstep=True, seed=attempt)
    assert result.sold == 10
    assert result.oversold == 9
    assert result.lost_updates == 9
    assert result.errors == 0
    assert not result.consistent


@pytest.mark.parametrize("name", SAFE)
def test_safe_variant_in_lockstep_holds_and_the_rendezvous_gives_way(
    name: str, tmp_path: Path
) -> None:
    """The lock holder waits at the lockstep rendezvous alone; it times out, nothing hangs."""
    result = grab(name, tmp_path, buyers=3, tickets=1, lockstep=True)
    assert (result.sold, result.remaining, result.sold_out) == (1, 0, 2)
    assert result.consistent and result.verdict.held


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_crash_is_refused_in_one_line(name: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as refused:
        grab(name, tmp_path, buyers=3, tickets=1, crash=0.5)
    message = str(refused.value)
    assert message.startswith(f"--crash: {name} runs its buyers as ")
    assert "cannot be killed alone" in message and "\n" not in message
    assert not (tmp_path / "data.json").exists()  # refused before anything was created


@pytest.fixture
def no_thread_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The threads' lock taken away (the forked buyers inherit the patch)."""

    @contextlib.contextmanager
    def no_lock(self: ThreadLock, me: Buyer) -> Iterator[None]:
        yield

    monkeypatch.setattr(ThreadLock, "__call__", no_lock)


@pytest.fixture
def no_asyncio_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The coroutines' ``async with lock`` taken away."""

    @contextlib.asynccontextmanager
    async def no_lock(self: ProcessLoop, me: Buyer, timeout: float) -> AsyncIterator[None]:
        yield

    monkeypatch.setattr(ProcessLoop, "mutex", no_lock)


@pytest.fixture
def no_gevent_semaphore(monkeypatch: pytest.MonkeyPatch) -> None:
    """The greenlets' semaphore taken away: gevent-locked runs its program bare."""

    def unlocked(me: Buyer, kit: greenlets.GeventKit, hub: object) -> None:
        greenlets.search(me)
        greenlets.buy(me, kit, hub)  # type: ignore[arg-type]

    monkeypatch.setattr(greenlets, "grab_locked", unlocked)


@pytest.fixture
def lock_made_in_each_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process pool's mistake: every worker makes its own lock instead of sharing one."""

    def own_lock(lock: object, pool_pid: int) -> None:
        process_pool.die_with_parent(pool_pid)
        process_pool.child_signals()
        process_pool._LOCK = process_pool.multiprocessing.get_context("fork").Lock()

    monkeypatch.setattr(process_pool, "_share", own_lock)


@pytest.mark.usefixtures(
    "no_thread_lock", "no_asyncio_lock", "no_gevent_semaphore", "lock_made_in_each_worker"
)
@pytest.mark.parametrize("name", SAFE)
def test_safe_variant_without_its_lock_is_caught(name: str, tmp_path: Path) -> None:
    """The lock is the whole fix: without it the same program oversells, every time."""
    result = grab(name, tmp_path, buyers=10, tickets=1, lockstep=True)
    assert result.oversold == 9
    assert not result.consistent


def test_threads_locked_shares_one_lock_per_process() -> None:
    """A ThreadLock pickles (for spawn) into a fresh, unheld lock with the same bound."""
    lock = ThreadLock(7.5)
    copy = pickle.loads(pickle.dumps(lock))
    assert isinstance(copy, ThreadLock) and copy.timeout == 7.5 and copy is not lock


def test_gevent_variants_refuse_in_one_line_without_gevent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """gevent is an extra: without it, one line that says how to get it, and nothing created."""
    real = greenlets.importlib.util.find_spec

    def no_gevent(name: str, *args: object) -> object:
        return None if name == "gevent" else real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(greenlets.importlib.util, "find_spec", no_gevent)
    for name in ("gevent-naive", "gevent-locked"):
        with pytest.raises(UsageError, match=r"needs gevent: pip install") as refused:
            grab(name, tmp_path, buyers=3, tickets=1)
        assert "\n" not in str(refused.value)
    assert not (tmp_path / "data.json").exists()


def test_process_pool_needs_fork(tmp_path: Path) -> None:
    """Its workers inherit the buyers from the process that forks them: spawn is refused."""
    scenario = Scenario(buyers=3, tickets=1, latency=ZERO, seed=1)
    with pytest.raises(UsageError, match=r"--start-method: processpool-naive .* needs fork"):
        run(BY_NAME["processpool-naive"], scenario, data=tmp_path / "d.json", start_method="spawn")
    assert not (tmp_path / "d.json").exists()  # refused before anything was created


SCHEDULED = ["asyncio", "gevent", "threads"]


@pytest.mark.parametrize("kind", SCHEDULED)
def test_explore_finds_the_shortest_oversell(kind: str) -> None:
    """Every interleaving of two buyers; the race is at the switch between read and write."""
    found = explore(BY_NAME[f"{kind}-naive"], buyers=2, tickets=1)
    assert found.complete and found.mode == "exhaustive"
    shortest = min((o for o in found.outcomes if o.oversold), key=lambda o: len(o.steps))
    assert shortest.steps == ("b0.read(1)", "b1.read(1)", "b0.write(0)", "b1.write(0)")
    # Run one after the other, the same tasks sell the ticket once.
    assert any(o.oversold == 0 and not o.hang for o in found.outcomes)


@pytest.mark.parametrize("kind", SCHEDULED)
def test_explore_proves_the_lock_over_every_interleaving(kind: str) -> None:
    found = explore(BY_NAME[f"{kind}-locked"], buyers=3, tickets=1)
    assert found.complete and len(found.outcomes) > 100
    assert all(o.oversold == 0 and o.lost_updates == 0 and not o.hang for o in found.outcomes)


@pytest.mark.usefixtures("no_asyncio_lock", "no_thread_lock")
@pytest.mark.parametrize("kind", SCHEDULED)
def test_explore_catches_the_locked_variant_without_its_lock(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gevent-locked's greenlet body, the semaphore taken away (as no_gevent_semaphore does).
    monkeypatch.setattr(
        greenlets.GeventLocked, "grab", staticmethod(greenlets.grab_naive), raising=True
    )
    found = explore(BY_NAME[f"{kind}-locked"], buyers=2, tickets=1)
    assert any(o.oversold for o in found.outcomes)


@pytest.mark.parametrize("kind", SCHEDULED)
def test_replay_runs_one_schedule_exactly(kind: str) -> None:
    schedule = "b1.read(1) b0.read(1) b1.write(0) b0.write(0)"
    result, done = replay(BY_NAME[f"{kind}-naive"], 2, 1, schedule)
    assert done == schedule.split()
    assert result.oversold == 1 and result.lost_updates == 1
    with pytest.raises(ScheduleError):
        replay(BY_NAME[f"{kind}-naive"], 2, 1, "b0.write(0)")


@pytest.mark.parametrize("name", ["processpool-naive", "threadpool-naive", "gevent-naive"])
def test_arrival_spaces_the_buyers_of_one_process(name: str, tmp_path: Path) -> None:
    """--arrival: buyer i starts no sooner than i x arrival after the gun, hosted or not."""
    result = grab(name, tmp_path, buyers=4, tickets=4, arrival=0.05)
    for receipt in result.receipts:
        first = min(e.t for e in receipt.events)
        assert first >= receipt.buyer * 0.05 - 0.005, (receipt.buyer, first)
