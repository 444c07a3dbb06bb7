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
from itertools import islice
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from cdclab.lab import lesson_feed
from cdclab.lab import partner_drops as pd
from cdclab.lab import shop_workload as sw
from cdclab.workload import TABLES, actual_state, create_table_copy, expected_state, iter_plan

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


def _workload(conn: Any, schema: str) -> Any:
    """The plan the runner's control row runs (its ``plan_start``), on the test's copies."""
    return sw.plan_of(sw.read_control(conn, schema), {t: f"{schema}.{t}" for t in TABLES})


def _db_now(conn: Any) -> dt.datetime:
    with conn.cursor() as cur:
        cur.execute("SELECT clock_timestamp()")
        now: dt.datetime = cur.fetchone()[0]
    conn.rollback()
    return now


def _unclamp(actual: dict[str, list[dict[str, Any]]], expected: Any, now: dt.datetime) -> None:
    """Where the model's business time lies ahead of the row's, the runner clamped it to its wall clock:
    check it was (the row's time is earlier, and not after ``now``), then put the model's time back."""
    for table, rows in actual.items():
        for row, exp in zip(rows, expected.get(table, []), strict=False):
            for col, value in row.items():
                want = exp.get(col)
                if isinstance(value, dt.datetime) and isinstance(want, dt.datetime) and want > value:
                    assert value <= now, (table, row, col)
                    row[col] = want


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
    wl = _workload(conn, schema)
    applied = sw._control(conn.cursor(), schema).applied  # type: ignore[union-attr]
    actual = {t: actual_state(conn, wl, t) for t in TABLES}
    conn.rollback()
    conn.set_session(isolation_level="READ COMMITTED")
    expected = expected_state(wl, applied)
    _unclamp(actual, expected, _db_now(conn))  # type: ignore[arg-type]
    assert actual == expected
    return applied


def test_seeding_loads_the_fixed_shop_and_seeding_again_changes_nothing(runner_schema) -> None:
    conn, schema = runner_schema
    first_start = _db_now(conn)
    ctl = sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0)
    assert ctl.plan_start is not None
    # the plan is anchored at the first start: its seed's business time ends then
    assert first_start - dt.timedelta(seconds=5) <= ctl.plan_start + sw.STEP * sw.SEED_OPS <= _db_now(conn)
    assert sw.Runner(conn, _workload(conn, schema), schema).seed() == sw.SEED_OPS

    counts = {t: len(rows) for t, rows in _snapshot(conn, schema).items() if t in TABLES}
    assert counts == SEED_COUNTS
    assert _state_matches_model(conn, schema) == sw.SEED_OPS
    with conn.cursor() as cur:  # a daily run triggered now (yesterday, UTC) finds orders; none is ahead
        cur.execute(
            f"SELECT count(*) FILTER (WHERE ordered_at >= date_trunc('day', now() AT TIME ZONE 'UTC') "
            f"AT TIME ZONE 'UTC' - interval '1 day' AND ordered_at < date_trunc('day', now() AT TIME ZONE "
            f"'UTC') AT TIME ZONE 'UTC'), count(*) FILTER (WHERE ordered_at > now()) FROM {schema}.orders"
        )
        yesterday, ahead = cur.fetchone()
    conn.rollback()
    assert yesterday > 100
    assert ahead == 0
    before = _snapshot(conn, schema)

    # a restart: a new runner, the same control row (the same plan_start)
    assert sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0).plan_start == ctl.plan_start
    assert sw.Runner(conn, _workload(conn, schema), schema).seed() == 0
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
            "--files-every",
            "0",  # partner files: test_partner_drops_*
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _poll("seed", lambda: _status(status).get("seeded"), proc)
        seeded = _snapshot(conn, schema)
        live_from = _db_now(conn)
        # running: rows change (inserts, updates, deletes of the plan), applied grows past the seed
        _poll("change", lambda: _snapshot(conn, schema)["applied"][0][0] >= seed_ops + 30, proc)
        assert _snapshot(conn, schema) != seeded
        _state_matches_model(conn, schema)
        # live orders are stamped with the wall clock: 10 operations/s run ahead of the business clock
        live = _live_orders(conn, schema, seeded["applied"][0][0], _snapshot(conn, schema)["applied"][0][0])
        assert live, "no order inserted after the seed"
        assert all(live_from - dt.timedelta(seconds=5) <= at <= _db_now(conn) for at in live.values()), live

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


