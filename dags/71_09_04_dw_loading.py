"""
# 71.9.4 Data warehouse loading — incremental facts, SCD dimensions, late-arriving members

A star schema fed from the shop every hour: ``dim_customer`` (SCD2), ``dim_product`` (SCD1) and
``fact_order_line``. Each run covers its data interval: a manual run with logical date ``H`` loads the
changes with ``updated_at < H`` that the watermarks have not seen yet ([H-1h, H) on schedule).

**Incremental facts.** The orders and order_items changed since their watermarks (``cdclab.delta``
timestamp read, upper bound = the interval end, held back to the start of the oldest transaction still
open in the shop, ``delta.read_upper_bound``: ``updated_at`` is a transaction's start, so a long
transaction commits rows stamped before a watermark the load would otherwise already have stored) name
the affected orders; all their lines are re-read
with one join on the source and upserted into the fact keyed ``(order_id, line_no)``. Each line carries
the customer *version valid at ``ordered_at``* (``valid_from <= ordered_at < valid_to``) and the product's
surrogate key. The watermarks (``state.watermarks``, one per source table) move in the same warehouse
transaction as the rows, so a crashed run re-reads its interval and nothing is doubled.

**Dimension updates / SCD handling.** Dimensions load before facts. ``dim_customer`` is SCD2
(``cdclab.dwload.apply_scd2_customers``): a tier/email/name/zone change retires the current row at the
change's ``updated_at`` and inserts a new version; older orders keep pointing at the old version.
``dim_product`` is SCD1: a version-guarded upsert (``cdclab.upsert``) overwrites price and name in place.
A fact whose customer or product is unknown yet (late-arriving dimension) gets an *inferred member*
(``is_inferred``, tier ``unknown``); when the real row arrives it fills that row in place, same key.

**Performance.** Everything is set-based: changed rows are staged into a temp table with one
``execute_values``, then a few ``UPDATE ... FROM`` / ``INSERT ... SELECT ... ON CONFLICT`` statements do
the work; work per run is bounded by the interval; natural keys are indexed (unique
``(customer_id, valid_from)``, partial unique ``customer_id WHERE is_current``, unique ``product_id``,
fact primary key + ``ordered_at``). Rows read/written per step go to ``state.run_metrics``.

Observe: ``SELECT * FROM core.dim_customer_71_09_04 ORDER BY customer_id, valid_from`` (versions, inferred
rows), ``core.dim_product_71_09_04``, ``core.fact_order_line_71_09_04`` joined to the dimensions by
``customer_sk``/``product_sk``; ``SELECT pipeline, rows_read, rows_written FROM state.run_metrics WHERE
pipeline LIKE '71_09_04/%' ORDER BY id``; ``state.watermarks WHERE key LIKE '71_09_04/%'``. Table names are
params: tests point the DAG at their own copies of the shop tables.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_09_04_dw_loading"


def _key(params: dict[str, Any], source: str) -> str:
    prefix = params["watermark_prefix"] or f"71_09_04/{params['fact_table']}"
    return f"{prefix}/{source}"


def _read(shop: Any, wh: Any, params: dict[str, Any], source: str, until: Any) -> tuple[str, Any, Any, Any]:
    """Watermark key, old value, delta result and new value for one source table."""
    from cdclab import delta, state

    key = _key(params, source)
    old = state.TableWatermarkStore(wh).read(key, "timestamptz")
    keys = ["order_id", "line_no"] if source == "items_table" else ["id"]
    # never past a transaction still open in the shop: it commits rows stamped with its (earlier) start
    bound = delta.read_upper_bound(shop, until)
    result = delta.read_timestamp_delta(
        shop, params[source], cursor_column="updated_at", key_columns=keys, since=old, until=bound
    )
    shop.rollback()
    return key, old, result, delta.next_watermark(old, result)


def _finish(
    wh: Any,
    params: dict[str, Any],
    step: str,
    moves: list[tuple[str, Any, Any]],
    read: int,
    written: int,
    started: float,
    dag_run: Any,
    window: Any,
) -> None:
    """Advance watermarks and record metrics inside the caller's transaction."""
    import time

    from cdclab import state

    store = state.TableWatermarkStore(wh)
    for key, old, new in moves:
        if new is not None and new != old:
            store.advance(key, old, new, value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id)
    state.record_run_metrics(
        wh,
        pipeline=f"71_09_04/{params['fact_table']}/{step}",
        strategy="incremental",
        rows_read=read,
        rows_written=written,
        duration_ms=(time.monotonic() - started) * 1000,
        dag_id=DAG_ID,
        run_id=dag_run.run_id,
        interval_start=window.start,
        interval_end=window.end,
    )


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.9", "dw", "success", "reference", "example", "advanced"],
    doc_md=__doc__,
    params={
        "customers_table": Param("public.customers", type="string"),
        "products_table": Param("public.products", type="string"),
        "orders_table": Param("public.orders", type="string"),
        "items_table": Param("public.order_items", type="string"),
        "dim_customer": Param("core.dim_customer_71_09_04", type="string"),
        "dim_product": Param("core.dim_product_71_09_04", type="string"),
        "fact_table": Param("core.fact_order_line_71_09_04", type="string"),
        "watermark_prefix": Param("", type="string", description="default: 71_09_04/<fact_table>"),
    },
)
def dw_loading() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab import dwload, state
        from cdclab.db import WAREHOUSE, connect

        wh = connect(WAREHOUSE)
        try:
            with wh:
                state.ensure_schema(wh)
                dwload.ensure_star(wh, params["dim_customer"], params["dim_product"], params["fact_table"])
        finally:
            wh.close()

    @task
    def load_dim_customer(params: dict[str, Any], dag_run: Any = None, **context: Any) -> dict[str, int]:
        import time

        from cdclab import dwload, intervals
        from cdclab.db import SHOP, WAREHOUSE, connect

        started, window = time.monotonic(), intervals.from_context(context)
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            key, old, result, new = _read(shop, wh, params, "customers_table", window.end)
            with wh:
                res = dwload.apply_scd2_customers(wh, params["dim_customer"], result.rows)
                _finish(
                    wh,
                    params,
                    "dim_customer",
                    [(key, old, new)],
                    len(result.rows),
                    res.written,
                    started,
                    dag_run,
                    window,
                )
        finally:
            shop.close()
            wh.close()
        print(f"customers {dwload.window_bounds(old, window.end)}: read {len(result.rows)}, {res}")
        return {"read": len(result.rows), "written": res.written}

    @task
    def load_dim_product(params: dict[str, Any], dag_run: Any = None, **context: Any) -> dict[str, int]:
        import time

        from cdclab import dwload, intervals
        from cdclab.db import SHOP, WAREHOUSE, connect

        started, window = time.monotonic(), intervals.from_context(context)
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            key, old, result, new = _read(shop, wh, params, "products_table", window.end)
            with wh:
                res = dwload.apply_scd1_products(wh, params["dim_product"], result.rows)
                _finish(
                    wh,
                    params,
                    "dim_product",
                    [(key, old, new)],
                    len(result.rows),
                    res.written,
                    started,
                    dag_run,
                    window,
                )
        finally:
            shop.close()
            wh.close()
        print(f"products {dwload.window_bounds(old, window.end)}: read {len(result.rows)}, {res}")
        return {"read": len(result.rows), "written": res.written}

    @task
    def load_fact(params: dict[str, Any], dag_run: Any = None, **context: Any) -> dict[str, int]:
        import time

        from cdclab import dwload, intervals
        from cdclab.db import SHOP, WAREHOUSE, connect

        started, window = time.monotonic(), intervals.from_context(context)
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            o_key, o_old, orders, o_new = _read(shop, wh, params, "orders_table", window.end)
            i_key, i_old, items, i_new = _read(shop, wh, params, "items_table", window.end)
            order_ids = sorted({r["id"] for r in orders.rows} | {r["order_id"] for r in items.rows})
            lines = dwload.read_order_lines(shop, params["orders_table"], params["items_table"], order_ids)
            shop.rollback()
            with wh:
                res = dwload.load_fact_lines(
                    wh, params["fact_table"], params["dim_customer"], params["dim_product"], lines
                )
                _finish(
                    wh,
                    params,
                    "fact_order_line",
                    [(o_key, o_old, o_new), (i_key, i_old, i_new)],
                    len(orders.rows) + len(items.rows) + len(lines),
                    res.written,
                    started,
                    dag_run,
                    window,
                )
        finally:
            shop.close()
            wh.close()
        print(f"orders {dwload.window_bounds(o_old, window.end)}: {len(order_ids)} orders, {res}")
        return {"lines": res.lines, "written": res.written, "inferred_customers": res.inferred_customers}

    prepare() >> load_dim_customer() >> load_dim_product() >> load_fact()


dw_loading()
