"""71_05_02_out_of_order: payments that arrive before their order wait in a buffer, are released when the
order arrives, are dead-lettered after the buffer window, and reconciliation repairs them later."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, rows, xcom
from tests.integration._71_05_helpers import add_orders, add_payments, make_copy

DAG_ID = "71_05_02_out_of_order"
PAY_COLS = "id, order_id, customer_id, amount, method, version, via"


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    orders, payments = f"public.{names('ord')}", f"public.{names('pay')}"
    prefix, dlq = f"core.{names('ooo')}", f"dlq.{names('pay')}"
    make_copy(shop_db, orders, "public.orders")
    make_copy(shop_db, payments, "public.payments")
    conf = {
        "orders_table": orders,
        "payments_table": payments,
        "target_prefix": prefix,
        "dead_letter_table": dlq,
        "watermark_prefix": names("71_05_02"),
        "buffer_window_hours": 2,
        "repair": True,
    }
    yield orders, payments, prefix, dlq, conf
    drop(shop_db, orders, payments)
    drop(warehouse_db, *(f"{prefix}_{s}" for s in ("orders", "payments", "buffer", "reconciliation")), dlq)


def test_payments_before_orders_are_buffered_released_expired_and_repaired(
    shop_db, warehouse_db, setup
) -> None:
    orders, payments, prefix, dlq, conf = setup
    # interval 1: order 1 and its payment; payments 13 and 14 arrive before their orders
    add_orders(shop_db, orders, [(1, 100), (2, 200)])
    add_payments(shop_db, payments, [(11, 1, "5.00"), (13, 3, "7.00"), (14, 4, "9.00")])
    dr = run_dag(DAG_ID, hour(1), conf)
    assert xcom(dr, "ingest")["payments_buffered"] == 2
    assert rows(warehouse_db, f"{prefix}_payments", PAY_COLS) == [(11, 1, 100, 5, "card", 1, "direct")]
    assert rows(warehouse_db, f"{prefix}_buffer", "id, order_id, first_seen") == [
        (13, 3, hour(1)),  # the end of the run's data interval
        (14, 4, hour(1)),
    ]

    # interval 2: order 3 arrives (the trigger), payment 11 is corrected, payment 12 arrives in order
    add_orders(shop_db, orders, [(3, 300)])
    execute(shop_db, f"UPDATE {payments} SET amount = 6 WHERE id = 11")
    add_payments(shop_db, payments, [(12, 2, "3.00")])
    dr = run_dag(DAG_ID, hour(2), conf)
    assert xcom(dr, "release") == [13]
    assert rows(warehouse_db, f"{prefix}_payments", PAY_COLS) == [
        (11, 1, 100, 6, "card", 2, "direct"),
        (12, 2, 200, 3, "card", 1, "direct"),
        (13, 3, 300, 7, "card", 1, "released"),
    ]
    assert rows(warehouse_db, f"{prefix}_buffer", "id") == [(14,)]

    # interval ending 04:00 (window 2 h, payment 14 buffered at 01:00): dead-lettered with its reason
    dr = run_dag(DAG_ID, hour(4), conf)
    assert xcom(dr, "expire") == [14]
    assert rows(warehouse_db, f"{prefix}_buffer", "id") == []
    [(pid, reason, resolved)] = rows(warehouse_db, dlq, "payment_id, reason, resolved_at")
    assert (pid, resolved) == (14, None)
    assert "order 4 did not arrive within the buffer window" in reason
    assert xcom(dr, "reconcile")["missing"] == [14]  # reported, not repairable yet (no order 4)
    assert xcom(dr, "reconcile")["repaired"] == []

    # interval 5: order 4 finally arrives; reconciliation repairs the dead-lettered payment
    add_orders(shop_db, orders, [(4, 400)])
    dr = run_dag(DAG_ID, hour(5), conf)
    assert xcom(dr, "reconcile")["repaired"] == [14]
    assert rows(warehouse_db, dlq, "payment_id, resolved_by IS NOT NULL") == [(14, True)]

    # end state: the core payments are exactly the source payments joined with their orders
    expected = [
        (pid, oid, cust, amount, method, version)
        for (pid, oid, amount, method, version), cust in (
            (r, {1: 100, 2: 200, 3: 300, 4: 400}[r[1]])
            for r in rows(shop_db, payments, "id, order_id, amount, method, version")
        )
    ]
    assert rows(warehouse_db, f"{prefix}_payments", PAY_COLS.replace(", via", "")) == expected
    assert [r[0] for r in rows(warehouse_db, f"{prefix}_payments", PAY_COLS)] == [11, 12, 13, 14]
    assert rows(warehouse_db, f"{prefix}_payments", "id, via") == [
        (11, "direct"),
        (12, "direct"),
        (13, "released"),
        (14, "repaired"),
    ]
    assert rows(warehouse_db, f"{prefix}_orders", "id, customer_id, version") == [
        (1, 100, 1),
        (2, 200, 1),
        (3, 300, 1),
        (4, 400, 1),
    ]
    # the next run's reconciliation finds nothing missing, stale or extra
    dr = run_dag(DAG_ID, hour(6), conf)
    assert {k: xcom(dr, "reconcile")[k] for k in ("missing", "stale", "extra")} == {
        "missing": [],
        "stale": [],
        "extra": [],
    }
