"""71_01_01_basics: full and incremental loads of the same table, measured side by side."""

from __future__ import annotations

import pytest

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
)

DAG_ID = "71_01_01_basics"


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src = f"public.{names('cust')}"
    full, incr, pipeline = f"core.{names('full')}", f"core.{names('incr')}", names("71_01_01")
    create_customers_copy(shop_db, src)
    strategies = f"core.{names('strategies')}"
    conf = {
        "source_table": src,
        "full_target": full,
        "incremental_target": incr,
        "pipeline": pipeline,
        "strategies_table": strategies,
    }
    yield src, full, incr, pipeline, conf
    drop(shop_db, src)
    drop(warehouse_db, full, incr, strategies, f"{strategies}_decisions")


def metrics(warehouse_db, pipeline):
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT strategy, rows_read, rows_written FROM state.run_metrics WHERE pipeline = %s "
            "ORDER BY interval_end, strategy",
            (pipeline,),
        )
        return cur.fetchall()


def test_full_and_incremental_loads_agree_and_the_metrics_show_the_difference(
    shop_db, warehouse_db, setup, assert_tables_equal
):
    src, full, incr, pipeline, conf = setup
    insert_customers(shop_db, src, list(range(1, 41)))  # one transaction per row: distinct updated_at
    run_dag(DAG_ID, hour(1), conf)
    same_customers(assert_tables_equal, src, full)
    same_customers(assert_tables_equal, src, incr)

    wm = scalar(shop_db, f"SELECT max(updated_at) FROM {src}")
    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id IN (3, 4)")
    insert_customers(shop_db, src, [41])
    expected_incremental_read = scalar(shop_db, f"SELECT count(*) FROM {src} WHERE updated_at >= %s", (wm,))
    run_dag(DAG_ID, hour(2), conf)
    same_customers(assert_tables_equal, src, full)
    same_customers(assert_tables_equal, src, incr)

    run_dag(DAG_ID, hour(3), conf)  # a quiet hour: nothing changed
    same_customers(assert_tables_equal, src, full)
    same_customers(assert_tables_equal, src, incr)

    assert expected_incremental_read == 4  # 2 updated + 1 inserted + the row at the old watermark
    assert metrics(warehouse_db, pipeline) == [
        ("full", 40, 40),
        ("incremental", 40, 40),
        ("full", 41, 41),
        ("incremental", expected_incremental_read, 3),
        ("full", 41, 41),
        ("incremental", 1, 0),  # re-reads the row at the watermark, writes nothing
    ]


def test_a_hard_delete_reaches_the_full_target_but_not_the_incremental_one(
    shop_db, warehouse_db, setup, assert_tables_equal
):
    src, full, incr, _, conf = setup
    insert_customers(shop_db, src, [1, 2, 3])
    run_dag(DAG_ID, hour(1), conf)
    execute(shop_db, f"DELETE FROM {src} WHERE id = 2")
    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 3")
    run_dag(DAG_ID, hour(2), conf)
    insert_customers(shop_db, src, [4])
    run_dag(DAG_ID, hour(3), conf)
    same_customers(assert_tables_equal, src, full)
    same_customers(assert_tables_equal, src, incr, target_where="id <> 2")
    assert [r[0] for r in rows(warehouse_db, incr)] == [1, 2, 3, 4]  # the deleted customer lingers


def test_when_to_use_each_the_three_strategies_catch_miss_and_read_what_they_predict(
    shop_db, warehouse_db, setup
):
    """The ``when_to_use`` task's recorded matrix: the same interval of changes (insert, update, hard
    delete, a reverted change, an update without updated_at) seen by full, incremental and CDC."""
    src, _, _, _, conf = setup
    insert_customers(shop_db, src, [1, 2])  # the side-by-side loads need a source; the demo has its own
    dr = run_dag(DAG_ID, hour(1), conf)
    table = conf["strategies_table"]
    matrix = rows(
        warehouse_db,
        f"{table} WHERE run_id = '{dr.run_id}'",
        "strategy, rows_read, caught, missed",
        "strategy",
    )
    everything = ["insert", "update", "hard_delete", "reverted", "no_updated_at"]
    assert matrix == [
        ("cdc", 6, everything, []),  # every change event, the intermediate 'gold' state included
        ("full", 20, ["insert", "update", "hard_delete", "no_updated_at"], ["reverted"]),  # all rows
        ("incremental", 3, ["insert", "update"], ["hard_delete", "reverted", "no_updated_at"]),
    ]
    decisions = dict(
        rows(warehouse_db, f"{table}_decisions WHERE run_id = '{dr.run_id}'", "need, strategies", "need")
    )
    assert decisions == {
        "target must mirror hard deletes": ["full", "cdc"],
        "source has no reliable updated_at": ["full", "cdc"],
        "every intermediate change needed (audit, history)": ["cdc"],
        "large table, frequent runs: read only the changes": ["incremental", "cdc"],
        "small table, first load or repair: no state to keep": ["full"],
    }

    run_dag(DAG_ID, hour(2), conf)  # every run records the same facts, under its own run_id
    assert scalar(warehouse_db, f"SELECT count(DISTINCT run_id) FROM {table}") == 2
    assert (
        scalar(warehouse_db, f"SELECT count(DISTINCT (strategy, rows_read, caught, missed)) FROM {table}")
        == 3
    )
