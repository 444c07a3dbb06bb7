"""Hardening drills of the exactly-once consumer (issue 11, items 1, 2, 3 and TRUNCATE of 5).

Each test drives the real stack into the situation the issue describes and asserts the end state:
- two runs of one consumer group at the same time: the group lock serialises them, no offset moves
  backwards, the target equals the source;
- an ``offsets reset`` made during a run is never overwritten (compare-and-set offsets);
- a group bound to one target refuses a run into another and leaves its offsets untouched;
- a record that fails to *apply* is dead-lettered with the database error, the partition moves on;
- offsets never jump silently: a new group on a topic whose log starts above 0, a stored offset below
  the log start, and records removed by retention during a run all stop with the remedy;
- a TRUNCATE in the source stops the merge loudly, naming table, topic and offset.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import psycopg2
import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from cdclab.cdc import consumer as kc
from cdclab.cdc import offsets
from cdclab.cdc.connect import ConnectClient
from cdclab.cdc.pipeline import TruncateArrived, replicate
from tests.integration._cdc_helpers import (
    COLUMNS,
    Made,
    made,
    make_source_table,
    published,
    stored,
    write_changes,
)

__all__ = ["made"]  # the fixture, imported for pytest

LOG_SERVICES = ["connect", "kafka"]


def produce(lab: Any, topic: str, records: int, start: int = 0, size: int = 10) -> str:
    """``records`` records keyed ``start..`` into ``topic`` (the test's own ``kafka_topic``)."""
    producer = Producer({"bootstrap.servers": lab.kafka_bootstrap})
    for i in range(start, start + records):
        producer.produce(topic, key=str(i).encode(), value=(f"{i}:" + "x" * size).encode())
        assert producer.flush(30) == 0  # one record per record batch: a fetch can stop after any of them
    return topic


def delete_records_before(lab: Any, topic: str, offset: int) -> None:
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    for f in admin.delete_records([TopicPartition(topic, 0, offset)]).values():
        f.result(30)


def sink(warehouse_db: Any, made: Made, name: str) -> tuple[str, Any]:
    """A warehouse table ``core.<name>`` (k, v) and a batch handler that inserts each record into it."""
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE core.{} (k bigint PRIMARY KEY, v text)").format(sql.Identifier(name))
        )
    made.warehouse.append(f'DROP TABLE IF EXISTS core."{name}"')
    insert = sql.SQL("INSERT INTO core.{} (k, v) VALUES (%s, %s)").format(sql.Identifier(name))

    def handler(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        for msg in batch:
            cur.execute(insert, (int(msg.key()), msg.value().decode()))
        return []

    return f"core.{name}", handler


def count(warehouse_db: Any, table: str) -> int:
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split("."))))
        return int(cur.fetchone()[0])


def connector(lab: Any) -> Any:
    return lambda: psycopg2.connect(lab.pg_dsn("warehouse"))


# --- item 1: two consumers on one group ------------------------------------------------------------


