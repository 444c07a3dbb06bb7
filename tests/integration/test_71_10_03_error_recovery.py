"""71_10_03_error_recovery: transient errors are retried, poison rows are dead-lettered with a reason,
failed and missing intervals are re-run by the next run, and every interval validates against the source."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, rows, xcom

DAG_ID = "71_10_03_error_recovery"


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, target, pipeline = f"public.{names('ev')}", f"core.{names('ev')}", names("71_10_03")
    execute(shop_db, f"CREATE TABLE {src} (id int PRIMARY KEY, event_time timestamptz NOT NULL, amount text)")
    conf = {
        "source_table": src,
        "target_table": target,
        "pipeline": pipeline,
        "retry_attempts": 3,
        "retry_base_delay": 0.05,
        "transient_failures": {},
        "hard_failures": [],
    }
    yield src, target, pipeline, conf
    drop(shop_db, src)
    drop(warehouse_db, target)
    for table in ("state.interval_ledger", "dlq.rejected_rows", "state.validation_results"):
        execute(warehouse_db, f"DELETE FROM {table} WHERE pipeline = %s", (pipeline,))


def add(shop_db, src, h, *rows_):
    for i, minute, amount in rows_:
        execute(shop_db, f"INSERT INTO {src} VALUES (%s, %s, %s)", (i, hour(h).add(minutes=minute), amount))


def run(h, conf, expect="success"):
    """The run that loads the interval [h:00, h+1:00) (an interval timetable runs at the interval's end)."""
    return run_dag(DAG_ID, hour(h + 1), conf, expect=expect)


def ledger(warehouse_db, pipeline):
    return rows(
        warehouse_db,
        f"state.interval_ledger WHERE pipeline = '{pipeline}'",
        "extract(hour FROM interval_start AT TIME ZONE 'UTC')::int, status, attempts, rows_loaded, rows_rejected",
        "interval_start",
    )


def test_transient_errors_poison_rows_and_failed_or_missing_intervals_all_end_in_a_complete_target(
    shop_db, warehouse_db, setup
) -> None:
    src, target, pipeline, conf = setup
    add(shop_db, src, 1, (1, 5, "10.50"), (2, 30, "3"), (3, 40, "abc"))
    add(shop_db, src, 2, (4, 1, "7"), (5, 59, "8.25"), (6, 10, "-5"))
    add(shop_db, src, 3, (7, 0, "1"))
    add(shop_db, src, 4, (8, 15, "2"))
    add(shop_db, src, 5, (9, 20, "4"), (10, 21, None))

    # hour 1: two transient failures, the third attempt loads; the poison row goes to the DLQ
    dr1 = run(1, {**conf, "transient_failures": {hour(1).isoformat(): 2}})
    assert [(r["status"], r["attempts"], r["loaded"], r["rejected"]) for r in xcom(dr1, "load")] == [
        ("succeeded", 3, 2, 1)
    ]
    assert rows(warehouse_db, target, "id, amount") == [(1, Decimal("10.50")), (2, Decimal("3.00"))]

    # hour 2: fails every attempt -> failed in the ledger, the run is red, nothing of hour 2 loaded
    run(2, {**conf, "hard_failures": [hour(2).isoformat()]}, expect="failed")
    assert ledger(warehouse_db, pipeline) == [(1, "succeeded", 3, 2, 1), (2, "failed", 3, None, None)]
    assert [r[0] for r in rows(warehouse_db, target, "id")] == [1, 2]

    # hour 3 re-runs the failed hour 2 first
    dr3 = run(3, conf)
    assert [r["start"][11:13] for r in xcom(dr3, "load")] == ["02", "03"]
    assert [r[0] for r in rows(warehouse_db, target, "id")] == [1, 2, 4, 5, 7]

    # hour 4 never runs; hour 5 fills the gap
    dr5 = run(5, conf)
    assert [r["start"][11:13] for r in xcom(dr5, "load")] == ["04", "05"]

    assert ledger(warehouse_db, pipeline) == [
        (1, "succeeded", 3, 2, 1),
        (2, "succeeded", 4, 2, 1),
        (3, "succeeded", 1, 1, 0),
        (4, "succeeded", 1, 1, 0),
        (5, "succeeded", 1, 1, 1),
    ]
    assert rows(warehouse_db, target, "id, event_time, amount") == [
        (i, t, Decimal(a)) for i, t, a in rows(shop_db, src, "id, event_time, amount") if i not in (3, 6, 10)
    ]
    assert rows(
        warehouse_db, f"dlq.rejected_rows WHERE pipeline = '{pipeline}'", "row_key, reason", "row_key::int"
    ) == [("3", "amount 'abc' is not a number"), ("6", "amount -5 is negative"), ("10", "amount is NULL")]
    assert rows(
        warehouse_db,
        f"state.validation_results WHERE pipeline = '{pipeline}'",
        "extract(hour FROM interval_start AT TIME ZONE 'UTC')::int, source_rows, target_rows, rejected_rows, ok",
        "id",
    ) == [(1, 3, 2, 1, True), (2, 3, 2, 1, True), (3, 1, 1, 0, True), (4, 1, 1, 0, True), (5, 2, 1, 1, True)]

    # re-running a loaded interval changes nothing (the interval is replaced, not appended)
    run(2, conf)
    assert rows(warehouse_db, target, "id") == [(1,), (2,), (4,), (5,), (7,), (8,), (9,)]

    # the poison row of hour 1 is fixed at the source; re-running hour 1 loads it and resolves its dead letter
    execute(shop_db, f"UPDATE {src} SET amount = '12' WHERE id = 3")
    run(1, conf)
    assert rows(warehouse_db, target, "id, amount", "id")[:3] == [
        (1, Decimal("10.50")),
        (2, Decimal("3.00")),
        (3, Decimal("12.00")),
    ]
    assert rows(
        warehouse_db,
        f"dlq.rejected_rows WHERE pipeline = '{pipeline}'",
        "row_key, resolved_at IS NOT NULL",
        "row_key::int",
    ) == [("3", True), ("6", False), ("10", False)]
    assert rows(
        warehouse_db,
        f"state.validation_results WHERE pipeline = '{pipeline}'",
        "source_rows, target_rows, rejected_rows, ok",
        "id DESC LIMIT 1",
    ) == [(3, 3, 0, True)]
