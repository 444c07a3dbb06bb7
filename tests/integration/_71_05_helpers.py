"""Shared helpers of the 71.5 tests: test-owned copies of shop tables and rows written to them."""

from __future__ import annotations

from tests.integration._71_01_helpers import execute


def make_copy(shop_db, table: str, like: str) -> None:
    """A copy of a shop table without its foreign keys (the child may come first), with the touch trigger."""
    execute(shop_db, f"CREATE TABLE {table} (LIKE {like} INCLUDING DEFAULTS INCLUDING INDEXES)")
    execute(
        shop_db,
        f"CREATE TRIGGER touch_row BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION public.touch_row()",
    )


def add_orders(shop_db, table: str, orders: list[tuple[int, int]]) -> None:
    for oid, cust in orders:
        execute(shop_db, f"INSERT INTO {table} (id, customer_id, total) VALUES (%s, %s, 10)", (oid, cust))


def add_payments(shop_db, table: str, payments: list[tuple[int, int, str]]) -> None:
    for pid, oid, amount in payments:
        execute(
            shop_db,
            f"INSERT INTO {table} (id, order_id, amount, method) VALUES (%s, %s, %s, 'card')",
            (pid, oid, amount),
        )