def test_two_concurrent_runs_of_one_group_never_move_an_offset_backwards(
    lab, names, made, shop_db, warehouse_db, assert_tables_equal
):
    table, group, log = names("race"), names("grp"), names("offlog")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    made.warehouse += [
        f'DROP TABLE IF EXISTS core."{table}"',
        f'DROP TABLE IF EXISTS core."{table}__deleted"',
    ]
    replicate([f"public.{table}"], group=names("setup"), target_schema="core")  # creates the target
    n = write_changes(shop_db, table, 1, 150, update_ids=list(range(1, 150, 4)), delete_ids=[3, 9, 27])
    published(lab, topic, n)
    # every change of this group's stored offset, as (old, new), recorded by a trigger on the offset store
    with warehouse_db.cursor() as cur:
        kc.ensure_schema(cur)
        cur.execute(
            sql.SQL("CREATE TABLE core.{} (old_offset bigint, new_offset bigint)").format(sql.Identifier(log))
        )
        made.warehouse.append(f'DROP TABLE IF EXISTS core."{log}"')
        cur.execute(
            sql.SQL(
                "CREATE FUNCTION core.{f}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO core.{t} VALUES (OLD.next_offset, NEW.next_offset); RETURN NEW; END $$"
            ).format(f=sql.Identifier(log), t=sql.Identifier(log))
        )
        made.warehouse.append(f'DROP FUNCTION IF EXISTS core."{log}"()')
        cur.execute(
            sql.SQL(
                "CREATE TRIGGER {tr} BEFORE UPDATE ON state.kafka_offsets FOR EACH ROW "
                "WHEN (OLD.consumer_group = {g}) EXECUTE FUNCTION core.{f}()"
            ).format(tr=sql.Identifier(log), g=sql.Literal(group), f=sql.Identifier(log))
        )
        made.warehouse.append(f'DROP TRIGGER IF EXISTS "{log}" ON state.kafka_offsets')

    errors: list[BaseException] = []
    summaries: list[dict[str, Any]] = []
    barrier = threading.Barrier(2)

    def run(who: str) -> None:
        try:
            barrier.wait(30)
            summaries.append(
                replicate([f"public.{table}"], group=group, target_schema="core", batch_size=5, who=who)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"run{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)

    assert errors == []
    assert len(summaries) == 2
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT old_offset, new_offset FROM core.{}").format(sql.Identifier(log)))
        moves = cur.fetchall()
    assert moves, "the offsets must have moved"
    assert [m for m in moves if m[1] < m[0]] == [], "an offset moved backwards"
    assert stored(warehouse_db, group)[(topic, 0)] >= n
    # the second run waited for the first and found nothing left: every record was applied once
    assert sorted(s["records"] for s in summaries)[0] == 0


def test_an_offsets_reset_made_during_a_run_is_not_overwritten(lab, names, made, warehouse_db, kafka_topic):
    group = names("grp")
    topic = produce(lab, kafka_topic, 40)
    target, insert = sink(warehouse_db, made, names("sink"))
    calls = 0

    def handler(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        nonlocal calls
        calls += 1
        if calls == 2:  # an operator replays the group while the run is between batches
            conn = psycopg2.connect(lab.pg_dsn("warehouse"))
            try:
                with conn, conn.cursor() as other:
                    offsets.reset(other, lab.kafka_bootstrap, group, topic, "earliest", who="operator")
            finally:
                conn.close()
        return insert(cur, batch)

    with pytest.raises(kc.OffsetConflict, match="operator"):
        kc.consume_into_postgres(
            bootstrap=lab.kafka_bootstrap,
            topics=[topic],
            group=group,
            connect=connector(lab),
            handler=handler,
            batch_size=5,
        )
    assert stored(warehouse_db, group) == {(topic, 0): 0}, "the reset must survive the run"
    # the next run replays from the reset; the batch that conflicted was rolled back
    rows_before = count(warehouse_db, target)
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(*target.split("."))))
    kc.consume_into_postgres(
        bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
    )
    assert 0 < rows_before < 40
    assert count(warehouse_db, target) == 40
    assert stored(warehouse_db, group) == {(topic, 0): 40}


def test_a_run_that_cannot_get_its_groups_lock_in_time_fails_clearly_and_touches_nothing(
    lab, names, made, warehouse_db, kafka_topic
):
    group = names("grp")
    topic = produce(lab, kafka_topic, 5)
    target, insert = sink(warehouse_db, made, names("sink"))
    holder = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        kc.lock_group(holder, group, 5)  # another run of the group is busy
        with pytest.raises(kc.GroupBusy, match=group):
            kc.consume_into_postgres(
                bootstrap=lab.kafka_bootstrap,
                topics=[topic],
                group=group,
                connect=connector(lab),
                handler=insert,
                lock_wait_seconds=1,
            )
        assert stored(warehouse_db, group) == {} and count(warehouse_db, target) == 0
    finally:
        holder.close()  # the lock goes with the session
    kc.consume_into_postgres(
        bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
    )
    assert count(warehouse_db, target) == 5


