"""Buyers on several machines, one engine: ``--join`` a sale another run seeded.

Two ``lab`` processes stand in for two machines: both reach the same real
server by its URL, as two machines would. Run A seeds the sale and shares it;
run B joins while A's buyers still wait. Each tally reads the engine's one
ledger, tells its own orders from the other run's, and waits for the other
run to finish, so both close their books on the same final state.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.core.lazy import lazy_import
from lab.stores.pgdb import CLAIM_KEY
from tests.engines import ENGINES
from tests.helpers import lab_subprocess

psycopg = lazy_import("psycopg")
redis = lazy_import("redis")

#: (engine, its safe variant, its naive variant, the option that names the server)
ENGINES_UNDER_TEST = [
    ("postgres", "pg-for-update", "pg-naive", "--dsn"),
    ("redis", "redis-lua", "redis-naive", "--redis-url"),
    ("redis-cluster", "cluster-lua", "cluster-naive", "--redis-url"),
]


def _sharing(store: str, url: str) -> int:
    """How many runs hold a shared claim on the sale at ``url`` now."""
    if store == "postgres":
        # A bigint advisory key shows in pg_locks as (classid, objid) = (high, low 32 bits).
        high, low = CLAIM_KEY >> 32, CLAIM_KEY & 0xFFFFFFFF
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
                "AND mode = 'ShareLock' AND granted AND classid = %s AND objid = %s",
                (high, low),
            ).fetchone()
            return int(row[0])
    client: Any = (
        redis.cluster.RedisCluster.from_url(url, socket_timeout=5)
        if store == "redis-cluster"
        else redis.Redis.from_url(url, socket_timeout=5)
    )
    try:
        return int(client.zcard("lab:{tickets}:runs"))
    finally:
        client.close()


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any], str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, (json.loads(out) if out.strip() else {}), err


def _two_machines(
    store: str, variant: str, option: str, tmp_path: Path, *, tickets: int, latency: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run A seeds ``tickets`` and sells with 3 buyers; run B joins with 3 more."""
    url = ENGINES.url(store)
    assert url is not None
    common = [variant, option, url, "--buyers", "3", "--latency", latency, "--json"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with lab_subprocess("run", *common, "--tickets", str(tickets), cwd=tmp_path / "a") as a:
        # B joins once A has seeded and shared the sale (its buyers then wait out the latency).
        _wait_for(lambda: _sharing(store, url) == 1 or a.poll() is not None, "run A to share")
        assert a.poll() is None, a.communicate(timeout=60)
        with lab_subprocess("run", *common, "--join", cwd=tmp_path / "b") as b:
            code_b, result_b, err_b = _finish(b)
        code_a, result_a, err_a = _finish(a)
    assert "Traceback" not in err_a + err_b
    return (
        {"code": code_a, "err": err_a, **result_a},
        {"code": code_b, "err": err_b, **result_b},
    )


@pytest.mark.parametrize(("store", "safe", "naive", "option"), ENGINES_UNDER_TEST)
def test_a_safe_variant_holds_across_machines(
    store: str, safe: str, naive: str, option: str, tmp_path: Path
) -> None:
    a, b = _two_machines(store, safe, option, tmp_path, tickets=4, latency="4")
    for mine, other in ((a, b), (b, a)):
        assert mine["code"] == 0, mine["err"]
        assert mine["tickets"] == 4  # the sale's seed, also for the run that only joined
        assert mine["consistent"] and mine["accounted"] and mine["ledger_agrees"], mine
        assert mine["oversold"] == 0 and mine["double_sold"] == 0
        # Each tally sees the other run's orders in the engine's ledger, and only those.
        assert len(mine["orders"]) == mine["sold"]
        assert sorted(mine["orders_elsewhere"]) == sorted(t for _, t in other["orders"])
    # Six buyers, four tickets: the books close on the same final state on both machines.
    assert a["sold"] + b["sold"] == 4
    assert a["remaining"] == b["remaining"] == 0
    tickets = sorted(t for _, t in a["orders"] + b["orders"])
    assert tickets == [1, 2, 3, 4]


@pytest.mark.parametrize(("store", "safe", "naive", "option"), ENGINES_UNDER_TEST)
def test_the_naive_variant_oversells_across_machines(
    store: str, safe: str, naive: str, option: str, tmp_path: Path
) -> None:
    """All six buyers read the one ticket before any writes (a 6 s window): both
    machines sell it, and each tally shows the other machine's sales too."""
    a, b = _two_machines(store, naive, option, tmp_path, tickets=1, latency="6")
    for mine in (a, b):
        assert mine["code"] == 0, mine["err"]
        assert mine["sold"] == 3
        assert mine["oversold"] == 5  # six sales of one ticket, counted on either machine
        assert len(mine["orders_elsewhere"]) == 3
        assert not mine["consistent"]


def test_join_needs_a_sale_to_join(tmp_path: Path) -> None:
    url = ENGINES.url("redis")
    assert url is not None
    empty = url.rsplit("/", 1)[0] + "/7"  # a database of its own: no sale was ever seeded there
    with lab_subprocess("run", "redis-lua", "--redis-url", empty, "--join", cwd=tmp_path) as p:
        out, err = p.communicate(timeout=60)
    assert p.returncode == 2, out + err
    assert err.count("\n") == 1 and "--join: no sale to join" in err and "--tickets" in err


def test_join_needs_no_seed_and_a_server(tmp_path: Path) -> None:
    url = ENGINES.url("postgres")
    assert url is not None
    cases = {
        ("run", "pg-for-update", "--join"): "--join: name the server the sale is on (--dsn)",
        ("run", "pg-for-update", "--dsn", url, "--join", "--tickets", "3"): "drop --tickets",
        ("run", "naive", "--join"): "--join: naive sells from no server",
        ("compare", "--join"): "--join",
    }
    for argv, said in cases.items():
        with lab_subprocess(*argv, cwd=tmp_path) as p:
            out, err = p.communicate(timeout=60)
        assert p.returncode == 2, (argv, out, err)
        assert err.count("\n") == 1 and said in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize(("store", "safe", "naive", "option"), ENGINES_UNDER_TEST[:2])
def test_nobody_reseeds_a_sale_others_are_selling_from(
    store: str, safe: str, naive: str, option: str, tmp_path: Path
) -> None:
    url = ENGINES.url(store)
    assert url is not None
    argv = [safe, option, url, "--buyers", "2", "--latency", "6", "--json"]
    with lab_subprocess("run", *argv, "--tickets", "2", cwd=tmp_path) as a:
        _wait_for(lambda: _sharing(store, url) == 1 or a.poll() is not None, "run A to share")
        with lab_subprocess("run", *argv, "--tickets", "9", cwd=tmp_path) as c:
            out, err = c.communicate(timeout=60)
        assert c.returncode == 2, out + err
        assert "--join" in err and err.count("\n") == 1
        code, result, err_a = _finish(a)
    assert code == 0, err_a
    assert result["tickets"] == 2 and result["sold"] == 2 and result["consistent"]


def test_orders_carry_the_run_that_made_them() -> None:
    """The ledger entry format both Redis stores use, and its parse (untagged: run '')."""
    from lab.stores.redisdb import order_entry, parse_order  # noqa: PLC0415

    run = uuid.uuid4().hex[:12]
    assert parse_order(f"{order_entry(run, 7)}:3".encode()) == (run, 7, 3)
    assert parse_order(b"7:3") == ("", 7, 3)
    with pytest.raises(ValueError, match="invalid literal"):
        parse_order(b"x/y:3")