def _live_orders(conn: Any, schema: str, start: int, stop: int) -> dict[int, dt.datetime]:
    """``ordered_at`` of the orders operations ``start..stop-1`` inserted (and that are still there),
    except the DST ones (whose planned ``ordered_at`` lies near a DST change, not at the operation)."""
    wl = _workload(conn, schema)
    ids = [
        op.key[0]
        for op in islice(iter_plan(wl), start, stop)
        if op.kind == "insert" and op.table == "orders" and op.values["ordered_at"] == op.at
    ]
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, ordered_at FROM {wl.physical('orders')} WHERE id = ANY(%s)", (ids,))
        found = dict(cur.fetchall())
    conn.rollback()
    return found


def test_the_lesson_feed_seeds_the_71_6_sources_once_with_late_duplicate_and_out_of_order_rows(
    lab, runner_schema
) -> None:
    conn, schema = runner_schema
    wh = psycopg2.connect(lab.pg_dsn("warehouse"))
    tables = lesson_feed.FeedTables.in_schemas(schema, schema)
    try:
        sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0)
        runner = sw.Runner(conn, _workload(conn, schema), schema, feed=(wh, tables))
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
        assert sw.Runner(conn, _workload(conn, schema), schema, feed=(wh, tables)).seed_feed() == 0
        assert _snapshot(conn, schema) == shop_rows
    finally:
        wh.close()


def test_partner_drops_write_each_numbered_drop_once_and_never_overwrite(
    runner_schema, s3, s3_bucket
) -> None:
    conn, schema = runner_schema
    sw.ensure_control(conn, schema, sw.LAB_SEED, rate=0)
    drops = pd.PartnerDrops(bucket=s3_bucket, client=lambda: s3)
    assert drops.drop_next(conn, schema) == 0
    assert drops.drop_next(conn, schema) == 1
    assert sw.read_control(conn, schema).files_dropped == 2

    def objects() -> dict[str, bytes]:
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = s3.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read()
        return out

    assert objects() == dict(pd.drop_objects(0) + pd.drop_objects(1))
    # a drop repeated (a crash before it was counted) writes only what is missing, overwrites nothing
    changed = "71_04_01_file_detection/partner-000000.csv"
    s3.put_object(Bucket=s3_bucket, Key=changed, Body=b"event_id\n")
    s3.delete_object(Bucket=s3_bucket, Key="71_04_02_manifest/batch-000000/_manifest.json")
    assert drops.write(0) == ["71_04_02_manifest/batch-000000/_manifest.json"]
    assert objects()[changed] == b"event_id\n"


def test_the_labs_own_workload_stamps_live_orders_and_drops_partner_files_at_the_wall_clock(lab, s3) -> None:
    """On the running lab (its ``shop`` runner, read only): the orders it inserts from now on carry
    ``ordered_at`` between now and the moment they are seen, and the 71.4 lessons' prefixes have files."""
    conn = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        ctl = sw.read_control(conn)
        if ctl.paused or ctl.rate <= 0:
            pytest.fail(f"the lab's workload is paused (rate {ctl.rate}): make workload-resume, then rerun")
        assert ctl.plan_start is not None, (
            "the lab's workload service runs code without plan_start: restart it"
        )
        t0, applied0 = _db_now(conn), ctl.applied
        t0 = t0 - dt.timedelta(seconds=1)  # the transaction that applies the next operations may have begun

        def new_orders() -> dict[int, dt.datetime]:
            applied = sw.read_control(conn).applied
            wl = sw.plan_of(sw.read_control(conn))
            ids = [
                op.key[0]
                for op in islice(iter_plan(wl), applied0, applied)
                if op.kind == "insert" and op.table == "orders" and op.values["ordered_at"] == op.at
            ]
            with conn.cursor() as cur:
                cur.execute("SELECT id, ordered_at FROM public.orders WHERE id = ANY(%s)", (ids,))
                found = dict(cur.fetchall())
            conn.rollback()
            return found if len(found) >= 3 else {}

        t_start = time.monotonic()
        found: dict[int, dt.datetime] = {}
        while not found and time.monotonic() - t_start < DEADLINE:
            time.sleep(1)
            found = new_orders()
        assert found, f"no 3 new orders in {DEADLINE}s"
        now = _db_now(conn)
        assert all(t0 <= at <= now for at in found.values()), (t0, now, found)

        n = sw.read_control(conn).files_dropped
        assert n >= 1, "the lab's workload has dropped no partner file"
        key = f"71_04_01_file_detection/partner-{n - 1:06d}.csv"
        got = s3.get_object(Bucket=pd.BUCKET, Key=key)["Body"].read()
        assert got == dict(pd.drop_objects(n - 1))[key]
    finally:
        conn.close()
