"""
# 71.7.5 State management performance — three state stores measured, a retention step for history, a scaling curve

**State storage options.** Every run writes and reads back the same kind of state in three stores and
records counts and timings: (1) ``table`` — ``cdclab.state.watermarks.TableWatermarkStore`` in the warehouse
(``state.watermarks``: typed value, compare-and-set, a ``state.watermark_history`` row per change);
(2) ``variable`` — Airflow Variables through the Task SDK (``cdclab.state.watermarks.VariableWatermarkStore``: one
API round trip per get/set, last writer wins, no history); (3) ``kv`` — a plain key-value table
``<kv_table>`` (``key text PRIMARY KEY, value bigint``) holding *many* keys, e.g. one offset per
partition or per tenant, with a history table ``<kv_table>_history``.

**Query efficiency.** The ``kv`` store is read and written twice: one statement per key
(``kv/read_per_key``, ``kv/write_per_key``) and one statement for all keys (``kv/read_batch``:
``WHERE key = ANY(%s)``; ``kv/write_batch``: ``INSERT ... ON CONFLICT`` via ``execute_values``). The
counts are the same; the number of round trips is what differs (``details.statements``).

**Cleanup strategies.** State history grows with runs x keys. ``cleanup`` keeps the newest
``keep_history`` rows per key in ``state.watermark_history`` (only this experiment's keys: the table is
shared) and in ``<kv_table>_history``, each in one ``DELETE`` (``cdclab.ops.perf.prune_history``), and
records how many rows it removed. The current values are never touched: history is for audit, the
value row is the state.

**Scaling patterns.** A keyed table scales to many keys (primary-key lookups, batched reads, one
transaction for all of them, optionally together with the data); Variables suit a handful of
low-frequency settings, not per-partition state (each key is a metadata-DB row behind an API call);
history needs retention from day one. ``scaling`` shows the curve: it fills ``<kv_table>_scale`` with
each of ``scale_sizes`` keys in turn (default 1k, 10k, 100k) and measures two reads with ``EXPLAIN
(ANALYZE, BUFFERS)`` (``cdclab.ops.perf``): ``lookup``, one key by its primary key (an Index Scan: about
three buffers at every size, one row scanned), and ``scan``, a filter no index serves (a Seq Scan:
every row scanned, buffers = the table's pages, growing with the keys). Rows scanned and buffers are
counts, not timings: the same on every machine.

Observe: ``SELECT variant, rows_read, round(duration_ms::numeric, 2), details FROM
state.perf_runs WHERE experiment = '71_07_05' ORDER BY id``; ``state.watermarks`` / ``state.watermark_history``
``WHERE key LIKE '71_07_05/%'``; Admin -> Variables ``71_07_05__*``; ``state.perf_71_07_05_kv``. The
scaling curve: ``SELECT details->>'keys' AS keys, details->>'op' AS op, rows_read AS rows_scanned,
details->>'buffers' AS buffers, details->'scan_nodes' AS scans FROM state.perf_runs WHERE experiment =
'71_07_05' AND variant LIKE 'scale/%' ORDER BY id DESC LIMIT 6``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_07_05_state_performance"


def _measure_run(params: dict[str, Any], dag_run: Any) -> Any:
    """The experiment, the data interval end every store is given, and this run."""
    from airflow.sdk import get_current_context

    from cdclab.lessons.state_performance import MeasureRun
    from cdclab.time.intervals import run_interval

    iv = run_interval(get_current_context())  # derived from the timetable if the run has none
    return MeasureRun(params["experiment"], iv.end, DAG_ID, dag_run.run_id)


PARAMS = {
    "experiment": Param("71_07_05", type="string", description="name in state.perf_runs and key prefix"),
    "watermark_keys": Param(3, type="integer", minimum=1, maximum=50, description="table/variable keys"),
    "variable_prefix": Param("71_07_05__", type="string"),
    "kv_table": Param("state.perf_71_07_05_kv", type="string"),
    "kv_keys": Param(500, type="integer", minimum=1, maximum=100000),
    "keep_history": Param(2, type="integer", minimum=1),
    "scale_sizes": Param(
        [1000, 10000, 100000],
        type="array",
        items={"type": "integer", "minimum": 1, "maximum": 1000000},
        description="keys in <kv_table>_scale, one measurement each",
    ),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.7", "performance", "reference", "intermediate", "success"]
)
def state_performance() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import state_performance as lesson

        lesson.prepare(params["kv_table"])

    @task
    def table_store(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_performance as lesson

        return lesson.measure_table_store(_measure_run(params, dag_run), params["watermark_keys"])

    @task
    def variable_store(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_performance as lesson

        r = _measure_run(params, dag_run)
        return lesson.measure_variable_store(r, params["watermark_keys"], params["variable_prefix"])

    @task
    def kv_store(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_performance as lesson

        return lesson.measure_kv_store(_measure_run(params, dag_run), params["kv_keys"], params["kv_table"])

    @task
    def scaling(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import state_performance as lesson

        curve = lesson.measure_scaling(
            _measure_run(params, dag_run), params["scale_sizes"], params["kv_table"]
        )
        for point in curve:
            print(point)
        return curve

    @task
    def cleanup(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab.lessons import state_performance as lesson

        keep = params["keep_history"]
        removed = lesson.cleanup_history(
            params["experiment"], keep, kv_table=params["kv_table"], dag_id=DAG_ID, run_id=dag_run.run_id
        )
        print(f"retention keep={keep}: removed {removed}")
        return removed

    prepare() >> [table_store(), variable_store(), kv_store(), scaling()] >> cleanup()


state_performance()
