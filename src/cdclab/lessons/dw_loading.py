"""71.9.4 Data warehouse loading: the hourly steps that feed a star schema from the shop
(:mod:`cdclab.merge.star_schema`), for ``dags/71_09_04_dw_loading.py``.

Vocabulary:
- *star load* (:class:`StarLoad`): the source tables, the star's tables, the watermark prefix and the DAG
  run with its data interval.
- *source*: one of :data:`SOURCES`, the name of the param that holds a source table; each source has its
  own watermark ``<prefix>/<source>`` (``state.watermarks``, prefix default ``71_09_04/<fact table>``).
- *step*: ``dim_customer`` (SCD2), ``dim_product`` (SCD1), ``fact_order_line``. Each reads the changes of
  its sources up to the interval end (held back to the oldest open shop transaction,
  :func:`cdclab.delta.detection.read_committed_delta`), writes them, advances the watermarks and records
  ``state.run_metrics`` (pipeline ``71_09_04/<fact table>/<step>``) in one warehouse transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import detection as delta
from cdclab.merge import star_schema as dwload
from cdclab.merge import upsert
from cdclab.state import watermarks as state

Source = Literal["customers_table", "products_table", "orders_table", "items_table"]
SOURCES: tuple[Source, ...] = ("customers_table", "products_table", "orders_table", "items_table")


@dataclass(frozen=True)
class StarLoad:
    """What one run loads from where into where, and who it is (``dag_id``, ``run_id``, data interval)."""

    customers_table: str
    products_table: str
    orders_table: str
    items_table: str
    dim_customer: str
    dim_product: str
    fact_table: str
    watermark_prefix: str  # "" -> 71_09_04/<fact_table>
    dag_id: str
    run_id: str
    interval_start: datetime
    interval_end: datetime

    def key(self, source: Source) -> str:
        """The watermark key of one source."""
        prefix = self.watermark_prefix or f"71_09_04/{self.fact_table}"
        return f"{prefix}/{source}"

    def table(self, source: Source) -> str:
        return str(getattr(self, source))

    def pipeline(self, step: str) -> str:
        """The ``state.run_metrics`` pipeline of one step."""
        return f"71_09_04/{self.fact_table}/{step}"


def key_columns(source: Source) -> list[str]:
    """The source's key: ``(order_id, line_no)`` for order items, ``id`` otherwise."""
    return ["order_id", "line_no"] if source == "items_table" else ["id"]


def prepare(dim_customer: str, dim_product: str, fact_table: str) -> None:
    """The state schema and the star's tables (:func:`cdclab.merge.star_schema.ensure_star`)."""
    with closing(connect(WAREHOUSE)) as wh:
        with wh:
            state.ensure_schema(wh)
            dwload.ensure_star(wh, dim_customer, dim_product, fact_table)


@dataclass(frozen=True)
class _Read:
    key: str
    old: Any
    result: delta.DeltaResult
    new: Any


def _read(shop: Any, wh: Any, run: StarLoad, source: Source) -> _Read:
    """Watermark key, old value, delta result and new value for one source table."""
    key = run.key(source)
    old = state.TableWatermarkStore(wh).read(key, "timestamptz")
    # never past a transaction still open in the shop: it commits rows stamped with its (earlier) start
    _, result = delta.read_committed_delta(
        shop, run.table(source), key_columns=key_columns(source), since=old, until=run.interval_end
    )
    shop.rollback()
    return _Read(key, old, result, delta.next_watermark(old, result))


def _finish(
    wh: Any, run: StarLoad, step: str, reads: list[_Read], read: int, written: int, started: float
) -> None:
    """Advance watermarks and record metrics inside the caller's transaction."""
    store = state.TableWatermarkStore(wh)
    for r in reads:
        if r.new is not None and r.new != r.old:
            store.advance(r.key, r.old, r.new, value_type="timestamptz", dag_id=run.dag_id, run_id=run.run_id)
    state.record_run_metrics(
        wh,
        pipeline=run.pipeline(step),
        strategy="incremental",
        rows_read=read,
        rows_written=written,
        duration_ms=(time.monotonic() - started) * 1000,
        dag_id=run.dag_id,
        run_id=run.run_id,
        interval_start=run.interval_start,
        interval_end=run.interval_end,
    )


_R = TypeVar("_R", dwload.Scd2Result, upsert.UpsertResult)


def _load_dimension(
    run: StarLoad,
    source: Source,
    step: str,
    apply: Callable[[Any, str, Sequence[Mapping[str, Any]]], _R],
    dimension: str,
) -> tuple[Any, int, _R]:
    """One dimension: the rows of ``source`` changed since its watermark, written by
    ``apply(wh, dimension, rows)``, the watermark advanced and the metrics of ``step`` recorded in the same
    transaction."""
    started = time.monotonic()
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        r = _read(shop, wh, run, source)
        with wh:
            res = apply(wh, dimension, r.result.rows)
            _finish(wh, run, step, [r], len(r.result.rows), res.written, started)
    return r.old, len(r.result.rows), res


def load_dim_customer(run: StarLoad) -> tuple[Any, int, dwload.Scd2Result]:
    """The customers changed since their watermark into the SCD2 dimension. Returns the watermark read
    from, the rows read and the SCD2 result."""
    return _load_dimension(
        run, "customers_table", "dim_customer", dwload.apply_scd2_customers, run.dim_customer
    )


def load_dim_product(run: StarLoad) -> tuple[Any, int, upsert.UpsertResult]:
    """The products changed since their watermark into the SCD1 dimension. Returns the watermark read
    from, the rows read and the upsert result."""
    return _load_dimension(run, "products_table", "dim_product", dwload.apply_scd1_products, run.dim_product)


def changed_orders(orders: Sequence[Mapping[str, Any]], items: Sequence[Mapping[str, Any]]) -> list[int]:
    """The ids of the orders whose row or any of whose lines changed, sorted."""
    return sorted({r["id"] for r in orders} | {r["order_id"] for r in items})


def load_fact(run: StarLoad) -> tuple[Any, int, dwload.FactResult]:
    """Every line of each order whose row or lines changed since their watermarks, re-derived into the
    fact table with the dimension versions valid at ``ordered_at``. Returns the orders watermark read
    from, the number of orders and the fact result."""
    started = time.monotonic()
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        orders = _read(shop, wh, run, "orders_table")
        items = _read(shop, wh, run, "items_table")
        order_ids = changed_orders(orders.result.rows, items.result.rows)
        lines = dwload.read_order_lines(shop, run.orders_table, run.items_table, order_ids)
        shop.rollback()
        with wh:
            res = dwload.load_fact_lines(wh, run.fact_table, run.dim_customer, run.dim_product, lines)
            _finish(
                wh,
                run,
                "fact_order_line",
                [orders, items],
                len(orders.result.rows) + len(items.result.rows) + len(lines),
                res.written,
                started,
            )
    return orders.old, len(order_ids), res
