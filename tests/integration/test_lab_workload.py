"""The lab's workload service seeds a realistic shop once and then keeps changing it, pausably.

Runs against the running lab's ``shop`` database, on copies of the five tables in a schema of the
test's own (the lab's own ``public`` tables and ``shop`` runner are left alone) and a ``lab.workload``
row of the test's own name:

- seeding applies the first ``SEED_OPS`` operations of the lab's plan: the counts are the fixed numbers
  the seed gives and every row equals the model's (:func:`cdclab.workload.expected_state`); seeding
  again (a restart) changes nothing;
- the service, started as ``make up`` starts it (a subprocess of ``cdclab.lab.shop_workload serve``),
  keeps changing rows; paused, it stops changing them (checked after it has read the pause several
  times, never by a wall-clock window); resumed, it goes on; the rows always equal the model after the
  ``applied`` operations it recorded.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from cdclab.lab import lesson_feed
from cdclab.lab import shop_workload as sw
from cdclab.workload import TABLES, actual_state, create_table_copy, expected_state

# what the lab's seed (seed 71, 10,000 operations) leaves in the shop: fixed by the seed
SEED_COUNTS = {"customers": 1053, "products": 578, "orders": 1737, "order_items": 2010, "payments": 994}
# what the lesson feed's seed (720 items) holds: fixed by the items' numbers
SEED_LATE, SEED_REDELIVERED, SEED_OUT_OF_ORDER = 147, 93, 78
DEADLINE = 600  # seconds: generous, the machine is shared; only a bound for polling, never asserted


@pytest.fixture
def runner_schema(lab: Any, names: Any) -> Iterator[tuple[Any, str]]:
    """A schema with empty copies of the five shop tables, and the name of the test's runner.

    The lesson feed's tables go to a schema of the same name in the shop and in the warehouse."""
    schema = names("wl")
    conn = psycopg2.connect(lab.pg_dsn("shop"))
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    conn.commit()
    for table in TABLES:
        create_table_copy(conn, table, f"{schema}.{table}")
    yield conn, schema
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        cur.execute("DELETE FROM lab.workload WHERE name = %s", (schema,))
    conn.commit()
    conn.close()
    wh = psycopg2.connect(lab.pg_dsn("warehouse"))
    with wh, wh.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    wh.close()


def _workload(schema: str) -> Any:
    return sw.lab_workload(tables={t: f"{schema}.{t}" for t in TABLES})


def _snapshot(conn: Any, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the copies (all columns, updated_at included) and the runner's ``applied``."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    conn.rollback()
    conn.set_session(isolation_level="REPEATABLE READ")
    with conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        )
        for (table,) in cur.fetchall():  # the shop's five and the lesson feed's four
            cur.execute(f"SELECT * FROM {schema}.{table} ORDER BY 1, 2")
            out[table] = cur.fetchall()
        cur.execute("SELECT applied FROM lab.workload WHERE name = %s", (schema,))
        out["applied"] = [cur.fetchone()]
    conn.rollback()
    conn.set_session(isolation_level="READ COMMITTED")
    return out


def _state_matches_model(conn: Any, schema: str) -> int:
    """Assert the copies equal the model after the recorded ``applied`` operations; return it."""
    conn.rollback()
    conn.set_session(isolation_level="REPEATABLE READ")
    wl = _workload(schema)
    applied = sw._control(conn.cursor(), schema).applied  # type: ignore[union-attr]
    actual = {t: actual_state(conn, wl, t) for t in TABLES}
    conn.rollback()
    conn.set_session(isolation_level="READ COMMITTED")
    assert actual == expected_state(wl, applied)
    return applied


def test_seeding_loads_the_fixed_shop_and_seeding_again_changes_nothing(runner_schema) -> None:
    conn, schema = runner_schema
    sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0)
    assert sw.Runner(conn, _workload(schema), schema).seed() == sw.SEED_OPS

    counts = {t: len(rows) for t, rows in _snapshot(conn, schema).items() if t in TABLES}
    assert counts == SEED_COUNTS
    assert _state_matches_model(conn, schema) == sw.SEED_OPS
    before = _snapshot(conn, schema)

    # a restart: a new runner, the same control row
    sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0)
    assert sw.Runner(conn, _workload(schema), schema).seed() == 0
    assert _snapshot(conn, schema) == before


