"""71_05_04_ml_features: features recomputed only for affected customers, versioned rows in the offline
store, point-in-time training sets that never see later corrections or late orders, side-by-side versions."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, rows, xcom
from tests.integration._71_05_helpers import make_copy

DAG_ID = "71_05_04_ml_features"
VEC = "orders_7d, amount_7d, orders_30d, amount_30d"


def at(h: int, minute: int = 0, day: int = 1) -> pendulum.DateTime:
    return pendulum.datetime(2026, 3, day, h, minute, tz="UTC")


def add_order(shop_db, table, oid, cust, ordered_at, total, status="new") -> None:
    execute(
        shop_db,
        f"INSERT INTO {table} (id, customer_id, ordered_at, total, status) VALUES (%s, %s, %s, %s, %s)",
        (oid, cust, ordered_at, total, status),
    )


def vec(a, b, c, d):
    return (a, Decimal(b), c, Decimal(d))


def training(warehouse_db, prefix, label_time):
    with warehouse_db.cursor() as cur:
        cur.execute(
            f"SELECT customer_id, {VEC} FROM {prefix}_training WHERE label_time = %s AND feature_version = 'v1' "
            "ORDER BY 1",
            (label_time,),
        )
        return cur.fetchall()


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    orders, prefix = f"public.{names('ord')}", f"marts.{names('feat')}"
    make_copy(shop_db, orders, "public.orders")
    conf = {
        "orders_table": orders,
        "target_prefix": prefix,
        "watermark_key": names("71_05_04"),
        "feature_version": "v1",
        "training_as_of": "",
    }
    yield orders, prefix, conf
    drop(shop_db, orders)
    drop(warehouse_db, *(f"{prefix}_{s}" for s in ("orders", "offline", "online", "registry", "training")))


def test_features_are_incremental_versioned_and_training_sets_are_point_in_time(
    shop_db, warehouse_db, setup
) -> None:
    orders, prefix, conf = setup
    add_order(shop_db, orders, 0, 3, pendulum.datetime(2026, 2, 23, 12, tz="UTC"), 9)
    add_order(shop_db, orders, 1, 1, at(1, 10), 10)
    add_order(shop_db, orders, 2, 2, at(1, 20), 20)
    dr = run_dag(DAG_ID, hour(2), conf)  # as of 02:00, first run of v1: backfill
    assert xcom(dr, "update_features")["written"] == [1, 2, 3]

    execute(shop_db, f"UPDATE {orders} SET total = 15 WHERE id = 1")  # a correction
    add_order(shop_db, orders, 3, 1, at(2, 30), 5)
    dr = run_dag(DAG_ID, hour(3), conf)  # as of 03:00
    assert xcom(dr, "update_features")["recomputed"] == [1]  # customer 2 and 3 untouched

    add_order(shop_db, orders, 4, 2, at(1, 40), 8)  # a late order (happened at 01:40)
    add_order(shop_db, orders, 5, 1, at(3, 30), 100, status="cancelled")
    dr = run_dag(DAG_ID, hour(4), conf)  # as of 04:00
    assert xcom(dr, "update_features")["written"] == [2]  # customer 1's v1 vector did not change

    # a day later order 0 leaves customer 3's 7-day window: time alone changes a feature
    dr = run_dag(DAG_ID, at(13, day=2), {**conf, "training_as_of": at(2, 30).isoformat()})
    assert xcom(dr, "update_features")["written"] == [3]
    assert training(warehouse_db, prefix, at(2, 30)) == [
        (1, *vec(1, 10, 1, 10)),  # before the correction to 15 was known
        (2, *vec(1, 20, 1, 20)),  # without the late order
        (3, *vec(1, 9, 1, 9)),
    ]

    run_dag(DAG_ID, at(14, day=2), conf)  # training set as of the data interval end (14:00)
    assert training(warehouse_db, prefix, at(14, day=2)) == [
        (1, *vec(2, 20, 2, 20)),
        (2, *vec(2, 28, 2, 28)),
        (3, *vec(0, 0, 1, 9)),
    ]

    # version 2 (cancelled orders count) is backfilled next to version 1
    dr = run_dag(DAG_ID, at(15, day=2), {**conf, "feature_version": "v2"})
    assert xcom(dr, "update_features")["backfill"] is True

    assert rows(
        warehouse_db,
        f"{prefix}_offline",
        f"customer_id, feature_version, valid_from, valid_to, {VEC}",
        "customer_id, feature_version, valid_from",
    ) == [
        (1, "v1", at(2), at(3), *vec(1, 10, 1, 10)),
        (1, "v1", at(3), None, *vec(2, 20, 2, 20)),
        (1, "v2", at(15, day=2), None, *vec(3, 120, 3, 120)),
        (2, "v1", at(2), at(4), *vec(1, 20, 1, 20)),
        (2, "v1", at(4), None, *vec(2, 28, 2, 28)),
        (2, "v2", at(15, day=2), None, *vec(2, 28, 2, 28)),
        (3, "v1", at(2), at(13, day=2), *vec(1, 9, 1, 9)),
        (3, "v1", at(13, day=2), None, *vec(0, 0, 1, 9)),
        (3, "v2", at(15, day=2), None, *vec(0, 0, 1, 9)),
    ]
    assert rows(warehouse_db, f"{prefix}_online", f"customer_id, feature_version, {VEC}", "1, 2") == [
        (1, "v1", *vec(2, 20, 2, 20)),
        (1, "v2", *vec(3, 120, 3, 120)),
        (2, "v1", *vec(2, 28, 2, 28)),
        (2, "v2", *vec(2, 28, 2, 28)),
        (3, "v1", *vec(0, 0, 1, 9)),
        (3, "v2", *vec(0, 0, 1, 9)),
    ]
    assert rows(warehouse_db, f"{prefix}_registry", "feature_version, last_as_of", "1") == [
        ("v1", at(14, day=2)),
        ("v2", at(15, day=2)),
    ]

    # an interval older than the version's last run would rewrite history: refused, nothing written
    run_dag(DAG_ID, hour(5), conf, expect="failed")
    assert rows(warehouse_db, f"{prefix}_registry", "feature_version, last_as_of", "1")[0] == (
        "v1",
        at(14, day=2),
    )


def test_a_second_run_of_the_same_interval_corrects_its_vectors_in_place(
    shop_db, warehouse_db, setup
) -> None:
    """Two runs for one data interval (two UI triggers in the same hour): the second sees an order the
    first did not and corrects the version it wrote, with no second row for the same valid_from."""
    orders, prefix, conf = setup
    add_order(shop_db, orders, 1, 1, at(1, 10), 10)
    run_dag(DAG_ID, hour(2), conf)
    add_order(shop_db, orders, 2, 1, at(1, 50), 5)  # committed after the first run, still before 02:00
    dr = run_dag(DAG_ID, hour(2), conf)
    assert xcom(dr, "update_features")["written"] == [1]
    with warehouse_db.cursor() as cur:
        cur.execute(
            f"SELECT customer_id, valid_from, valid_to, {VEC} FROM {prefix}_offline WHERE feature_version = 'v1'"
        )
        assert cur.fetchall() == [(1, hour(2), None, *vec(2, 15, 2, 15))]
