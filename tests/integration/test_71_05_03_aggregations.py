"""71_05_03_aggregations: the update (delta) and replace (recompute affected groups) strategies and the
rolling 7-day table equal a full recompute of the source after every interval."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, rows, xcom
from tests.integration._71_05_helpers import make_copy

DAG_ID = "71_05_03_aggregations"
DAILY = (
    "SELECT customer_id, (ordered_at AT TIME ZONE 'UTC')::date AS day, count(*)::int, sum(total) FROM {} "
    "WHERE status <> 'cancelled' GROUP BY 1, 2 ORDER BY 1, 2"
)


def add_orders(shop_db, table, orders) -> None:
    for oid, cust, day, total in orders:
        execute(
            shop_db,
            f"INSERT INTO {table} (id, customer_id, ordered_at, total) VALUES (%s, %s, %s, %s)",
            (oid, cust, hour(12, day), total),
        )


def source_daily(shop_db, table):
    with shop_db.cursor() as cur:
        cur.execute(DAILY.format(table))
        return cur.fetchall()


def source_rolling(shop_db, table):
    with shop_db.cursor() as cur:
        cur.execute(
            f"WITH d AS ({DAILY.format(table)}) SELECT a.customer_id, a.day, sum(b.count)::int, sum(b.sum) "
            "FROM d a JOIN d b ON b.customer_id = a.customer_id AND b.day BETWEEN a.day - 6 AND a.day "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return cur.fetchall()


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    orders, prefix = f"public.{names('ord')}", f"marts.{names('agg')}"
    make_copy(shop_db, orders, "public.orders")
    conf = {"orders_table": orders, "target_prefix": prefix, "watermark_key": names("71_05_03")}
    yield orders, prefix, conf
    drop(shop_db, orders)
    drop(
        warehouse_db,
        *(f"{prefix}_{s}" for s in ("orders", "daily_update", "daily_replace", "rolling_7d", "metrics")),
    )


def assert_matches_source(shop_db, warehouse_db, orders, prefix) -> None:
    daily = source_daily(shop_db, orders)
    assert rows(warehouse_db, f"{prefix}_daily_update", "customer_id, day, orders, amount", "1, 2") == daily
    assert rows(warehouse_db, f"{prefix}_daily_replace", "customer_id, day, orders, amount", "1, 2") == daily
    assert rows(warehouse_db, f"{prefix}_rolling_7d", "customer_id, day, orders_7d, amount_7d", "1, 2") == (
        source_rolling(shop_db, orders)
    )


def test_update_and_replace_strategies_stay_equal_to_a_full_recompute(shop_db, warehouse_db, setup) -> None:
    orders, prefix, conf = setup
    add_orders(shop_db, orders, [(1, 1, 1, 10), (2, 1, 1, 20), (3, 2, 3, 5), (4, 1, 5, 7)])
    dr = run_dag(DAG_ID, hour(1), conf)
    assert xcom(dr, "apply")["changed_rows"] == 4
    assert_matches_source(shop_db, warehouse_db, orders, prefix)

    # amount change, a move to another day (two groups), a cancellation, a new order 6 days later
    execute(shop_db, f"UPDATE {orders} SET total = 25 WHERE id = 2")
    execute(shop_db, f"UPDATE {orders} SET ordered_at = %s WHERE id = 3", (hour(12, 2),))
    execute(shop_db, f"UPDATE {orders} SET status = 'cancelled' WHERE id = 1")
    add_orders(shop_db, orders, [(5, 2, 9, 4)])
    dr = run_dag(DAG_ID, hour(2), conf)
    applied = xcom(dr, "apply")
    # the order at the old watermark is read again and skipped by the version guard
    assert applied["changed_rows"] == 4
    assert applied["groups_touched"]["replace"] == 4  # (1, 1st), (2, 3rd) emptied, (2, 2nd), (2, 9th)
    assert_matches_source(shop_db, warehouse_db, orders, prefix)

    # the cancelled order comes back on another customer; a customer's only order of a day moves away
    execute(shop_db, f"UPDATE {orders} SET status = 'new', customer_id = 2 WHERE id = 1")
    execute(shop_db, f"UPDATE {orders} SET customer_id = 2 WHERE id = 4")
    add_orders(shop_db, orders, [(6, 1, 1, 1)])
    run_dag(DAG_ID, hour(3), conf)
    assert_matches_source(shop_db, warehouse_db, orders, prefix)
    assert rows(warehouse_db, f"{prefix}_daily_update", "customer_id, day, orders, amount", "1, 2") == [
        (1, date(2026, 3, 1), 2, Decimal("26.00")),
        (2, date(2026, 3, 1), 1, Decimal("10.00")),
        (2, date(2026, 3, 2), 1, Decimal("5.00")),
        (2, date(2026, 3, 5), 1, Decimal("7.00")),
        (2, date(2026, 3, 9), 1, Decimal("4.00")),
    ]
    assert rows(warehouse_db, f"{prefix}_rolling_7d", "customer_id, day, orders_7d, amount_7d", "1, 2") == [
        (1, date(2026, 3, 1), 2, Decimal("26.00")),
        (2, date(2026, 3, 1), 1, Decimal("10.00")),
        (2, date(2026, 3, 2), 2, Decimal("15.00")),
        (2, date(2026, 3, 5), 3, Decimal("22.00")),
        (2, date(2026, 3, 9), 2, Decimal("11.00")),
    ]

    # a hard delete is invisible to the timestamp pull; the key-set comparison finds it
    execute(shop_db, f"DELETE FROM {orders} WHERE id = 5")
    dr = run_dag(DAG_ID, hour(4), conf)
    assert xcom(dr, "apply")["deleted_rows"] == 1
    assert_matches_source(shop_db, warehouse_db, orders, prefix)
    assert rows(warehouse_db, f"{prefix}_orders", "id", "1") == [(1,), (2,), (3,), (4,), (6,)]

    # a quiet interval changes nothing; every run recorded its measurements and was consistent
    run_dag(DAG_ID, hour(5), conf)
    assert_matches_source(shop_db, warehouse_db, orders, prefix)
    metrics = rows(warehouse_db, f"{prefix}_metrics", "strategy, consistent, elapsed_ms >= 0", "id")
    assert metrics == [(s, True, True) for _ in range(5) for s in ("update", "replace", "rolling_7d")]