def _status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _poll(what: str, check: Any, proc: subprocess.Popen[str]) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < DEADLINE:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the workload service exited ({proc.returncode}) while waiting for {what}")
        time.sleep(1)
    pytest.fail(f"no {what} after {DEADLINE}s")


def test_the_service_changes_rows_while_running_and_none_while_paused(runner_schema, tmp_path) -> None:
    conn, schema = runner_schema
    seed_ops = 200
    status = tmp_path / "workload" / "status.json"
    log = (tmp_path / "workload.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cdclab.lab.shop_workload",
            "--name",
            schema,
            "serve",
            "--schema",
            schema,
            "--rate",
            "10",
            "--seed-ops",
            str(seed_ops),
            "--state-dir",
            str(tmp_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _poll("seed", lambda: _status(status).get("seeded"), proc)
        seeded = _snapshot(conn, schema)
        # running: rows change (inserts, updates, deletes of the plan), applied grows past the seed
        _poll("change", lambda: _snapshot(conn, schema)["applied"][0][0] >= seed_ops + 30, proc)
        assert _snapshot(conn, schema) != seeded
        _state_matches_model(conn, schema)

        # paused: once set_control has returned, nothing changes (the flag is read under the row's
        # lock); checked after the service has read the flag and reported three more times
        sw.set_control(conn, schema, paused=True)
        paused = _snapshot(conn, schema)
        first = _poll(
            "the pause to be seen", lambda: _status(status) if _status(status).get("paused") else None, proc
        )
        _poll("three paused reports", lambda: _status(status).get("at", 0) > first["at"] + 2.5, proc)
        assert _status(status)["paused"] is True
        assert _snapshot(conn, schema) == paused
        applied = _state_matches_model(conn, schema)

        # resumed (at another rate): changes again
        ctl = sw.set_control(conn, schema, rate=20, paused=False)
        assert (ctl.rate, ctl.paused) == (20, False)
        _poll("changes after resume", lambda: _snapshot(conn, schema)["applied"][0][0] >= applied + 20, proc)
        assert _snapshot(conn, schema) != paused
        _state_matches_model(conn, schema)
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        log.close()
        print((tmp_path / "workload.log").read_text()[-3000:])
    assert proc.returncode == 0  # SIGTERM: finishes its transaction and exits cleanly


def test_the_lesson_feed_seeds_the_71_6_sources_once_with_late_duplicate_and_out_of_order_rows(
    lab, runner_schema
) -> None:
    conn, schema = runner_schema
    wh = psycopg2.connect(lab.pg_dsn("warehouse"))
    tables = lesson_feed.FeedTables.in_schemas(schema, schema)
    try:
        sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0)
        runner = sw.Runner(conn, _workload(schema), schema, feed=(wh, tables))
        lesson_feed.ensure_tables(conn, wh, tables)
        assert runner.seed_feed() == lesson_feed.SEED_ITEMS
        shop_rows = _snapshot(conn, schema)
        with wh.cursor() as cur:
            cur.execute(f"SELECT * FROM {tables.changes_71_06_05} ORDER BY seq")
            changes = cur.fetchall()
        wh.rollback()

        items = lesson_feed.SEED_ITEMS
        assert len(shop_rows["rows_71_06_01"]) == len(shop_rows["rows_71_06_03"]) == lesson_feed.ROW_IDS
        assert (
            len(shop_rows["events_71_06_02"])
            == len(shop_rows["deliveries_71_06_04"])
            == len(changes)
            == items
        )
        late = [e for e in shop_rows["events_71_06_02"] if e[3] - e[2] >= dt.timedelta(minutes=90)]
        assert len(late) == SEED_LATE
        event_ids = [d[1] for d in shop_rows["deliveries_71_06_04"]]
        assert len(event_ids) - len(set(event_ids)) == SEED_REDELIVERED
        newest: dict[int, int] = {}
        out_of_order = 0
        for _seq, cid, version, _status, _at in changes:
            out_of_order += version < newest.get(cid, 0)
            newest[cid] = max(newest.get(cid, 0), version)
        assert out_of_order == SEED_OUT_OF_ORDER

        # a restart: nothing written twice
        assert sw.Runner(conn, _workload(schema), schema, feed=(wh, tables)).seed_feed() == 0
        assert _snapshot(conn, schema) == shop_rows
    finally:
        wh.close()
