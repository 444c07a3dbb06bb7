"""
# 71.5.2 Out-of-order processing — a payment that arrives before its order

**Late arriving data.** Orders and payments are pulled incrementally (``updated_at`` watermarks in
``state.watermarks``, ``cdclab.pull``). A payment whose order is not in the warehouse yet cannot be
loaded into ``core`` (the core payment carries the order's customer); it is not dropped and not loaded
half-empty: it waits in the staging buffer ``<target_prefix>_buffer`` with ``first_seen``.

**Reprocessing triggers.** The arrival of the parent is the trigger: every run, after the orders are in,
``release`` moves each buffered payment whose order now exists into ``<target_prefix>_payments``
(``via = 'released'``) in one statement. Payments whose order is already there go straight in
(``via = 'direct'``).

**Buffer windows.** A payment may wait ``buffer_window_hours`` of scheduler time (``first_seen`` is the end
of the data interval that buffered it). Older ones are moved to the dead-letter table
(``dlq.payments_71_05_02`` by default) with the reason ("order N did not arrive within the buffer window").

**Reconciliation.** ``reconcile`` compares every source payment with core + buffer and reports ``missing``,
``stale`` and ``extra`` ids in ``<target_prefix>_reconciliation``; with ``repair`` it loads the missing and
stale payments whose order exists (e.g. a dead-lettered payment whose order arrived after the window,
``via = 'repaired'``) and marks their dead letters resolved.

Observe: ``SELECT * FROM core.ooo_71_05_02_buffer``, ``core.ooo_71_05_02_payments`` (column ``via``),
``dlq.payments_71_05_02`` (reason, ``resolved_at``), ``core.ooo_71_05_02_reconciliation ORDER BY id``;
the task logs print counts. Vocabulary in ``cdclab.outoforder``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_05_02_out_of_order"


def _tables(params: dict[str, Any]) -> Any:
    from cdclab.outoforder import Tables

    return Tables(params["target_prefix"], params["dead_letter_table"])


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.5", "out-of-order", "reference", "patterns", "advanced", "success"],
    doc_md=__doc__,
    params={
        "orders_table": Param("public.orders", type="string"),
        "payments_table": Param("public.payments", type="string"),
        "target_prefix": Param("core.ooo_71_05_02", type="string"),
        "dead_letter_table": Param("dlq.payments_71_05_02", type="string"),
        "watermark_prefix": Param("71_05_02", type="string"),
        "buffer_window_hours": Param(2, type="integer", minimum=0),
        "repair": Param(True, type="boolean"),
    },
)
def out_of_order() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab import outoforder, state
        from cdclab.db import WAREHOUSE, connect

        wh = connect(WAREHOUSE)
        try:
            state.ensure_schema(wh)
            outoforder.ensure(wh, _tables(params))
        finally:
            wh.close()

    @task
    def ingest(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from airflow.sdk import get_current_context

        from cdclab import outoforder, pull
        from cdclab.db import SHOP, WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        data_interval_end = iv.end

        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            wm = params["watermark_prefix"]
            orders = pull.pull(shop, wh, params["orders_table"], f"{wm}/{params['orders_table']}")
            payments = pull.pull(shop, wh, params["payments_table"], f"{wm}/{params['payments_table']}")
            with wh:  # rows, buffer and both watermarks commit together
                counts = outoforder.ingest(wh, _tables(params), orders.rows, payments.rows, data_interval_end)
                pull.advance(wh, orders, dag_id=DAG_ID, run_id=dag_run.run_id)
                pull.advance(wh, payments, dag_id=DAG_ID, run_id=dag_run.run_id)
        finally:
            shop.close()
            wh.close()
        print(f"pulled {len(orders.rows)} orders, {len(payments.rows)} payments: {counts}")
        return counts

    @task
    def release(params: dict[str, Any]) -> list[int]:
        from cdclab import outoforder
        from cdclab.db import WAREHOUSE, connect

        wh = connect(WAREHOUSE)
        try:
            with wh:
                released = outoforder.release(wh, _tables(params))
        finally:
            wh.close()
        print(f"released from the buffer (their order arrived): {released}")
        return released

    @task
    def expire(params: dict[str, Any]) -> list[int]:
        from datetime import timedelta

        from airflow.sdk import get_current_context

        from cdclab import outoforder
        from cdclab.db import WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        data_interval_end = iv.end

        wh = connect(WAREHOUSE)
        try:
            with wh:
                window = timedelta(hours=params["buffer_window_hours"])
                expired = outoforder.expire(wh, _tables(params), data_interval_end, window)
        finally:
            wh.close()
        print(f"dead-lettered to {params['dead_letter_table']} (buffer window exceeded): {expired}")
        return expired

    @task
    def reconcile(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab import outoforder
        from cdclab.db import SHOP, WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        data_interval_end = iv.end

        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with wh:
                report = outoforder.reconcile(
                    shop,
                    wh,
                    _tables(params),
                    params["payments_table"],
                    repair=params["repair"],
                    run_id=dag_run.run_id,
                    checked_at=data_interval_end,
                )
        finally:
            shop.close()
            wh.close()
        print(f"reconciliation: {report}")
        return report

    prepare() >> ingest() >> release() >> expire() >> reconcile()


out_of_order()
