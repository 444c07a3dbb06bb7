"""71_09_01: initial load by incremental snapshot while writes run, a schema change under both policies,
ongoing sync; source and target compared by checksum."""

from __future__ import annotations

import json
import threading

import pendulum
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from cdclab.cdc.inspect import read_topic, wait_for_records
from cdclab.testing.tables import table_columns
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import make_source_table, write_changes

DAG_ID = "71_09_01_db_replication"
LOG_SERVICES = ["connect"]


def last_check(warehouse_db, table):
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT equal, source_rows, target_rows FROM state.replication_checks "
            "WHERE source_table = %s ORDER BY checked_at DESC LIMIT 1",
            (f"public.{table}",),
        )
        return cur.fetchone()


def snapshot_reads(lab, topic):
    return {
        json.loads(m.key())["id"]
        for m in read_topic(lab.kafka_bootstrap, topic)
        if m.value() and json.loads(m.value())["op"] == "r"
    }


def test_initial_snapshot_schema_change_and_ongoing_sync_end_equal_by_checksum(
    lab, names, shop_db, warehouse_db, assert_tables_equal, cdc_fence
):
    table, group = names("repl"), names("grp")
    topic, target = f"shop.public.{table}", f"core.repl_{table}"
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 30, update_ids=[1, 2], delete_ids=[3])
    wait_for_records(lab.kafka_bootstrap, topic, n, timeout=120)
    # retention removed the history: the stream alone can no longer rebuild the table
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    end = read_topic(lab.kafka_bootstrap, topic)[-1].offset() + 1
    for fut in admin.delete_records([TopicPartition(topic, 0, end)]).values():
        fut.result(30)
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "repl_",
    }

    # run 1 asks Debezium for an incremental snapshot while a writer keeps changing the table
    stop = threading.Event()
    written = {"n": 0}

    def writer():
        import psycopg2

        conn = psycopg2.connect(lab.pg_dsn("shop"))
        conn.autocommit = True
        i = 100
        while not stop.is_set() and i < 160:
            written["n"] += write_changes(
                conn, table, i, 1, update_ids=[i - 1] if i > 100 else [5], delete_ids=[]
            )
            i += 1
            stop.wait(0.05)
        conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        run_dag(DAG_ID, pendulum.datetime(2026, 5, 1, 10, tz="UTC"), conf)
        import time

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not {1, 2, 4, 30} <= snapshot_reads(lab, topic):
            time.sleep(1)
    finally:
        stop.set()
        thread.join()
    with shop_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.debezium_signal WHERE data LIKE %s", (f'%public.{table}"%',))
        assert cur.fetchone() == (1,)
    assert {1, 2, 4, 30} <= snapshot_reads(lab, topic)
    wait_for_records(lab.kafka_bootstrap, topic, written["n"], timeout=120)

    # run 2 applies snapshot reads and streamed changes: equal by checksum
    run_dag(DAG_ID, pendulum.datetime(2026, 5, 1, 10, 15, tz="UTC"), conf)
    cols = table_columns(shop_db, f"public.{table}")
    assert last_check(warehouse_db, table)[0] is True
    assert_tables_equal(f"shop:public.{table}", f"warehouse:{target}", key="id", columns=cols)

    # a column appears in the source: policy "fail" stops loudly and applies nothing
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("ALTER TABLE public.{t} ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0").format(
                t=sql.Identifier(table)
            )
        )
        cur.execute(
            sql.SQL("UPDATE public.{t} SET loyalty_points = id * 10 WHERE id IN (1, 2, 4)").format(
                t=sql.Identifier(table)
            )
        )
    cdc_fence()  # the three updates, with the new column, are on the topic now
    events = [json.loads(m.value()) for m in read_topic(lab.kafka_bootstrap, topic) if m.value()]
    widened = {e["after"]["id"] for e in events if e["op"] == "u" and "loyalty_points" in (e["after"] or {})}
    assert widened == {1, 2, 4}
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
        offset_before = cur.fetchone()
    run_dag(DAG_ID, pendulum.datetime(2026, 5, 1, 10, 30, tz="UTC"), conf, expect="failed")
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
        assert cur.fetchone() == offset_before, "a failed batch must not move the offsets"

    # policy "evolve" adds the column with the source's type and catches up
    run_dag(DAG_ID, pendulum.datetime(2026, 5, 1, 10, 45, tz="UTC"), {**conf, "schema_policy": "evolve"})
    cols = table_columns(shop_db, f"public.{table}")
    assert "loyalty_points" in cols
    with warehouse_db.cursor() as w:
        w.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attname = 'loyalty_points'",
            (target,),
        )
        assert w.fetchone() == ("integer",)
    assert_tables_equal(f"shop:public.{table}", f"warehouse:{target}", key="id", columns=cols)
    assert last_check(warehouse_db, table)[0] is True
