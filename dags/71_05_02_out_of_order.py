"""
# 71.5.2 Out-of-order processing — a payment that arrives before its order

**Late arriving data.** Orders and payments are pulled incrementally (``updated_at`` watermarks in
``state.watermarks``, ``cdclab.delta.pull``). A payment whose order is not in the warehouse yet cannot be
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
the task logs print counts. Vocabulary in ``cdclab.time.out_of_order``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_05_02_out_of_order"


def _tables(params: dict[str, Any]) -> Any:
    from cdclab.time.out_of_order import Tables

    return Tables(params["target_prefix"], params["dead_letter_table"])


PARAMS = {
    "orders_table": Param("public.orders", type="string"),
    "payments_table": Param("public.payments", type="string"),
    "target_prefix": Param("core.ooo_71_05_02", type="string"),
    "dead_letter_table": Param("dlq.payments_71_05_02", type="string"),
    "watermark_prefix": Param("71_05_02", type="string"),
    "buffer_window_hours": Param(2, type="integer", minimum=0),
    "repair": Param(True, type="boolean"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.5", "out-of-order", "reference", "patterns", "advanced", "success"],
)
def out_of_order() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import out_of_order as lesson

        lesson.prepare(_tables(params))

    @task
    def ingest(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import out_of_order as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        n_orders, n_payments, counts = lesson.ingest(
            params["orders_table"],
            params["payments_table"],
            _tables(params),
            params["watermark_prefix"],
            iv.end,
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(f"pulled {n_orders} orders, {n_payments} payments: {counts}")
        return counts

    @task
    def release(params: dict[str, Any]) -> list[int]:
        from cdclab.lessons import out_of_order as lesson

        released = lesson.release(_tables(params))
        print(f"released from the buffer (their order arrived): {released}")
        return released

    @task
    def expire(params: dict[str, Any]) -> list[int]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import out_of_order as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        expired = lesson.expire(_tables(params), iv.end, params["buffer_window_hours"])
        print(f"dead-lettered to {params['dead_letter_table']} (buffer window exceeded): {expired}")
        return expired

    @task
    def reconcile(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import out_of_order as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        report = lesson.reconcile(
            params["payments_table"],
            _tables(params),
            repair=params["repair"],
            run_id=dag_run.run_id,
            checked_at=iv.end,
        )
        print(f"reconciliation: {report}")
        return report

    prepare() >> ingest() >> release() >> expire() >> reconcile()


out_of_order()
