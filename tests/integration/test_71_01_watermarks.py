"""71_01_03_watermarks: the high watermark moves only after the load committed; a crash in between
loses nothing and duplicates nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import (
    create_customers_copy,
    drop,
    execute,
    hour,
    insert_customers,
    rows,
    same_customers,
    scalar,
    xcom,
)

DAG_ID = "71_01_03_watermarks"
# dag.test() runs tasks in-process, and Airflow resolves DagRun.conf into the DAG's shared Param
# objects, so a value passed once sticks for later runs: every run passes every param.
DEFAULTS = {
    "lookback_seconds": 0,
    "null_policy": "raise",
    "watermark_mode": "after_commit",
    "fail_after_load": False,
    "batch_size": 500,
}


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, target, key = f"public.{names('cust')}", f"core.{names('wm')}", names("71_01_03")
    create_customers_copy(shop_db, src)
    conf = {**DEFAULTS, "source_table": src, "target_table": target, "watermark_key": key}
    yield src, target, key, conf
    drop(shop_db, src)
    drop(warehouse_db, target)


def watermark(warehouse_db, key):
    return state.TableWatermarkStore(warehouse_db).get_value(key)


def history(warehouse_db, key):
    return [(h.reason, h.new_value) for h in state.TableWatermarkStore(warehouse_db).history(key)]


def test_three_intervals_load_every_change_and_the_watermark_follows_the_data(
    shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    src, target, key, conf = setup
    insert_customers(shop_db, src, [1, 2, 3])
    dr1 = run_dag(DAG_ID, hour(1), conf)
    same_customers(assert_tables_equal, src, target)
    assert xcom(dr1, "load")["inserted"] == 3
    wm1 = watermark(warehouse_db, key)
    assert wm1 == scalar(shop_db, f"SELECT max(updated_at) FROM {src}")

    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id IN (1, 2)")
    insert_customers(shop_db, src, [4])
    dr2 = run_dag(DAG_ID, hour(2), conf)
    same_customers(assert_tables_equal, src, target)
    assert (xcom(dr2, "load")["inserted"], xcom(dr2, "load")["updated"]) == (1, 2)

    execute(shop_db, f"UPDATE {src} SET tier = 'silver' WHERE id = 3")
    execute(shop_db, f"UPDATE {src} SET tier = 'platinum' WHERE id = 3")  # two updates, one load
    run_dag(DAG_ID, hour(3), conf)
    same_customers(assert_tables_equal, src, target)
    assert rows(warehouse_db, target, "id, tier, version") == [
        (1, "gold", 2),
        (2, "gold", 2),
        (3, "platinum", 3),
        (4, "basic", 1),
    ]
    assert watermark(warehouse_db, key) == scalar(shop_db, f"SELECT max(updated_at) FROM {src}")
    assert [reason for reason, _ in history(warehouse_db, key)] == ["init", "advance", "advance"]


def test_a_crash_between_load_and_watermark_update_loses_and_duplicates_nothing(
    shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    src, target, key, conf = setup
    insert_customers(shop_db, src, [1, 2])
    run_dag(DAG_ID, hour(1), conf)
    wm1 = watermark(warehouse_db, key)

    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 1")
    insert_customers(shop_db, src, [3])
    run_dag(DAG_ID, hour(2), {**conf, "fail_after_load": True}, expect="failed")
    # the load committed, the watermark did not move
    same_customers(assert_tables_equal, src, target)
    assert watermark(warehouse_db, key) == wm1

    insert_customers(shop_db, src, [4])  # changes keep coming while the pipeline is down
    dr = run_dag(DAG_ID, hour(2), conf)  # the rerun of the crashed interval
    loaded = xcom(dr, "load")
    # re-read: row 1 (updated) and row 3 (inserted) from the crashed run, and row 2, which shares the
    # old watermark's timestamp (closed lower bound); all three are skipped by the version guard
    assert (loaded["inserted"], loaded["updated"], loaded["skipped"]) == (1, 0, 3)
    same_customers(assert_tables_equal, src, target)  # no gap
    assert scalar(warehouse_db, f"SELECT count(*) - count(DISTINCT id) FROM {target}") == 0  # no duplicate
    assert watermark(warehouse_db, key) == scalar(shop_db, f"SELECT max(updated_at) FROM {src}")
    assert [reason for reason, _ in history(warehouse_db, key)] == ["init", "advance"]

    run_dag(DAG_ID, hour(3), conf)  # nothing new: the watermark stays, nothing is rewritten
    assert [reason for reason, _ in history(warehouse_db, key)] == ["init", "advance"]


def test_same_transaction_mode_commits_rows_and_watermark_together(
    shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    src, target, key, conf = setup
    conf = {**conf, "watermark_mode": "same_transaction"}
    for h, ids in ((1, [1, 2]), (2, [3]), (3, [4, 5])):
        insert_customers(shop_db, src, ids)
        execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = %s", (ids[0] - 1 or 1,))
        run_dag(DAG_ID, hour(h), conf)
        same_customers(assert_tables_equal, src, target)
    assert watermark(warehouse_db, key) == scalar(shop_db, f"SELECT max(updated_at) FROM {src}")


@pytest.mark.parametrize("bad", ["future", "wrong_type"])
def test_a_future_or_wrongly_typed_stored_watermark_stops_the_run(shop_db, warehouse_db, setup, bad) -> None:
    src, target, key, conf = setup
    insert_customers(shop_db, src, [1])
    value, value_type = (
        ((datetime.now(UTC) + timedelta(days=2)).isoformat(), "timestamptz")
        if bad == "future"
        else ("42", "bigint")
    )
    state.ensure_schema(warehouse_db)
    execute(
        warehouse_db,
        "INSERT INTO state.watermarks (key, value, value_type) VALUES (%s, %s, %s)",
        (key, value, value_type),
    )
    run_dag(DAG_ID, hour(1), conf, expect="failed")
    assert rows(warehouse_db, target) == []
    store = state.TableWatermarkStore(warehouse_db)
    error = state.WatermarkInFutureError if bad == "future" else state.WatermarkTypeError
    with pytest.raises(error):
        store.read(key, "timestamptz")


def test_null_cursor_rows_follow_the_declared_policy(
    shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    src, target, _, conf = setup
    execute(shop_db, f"ALTER TABLE {src} ALTER COLUMN updated_at DROP NOT NULL")
    insert_customers(shop_db, src, [1, 2])
    execute(
        shop_db, f"INSERT INTO {src} (id, email, full_name, updated_at) VALUES (3, 'n@x', 'No cursor', NULL)"
    )
    run_dag(DAG_ID, hour(1), conf, expect="failed")  # default policy: raise
    assert rows(warehouse_db, target) == []
    run_dag(DAG_ID, hour(1), {**conf, "null_policy": "exclude"})
    assert [r[0] for r in rows(warehouse_db, target)] == [1, 2]
    run_dag(DAG_ID, hour(2), {**conf, "null_policy": "include"})
    same_customers(assert_tables_equal, src, target)
