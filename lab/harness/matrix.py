"""``lab matrix``: a Hermitage-style table of engines x mechanisms, built by running them.

For every engine that has variants in the registry (SQLite, PostgreSQL, and
Redis / a Redis Cluster once they are registered), one private server is
started for the whole matrix (SQLite needs none) and stopped in a ``finally``.
Each of the engine's variants then gets:

- a **race run**: several buyers, one ticket, released by one start gun, each
  waiting 0.1 s between its read and its write. Every buyer reads within a few
  milliseconds of the gun, long before anyone writes, so an unprotected
  read-check-write oversells (by buyers - 1, in every trial so far) and a fix
  shows its retries. ``Settings(lockstep=True)`` holds every buyer at a barrier
  instead, which makes the race certain but costs any buyer that waits there
  holding a lock (FOR UPDATE, BEGIN IMMEDIATE, an advisory lock) or after a
  retry the barrier's 5 s timeout: some 40 s over the whole matrix.
- **throughput runs**: ``buyers`` processes, no latency, one ticket each
  (``repeat`` runs, median of ``sold / elapsed``).

The last column divides that throughput by the engine's **ceiling**: the same
number of client processes, forked the same way and released by one start gun,
each opening its own connection and then doing the fastest correct sale in a
bare loop until the tickets are gone, for the same number of sales. The sale is
the conditional decrement with its order row: ``UPDATE … WHERE ticket_num > 0``
plus the INSERT (SQLite: one ``BEGIN IMMEDIATE`` transaction; PostgreSQL: one
statement, a data-modifying CTE), or one Lua script doing the check, the DECR
and the RPUSH (Redis). No reports, no pipe, no harness: what is left between a
row and its ceiling is the mechanism and the lab's bookkeeping. The ceiling is
measured right before each throughput run (A/B, so that a change in the
machine's load hits both alike), and a row's ceiling is the median of its own
samples: the same engine, measured ``repeat`` times beside that row.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.core.contracts import Expectation
from lab.core.errors import LabError, UsageError
from lab.core.matrix_rows import MatrixRow
from lab.core.model import Latency, Result, Scenario
from lab.harness.runner import run, with_seed

if TYPE_CHECKING:
    from lab.stores._servers import PrivateServer
    from lab.variants.protocol import Variant

__all__ = [
    "ENGINES",
    "CeilingError",
    "Settings",
    "ceiling",
    "check",
    "engine_server",
    "engines_in",
    "isolation_of",
    "make_row",
    "run_matrix",
    "variants_of",
]

#: The stores that are engines, in the order the matrix lists them.
ENGINES: tuple[str, ...] = ("sqlite", "postgres", "redis", "redis-cluster")

#: Each engine's level when the variant does not name one (Redis has none: one
#: command at a time, and a script or MULTI/EXEC runs alone).
_DEFAULT_ISOLATION: dict[str, str] = {
    "sqlite": "SERIALIZABLE (one writer)",
    "postgres": "READ COMMITTED",
    "redis": "n/a",
    "redis-cluster": "n/a",
}
#: Variants that choose their own level: name -> level.
_ISOLATION: dict[str, str] = {
    "pg-naive": "READ COMMITTED",
    "pg-repeatable-read": "REPEATABLE READ",
    "pg-serializable": "SERIALIZABLE",
}

#: How long the ceiling's clients may take to reach the gun, and to sell everything.
_CEILING_TIMEOUT_S = 60.0


class CeilingError(LabError):
    """The ceiling's bare loop could not run or did not sell exactly what it was given."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """How big the matrix's runs are."""

    #: buyer processes in each throughput run (and the ceiling's client processes)
    buyers: int = 8
    #: buyers in each race run (one ticket)
    race_buyers: int = 8
    #: the race run's window between each buyer's read and its write, seconds
    race_latency: float = 0.1
    #: hold every buyer of the race run at a barrier between its read and its write
    #: (certain, but a lock holder or a retrying buyer then waits out the barrier's 5 s)
    lockstep: bool = False
    #: throughput runs per row (their median is the row's tickets/s)
    repeat: int = 3
    #: run k of every row uses seed + k (None: one is drawn and reported)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.buyers < 1 or self.race_buyers < 2 or self.repeat < 1 or self.race_latency < 0:
            raise ValueError("buyers >= 1, race_buyers >= 2, repeat >= 1, race_latency >= 0")


def isolation_of(variant: Variant) -> str:
    """The isolation level ``variant`` runs at, as its engine names it ("n/a" for Redis)."""
    return _ISOLATION.get(variant.name, _DEFAULT_ISOLATION.get(variant.store, "n/a"))


def engines_in(registry: Mapping[str, Variant] | None = None) -> list[str]:
    """The engines that have at least one variant in the registry, in matrix order."""
    registry = _registry(registry)
    stores = {v.store for v in registry.values()}
    return [e for e in ENGINES if e in stores]


def variants_of(engine: str, registry: Mapping[str, Variant] | None = None) -> list[Variant]:
    """The registry's variants on ``engine``, in the registry's order."""
    return [v for v in _registry(registry).values() if v.store == engine]


def _registry(registry: Mapping[str, Variant] | None) -> Mapping[str, Variant]:
    if registry is not None:
        return registry
    from lab.variants import VARIANTS  # noqa: PLC0415 - every variant, only when a matrix runs

    return VARIANTS


def _expectation(variant: Variant) -> Expectation:
    return Expectation.of(
        variant.safe, variant.caveat, variant.undersells, getattr(variant, "fails", False)
    )


def make_row(
    variant: Variant,
    results: Sequence[Result],
    throughput: Sequence[Result],
    ceiling_per_s: float,
) -> MatrixRow:
    """One row from its runs: anomalies over ``results`` (every run of the row), tickets/s
    the median of ``sold / elapsed`` over ``throughput``, and its ratio to the ceiling."""
    finished = [r for r in results if not r.interrupted]
    rates = [r.sold / r.elapsed_s for r in throughput if not r.interrupted and r.elapsed_s > 0]
    tickets_per_s = statistics.median(rates) if rates else 0.0
    return MatrixRow(
        engine=variant.store,
        variant=variant.name,
        isolation=isolation_of(variant),
        expected=_expectation(variant).value,
        oversold=sum(r.oversold for r in finished),
        lost_updates=sum((r.lost_updates or 0) + r.hidden_lost_updates for r in finished),
        undersold=sum(r.undersold for r in finished),
        retries=sum(r.retries for r in finished),
        errors=sum(r.errors + (1 if r.remaining is None else 0) for r in finished),
        tickets_per_s=tickets_per_s,
        ceiling_per_s=ceiling_per_s,
        ratio=tickets_per_s / ceiling_per_s if ceiling_per_s > 0 else 0.0,
        held=bool(finished) and all(r.consistent and not r.raced for r in finished),
        why=variant.why,
    )


def check(rows: Iterable[MatrixRow]) -> list[MatrixRow]:
    """The rows expected to hold that did not: an oversell, a lost update, an error or a
    ledger that disagrees. An ``undersells`` row passes however much it undersold."""
    return [row for row in rows if row.failed_check]


# -- servers -----------------------------------------------------------------------------


def _starters() -> dict[str, Callable[[Path], PrivateServer]]:
    from lab.stores._servers import (  # noqa: PLC0415 - only engines that run need a server
        start_postgres,
        start_redis,
        start_redis_cluster,
    )

    return {
        "postgres": lambda d: start_postgres(d, timeout=60.0),
        "redis": lambda d: start_redis(d, timeout=30.0),
        "redis-cluster": lambda d: start_redis_cluster(d, timeout=60.0),
    }


@contextmanager
def engine_server(engine: str, workdir: Path) -> Iterator[str | None]:
    """One private server for ``engine`` (its URL), stopped on exit; None for SQLite."""
    starters = _starters()
    if engine not in starters:
        yield None
        return
    where = workdir / engine
    where.mkdir(parents=True, exist_ok=True)
    server = starters[engine](where)
    try:
        yield server.url
    finally:
        server.stop()


# -- the ceiling ---------------------------------------------------------------------------

#: The sale as one statement: decrement if any is left, and record the order, atomically.
_PG_SALE = (
    "WITH sold AS (UPDATE lab_tickets SET ticket_num = ticket_num - 1 "
    "WHERE id = 1 AND ticket_num > 0 RETURNING ticket_num + 1 AS ticket) "
    "INSERT INTO lab_orders(buyer, ticket) SELECT %s, ticket FROM sold RETURNING ticket"
)
#: The sale as one script: the ticket sold, or 0 when none is left.
_LUA_SALE = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count > 0 then
    redis.call('DECR', KEYS[1])
    redis.call('RPUSH', KEYS[2], ARGV[1] .. ':' .. count)
    return count
end
return 0
"""


