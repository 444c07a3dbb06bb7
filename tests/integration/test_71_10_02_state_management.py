"""71_10_02_state_management: state is snapshotted to MinIO after every load; after state loss the next run
restores the latest snapshot and continues without a gap or a duplicate; freshness is recorded."""

from __future__ import annotations

import json

import psycopg2
import pytest

from cdclab.cdc.consumer import ensure_schema as ensure_offsets
from cdclab.files.store import ObjectStore
from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import (
    create_customers_copy,
    drop,
    execute,
    hour,
    insert_customers,
    rows,
    xcom,
)

DAG_ID = "71_10_02_state_management"


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, target, pipeline = f"public.{names('cust')}", f"staging.{names('chg')}", names("71_10_02")
    group = names("grp")
    create_customers_copy(shop_db, src)
    state.ensure_schema(warehouse_db)
    with warehouse_db.cursor() as cur:
        ensure_offsets(cur)
    conf = {
        "source_table": src,
        "target_table": target,
        "pipeline": pipeline,
        "consumer_groups": [group],
        "bucket": "lab-tests",
        "prefix": f"{names.suffix}/state",
        "restore": "auto",
        "restore_version": None,
        "watermark_age_warn_seconds": 7200,
        "watermark_age_alert_seconds": 86400,
        "backup_age_warn_seconds": 7200,
        "backup_age_alert_seconds": 86400,
    }
    yield src, target, pipeline, group, conf
    store = ObjectStore()
    store.delete("lab-tests", [o.key for o in store.list_objects("lab-tests", f"{names.suffix}/")])
    drop(shop_db, src)
    drop(warehouse_db, target)
    execute(warehouse_db, "DELETE FROM state.watermarks WHERE key LIKE %s", (pipeline + "/%",))
    execute(warehouse_db, "DELETE FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
    execute(warehouse_db, "DELETE FROM state.state_backups WHERE scope = %s", (pipeline,))
    execute(warehouse_db, "DELETE FROM marts.pipeline_health WHERE scope = %s", (pipeline,))


def wm_key(conf):
    return f"{conf['pipeline']}/{conf['source_table']}->{conf['target_table']}"


def offsets(warehouse_db, group):
    return rows(
        warehouse_db,
        f"state.kafka_offsets WHERE consumer_group = '{group}'",
        "topic, kafka_partition, next_offset",
        "topic, kafka_partition",
    )


def test_state_lost_after_a_backup_is_restored_and_the_next_load_has_no_gap_and_no_duplicate(
    shop_db, warehouse_db, setup
) -> None:
    src, target, pipeline, group, conf = setup
    execute(
        warehouse_db,
        "INSERT INTO state.kafka_offsets (consumer_group, topic, kafka_partition, next_offset) "
        "VALUES (%s, 'shop.public.a', 0, 17), (%s, 'shop.public.a', 1, 4)",
        (group, group),
    )
    insert_customers(shop_db, src, [1, 2, 3])
    dr1 = run_dag(DAG_ID, hour(1), conf)
    assert xcom(dr1, "recover") is None  # first run: nothing to restore
    assert xcom(dr1, "backup")["version"] == 1

    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 1")
    insert_customers(shop_db, src, [4])
    dr2 = run_dag(DAG_ID, hour(2), conf)
    assert xcom(dr2, "load")["appended"] == 2
    assert xcom(dr2, "backup") == {
        "version": 2,
        "object_key": f"{conf['prefix']}/v000002.json",
        "sha256": xcom(dr2, "backup")["sha256"],
        "watermarks": 1,
        "offsets": 2,
    }
    backed_up_wm = state.TableWatermarkStore(warehouse_db).get_value(wm_key(conf))
    snapshot = json.loads(ObjectStore().get("lab-tests", f"{conf['prefix']}/v000002.json"))
    assert [w["key"] for w in snapshot["watermarks"]] == [wm_key(conf)]
    assert [(o["topic"], o["kafka_partition"], o["next_offset"]) for o in snapshot["kafka_offsets"]] == [
        ("shop.public.a", 0, 17),
        ("shop.public.a", 1, 4),
    ]

    # changes arrive, then the state is lost
    insert_customers(shop_db, src, [5])
    execute(shop_db, f"UPDATE {src} SET tier = 'silver' WHERE id = 2")
    execute(warehouse_db, "DELETE FROM state.watermarks WHERE key = %s", (wm_key(conf),))
    execute(warehouse_db, "DELETE FROM state.kafka_offsets WHERE consumer_group = %s", (group,))

    dr3 = run_dag(DAG_ID, hour(3), conf)
    assert xcom(dr3, "recover") == {
        "version": 2,
        "watermarks_restored": [wm_key(conf)],
        "offsets_restored": 2,
    }
    assert offsets(warehouse_db, group) == [("shop.public.a", 0, 17), ("shop.public.a", 1, 4)]
    restored = [
        h for h in state.TableWatermarkStore(warehouse_db).history(wm_key(conf)) if h.reason == "restore"
    ]
    assert [h.new_value for h in restored] == [backed_up_wm]
    # the load continued from the restored watermark: the new rows plus the boundary row, not everything
    assert xcom(dr3, "load") == {"read": 3, "appended": 2}

    execute(shop_db, f"UPDATE {src} SET tier = 'platinum' WHERE id IN (3, 5)")
    dr4 = run_dag(DAG_ID, hour(4), conf)
    assert xcom(dr4, "load")["appended"] == 2
    assert xcom(dr4, "backup")["version"] == 4

    # no gap, no duplicate: the change log holds each version of each row exactly once
    assert rows(warehouse_db, target, "id, version, tier", "id, version") == [
        (1, 1, "basic"),
        (1, 2, "gold"),
        (2, 1, "basic"),
        (2, 2, "silver"),
        (3, 1, "basic"),
        (3, 2, "platinum"),
        (4, 1, "basic"),
        (5, 1, "basic"),
        (5, 2, "platinum"),
    ]
    assert [o.key for o in ObjectStore().list_objects("lab-tests", conf["prefix"] + "/")] == [
        f"{conf['prefix']}/v00000{v}.json" for v in (1, 2, 3, 4)
    ]
    # the rows were written today, the runs are for March 2026: the watermark is months after the
    # run's interval end, a negative age that must not pass as fresh
    assert rows(
        warehouse_db,
        f"marts.pipeline_health WHERE scope = '{pipeline}' AND run_id = '{dr4.run_id}'",
        "metric, status, value < 0, detail LIKE 'future_watermark:%%'",
        "metric",
    ) == [("backup_age_seconds", "ok", False, False), ("watermark_age_seconds", "alert", True, True)]


def test_watermark_age_is_graded_at_the_interval_end_and_a_watermark_after_it_is_a_future_watermark_alert(
    shop_db, warehouse_db, setup
) -> None:
    src, _, pipeline, _, conf = setup
    with shop_db.cursor() as cur:  # rows stamped inside the interval [01:00, 02:00), not by the wall clock
        cur.executemany(
            f"INSERT INTO {src} (id, email, full_name, tier, updated_at) VALUES (%s, %s, %s, 'basic', %s)",
            [
                (1, "c1@example.com", "C 1", hour(1).add(minutes=10)),
                (2, "c2@example.com", "C 2", hour(1).add(minutes=40)),
            ],
        )

    def health(dr):
        return rows(
            warehouse_db,
            f"marts.pipeline_health WHERE scope = '{pipeline}' AND run_id = '{dr.run_id}' "
            "AND metric = 'watermark_age_seconds'",
            "status, value, split_part(detail, ':', 1)",
            "id",
        )

    dr = run_dag(DAG_ID, hour(2), conf)  # measures at 02:00: the watermark 01:40 is 20 minutes old
    assert state.TableWatermarkStore(warehouse_db).get_value(wm_key(conf)) == hour(1).add(minutes=40)
    assert health(dr) == [("ok", 1200.0, "watermark 2026-03-01T01")]
    # a rerun of the older interval [00:00, 01:00) measures at 01:00, 40 minutes before the watermark:
    # a negative age, beyond the 15 minutes of tolerance, is flagged, not graded ok
    dr = run_dag(DAG_ID, hour(1), conf)
    assert health(dr) == [("alert", -2400.0, "future_watermark")]
    # within the tolerance (a load that ran a little after its interval end) the age counts as 0
    dr = run_dag(DAG_ID, hour(1), {**conf, "watermark_future_tolerance_seconds": 3600})
    assert health(dr) == [("ok", 0.0, "watermark 2026-03-01T01")]


def test_never_restore_reloads_from_the_beginning_and_the_change_log_key_absorbs_the_replay(
    shop_db, warehouse_db, setup
) -> None:
    src, target, _, _, conf = setup
    insert_customers(shop_db, src, [1, 2])
    run_dag(DAG_ID, hour(1), conf)
    execute(warehouse_db, "DELETE FROM state.watermarks WHERE key = %s", (wm_key(conf),))
    insert_customers(shop_db, src, [3])
    dr = run_dag(DAG_ID, hour(2), {**conf, "restore": "never"})
    assert xcom(dr, "recover") is None
    assert xcom(dr, "load") == {"read": 3, "appended": 1}
    assert rows(warehouse_db, target, "id, version", "id") == [(1, 1), (2, 1), (3, 1)]
    dr = run_dag(DAG_ID, hour(3), {**conf, "restore": "force", "restore_version": 1})
    assert xcom(dr, "recover")["version"] == 1  # overwrite: the watermark goes back to v1's, rows re-read
    assert xcom(dr, "load") == {"read": 2, "appended": 0}  # rows 2 (v1's boundary) and 3


def test_a_transaction_open_across_a_run_is_loaded_by_the_next_run(lab, shop_db, warehouse_db, setup) -> None:
    """``updated_at`` is a transaction's start. A transaction opens; a row committed after that start is
    read by the first run while the transaction is still open; then the transaction inserts a row (stamped
    at its start, before the first run's newest row) and commits. The first run's watermark stopped at
    the open transaction's start, so the second run reads the late row: nothing is missed."""
    src, target, _, _, conf = setup
    insert_customers(shop_db, src, [1])
    writer = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT now()")  # the long transaction is open from here on
            started = cur.fetchone()[0]
        insert_customers(shop_db, src, [3])  # stamped after `started`, committed before the run
        dr1 = run_dag(DAG_ID, hour(1), conf)
        held_back = state.TableWatermarkStore(warehouse_db).get_value(wm_key(conf))
        insert_customers(writer, src, [2])  # stamped `started`, committed after the run
        writer.commit()
    finally:
        writer.rollback()
        writer.close()
    dr2 = run_dag(DAG_ID, hour(2), conf)

    assert xcom(dr1, "load")["appended"] == 1  # row 3 waits: it is stamped after the open transaction
    assert held_back < started
    assert xcom(dr2, "load")["appended"] == 2
    assert rows(warehouse_db, target, "id, version, tier, updated_at", "id") == rows(
        shop_db, src, "id, version, tier, updated_at", "id"
    )
    assert [r[0] for r in rows(warehouse_db, target, "id", "id")] == [1, 2, 3]
