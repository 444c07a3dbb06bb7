"""Shared helpers of the 71.1 DAG tests: test-owned copies of shop tables, row reads, the customer
comparison (the plugin's ``assert_tables_equal``), XComs."""

from __future__ import annotations

from typing import Any

import pendulum

CUSTOMER_COLS = "id, email, full_name, home_tz, tier, created_at, updated_at, version, is_deleted, deleted_at"
CUSTOMER_COLUMNS = [c.strip() for c in CUSTOMER_COLS.split(",")]


def hour(h: int, day: int = 1) -> pendulum.DateTime:
    return pendulum.datetime(2026, 3, day, h, tz="UTC")


def create_customers_copy(shop_db: Any, table: str) -> None:
    """``public.customers`` without rows, with its indexes and its updated_at/version trigger."""
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (LIKE public.customers INCLUDING ALL)")
        cur.execute(
            f"CREATE TRIGGER touch_row BEFORE UPDATE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION public.touch_row()"
        )
        cur.execute(f"ALTER TABLE {table} REPLICA IDENTITY FULL")


def insert_customers(shop_db: Any, table: str, ids: list[int], tier: str = "basic") -> None:
    with shop_db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {table} (id, email, full_name, tier) VALUES (%s, %s, %s, %s)",
            [(i, f"c{i}@example.com", f"Customer {i}", tier) for i in ids],
        )


def execute(conn: Any, statement: str, params: Any = None) -> None:
    with conn.cursor() as cur:
        cur.execute(statement, params)


def rows(conn: Any, table: str, cols: str = CUSTOMER_COLS, order: str = "id") -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {table} ORDER BY {order}")
        return cur.fetchall()


def same_customers(assert_tables_equal: Any, source: str, target: str, **options: Any) -> Any:
    """The warehouse table ``target`` holds the shop table ``source``'s customer rows, keyed by id: the
    plugin's ``assert_tables_equal`` on the customer columns (``options``: its filters)."""
    __tracebackhide__ = True
    return assert_tables_equal(
        f"shop:{source}", f"warehouse:{target}", key="id", columns=CUSTOMER_COLUMNS, **options
    )


def scalar(conn: Any, statement: str, params: Any = None) -> Any:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchone()[0]


def drop(conn: Any, *tables: str) -> None:
    with conn.cursor() as cur:
        for t in tables:
            cur.execute(f"DROP TABLE IF EXISTS {t} CASCADE")


def xcom(dr: Any, task_id: str) -> Any:
    """The return value of ``task_id`` in the DAG run ``dr`` (read from the lab's metadata DB)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(run_id=dr.run_id, dag_ids=dr.dag_id, task_ids=task_id, key="return_value")
        ).first()
        return None if row is None else XComModel.deserialize_value(row)
