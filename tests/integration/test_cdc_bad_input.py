"""CDC under bad input and replays: dead letters with reasons, TOAST placeholders, offsets replayed."""

from __future__ import annotations

import json

from confluent_kafka import Producer
from psycopg2 import sql

from cdclab.cdc.consumer import reset_offsets
from cdclab.cdc.inspect import read_topic, wait_for_records
from cdclab.cdc.pipeline import replicate
from tests.integration._cdc_helpers import COLUMNS, make_source_table, published, write_changes

LOG_SERVICES = ["connect", "kafka"]


def test_malformed_and_keyless_records_go_to_dead_letters_while_the_rest_flows_on(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("dlq"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 3, update_ids=[], delete_ids=[])
    published(lab, topic, n)
    producer = Producer({"bootstrap.servers": lab.kafka_bootstrap})
    bad = [
        (b'{"id": 99}', b"this is not json"),
        (b'{"id": 98}', json.dumps({"op": "x", "source": {"lsn": 1}, "after": {"id": 98}}).encode()),
        (
            None,
            json.dumps(
                {
                    "op": "c",
                    "before": None,
                    "after": {"id": 97},
                    "source": {"schema": "public", "table": table, "lsn": 5},
                }
            ).encode(),
        ),
        (
            b'{"id": null}',
            json.dumps(
                {
                    "op": "c",
                    "before": None,
                    "after": {"id": None},
                    "source": {"schema": "public", "table": table, "lsn": 6},
                }
            ).encode(),
        ),
    ]
    for key, value in bad:
        producer.produce(topic, key=key, value=value)
    producer.flush(10)
    n += len(bad) + write_changes(shop_db, table, 4, 2, update_ids=[1], delete_ids=[])
    wait_for_records(lab.kafka_bootstrap, topic, n)

    summary = replicate([f"public.{table}"], group=group, target_schema="core")

    assert summary["dead_letters"] == 4
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=COLUMNS)
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT record_key, reason FROM dlq.kafka_records WHERE consumer_group = %s ORDER BY kafka_offset",
            (group,),
        )
        reasons = cur.fetchall()
    assert [r[0] for r in reasons] == ['{"id": 99}', '{"id": 98}', None, '{"id": null}']
    assert "not valid JSON" in reasons[0][1]
    assert "unknown op 'x'" in reasons[1][1]
    assert "no key" in reasons[2][1]
    assert "NULL key" in reasons[3][1]


def test_a_large_toasted_value_survives_an_update_of_another_column(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("toast"), names("grp")
    topic = f"shop.public.{table}"
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("CREATE TABLE public.{t} (LIKE public.products INCLUDING ALL)").format(t=t))
        cur.execute(
            sql.SQL(
                "INSERT INTO public.{t} (id, sku, name, price, description) "
                "SELECT 1, 'sku-1', 'Big', 10, string_agg(md5(g::text), '') FROM generate_series(1, 4000) g"
            ).format(t=t)
        )
    published(lab, topic, 1)
    replicate([f"public.{table}"], group=group, target_schema="core")  # the insert lands first
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("UPDATE public.{t} SET price = 12.50 WHERE id = 1").format(t=t))
    records = wait_for_records(lab.kafka_bootstrap, topic, 2)
    assert b"__debezium_unavailable_value" in records[1].value(), (
        "the update must carry the TOAST placeholder"
    )

    replicate([f"public.{table}"], group=group, target_schema="core")

    diff = assert_tables_equal(
        f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=["price", "description"]
    )
    assert diff.source_count == 1
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT length(description) FROM public.{t}").format(t=t))
        assert cur.fetchone() == (128_000,)


def test_replaying_a_topic_from_offset_zero_changes_no_row(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("replay"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 20, update_ids=[1, 2, 3, 1], delete_ids=[4, 5])
    published(lab, topic, n)
    replicate([f"public.{table}"], group=group, target_schema="core")
    source, target = f"shop:public.{table}", f"warehouse:core.{table}"
    assert_tables_equal(source, target, key="id", columns=COLUMNS)

    with warehouse_db.cursor() as cur:
        reset_offsets(cur, group, topic, {0: 0}, who="test replay")
    summary = replicate([f"public.{table}"], group=group, target_schema="core")

    assert summary["records"] == len(read_topic(lab.kafka_bootstrap, topic))
    # old changes replayed must not regress or resurrect rows: the target still equals the source
    assert_tables_equal(source, target, key="id", columns=COLUMNS)
    assert sum(t["upserted"] + t["deleted"] for t in summary["targets"].values()) == 0


def test_soft_mode_flags_a_key_inserted_and_deleted_between_two_runs(lab, names, shop_db, warehouse_db):
    table, group = names("soft"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 3, update_ids=[], delete_ids=[2])
    published(lab, topic, n)

    replicate([f"public.{table}"], group=group, target_schema="core", delete_mode="soft")

    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, _deleted, _deleted_at IS NOT NULL FROM core.{t} ORDER BY id").format(
                t=sql.Identifier(table)
            )
        )
        assert cur.fetchall() == [(1, False, False), (2, True, True), (3, False, False)]
