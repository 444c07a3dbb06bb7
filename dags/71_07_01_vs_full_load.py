"""
# 71.7.1 Incremental vs full load performance — measure both at growing change ratios, find the break-even

**Performance comparison.** Every run changes a growing share of a benchmark table in ``shop``
(``change_ratios``, default 1 %, 10 %, 50 % of its rows, each in its own transaction) and after each
step loads it twice into the warehouse: a *full* load (read every row, ``TRUNCATE`` + ``INSERT`` in one
transaction) and an *incremental* load (read the half-open window ``[watermark, upper)`` on
``updated_at`` through its index, upsert guarded by ``version``, advance the watermark to ``upper`` by
compare-and-set). Both targets end equal to the source after every step. A ``catch_up`` incremental
load first takes in whatever changed since the last run, so each measured step reads exactly its own
changes.

**Break-even analysis.** ``analyse`` reads the run's measurements back and interpolates the change
ratio at which the incremental load takes as long as the full one (``cdclab.ops.perf.break_even``). Per
row the incremental path is dearer (an index range scan, an upsert with a guard per row instead of a
bulk insert into an empty table), so its cost line is steeper and crosses the flat full-load line at
some ratio; with few rows the fixed costs (state round trips) dominate and the answer can be "full is
cheaper everywhere" — which is the finding, not a failure.

**Resource savings.** ``rows_read`` and ``rows_written`` are deterministic: full = table size every
time, incremental = the changed rows. The saving in rows is ``1 - ratio``; whether it becomes a
saving in time depends on the per-row costs above, hence the measurement.

**When to choose.** Incremental when changes are a small share of the table, the table is large or
remote, and the source has a trustworthy, indexed ``updated_at`` (this load cannot see hard deletes:
use CDC or a periodic full comparison for those). Full when the change ratio is above the break-even,
the table is small, or correctness must not depend on the source's timestamps.

Observe: ``SELECT variant, rows_read, rows_written, round(duration_ms::numeric, 1), details FROM
state.perf_runs WHERE experiment = '71_07_01' ORDER BY id``; the ``break_even`` row holds the analysis;
targets ``core.perf_71_07_01_full`` / ``core.perf_71_07_01_incremental``; watermark in
``state.watermarks``. Durations vary with load on the machine: compare within one run.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import from_params, lesson_dag

DAG_ID = "71_07_01_vs_full_load"

PARAMS = {
    "source_table": Param("public.perf_71_07_01", type="string", description="benchmark table in shop"),
    "table_rows": Param(1000, type="integer", minimum=10, description="rows seeded when it is empty"),
    "change_ratios": Param([0.01, 0.1, 0.5], type="array", items={"type": "number"}),
    "full_target": Param("core.perf_71_07_01_full", type="string"),
    "incremental_target": Param("core.perf_71_07_01_incremental", type="string"),
    "experiment": Param("71_07_01", type="string", description="name in state.perf_runs"),
}


@lesson_dag(schedule=None, tags=["71.7", "performance", "reference", "intermediate", "success"])
def vs_full_load() -> None:
    @task
    def prepare(params: dict[str, Any]) -> dict[str, int]:
        from cdclab.lessons import load_performance as lesson

        n = lesson.prepare_customers_benchmark(
            params["source_table"],
            params["table_rows"],
            (params["full_target"], params["incremental_target"]),
        )
        return {"table_rows": n}

    @task
    def measure(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import load_performance as lesson

        return lesson.measure_vs_full_load(
            source=params["source_table"],
            **from_params(params, "full_target", "incremental_target", "experiment", "change_ratios"),
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )

    @task
    def analyse(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import load_performance as lesson

        return lesson.analyse_break_even(
            experiment=params["experiment"], dag_id=DAG_ID, run_id=dag_run.run_id
        )

    prepare() >> measure() >> analyse()


vs_full_load()
