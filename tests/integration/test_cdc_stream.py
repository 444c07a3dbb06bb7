"""The streaming path (issue 14, item 2): :func:`cdclab.cdc.pipeline.stream`, a follow run of the
exactly-once consumer, replicates a table continuously; stopped cleanly its stored offsets are the
positions it consumed; killed mid-stream and restarted it neither loses nor repeats a record. The
second test runs it as ``cdclab stream`` processes: one SIGKILLs itself mid-stream
(``CDCLAB_FAIL_AFTER_BATCHES``), the next is stopped with SIGTERM and prints its counts.

The follower starts before its table's first change, so it also shows a topic being picked up when
Debezium creates it. Waits poll the end state with a generous deadline; nothing asserts a duration."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from psycopg2 import errors as pg_errors
from psycopg2 import sql

from cdclab.cdc.consumer import watermarks
from cdclab.cdc.inspect import read_topic
from cdclab.cdc.pipeline import Follower
from tests.integration._cdc_helpers import stored
from tests.integration._drills import drop_tables, insert_batches, make_source_table


def follower_on(table: str, group: str, batch_size: int = 100) -> Follower:
    """The library's follower on one test table."""
    return Follower(
        [f"public.{table}"],
        group=group,
        target_schema="core",
        batch_size=batch_size,
        poll_timeout=0.2,
        who="test-stream",
    )


def cleanup(lab: Any, warehouse_db: Any, table: str, group: str) -> None:
    """Drop what a test made: source and target tables (and the merge's delete ledger), the group's
    stored offsets and target binding, the topic."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    drop_tables(lab, table)
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS core.{}").format(sql.Identifier(f"{table}__deleted")))
        cur.execute("DELETE FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
        cur.execute("DELETE FROM state.kafka_group_targets WHERE consumer_group = %s", (group,))
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    for f in admin.delete_topics([f"shop.public.{table}"]).values():
        try:
            f.result(30)
        except KafkaException:  # the topic never came (the test failed before the first change)
            pass


def rows(conn: Any, qualified: str) -> list[tuple[Any, ...]]:
    schema, table = qualified.split(".")
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, amount, note FROM {}.{} ORDER BY id").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
        )
        return cur.fetchall()


def wait_equal(
    shop_db: Any, warehouse_db: Any, table: str, alive: Callable[[], bool], timeout: float = 180
) -> None:
    """Poll until ``core.<table>`` holds exactly the source's rows, while the follower keeps running
    (``alive``); a follower that died ends the wait at once."""
    want = rows(shop_db, f"public.{table}")
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while time.monotonic() < deadline and alive():
        try:
            got = rows(warehouse_db, f"core.{table}")
        except pg_errors.UndefinedTable:  # the follower has not made its target yet
            got = []
        if got == want:
            return
        time.sleep(0.2)
    pytest.fail(
        f"core.{table} did not reach the source's {len(want)} rows (has {len(got)}); follower alive: {alive()}"
    )


def start_cli(group: str, table: str, who: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``cdclab stream`` in its own process (a service), batches of at most 50."""
    argv = [sys.executable, "-m", "cdclab.cli", "stream", f"public.{table}", "--group", group]
    return subprocess.Popen(
        [*argv, "--batch-size", "50", "--who", who],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,  # only the JSON summary of a clean stop
        stderr=subprocess.PIPE,  # its log
        text=True,
    )


def end_offset(lab: Any, topic: str) -> int:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": lab.kafka_bootstrap, "group.id": "cdclab-test-ends"})
    try:
        return watermarks(consumer, topic, 0)[1]
    finally:
        consumer.close()


def change(shop_db: Any, table: str, update_ids: range, delete_ids: range) -> None:
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        for i in update_ids:
            cur.execute(
                sql.SQL("UPDATE public.{t} SET note = 'upd', amount = amount + 1 WHERE id = %s").format(t=t),
                (i,),
            )
        for i in delete_ids:
            cur.execute(sql.SQL("DELETE FROM public.{t} WHERE id = %s").format(t=t), (i,))


def test_a_follow_run_replicates_continuously_and_stores_the_positions_it_consumed(
    lab, names, shop_db, warehouse_db, cdc_fence, assert_tables_equal
):
    table, group = names("strm"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    follower = follower_on(table, group)
    try:
        follower.start()  # before the table's first change: its topic does not exist yet
        insert_batches(lab, table, 1, batches=10, per_batch=50)
        change(shop_db, table, range(1, 60, 3), range(400, 420))
        wait_equal(shop_db, warehouse_db, table, follower.is_alive)
        # still running: later changes arrive without a new run
        insert_batches(lab, table, 1001, batches=5, per_batch=20)
        change(shop_db, table, range(1001, 1010), range(1090, 1101))
        cdc_fence()  # every change above is on Kafka
        wait_equal(shop_db, warehouse_db, table, follower.is_alive)
        summary = follower.stop()

        assert_tables_equal(
            f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=["amount", "note"]
        )
        records = read_topic(lab.kafka_bootstrap, topic)
        assert summary["records"] == len(records), summary  # each record applied once
        # a clean stop stores the position it consumed: the topic's end (over trailing txn markers)
        end = end_offset(lab, topic)
        assert stored(warehouse_db, group) == {(topic, 0): end}
        assert summary["positions"] == {f"{topic}[0]": end}
        assert summary["dead_letters"] == 0
    finally:
        follower.halt.set()
        follower.join(60)
        cleanup(lab, warehouse_db, table, group)


def test_a_follower_killed_mid_stream_resumes_without_loss_or_duplicate(
    lab, names, shop_db, warehouse_db, cdc_fence, assert_tables_equal
):
    table, group = names("skill"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    proc: subprocess.Popen | None = None
    try:
        insert_batches(lab, table, 1, batches=20, per_batch=50)  # 1,000 rows: far more than 3 batches of 50
        cdc_fence()
        # `cdclab stream` in its own process, SIGKILLed by itself after 3 committed batches (no cleanup)
        proc = start_cli(group, table, "test-kill", {"CDCLAB_FAIL_AFTER_BATCHES": "3"})
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == -9, (
            f"the follower was not killed mid-stream ({proc.returncode}): {err[-2000:]}"
        )
        at_kill = stored(warehouse_db, group)[(topic, 0)]
        committed = rows(warehouse_db, f"core.{table}")
        assert 0 < len(committed) < 1000, f"the kill did not land mid-stream: {len(committed)} rows committed"

        # restart while the source keeps changing; then stop it as a service manager does (SIGTERM)
        proc = start_cli(group, table, "test-restart")
        insert_batches(lab, table, 2001, batches=4, per_batch=25)
        change(shop_db, table, range(1, 30), range(500, 520))
        cdc_fence()
        wait_equal(shop_db, warehouse_db, table, lambda: proc is not None and proc.poll() is None)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"a clean stop exits 0, not {proc.returncode}: {err[-2000:]}"
        summary = json.loads(out)  # the run's counts, printed on a clean stop

        assert_tables_equal(
            f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=["amount", "note"]
        )
        records = read_topic(lab.kafka_bootstrap, topic)
        before = [r for r in records if r.offset() < at_kill]
        after = [r for r in records if r.offset() >= at_kill]
        # no loss, no duplicate: the restart applied exactly the records past the killed run's stored
        # offset (its uncommitted batch was rolled back with its offsets) and none before it
        assert summary["records"] == len(after), (summary, len(before), len(after), at_kill)
        assert len(committed) == sum(1 for r in before if r.value() is not None)  # one insert each
        assert stored(warehouse_db, group) == {(topic, 0): end_offset(lab, topic)}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        cleanup(lab, warehouse_db, table, group)
