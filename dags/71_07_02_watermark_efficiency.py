"""
# 71.7.2 Watermark efficiency — what the watermark query costs, with and without an index, closed vs open range

**Index usage.** The watermark query of an interval-bounded load is a range predicate on the cursor
column (``updated_at``) ordered by ``(updated_at, id)``. ``explain`` runs it under
``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` twice: once with the index on ``updated_at`` dropped inside
a transaction that is rolled back (the plan becomes a ``Seq Scan`` plus a ``Sort``: every run reads the
whole table, and that cost grows with the table, not with the changes), and once with the index
(``Index Scan``/``Bitmap Index Scan``: the pages read follow the window size).

**Query optimization.** Fresh statistics (``ANALYZE`` before planning) let the planner estimate the
window's rows (``plan_rows`` vs ``actual_rows`` in the record). Buffers tell the I/O story: ``shared_hit``
pages came from Postgres' cache, ``shared_read`` from the OS — compare them between variants rather
than milliseconds.

**Range selection.** *Closed*: ``updated_at >= start AND updated_at < end`` (the data interval; half-open
so adjacent intervals neither overlap nor leave a gap) reads one interval's rows. *Open*:
``updated_at >= start`` reads every later row too — with the index the planner may even give up on it
and scan the table, because "everything after start" is a large share when the load lags behind. The
record shows both plans and row counts side by side.

**Update strategies.** ``load`` reads the closed window in keyset order (``cdclab.delta.detection``), upserts it
into the target guarded by ``updated_at`` (an older version never overwrites a newer one) and stores the
window end as the watermark in the same warehouse transaction (``state.watermarks``, compare-and-set): the
next run starts exactly where this one ended. The end is held back to the start of the oldest transaction
still open in the shop (``delta.read_upper_bound``): ``updated_at`` is a transaction's *start*, so a long
transaction commits rows stamped inside a window that is already read; the watermark stops before them
and the next run reads from the watermark (or its window start, whichever is earlier).

Observe: ``SELECT variant, rows_read, details->'plan'->'scan_nodes', details->'plan'->'shared_hit',
details->'plan'->'plan_rows', details->'plan'->'actual_rows' FROM state.perf_runs WHERE experiment =
'71_07_02' ORDER BY id``; the target ``core.perf_71_07_02``; the watermark ``71_07_02/...`` in
``state.watermarks``. Seed: ``table_rows`` rows spread evenly over the 24 hours around the first run.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_07_02_watermark_efficiency"


def _window_run(params: dict[str, Any], dag_run: Any) -> dict[str, Any]:
    """The run's source, experiment, data interval (derived from the timetable if the run has none) and ids."""
    from airflow.sdk import get_current_context

    from cdclab.time.intervals import run_interval

    iv = run_interval(get_current_context())
    return {
        "source": params["source_table"],
        "experiment": params["experiment"],
        "start": iv.start,
        "end": iv.end,
        "dag_id": DAG_ID,
        "run_id": dag_run.run_id,
    }


PARAMS = {
    "source_table": Param("public.perf_71_07_02", type="string", description="benchmark table in shop"),
    "table_rows": Param(2400, type="integer", minimum=24, description="rows seeded when it is missing"),
    "target_table": Param("core.perf_71_07_02", type="string"),
    "experiment": Param("71_07_02", type="string", description="name in state.perf_runs"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.7", "performance", "reference", "intermediate", "success"]
)
def watermark_efficiency() -> None:
    @task
    def prepare(params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import load_performance as lesson

        anchor = _window_run(params, dag_run)["start"]
        lesson.prepare_window_benchmark(
            params["source_table"], params["table_rows"], params["target_table"], anchor
        )

    @task
    def explain(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import load_performance as lesson

        return lesson.explain_windows(**_window_run(params, dag_run))

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import load_performance as lesson

        return lesson.load_window(target=params["target_table"], **_window_run(params, dag_run))

    prepare() >> explain() >> load()


watermark_efficiency()
