"""Key-less tables: key mode refuses them clearly; append mode keeps every change event in an insert-only
ledger with the event's position, and a replay after an offset reset appends nothing twice."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from cdclab.cdc import consumer as kc
from cdclab.cdc.append import replicate_append
from cdclab.cdc.pipeline import replicate
from tests.integration._cdc_helpers import published

LOG_SERVICES = ["connect"]


def execute(conn, statement: str, table: str, params=None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(sql.Identifier(table)), params)


def test_keyless_table_is_refused_in_key_mode_and_kept_as_a_ledger_in_append_mode(
    lab, names, shop_db, warehouse_db
):
    table, group = names("hist"), names("grp")
    topic, target = f"shop.public.{table}", f"core.{table}"
    # pgbench_history's shape, plus a date to show the ledger decodes types like key mode
    execute(
        shop_db,
        "CREATE TABLE public.{} (tid integer, bid integer, aid integer, delta integer, "
        "mtime timestamp, filler char(22), day date)",
        table,
    )
    execute(shop_db, "ALTER TABLE public.{} REPLICA IDENTITY FULL", table)
    for i in range(1, 6):
        execute(
            shop_db,
            "INSERT INTO public.{} VALUES (%s, 1, %s, %s, '2026-03-01 10:00:00.000001', 'x', '2026-03-01')",
            table,
            (i, 10 * i, -i),
        )
    # two equal rows: a key-less table can hold them, the ledger keeps both events
    execute(shop_db, "INSERT INTO public.{} VALUES (9, 9, 9, 9, NULL, NULL, NULL)", table)
    execute(shop_db, "INSERT INTO public.{} VALUES (9, 9, 9, 9, NULL, NULL, NULL)", table)
    execute(shop_db, "UPDATE public.{} SET delta = 100 WHERE tid = 2", table)
    execute(shop_db, "DELETE FROM public.{} WHERE tid = 3", table)
    events = 5 + 2 + 1 + 1  # a key-less delete has no key, so no tombstone follows it
    published(lab, topic, events)

    with pytest.raises(ValueError, match=rf"public\.{table} has no primary key: .*append mode"):
        replicate([f"public.{table}"], group=names("keyed"), target_schema="core")
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (target,))
        assert cur.fetchone() == (None,)

    summary = replicate_append([f"public.{table}"], group=group, target_schema="core")
    assert summary["dead_letters"] == 0, summary
    expected = [
        *[("c", i, 10 * i, -i, "2026-03-01 10:00:00.000001", "2026-03-01") for i in range(1, 6)],
        ("c", 9, 9, 9, None, None),
        ("c", 9, 9, 9, None, None),
        ("u", 2, 20, 100, "2026-03-01 10:00:00.000001", "2026-03-01"),
        ("d", 3, 30, -3, "2026-03-01 10:00:00.000001", "2026-03-01"),
    ]

    def ledger():
        with warehouse_db.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT _source_op, tid, aid, delta, mtime::text, day::text FROM core.{} "
                    "ORDER BY _kafka_offset"
                ).format(sql.Identifier(table))
            )
            return cur.fetchall()

    assert ledger() == expected
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(DISTINCT _source_position), bool_and(_source_position > 0), "
                "count(DISTINCT _kafka_offset) FROM core.{}"
            ).format(sql.Identifier(table))
        )
        assert cur.fetchone() == (len(expected), True, len(expected))

    # replay everything from offset 0: the positions are the ledger's key, nothing is appended twice
    with warehouse_db.cursor() as cur:
        kc.reset_offsets(cur, group, topic, {0: 0})
    replay = replicate_append([f"public.{table}"], group=group, target_schema="core")
    assert replay["records"] >= events and sum(replay["appended"].values()) == 0
    assert ledger() == expected

    # later changes are appended after the earlier ones
    execute(shop_db, "UPDATE public.{} SET filler = 'y' WHERE tid = 9", table)
    published(lab, topic, events + 2)
    replicate_append([f"public.{table}"], group=group, target_schema="core")
    assert ledger() == [*expected, ("u", 9, 9, 9, None, None), ("u", 9, 9, 9, None, None)]


def test_71_09_01_replicates_a_keyless_table_listed_in_keyless_tables_as_a_ledger(
    lab, names, shop_db, warehouse_db
):
    import pendulum

    from tests.dagrun import run_dag

    table, group = names("audit"), names("grp")
    execute(shop_db, "CREATE TABLE public.{} (who text, what text, at date)", table)
    execute(shop_db, "ALTER TABLE public.{} REPLICA IDENTITY FULL", table)
    execute(
        shop_db,
        "INSERT INTO public.{} VALUES ('ann', 'login', '2026-03-01'), ('ann', 'login', '2026-03-01')",
        table,
    )
    execute(shop_db, "DELETE FROM public.{} WHERE who = 'ann'", table)
    published(lab, f"shop.public.{table}", 4)
    conf = {
        "tables": [],
        "keyless_tables": [f"public.{table}"],
        "consumer_group": group,
        "target_prefix": "ledger_",
        "initial_snapshot": False,
    }
    run_dag("71_09_01_db_replication", pendulum.datetime(2026, 6, 1, 10, tz="UTC"), conf)
    run_dag("71_09_01_db_replication", pendulum.datetime(2026, 6, 1, 10, 15, tz="UTC"), conf)  # nothing twice
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT _source_op, who, what, at::text FROM core.{} ORDER BY _kafka_offset").format(
                sql.Identifier(f"ledger_{table}")
            )
        )
        assert (
            cur.fetchall()
            == [("c", "ann", "login", "2026-03-01")] * 2 + [("d", "ann", "login", "2026-03-01")] * 2
        )