def _store(engine: str, where: str) -> Any:
    """The lab's own store class for ``engine`` at ``where`` (a path or a URL): it seeds,
    reads and connects exactly as the variants' buyers do."""
    if engine == "sqlite":
        from lab.stores.sqlitedb import SqliteStore  # noqa: PLC0415

        return SqliteStore(Path(where), busy_timeout_s=_CEILING_TIMEOUT_S)
    if engine == "postgres":
        from lab.stores.pgdb import PgStore  # noqa: PLC0415

        return PgStore(where, timeout=_CEILING_TIMEOUT_S)
    if engine == "redis":
        from lab.stores.redisdb import RedisStore  # noqa: PLC0415

        return RedisStore(where, timeout=_CEILING_TIMEOUT_S)
    if engine == "redis-cluster":
        from lab.stores.rediscluster import RedisClusterStore  # noqa: PLC0415

        return RedisClusterStore(where, timeout=_CEILING_TIMEOUT_S)
    raise UsageError(f"--engines: {engine!r} is not an engine (choose from: {', '.join(ENGINES)})")


def _seller(engine: str, store: Any, buyer: int) -> Callable[[], bool]:
    """One client's sale, connected now: call it until it says False (sold out)."""
    if engine == "sqlite":
        db = store.db()

        def sell_sqlite() -> bool:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(
                "UPDATE lab_tickets SET ticket_num = ticket_num - 1 "
                "WHERE id = 1 AND ticket_num > 0 RETURNING ticket_num + 1"
            ).fetchone()
            if row is not None:
                db.execute("INSERT INTO lab_orders(buyer, ticket) VALUES (?, ?)", (buyer, row[0]))
            db.execute("COMMIT")
            return row is not None

        return sell_sqlite
    if engine == "postgres":
        conn = store.db()

        def sell_pg() -> bool:
            return conn.execute(_PG_SALE, (buyer,)).fetchone() is not None

        return sell_pg
    from lab.stores.redisdb import COUNT, ORDERS  # noqa: PLC0415

    script = store.client().register_script(_LUA_SALE)

    def sell_redis() -> bool:
        return int(script(keys=[COUNT, ORDERS], args=[buyer])) > 0

    return sell_redis


