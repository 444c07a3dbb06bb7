"""Faults on the shared stack: Kafka Connect and the Kafka broker restarted while changes keep coming.

These tests restart shared services, so they are marked ``disruptive`` and run after every other test
(tests/conftest.py orders them last); each one leaves the stack healthy again.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest

from cdclab.cdc.inspect import read_topic, wait_for_records
from cdclab.cdc.pipeline import replicate
from cdclab.lab.backend import all_healthy, backend, format_table
from tests.integration._cdc_helpers import COLUMNS, make_source_table, write_changes
from tests.integration._drills import ensure_connector_running

pytestmark = pytest.mark.disruptive
LOG_SERVICES = ["connect", "kafka"]


def writer(lab, table: str, start: int, count: int, done: dict, pause: float = 0.03) -> threading.Thread:
    def run() -> None:
        import psycopg2

        conn = psycopg2.connect(lab.pg_dsn("shop"))
        conn.autocommit = True
        n = 0
        for i in range(start, start + count):
            n += write_changes(conn, table, i, 1, update_ids=[i - 1] if i > start else [], delete_ids=[])
            done["rows"] = i - start + 1  # progress, read at the kill: did it land mid-stream?
            time.sleep(pause)
        done["records"] = n
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def duplicates_by_key_and_lsn(lab, topic: str) -> int:
    seen = Counter()
    for m in read_topic(lab.kafka_bootstrap, topic):
        if m.value():
            v = json.loads(m.value())
            seen[(m.key(), v["source"]["lsn"])] += 1
    return sum(c - 1 for c in seen.values() if c > 1)


def test_a_kafka_connect_kill_mid_stream_loses_and_duplicates_nothing(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("crs"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    done: dict = {}
    thread = writer(lab, table, 1, 150, done)
    time.sleep(1.5)
    lab_backend = backend(lab)
    lab_backend.kill("connect")  # SIGKILL: no clean shutdown, no offset flush
    rows_at_kill = done.get("rows", 0)
    time.sleep(2)
    lab_backend.start("connect")
    thread.join()
    assert 0 < rows_at_kill < 150, f"the kill must land mid-stream: {rows_at_kill} of 150 rows were written"
    ensure_connector_running(lab)
    wait_for_records(lab.kafka_bootstrap, topic, done["records"], timeout=180)

    replicate([f"public.{table}"], group=group, target_schema="core")

    diff = assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    assert diff.source_count == 150
    assert duplicates_by_key_and_lsn(lab, topic) == 0, "exactly-once source support must not re-send events"


def test_a_kafka_broker_kill_mid_stream_loses_and_duplicates_nothing(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("krs"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    done: dict = {}
    thread = writer(lab, table, 1, 150, done)
    time.sleep(1.5)
    lab_backend = backend(lab)
    lab_backend.kill("kafka")  # SIGKILL: the broker recovers its log on restart
    rows_at_kill = done.get("rows", 0)
    time.sleep(3)  # writes go on in Postgres; the slot keeps their WAL
    lab_backend.start("kafka")
    thread.join()
    assert 0 < rows_at_kill < 150, f"the kill must land mid-stream: {rows_at_kill} of 150 rows were written"
    ensure_connector_running(lab)
    wait_for_records(lab.kafka_bootstrap, topic, done["records"], timeout=240)
    # a consumer that was mid-way when the broker went away resumes from the stored offsets
    replicate([f"public.{table}"], group=group, target_schema="core", batch_size=20)

    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    with warehouse_db.cursor() as cur:
        cur.execute(f'SELECT count(*), count(DISTINCT id) FROM core."{table}"')
        total, distinct = cur.fetchone()
    assert total == distinct == 150
    rows = lab_backend.status()
    assert all_healthy(rows), format_table(rows)