def test_a_group_bound_to_one_target_refuses_a_run_into_another(
    lab, names, made, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("bind"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    for t in (table, f"other_{table}"[:63]):
        made.warehouse += [f'DROP TABLE IF EXISTS core."{t}"', f'DROP TABLE IF EXISTS core."{t}__deleted"']
    n = write_changes(shop_db, table, 1, 5, update_ids=[], delete_ids=[])
    published(lab, topic, n)
    replicate([f"public.{table}"], group=group, target_schema="core")
    n += write_changes(shop_db, table, 6, 5, update_ids=[], delete_ids=[])
    published(lab, topic, n)
    before = stored(warehouse_db, group)

    with pytest.raises(kc.GroupTargetMismatch) as refused:
        replicate([f"public.{table}"], group=group, target_schema="core", target_prefix="other_")

    assert f"core.{table}" in str(refused.value) and f"core.other_{table}" in str(refused.value)
    assert stored(warehouse_db, group) == before, "a refused run leaves the offsets untouched"
    # the bound target still catches up with the same group
    replicate([f"public.{table}"], group=group, target_schema="core")
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)


# --- item 2: poison records ------------------------------------------------------------------------


def test_a_record_that_fails_to_apply_is_dead_lettered_and_the_partition_moves_on(
    lab, names, made, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("poison"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    made.warehouse += [
        f'DROP TABLE IF EXISTS core."{table}"',
        f'DROP TABLE IF EXISTS core."{table}__deleted"',
    ]
    replicate([f"public.{table}"], group=group, target_schema="core")  # creates the target
    with warehouse_db.cursor() as cur:  # a rule the target has and the source lacks
        cur.execute(
            sql.SQL("ALTER TABLE core.{} ADD CONSTRAINT no_poison CHECK (full_name <> 'Poison')").format(
                sql.Identifier(table)
            )
        )
    n = write_changes(shop_db, table, 1, 4, update_ids=[], delete_ids=[])
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO public.{} (id, email, full_name) VALUES (5, 'p@shop.test', 'Poison')"
            ).format(sql.Identifier(table))
        )
    n += 1 + write_changes(shop_db, table, 6, 4, update_ids=[2], delete_ids=[])
    published(lab, topic, n)

    summary = replicate([f"public.{table}"], group=group, target_schema="core")

    assert summary["dead_letters"] == 1
    # the target holds every source row but the poison one (read whole: a row 5 there would be extra)
    source, target = f"shop:public.{table}", f"warehouse:core.{table}"
    good = assert_tables_equal(source, target, key="id", columns=COLUMNS, source_where="id <> 5")
    assert good.source_count == 8
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT topic, kafka_partition, kafka_offset, reason FROM dlq.kafka_records WHERE consumer_group = %s",
            (group,),
        )
        letters = cur.fetchall()
    assert len(letters) == 1
    (dl_topic, dl_partition, dl_offset, reason) = letters[0]
    assert (dl_topic, dl_partition) == (topic, 0) and dl_offset >= 0
    assert "no_poison" in reason and "23514" in reason, reason  # check_violation, with the database text
    offsets_after = stored(warehouse_db, group)
    assert offsets_after[(topic, 0)] >= n

    rerun = replicate([f"public.{table}"], group=group, target_schema="core")
    assert rerun["records"] == 0 and rerun["dead_letters"] == 0
    assert_tables_equal(source, target, key="id", columns=COLUMNS, source_where="id <> 5")
    assert stored(warehouse_db, group) == offsets_after


# --- item 3: offsets that silently jump --------------------------------------------------------------


def test_a_new_group_on_a_topic_whose_log_starts_above_zero_stops_with_the_remedy(
    lab, names, made, warehouse_db, kafka_topic
):
    group = names("grp")
    topic = produce(lab, kafka_topic, 10)
    delete_records_before(lab, topic, 4)  # what retention does: records 0..3 (the snapshot) are gone
    target, insert = sink(warehouse_db, made, names("sink"))

    with pytest.raises(kc.OffsetOutOfRange, match="new consumer group") as stop:
        kc.consume_into_postgres(
            bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
        )
    assert "snapshot" in str(stop.value) and "offsets reset" in str(stop.value)
    assert stored(warehouse_db, group) == {}
    assert count(warehouse_db, target) == 0

    # the explicit remedy: accept the log start, then the group reads what is there
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        with conn, conn.cursor() as cur:
            offsets.reset(cur, lab.kafka_bootstrap, group, topic, "earliest")
    finally:
        conn.close()
    kc.consume_into_postgres(
        bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
    )
    assert count(warehouse_db, target) == 6
    assert stored(warehouse_db, group) == {(topic, 0): 10}


def test_a_stored_offset_below_the_log_start_stops_with_the_remedy(
    lab, names, made, warehouse_db, kafka_topic
):
    group = names("grp")
    topic = produce(lab, kafka_topic, 10)
    target, insert = sink(warehouse_db, made, names("sink"))
    kc.consume_into_postgres(
        bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
    )
    produce(lab, topic, 10, start=10)
    delete_records_before(lab, topic, 15)  # records 10..14 were never read by the group

    with pytest.raises(kc.OffsetOutOfRange, match="below the earliest offset 15") as stop:
        kc.consume_into_postgres(
            bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
        )
    assert "snapshot" in str(stop.value) and "offsets reset" in str(stop.value)
    assert stored(warehouse_db, group) == {(topic, 0): 10}
    assert count(warehouse_db, target) == 10