def _ceiling_client(engine: str, store: Any, buyer: int, *, ready: Any, gun: Any, out: Any) -> None:
    """One ceiling process: at the gun, connect, then sell until nothing is left."""
    sold = 0
    problem = ""
    try:
        ready.release()
        if not gun.wait(_CEILING_TIMEOUT_S):
            raise TimeoutError("the start gun never fired")
        sell = _seller(engine, store, buyer)
        while sell():
            sold += 1
    except BaseException as exc:
        problem = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    out.put((buyer, sold, time.monotonic(), problem))
    store.close()


def ceiling(engine: str, where: str, clients: int, sales: int) -> float:
    """The engine's ceiling, tickets/s: ``clients`` forked processes sell ``sales`` tickets
    at ``where`` (a database path or a server URL) in a bare loop, from one start gun.

    Raises:
        CeilingError: a client failed, or the sales do not add up to ``sales``.
    """
    store = _store(engine, where)
    store.seed(sales)
    store.close()  # never hand a live connection across a fork
    mp = multiprocessing.get_context("fork")
    ready, gun, out = mp.Semaphore(0), mp.Event(), mp.SimpleQueue()
    procs = [
        mp.Process(
            target=_ceiling_client,
            args=(engine, store, i),
            kwargs={"ready": ready, "gun": gun, "out": out},
            name=f"lab-ceiling-{i}",
            daemon=True,
        )
        for i in range(clients)
    ]
    try:
        for proc in procs:
            proc.start()
        for _ in procs:
            if not ready.acquire(timeout=_CEILING_TIMEOUT_S):
                raise CeilingError(f"{engine}: the ceiling's clients did not start")
        t0 = time.monotonic()
        gun.set()
        reports: list[tuple[int, int, float, str]] = []
        deadline = t0 + _CEILING_TIMEOUT_S
        while len(reports) < clients:
            if out.empty():
                if time.monotonic() > deadline:
                    raise CeilingError(f"{engine}: the ceiling's clients did not finish")
                if not any(p.is_alive() for p in procs) and out.empty():
                    raise CeilingError(f"{engine}: a ceiling client died without a report")
                time.sleep(0.0005)
                continue
            reports.append(out.get())
    finally:
        for proc in procs:
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)
            proc.close()
    problems = [p for _, _, _, p in reports if p]
    if problems:
        raise CeilingError(f"{engine}: a ceiling client failed: {problems[0]}")
    sold = sum(n for _, n, _, _ in reports)
    left = store.read()
    store.close()
    if sold != sales or left != 0:
        raise CeilingError(f"{engine}: the ceiling sold {sold} of {sales} ({left} left)")
    elapsed = max(t for _, _, t, _ in reports) - t0
    return sales / elapsed if elapsed > 0 else 0.0


