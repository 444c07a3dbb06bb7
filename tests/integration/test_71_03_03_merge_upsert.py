"""71.3.3: the same Debezium batches applied by MERGE (staging table) and by INSERT ... ON CONFLICT end
equal to each other and to the source; replays and reversed delivery never regress a row; hard deletes
are remembered so older inserts cannot resurrect a row while newer re-inserts can."""

from __future__ import annotations

import pendulum
from psycopg2 import sql

from cdclab.cdc.consumer import reset_offsets
from cdclab.cdc.events import Change, parse_debezium
from cdclab.cdc.inspect import read_topic, wait_for_records
from cdclab.cdc.merge import ensure_target, primary_key, source_columns
from cdclab.cdc.merge_variants import apply_variants, variants_group
from cdclab.cdc.pipeline import TableRoute
from cdclab.testing import read_table
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, make_source_table, published, write_changes

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_03_03_merge_upsert"
T0 = pendulum.datetime(2026, 5, 4, 9, tz="UTC")


def full_rows(warehouse_db, table: str):
    """Every column including the bookkeeping: unchanged _loaded_at proves a row was not rewritten."""
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM core.{t} ORDER BY id").format(t=sql.Identifier(table)))
        return cur.fetchall()


def ledger_ids(warehouse_db, table: str) -> list[int]:
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id FROM core.{t} ORDER BY id").format(t=sql.Identifier(table + "__deleted"))
        )
        return [r[0] for r in cur.fetchall()]


def assert_both_equal_source(assert_tables_equal, shop_db, table: str) -> list[int]:
    """Both targets equal the source on its columns; returns the source's ids."""
    for variant in ("merge", "upsert"):
        assert_tables_equal(
            f"shop:public.{table}", f"warehouse:core.{table}__{variant}", key="id", columns=COLUMNS
        )
    return [r["id"] for r in read_table(shop_db, f"public.{table}", ["id"])]


def test_merge_and_upsert_targets_equal_the_source_through_three_intervals_and_a_full_replay(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("mu"), names("grp")
    topic = f"shop.public.{table}"
    conf = {  # every param that matters, every run: dag.test() can carry conf over between runs
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "",
        "variants": ["merge", "upsert"],
        "delivery": "log",
        "batch_size": 500,
    }
    make_source_table(shop_db, table)

    n = write_changes(shop_db, table, 1, 30, update_ids=[2, 4, 6, 4], delete_ids=[7, 8])
    published(lab, topic, n)
    run_dag(DAG_ID, T0, conf)
    assert len(assert_both_equal_source(assert_tables_equal, shop_db, table)) == 28
    assert (
        ledger_ids(warehouse_db, f"{table}__merge") == ledger_ids(warehouse_db, f"{table}__upsert") == [7, 8]
    )

    # interval 2, delivered in reverse order within each batch: inserts, updates, deletes, a re-insert of 7
    n += write_changes(shop_db, table, 31, 5, update_ids=[1, 31, 33], delete_ids=[2, 32])
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO public.{t} (id, email, full_name) VALUES (7, 'back@shop.test', 'Back')"
            ).format(t=sql.Identifier(table))
        )
    n += 1
    published(lab, topic, n)
    run_dag(DAG_ID, T0.add(minutes=5), {**conf, "delivery": "reversed", "batch_size": 4})
    second = assert_both_equal_source(assert_tables_equal, shop_db, table)
    assert 7 in second, "a newer re-insert must pass the delete ledger"
    assert (
        ledger_ids(warehouse_db, f"{table}__merge")
        == ledger_ids(warehouse_db, f"{table}__upsert")
        == [2, 8, 32]
    )

    # interval 3: a key inserted and deleted between runs, updates of re-inserted and old rows
    n += write_changes(shop_db, table, 36, 3, update_ids=[7, 36, 3], delete_ids=[37, 3])
    published(lab, topic, n)
    run_dag(DAG_ID, T0.add(minutes=10), conf)
    third = assert_both_equal_source(assert_tables_equal, shop_db, table)
    assert len(third) == 28 + 5 - 2 + 1 + 3 - 2

    # replay every record from offset 0: the strict guard makes it a no-op (not even a rewrite)
    before = {v: full_rows(warehouse_db, f"{table}__{v}") for v in ("merge", "upsert")}
    with warehouse_db.cursor() as cur:
        reset_offsets(cur, variants_group(group, ["merge", "upsert"]), topic, {0: 0}, who="test replay")
    run_dag(DAG_ID, T0.add(minutes=15), conf)
    assert {v: full_rows(warehouse_db, f"{table}__{v}") for v in ("merge", "upsert")} == before
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s AND topic = %s",
            (variants_group(group, ["merge", "upsert"]), topic),
        )
        assert cur.fetchone()[0] >= n


