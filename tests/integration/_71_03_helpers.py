"""Shared helpers of the 71.3 tests: the source copy that counts the Kafka records its changes cause."""

from __future__ import annotations

import datetime as dt

from psycopg2 import sql

from tests.integration._cdc_helpers import COLUMNS


class Source:
    """One statement per transaction on the source copy; counts the Kafka records it causes."""

    def __init__(self, shop_db, table: str) -> None:
        self.db, self.table, self.records, self.hard_deleted = shop_db, table, 0, set()

    def run(self, stmt: str, *args) -> None:
        with self.db.cursor() as cur:
            cur.execute(sql.SQL(stmt).format(t=sql.Identifier(self.table)), args)
        self.records += 1

    def insert(self, i: int, tag: str = "") -> None:
        self.run(
            "INSERT INTO public.{t} (id, email, full_name) VALUES (%s, %s, %s)",
            i,
            f"c{i}{tag}@shop.test",
            f"C {i}",
        )
        self.hard_deleted.discard(i)

    def soft_delete(self, i: int, at: dt.datetime) -> None:
        self.run("UPDATE public.{t} SET is_deleted = true, deleted_at = %s WHERE id = %s", at, i)

    def undelete(self, i: int) -> None:
        self.run("UPDATE public.{t} SET is_deleted = false, deleted_at = NULL WHERE id = %s", i)

    def delete(self, i: int) -> None:
        self.run("DELETE FROM public.{t} WHERE id = %s", i)
        self.records += 1  # the tombstone
        self.hard_deleted.add(i)

    def rows(self, where: str) -> list[tuple]:
        with self.db.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT {c} FROM public.{t} WHERE " + where + " ORDER BY id").format(
                    c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), t=sql.Identifier(self.table)
                )
            )
            return cur.fetchall()
