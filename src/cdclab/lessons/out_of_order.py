"""71.5.2 Out-of-order processing: orders and payments pulled incrementally, a payment that arrives
before its order buffered, released, expired to the dead letters or repaired, for
``dags/71_05_02_out_of_order.py``. The pattern and its vocabulary live in :mod:`cdclab.time.out_of_order`; these
are the DAG's steps, each opening and closing its own connections.

Vocabulary:
- *tables*: :class:`cdclab.time.out_of_order.Tables`, the lesson's tables from ``target_prefix`` plus the
  dead-letter table.
- *watermark keys*: ``<watermark_prefix>/<source table>``, one per source table, in ``state.watermarks``.
- *seen at*: the end of the run's data interval, the scheduler time that ``first_seen``, the buffer window
  and the reconciliation are measured in.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime, timedelta
from typing import Any

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import pull
from cdclab.state import watermarks as state
from cdclab.time import out_of_order as outoforder
from cdclab.time.out_of_order import Tables


def watermark_key(watermark_prefix: str, table: str) -> str:
    """The watermark of one source table: ``71_05_02`` + ``public.orders`` -> ``71_05_02/public.orders``."""
    return f"{watermark_prefix}/{table}"


def prepare(tables: Tables) -> None:
    """The state schema and the lesson's tables (idempotent)."""
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        outoforder.ensure(wh, tables)


def ingest(
    orders_table: str,
    payments_table: str,
    tables: Tables,
    watermark_prefix: str,
    seen_at: datetime,
    *,
    dag_id: str,
    run_id: str,
) -> tuple[int, int, dict[str, int]]:
    """Pull the orders and payments changed since their watermarks, upsert the orders, load or buffer the
    payments (:func:`cdclab.time.out_of_order.ingest`) and advance both watermarks, in one warehouse
    transaction. Returns (orders pulled, payments pulled, counts)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        orders = pull.pull(shop, wh, orders_table, watermark_key(watermark_prefix, orders_table))
        payments = pull.pull(shop, wh, payments_table, watermark_key(watermark_prefix, payments_table))
        with wh:  # rows, buffer and both watermarks commit together
            counts = outoforder.ingest(wh, tables, orders.rows, payments.rows, seen_at)
            pull.advance(wh, orders, dag_id=dag_id, run_id=run_id)
            pull.advance(wh, payments, dag_id=dag_id, run_id=run_id)
    return len(orders.rows), len(payments.rows), counts


def release(tables: Tables) -> list[int]:
    """Move the buffered payments whose order arrived into the core table; returns their ids."""
    with closing(connect(WAREHOUSE)) as wh, wh:
        return outoforder.release(wh, tables)


def expire(tables: Tables, seen_at: datetime, window_hours: int) -> list[int]:
    """Dead-letter the payments buffered longer than ``window_hours`` before ``seen_at``; returns
    their ids."""
    with closing(connect(WAREHOUSE)) as wh, wh:
        return outoforder.expire(wh, tables, seen_at, timedelta(hours=window_hours))


def reconcile(
    payments_table: str, tables: Tables, *, repair: bool, run_id: str, checked_at: datetime
) -> dict[str, Any]:
    """Compare every source payment with core + buffer, repair when asked, write one report row
    (:func:`cdclab.time.out_of_order.reconcile`); returns the report."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh, wh:
        return outoforder.reconcile(
            shop, wh, tables, payments_table, repair=repair, run_id=run_id, checked_at=checked_at
        )
