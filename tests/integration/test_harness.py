"""The harness plugin's fixtures against the real lab: each does what docs/harness.md promises, and
bad input fails with the name of what is wrong (never a skip)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from cdclab.cdc.inspect import read_topic
from cdclab.testing import FilterError, TableNotFoundError, TablesDiffer

LOG_SERVICES = ["connect", "kafka", "postgres", "minio"]


def test_the_workload_fixture_leaves_exactly_the_rows_its_model_expects(workload: Any) -> None:
    first, second = workload(seed=3, ops=120), workload(seed=3, ops=120)
    assert first.id_range != second.id_range, "every call gets its own id range"
    report = first.apply()
    assert report.applied == 120
    for table in first.spec.touched:
        assert first.actual(table) == first.expected(table), table


def test_after_the_fence_every_committed_change_is_already_on_kafka(
    lab: Any, shop_db: Any, names: Any, cdc_fence: Any
) -> None:
    table = names("fenced")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, note text)")
        try:
            for i in range(1, 51):
                cur.execute(f"INSERT INTO public.{table} VALUES (%s, %s)", (i, f"row {i}"))
            cdc_fence()
            # no waiting here: one read of what the topic holds right now
            records = [r for r in read_topic(lab.kafka_bootstrap, f"shop.public.{table}") if r.value()]
            assert len(records) == 50
        finally:
            cur.execute(f"DROP TABLE public.{table}")


def test_the_kafka_topic_exists_for_the_test_only(lab: Any, kafka_topic: str, names: Any) -> None:
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    assert kafka_topic in admin.list_topics(timeout=10).topics
    producer = Producer({"bootstrap.servers": lab.kafka_bootstrap})
    producer.produce(kafka_topic, key=b"k", value=b"hello")
    producer.flush(30)
    consumer = Consumer(
        {"bootstrap.servers": lab.kafka_bootstrap, "group.id": names("grp"), "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([kafka_topic])
    try:
        msg = None
        for _ in range(30):
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                break
        assert msg is not None and msg.value() == b"hello"
    finally:
        consumer.close()


def test_the_s3_bucket_is_empty_and_writable(s3: Any, s3_bucket: str) -> None:
    assert s3.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    s3.put_object(Bucket=s3_bucket, Key="landing/a.csv", Body=b"id\n1\n")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]] == ["landing/a.csv"]


def test_make_s3_bucket_makes_another_bucket_on_each_call(
    s3: Any, s3_bucket: str, make_s3_bucket: Any
) -> None:
    more = [make_s3_bucket(), make_s3_bucket()]
    assert len({s3_bucket, *more}) == 3
    existing = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert {s3_bucket, *more} <= existing
    s3.put_object(Bucket=more[1], Key="x.json", Body=b"{}")  # a bucket with objects is emptied, then deleted


def test_assert_tables_equal_reads_both_databases_and_shows_the_difference(
    shop_db: Any, warehouse_db: Any, names: Any, assert_tables_equal: Any
) -> None:
    table = names("cmp")
    with shop_db.cursor() as s, warehouse_db.cursor() as w:
        s.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, tier text, version int)")
        w.execute(f"CREATE TABLE core.{table} (id int PRIMARY KEY, tier text, version int, loaded_at date)")
        try:
            s.execute(f"INSERT INTO public.{table} VALUES (1, 'basic', 1), (2, 'gold', 3), (3, 'basic', 1)")
            w.execute(f"INSERT INTO core.{table} VALUES (1, 'basic', 1, now()), (2, 'gold', 3, now())")
            with pytest.raises(TablesDiffer) as info:
                assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id")
            assert "3 source row(s), 2 target row(s): 1 missing, 0 extra, 0 changed" in str(info.value)
            assert "missing in the target: id=3" in str(info.value)

            w.execute(f"INSERT INTO core.{table} VALUES (3, 'basic', 1, now())")
            diff = assert_tables_equal(f"shop:public.{table}", (warehouse_db, f"core.{table}"), key="id")
            assert diff.columns == ("tier", "version")  # the source's columns; loaded_at is not compared

            with pytest.raises(
                TableNotFoundError, match=rf"core\.{table}_nope does not exist in database 'warehouse'"
            ):
                assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}_nope")
        finally:
            s.execute(f"DROP TABLE public.{table}")
            w.execute(f"DROP TABLE core.{table}")


def test_assert_tables_equal_compares_only_the_rows_a_filter_selects(
    shop_db: Any, warehouse_db: Any, names: Any, assert_tables_equal: Any
) -> None:
    table = names("flt")
    source, target = f"shop:public.{table}", f"warehouse:core.{table}"
    with shop_db.cursor() as s, warehouse_db.cursor() as w:
        s.execute(f"CREATE TABLE public.{table} (id int PRIMARY KEY, tier text)")
        w.execute(f"CREATE TABLE core.{table} (id int PRIMARY KEY, tier text)")
        try:
            s.execute(f"INSERT INTO public.{table} VALUES (1, 'basic'), (2, 'gold'), (5, 'poison'), (7, 'x')")
            w.execute(f"INSERT INTO core.{table} VALUES (1, 'basic'), (2, 'gold'), (7, 'y')")

            # both sides limited: the rows outside the filter (5, 7) are not compared
            diff = assert_tables_equal(source, target, key="id", where=("id < %s", [5]))
            assert (diff.source_count, diff.target_count) == (2, 2)

            # the source without the poison row against the whole target: 7 still differs
            with pytest.raises(TablesDiffer) as info:
                assert_tables_equal(source, target, key="id", source_where="tier <> 'poison'")
            assert str(info.value).splitlines()[:4] == [
                f"{source} (WHERE tier <> 'poison') and {target} differ (key id; compared 1 column(s): tier)",
                "  3 source row(s), 3 target row(s): 0 missing, 0 extra, 1 changed",
                "  changed (source -> target):",
                "    id=7:",
            ]

            # a one-sided filter keeps the other side whole: a target row it leaves out is extra
            w.execute(f"INSERT INTO core.{table} VALUES (5, 'poison')")
            with pytest.raises(TablesDiffer, match=r"extra in the target: id=5"):
                assert_tables_equal(source, target, key="id", where="id <> 7", source_where=("id <> %s", [5]))

            with pytest.raises(
                FilterError,
                match=rf"WHERE nope = 1 does not apply to table core\.{table} in database 'warehouse': "
                r'column "nope" does not exist',
            ):
                assert_tables_equal(source, target, key="id", target_where="nope = 1")
        finally:
            s.execute(f"DROP TABLE public.{table}")
            w.execute(f"DROP TABLE core.{table}")


def test_the_unhealthy_lab_report_reads_the_real_log_of_the_service_it_names(lab: Any) -> None:
    from cdclab.lab.backend import backend
    from cdclab.testing.plugin import unhealthy_report

    running = backend(lab)
    rows = running.status()
    # the lab is healthy; the report is given one row marked otherwise, to read that service's real log
    marked = [(n, a, "unhealthy (marked by the test)" if n == "kafka" else s) for n, a, s in rows]
    message = unhealthy_report(running.name, marked, running.logs, lines=5)
    assert (
        message.splitlines()[0]
        == f"the lab ({running.name}) is not healthy: kafka is unhealthy (marked by the test)"
    )
    tail = message.split(f"==> last lines of kafka ({running.name}) <==\n", 1)[1].splitlines()
    assert 0 < len(tail) <= 5 and tail != ["(the log is empty)"]
    assert not any(line.startswith("(could not read the log") for line in tail)
    assert "==> last lines of" not in message.split("<==", 1)[1]  # only the service it names