def test_a_single_variant_run_uses_its_own_group_and_matches_the_source(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("mo"), names("grp")
    topic = f"shop.public.{table}"
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "",
        "variants": ["merge"],
        "delivery": "log",
        "batch_size": 500,
    }
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 8, update_ids=[1, 2], delete_ids=[3])
    published(lab, topic, n)
    run_dag(DAG_ID, T0, conf)
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{table}__merge", key="id", columns=COLUMNS)
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT to_regclass(%s), to_regclass(%s)", (f"core.{table}__upsert", f"core.{table}__merge")
        )
        upsert_table, merge_table = cur.fetchone()
        cur.execute("SELECT DISTINCT consumer_group FROM state.kafka_offsets WHERE topic = %s", (topic,))
        assert [r[0] for r in cur.fetchall()] == [f"{group}.merge"]
    assert upsert_table is None
    assert merge_table is not None


def test_batches_applied_newest_first_leave_both_variants_equal_to_the_source(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    """Out-of-order delivery at batch granularity: every batch of the topic, newest batch first."""
    table = names("rv")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    n = write_changes(shop_db, table, 1, 12, update_ids=[1, 2, 3, 1, 5], delete_ids=[4, 5, 6])
    with shop_db.cursor() as cur:  # re-insert a deleted key, then update it
        cur.execute(
            sql.SQL(
                "INSERT INTO public.{t} (id, email, full_name) VALUES (4, 'again@shop.test', 'Again')"
            ).format(t=sql.Identifier(table))
        )
        cur.execute(
            sql.SQL("UPDATE public.{t} SET tier = 'silver' WHERE id = 4").format(t=sql.Identifier(table))
        )
    n += 2
    records = wait_for_records(lab.kafka_bootstrap, topic, n, timeout=120)
    changes = [
        c for c in (parse_debezium(m.key(), m.value(), m.topic()) for m in records) if isinstance(c, Change)
    ]
    assert len(changes) == n - 3  # three tombstones

    with shop_db.cursor() as cur:
        types, key = dict(source_columns(cur, f"public.{table}")), tuple(primary_key(cur, f"public.{table}"))
    route = TableRoute(source=f"public.{table}", topic=topic, target=f"core.{table}", key=key, types=types)
    apply = apply_variants(["merge", "upsert"])
    batches = [changes[i : i + 3] for i in range(0, len(changes), 3)]
    with warehouse_db.cursor() as cur:
        for v in ("merge", "upsert"):
            ensure_target(cur, f"core.{table}__{v}", list(types.items()), key)
    stale = {"merge": 0, "upsert": 0}
    for batch in reversed(batches):
        with warehouse_db.cursor() as cur:
            cur.execute("BEGIN")
            counts = apply(cur, route, batch)
            cur.execute("COMMIT")
        for v in stale:
            stale[v] += counts[f"{v}_stale"]
    assert min(stale.values()) > 0, f"older batches applied after newer ones must count as stale: {stale}"
    assert_both_equal_source(assert_tables_equal, shop_db, table)
    assert read_topic(lab.kafka_bootstrap, topic)  # the topic itself is untouched by the test