def test_records_removed_by_retention_during_a_run_stop_it_instead_of_skipping(
    lab, names, made, warehouse_db, kafka_topic
):
    group = names("grp")
    topic = produce(lab, kafka_topic, 60, size=4000)
    target, insert = sink(warehouse_db, made, names("sink"))
    calls = 0

    def handler(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        nonlocal calls
        calls += 1
        if calls == 1:  # retention catches up with the consumer while it works
            delete_records_before(lab, topic, 50)
        return insert(cur, batch)

    # fetch one record at a time, so the deleted ones are not already in the consumer's queue
    small = {
        "message.max.bytes": 1000,
        "fetch.max.bytes": 1000,
        "max.partition.fetch.bytes": 1000,
        "queued.min.messages": 1,
        "queued.max.messages.kbytes": 1,
        "fetch.wait.max.ms": 10,
    }
    with pytest.raises(kc.OffsetOutOfRange, match="no longer in Kafka"):
        kc.consume_into_postgres(
            bootstrap=lab.kafka_bootstrap,
            topics=[topic],
            group=group,
            connect=connector(lab),
            handler=handler,
            batch_size=1,
            kafka_config=small,
        )
    (position,) = stored(warehouse_db, group).values()
    assert position < 50, "the group must not have jumped over the removed records"
    assert count(warehouse_db, target) == position


# --- item 5 (part): TRUNCATE -----------------------------------------------------------------------


def test_a_truncate_in_the_source_stops_the_merge_loudly(lab, names, made, shop_db, warehouse_db):
    table, group = names("trunc"), names("grp")
    running = ConnectClient(lab.connect_url).config("shop-postgres-source") or {}
    assert running.get("skipped.operations") == "none", (
        "the running connector skips TRUNCATE events: register connectors/shop-postgres-source.json again "
        "(cdclab lab up does it)"
    )
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    made.warehouse += [
        f'DROP TABLE IF EXISTS core."{table}"',
        f'DROP TABLE IF EXISTS core."{table}__deleted"',
    ]
    n = write_changes(shop_db, table, 1, 5, update_ids=[], delete_ids=[])
    published(lab, topic, n)
    replicate([f"public.{table}"], group=group, target_schema="core")
    before = stored(warehouse_db, group)
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE public.{}").format(sql.Identifier(table)))
    n += 1 + write_changes(shop_db, table, 6, 2, update_ids=[], delete_ids=[])
    published(lab, topic, n)  # the connector emits the truncate event

    with pytest.raises(TruncateArrived) as stop:
        replicate([f"public.{table}"], group=group, target_schema="core")

    message = str(stop.value)
    assert f"public.{table}" in message and topic in message
    at = re.search(r"offset (\d+)", message)
    assert at is not None and int(at.group(1)) >= before[(topic, 0)]
    assert "snapshot" in message and "offsets reset" in message
    assert stored(warehouse_db, group) == before, "the run stops at the TRUNCATE, nothing past it applied"
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM core.{}").format(sql.Identifier(table)))
        assert cur.fetchone() == (5,)


# --- stop offsets: several groups brought to exactly the same position (71_07_03's variants) -------


def test_runs_given_the_same_stop_offsets_apply_exactly_the_same_records_while_the_topic_grows(
    lab, names, made, warehouse_db, kafka_topic
):
    topic = produce(lab, kafka_topic, 30)
    stop_at = kc.end_offsets(lab.kafka_bootstrap, [topic, names("missing")])
    assert stop_at == {(topic, 0): 30}  # a topic that does not exist is left out
    produce(lab, topic, 12, start=30)  # the source keeps writing after the stop was taken
    results = []
    for size in (4, 25):  # two variants, one after the other, different batch sizes
        target, insert = sink(warehouse_db, made, names(f"b{size}"))
        group = names(f"g{size}")
        results.append(
            kc.consume_into_postgres(
                bootstrap=lab.kafka_bootstrap,
                topics=[topic],
                group=group,
                connect=connector(lab),
                handler=insert,
                batch_size=size,
                stop_at=stop_at,
            )
        )
        assert count(warehouse_db, target) == 30, "nothing at or past the stop offset is applied"
        assert stored(warehouse_db, group) == {(topic, 0): 30}
        # the next run without a stop goes on from there to the end: nothing was skipped
        kc.consume_into_postgres(
            bootstrap=lab.kafka_bootstrap, topics=[topic], group=group, connect=connector(lab), handler=insert
        )
        assert count(warehouse_db, target) == 42
    assert [r.records for r in results] == [30, 30]
