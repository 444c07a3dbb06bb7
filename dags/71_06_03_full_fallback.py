"""
# 71.6.3 Full-load fallback (anti-pattern) — "when in doubt, reload everything", on every run

**Unnecessary processing.** ``variant="anti_pattern"`` wraps its incremental path in ``try: ... except
Exception: full reload``. Any problem — here an unreadable watermark (``corrupt_state=true`` writes a
``bigint`` into the ``timestamptz`` key, as a bad manual edit or a buggy deploy would) — sends it to
``TRUNCATE`` + reload of the whole source. The fallback *hides* the error, so nobody repairs the state,
and every later run falls back again.

**Resource waste / performance impact.** Each fallback run reads and rewrites every row of the source,
however small the change: I/O, WAL, locks on the target, vacuum work and a target that is briefly
rebuilt. Rows read and written per run go to ``state.run_metrics`` (strategy ``anti_pattern:full``);
the cost grows with the table, not with the change. (Timings are recorded there too; ratios belong to
``make bench``, the tests assert rows read, never durations.)

**Proper recovery patterns (the fix).** ``variant="fixed"`` catches only the errors it can recover from
(``WatermarkTypeError``, ``WatermarkInFutureError``, a missing key), logs them, rebuilds the watermark
from the data already loaded (``max(updated_at)`` of the target — a bounded backfill starting where the
target ends), repairs the state with an audited ``reset`` (``state.watermark_history``) and reads only
the delta. Every other error fails the task: a real failure should page someone, not trigger a reload.

Observe: ``SELECT strategy, rows_read, rows_written FROM state.run_metrics WHERE pipeline LIKE
'71_06_03/%' ORDER BY id`` (the anti-pattern's ``rows_read`` follows the table size after the trigger,
the fix's follows the change), ``state.watermark_history`` (``reset: recovered ...``), the target
``core.rows_71_06_03_<variant>``. Trigger once with ``{"corrupt_state": true}``, then normally.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag, run_variant_load, variant_params

DAG_ID = "71_06_03_full_fallback"

PARAMS = {
    # variant, source_table, target_table:
    **variant_params("public.rows_71_06_03", "core.rows_71_06_03_{variant}"),
    "corrupt_state": Param(False, type="boolean", description="store a wrongly typed watermark first"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.6", "anti-pattern", "reference", "intermediate", "failure"]
)
def full_fallback() -> None:
    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import full_fallback as lesson

        # the variant's load over this run's data interval; logs the fallback or the recovery, then the summary
        return run_variant_load(
            lesson.load, params, DAG_ID, dag_run.run_id, corrupt_state=params["corrupt_state"]
        )

    load()


full_fallback()
