"""DDL mid-stream with changes in flight: ADD COLUMN with a default, DROP COLUMN, widening ALTER COLUMN
TYPE and RENAME COLUMN, interleaved with writes, all in Kafka before the next run. `fail` stops with an
error naming every change and writes nothing; `evolve` converges to the source (columns, types, rows)."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from cdclab.cdc.merge import SchemaDrift
from cdclab.cdc.pipeline import replicate
from tests.integration._cdc_helpers import published

LOG_SERVICES = ["connect"]


def execute(conn, statement: str, table: str, params=None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(sql.Identifier(table)), params)


def columns(conn, table: str) -> list[tuple[str, str]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped AND attname NOT LIKE '\\_%%' ORDER BY attname",
            (table,),
        )
        return cur.fetchall()


def rows_as_text(conn, table: str, names: list[str]) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY id").format(
                sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(n)) for n in names),
                sql.SQL(".").join(map(sql.Identifier, table.split("."))),
            )
        )
        return cur.fetchall()


def offsets(conn, group: str):
    with conn.cursor() as cur:
        cur.execute("SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
        return cur.fetchall()


def test_add_drop_widen_and_rename_in_flight_under_fail_and_evolve(lab, names, shop_db, warehouse_db):
    table = names("ddl")
    topic, source = f"shop.public.{table}", f"public.{table}"
    failing, evolving = f"core.ddlf_{table}"[:63], f"core.ddle_{table}"[:63]
    g_fail, g_evolve = names("fail"), names("evolve")
    execute(
        shop_db,
        "CREATE TABLE public.{} (id integer PRIMARY KEY, a integer, b varchar(5), c text, d integer)",
        table,
    )
    for i in range(1, 6):
        execute(
            shop_db, "INSERT INTO public.{} VALUES (%s, %s, %s, %s, %s)", table, (i, i, f"b{i}", f"c{i}", i)
        )
    published(lab, topic, 5)
    replicate([source], group=g_fail, target_schema="core", target_prefix="ddlf_", schema_policy="fail")
    replicate([source], group=g_evolve, target_schema="core", target_prefix="ddle_", schema_policy="evolve")

    # the DDL, with changes before, between and after each statement; none of it replicated yet
    execute(shop_db, "INSERT INTO public.{} VALUES (6, 6, 'b6', 'c6', 6)", table)
    execute(shop_db, "ALTER TABLE public.{} ADD COLUMN e integer NOT NULL DEFAULT 7", table)
    execute(shop_db, "UPDATE public.{} SET e = 1 WHERE id = 1", table)
    execute(shop_db, "INSERT INTO public.{} (id, a, b, c, d) VALUES (7, 7, 'b7', 'c7', 7)", table)
    execute(shop_db, "ALTER TABLE public.{} DROP COLUMN c", table)
    execute(shop_db, "UPDATE public.{} SET a = 20 WHERE id = 2", table)
    execute(shop_db, "ALTER TABLE public.{} ALTER COLUMN a TYPE bigint", table)
    execute(shop_db, "UPDATE public.{} SET a = 9000000000000 WHERE id = 3", table)
    execute(shop_db, "ALTER TABLE public.{} ALTER COLUMN b TYPE varchar(50)", table)
    execute(shop_db, "UPDATE public.{} SET b = 'much longer than five' WHERE id = 4", table)
    execute(shop_db, "ALTER TABLE public.{} RENAME COLUMN d TO d2", table)
    execute(shop_db, "UPDATE public.{} SET d2 = 55 WHERE id = 5", table)
    execute(shop_db, "INSERT INTO public.{} (id, a, b, d2) VALUES (8, 8, 'b8', 8)", table)
    execute(shop_db, "DELETE FROM public.{} WHERE id = 7", table)
    published(lab, topic, 5 + 8 + 2)

    # fail: stops before writing, naming every change; offsets stay
    before_rows = rows_as_text(warehouse_db, failing, ["id", "a", "b", "c", "d"])
    before_offsets = offsets(warehouse_db, g_fail)
    with pytest.raises(SchemaDrift) as err:
        replicate([source], group=g_fail, target_schema="core", target_prefix="ddlf_", schema_policy="fail")
    message = str(err.value)
    for part in (
        "column d renamed to d2",
        "column c dropped",
        "column a changed type from integer to bigint",
        "column b changed type from character varying(5) to character varying(50)",
        "schema_policy='evolve'",
    ):
        assert part in message, message
    assert rows_as_text(warehouse_db, failing, ["id", "a", "b", "c", "d"]) == before_rows
    assert offsets(warehouse_db, g_fail) == before_offsets

    # evolve: the target takes the source's columns and types, and the rows equal the source's
    summary = replicate(
        [source], group=g_evolve, target_schema="core", target_prefix="ddle_", schema_policy="evolve"
    )
    assert summary["dead_letters"] == 0, summary
    assert columns(warehouse_db, evolving) == columns(shop_db, source)
    names_now = ["id", "a", "b", "d2", "e"]
    expected = rows_as_text(shop_db, source, names_now)
    assert [r[0] for r in expected] == ["1", "2", "3", "4", "5", "6", "8"]
    assert rows_as_text(warehouse_db, evolving, names_now) == expected

    # and keeps replicating afterwards
    execute(shop_db, "UPDATE public.{} SET e = 70, d2 = 60 WHERE id = 6", table)
    published(lab, topic, 5 + 8 + 2 + 1)
    replicate([source], group=g_evolve, target_schema="core", target_prefix="ddle_", schema_policy="evolve")
    assert rows_as_text(warehouse_db, evolving, names_now) == rows_as_text(shop_db, source, names_now)
