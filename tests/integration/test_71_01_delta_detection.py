"""71_01_04_delta_detection: timestamp, version (xmin) and hash detectors over three intervals,
checked row by row and by the DAG's own reconciliation."""

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
    xcom,
)

DAG_ID = "71_01_04_delta_detection"
DEFAULTS = {"lookback_seconds": 60, "null_policy": "raise"}


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, prefix, recon = f"public.{names('cust')}", f"core.{names('dd')}"[:50], f"state.{names('recon')}"
    create_customers_copy(shop_db, src)
    conf = {
        **DEFAULTS,
        "source_table": src,
        "target_prefix": prefix,
        "state_prefix": names("71_01_04"),
        "reconciliation_table": recon,
    }
    yield src, prefix, conf
    drop(shop_db, src)
    drop(warehouse_db, recon, *(f"{prefix}_{m}" for m in ("timestamp", "version", "hash")))
    execute(
        warehouse_db, "DELETE FROM state.row_hashes WHERE snapshot LIKE %s", (conf["state_prefix"] + "%",)
    )


def test_three_detectors_over_three_intervals(shop_db, warehouse_db, setup, assert_tables_equal):
    src, prefix, conf = setup
    insert_customers(shop_db, src, [1, 2, 3, 4])
    dr = run_dag(DAG_ID, hour(1), conf)
    for method in ("timestamp", "version", "hash"):
        same_customers(assert_tables_equal, src, f"{prefix}_{method}")
    assert xcom(dr, "hash_based")["inserted"] == 4

    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 1")
    execute(shop_db, f"UPDATE {src} SET full_name = 'Renamed' WHERE id = 2")
    insert_customers(shop_db, src, [5])
    dr = run_dag(DAG_ID, hour(2), conf)
    for method in ("timestamp", "version", "hash"):
        same_customers(assert_tables_equal, src, f"{prefix}_{method}")
    assert (xcom(dr, "hash_based")["inserted"], xcom(dr, "hash_based")["updated"]) == (1, 2)

    execute(shop_db, f"DELETE FROM {src} WHERE id = 3")  # a hard delete
    # a transaction that committed late: stamped 30 s before the stored watermark
    execute(
        shop_db,
        f"INSERT INTO {src} (id, email, full_name, updated_at) "
        f"SELECT 6, 'late@x', 'Late', max(updated_at) - interval '30 seconds' FROM {src}",
    )
    dr = run_dag(DAG_ID, hour(3), conf)
    same_customers(assert_tables_equal, src, f"{prefix}_hash")
    for method in ("timestamp", "version"):
        # the late row arrived (lookback / xmin); the deleted row lingers
        same_customers(assert_tables_equal, src, f"{prefix}_{method}", target_where="id <> 3")
        assert [r[0] for r in rows(warehouse_db, f"{prefix}_{method}")] == [1, 2, 3, 4, 5, 6], method
    assert xcom(dr, "hash_based")["deleted"] == 1
    assert xcom(dr, "reconcile") == {
        "timestamp": {"missing": [], "extra": [[3]], "different": []},
        "version": {"missing": [], "extra": [[3]], "different": []},
        "hash": {"missing": [], "extra": [], "different": []},
    }
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT count(DISTINCT run_id), count(*) FROM {conf['reconciliation_table']}")
        assert cur.fetchone() == (3, 9)


def test_without_lookback_the_late_commit_is_missed_and_reconciliation_reports_it(
    shop_db, warehouse_db, setup, assert_tables_equal
):
    src, prefix, conf = setup
    conf = {**conf, "lookback_seconds": 0}
    insert_customers(shop_db, src, [1, 2])
    run_dag(DAG_ID, hour(1), conf)
    execute(
        shop_db,
        f"INSERT INTO {src} (id, email, full_name, updated_at) "
        f"SELECT 3, 'late@x', 'Late', max(updated_at) - interval '30 seconds' FROM {src}",
    )
    run_dag(DAG_ID, hour(2), conf)
    insert_customers(shop_db, src, [4])
    dr = run_dag(DAG_ID, hour(3), conf)
    assert [r[0] for r in rows(warehouse_db, f"{prefix}_timestamp")] == [1, 2, 4]
    same_customers(assert_tables_equal, src, f"{prefix}_version")
    assert xcom(dr, "reconcile")["timestamp"] == {"missing": [[3]], "extra": [], "different": []}


def test_a_null_cursor_stops_the_timestamp_detector_under_the_raise_policy(
    shop_db, warehouse_db, setup, assert_tables_equal
):
    src, prefix, conf = setup
    execute(shop_db, f"ALTER TABLE {src} ALTER COLUMN updated_at DROP NOT NULL")
    insert_customers(shop_db, src, [1])
    execute(shop_db, f"INSERT INTO {src} (id, email, full_name, updated_at) VALUES (2, 'n@x', 'Null', NULL)")
    dr = run_dag(DAG_ID, hour(1), conf, expect="failed")
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states["timestamp_based"] == "failed"
    assert states["hash_based"] == "success"  # the other detectors do not depend on updated_at
    assert rows(warehouse_db, f"{prefix}_timestamp") == []
    run_dag(DAG_ID, hour(1), {**conf, "null_policy": "include"})
    same_customers(assert_tables_equal, src, f"{prefix}_timestamp")
