"""Shared helpers of the CDC tests: a test-owned copy of ``public.customers`` and changes written to it
(the plugin's ``assert_tables_equal`` compares both sides); and the ``made`` fixture that drops what a
test created."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from cdclab.cdc.consumer import end_offsets
from cdclab.testing.fence import cdc_fence

COLUMNS = [
    "id",
    "email",
    "full_name",
    "home_tz",
    "tier",
    "created_at",
    "updated_at",
    "version",
    "is_deleted",
    "deleted_at",
]


def published(lab: Any, topic: str, count: int, timeout: float = 120) -> None:
    """Every change committed in ``shop`` so far is on Kafka, ``topic``'s among them: one CDC fence (the
    lab's connector publishes in commit order with one task, so once the fence row is on Kafka every
    earlier change is), then ``topic``'s end offset must cover ``count`` records (a topic that lacks its
    changes altogether fails here). For a ``shop.public`` table the lab's connector captures; what
    ``wait_for_records`` waited for, without reading the topic (each read took ~1 s)."""
    cdc_fence(lab, timeout=timeout)
    end = sum(end_offsets(lab.kafka_bootstrap, [topic]).values())
    assert end >= count, f"{topic}: end offset {end} after a CDC fence, {count} records expected"


def make_source_table(shop_db, table: str) -> None:
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE public.{t} (LIKE public.customers INCLUDING ALL)").format(
                t=sql.Identifier(table)
            )
        )
        cur.execute(sql.SQL("ALTER TABLE public.{t} REPLICA IDENTITY FULL").format(t=sql.Identifier(table)))
        cur.execute(
            sql.SQL(
                "CREATE TRIGGER touch_row BEFORE UPDATE ON public.{t} "
                "FOR EACH ROW EXECUTE FUNCTION public.touch_row()"
            ).format(t=sql.Identifier(table))
        )


def write_changes(shop_db, table: str, start: int, inserts: int, update_ids, delete_ids) -> int:
    """Apply changes in separate transactions; return how many Kafka records Debezium will write."""
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        for i in range(start, start + inserts):
            cur.execute(
                sql.SQL(
                    "INSERT INTO public.{t} (id, email, full_name, home_tz) VALUES (%s, %s, %s, %s)"
                ).format(t=t),
                (i, f"c{i}@shop.test", f"Customer {i}", ["UTC", "Europe/Berlin", "America/New_York"][i % 3]),
            )
        for i in update_ids:
            cur.execute(
                sql.SQL(
                    "UPDATE public.{t} SET tier = 'gold', full_name = full_name || ' *' WHERE id = %s"
                ).format(t=t),
                (i,),
            )
        for i in delete_ids:
            cur.execute(sql.SQL("DELETE FROM public.{t} WHERE id = %s").format(t=t), (i,))
    return inserts + len(update_ids) + 2 * len(delete_ids)  # a delete is an event plus a tombstone


class Made:
    """What a test created, dropped at its end (warehouse and shop tables, a trigger; a topic of its
    own is the plugin's ``kafka_topic``)."""

    def __init__(self) -> None:
        self.warehouse: list[str] = []  # SQL run at the end, in reverse order
        self.shop: list[str] = []


@pytest.fixture
def made(lab: Any) -> Iterator[Made]:
    m = Made()
    yield m
    for dsn, statements in ((lab.pg_dsn("warehouse"), m.warehouse), (lab.pg_dsn("shop"), m.shop)):
        if not statements:
            continue
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for stmt in reversed(statements):
                    cur.execute(stmt)
        finally:
            conn.close()


def stored(warehouse_db: Any, group: str) -> dict[tuple[str, int], int]:
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT topic, kafka_partition, next_offset FROM state.kafka_offsets WHERE consumer_group = %s",
            (group,),
        )
        return {(t, p): o for t, p, o in cur.fetchall()}