# -- the matrix ------------------------------------------------------------------------------


def _one(variant: Variant, scenario: Scenario) -> Result:
    result = run(variant, scenario)
    if result.interrupted:
        raise KeyboardInterrupt
    return result


def _engine_rows(
    engine: str,
    variants: Sequence[Variant],
    *,
    url: str | None,
    workdir: Path,
    settings: Settings,
    seed: int,
    progress: Callable[[str], None],
) -> list[MatrixRow]:
    where = url if url is not None else str(workdir / "ceiling.sqlite3")
    race = Scenario(
        name="matrix-race",
        buyers=settings.race_buyers,
        tickets=1,
        latency=Latency(settings.race_latency, settings.race_latency),
        lockstep=settings.lockstep,
        store_url=url,
        seed=seed,
    )
    flat = dataclasses.replace(
        race, name="matrix-throughput", buyers=settings.buyers, tickets=settings.buyers,
        latency=Latency(0.0, 0.0), lockstep=False,
    )  # fmt: skip

    rows = []
    for variant in variants:
        progress(f"{engine}: {variant.name}")
        raced = _one(variant, race)
        flats: list[Result] = []
        ceilings: list[float] = []
        for k in range(settings.repeat):
            # A then B: the ceiling right before each throughput run, so both see the
            # same machine (another program's load, a warm cache) and drift cancels.
            ceilings.append(ceiling(engine, where, settings.buyers, settings.buyers))
            flats.append(_one(variant, dataclasses.replace(flat, seed=seed + k)))
        rows.append(make_row(variant, [raced, *flats], flats, statistics.median(ceilings)))
    return rows


def run_matrix(
    engines: Sequence[str] | None = None,
    settings: Settings | None = None,
    *,
    registry: Mapping[str, Variant] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[MatrixRow], int]:
    """Run every engine variant in the registry (or on ``engines`` only); return the rows
    in registry order and the seed the runs used.

    Raises:
        UsageError: an engine that is not one, or that has no variants in the registry.
        ServerStartError: a private server could not start (one line).
        CeilingError: the ceiling's bare loop failed.
        KeyboardInterrupt: a run was interrupted (every server is stopped first).
    """
    settings = settings or Settings()
    registry = _registry(registry)
    available = engines_in(registry)
    chosen = list(engines) if engines else available
    for engine in chosen:
        if engine not in ENGINES:
            raise UsageError(
                f"--engines: {engine!r} is not an engine (choose from: {', '.join(ENGINES)})"
            )
        if engine not in available:
            raise UsageError(f"--engines: no variant in the registry runs on {engine}")
    ordered = [e for e in ENGINES if e in chosen]
    seed = with_seed(Scenario(seed=settings.seed)).seed
    assert seed is not None
    note = progress or (lambda _text: None)
    rows: list[MatrixRow] = []
    with tempfile.TemporaryDirectory(prefix="lab-matrix-") as tmp:
        workdir = Path(tmp)
        for engine in ordered:
            with engine_server(engine, workdir) as url:
                variants = variants_of(engine, registry)
                rows.extend(
                    _engine_rows(
                        engine,
                        variants,
                        url=url,
                        workdir=workdir,
                        settings=settings,
                        seed=seed,
                        progress=note,
                    )
                )
    return rows, seed
