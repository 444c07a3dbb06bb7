"""End to end: rows written in `shop` travel through Debezium and Kafka and a real DAG run merges them
into `warehouse`; the warehouse table equals the source table row by row, deletes included."""

from __future__ import annotations

import os
import subprocess
import sys

import pendulum
from psycopg2 import sql

from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, make_source_table, published, write_changes

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_03_01_database_cdc"


def conf(table: str, group: str, **extra) -> dict:
    return {"tables": [f"public.{table}"], "consumer_group": group, "target_schema": "core", **extra}


def test_inserts_updates_and_deletes_reach_the_warehouse_row_by_row(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("cust"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)

    expected_records = write_changes(shop_db, table, 1, 40, update_ids=[2, 4, 6, 8, 4], delete_ids=[10, 11])
    published(lab, topic, expected_records)
    run_dag(DAG_ID, pendulum.datetime(2026, 3, 1, 10, tz="UTC"), conf(table, group))
    first = assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    assert first.source_count == 38

    # second interval: more inserts, updates of fresh and old rows, deletes — and one re-insert of a deleted key
    expected_records += write_changes(shop_db, table, 41, 10, update_ids=[1, 41, 45], delete_ids=[2, 42])
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO public.{t} (id, email, full_name) VALUES (10, 'back@shop.test', 'Back')"
            ).format(t=sql.Identifier(table))
        )
    expected_records += 1
    published(lab, topic, expected_records)
    run_dag(DAG_ID, pendulum.datetime(2026, 3, 1, 10, 5, tz="UTC"), conf(table, group))
    second = assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    assert second.source_count == 38 + 10 - 2 + 1

    # third interval with no change: nothing moves, the offsets stay at the end of the topic
    run_dag(DAG_ID, pendulum.datetime(2026, 3, 1, 10, 10, tz="UTC"), conf(table, group))
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s AND topic = %s",
            (group, topic),
        )
        (next_offset,) = cur.fetchone()
    assert next_offset >= expected_records


KILL_SCRIPT = """
import sys
from cdclab.cdc.pipeline import replicate
replicate([sys.argv[1]], group=sys.argv[2], target_schema="core", batch_size=int(sys.argv[3]))
"""


def test_a_consumer_killed_mid_stream_resumes_without_loss_or_duplicates(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("kill"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 60, update_ids=list(range(1, 60, 3)), delete_ids=[5, 6, 7])
    published(lab, topic, n)

    env = {**os.environ, "CDCLAB_FAIL_AFTER_BATCHES": "3"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, f"public.{table}", group, "7"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
        (mid,) = cur.fetchone()
        cur.execute(sql.SQL("SELECT count(*) FROM core.{t}").format(t=sql.Identifier(table)))
        (partial,) = cur.fetchone()
    assert 0 < mid < n, "the kill must land mid-stream"
    assert 0 < partial < 57

    resumed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, f"public.{table}", group, "7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    with warehouse_db.cursor() as cur:
        # each row was last written by the newest change of its key: nothing was applied out of order
        cur.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id) FROM core.{t}").format(t=sql.Identifier(table))
        )
        total, distinct = cur.fetchone()
    assert total == distinct == 57
