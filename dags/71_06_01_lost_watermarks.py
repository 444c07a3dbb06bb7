"""
# 71.6.1 Lost watermarks (anti-pattern) — state that vanishes leaves a silent gap

**State loss scenarios.** The watermark of ``variant="anti_pattern"`` lives in an Airflow Variable
(``<source>__71_06_01_watermark``). Variables disappear: ``airflow db reset``, a new Airflow deployment
with a fresh metadata DB, someone tidying *Admin -> Variables*, a retention job. The param
``lose_state=true`` simulates it: the run deletes the state before loading (the Variable for the
anti-pattern, the ``state.watermarks`` row for the fix — the harshest loss the fix can meet).

**Recovery challenges.** With no watermark the anti-pattern cannot tell "first run" from "state lost".
It does what many pipelines do: start from *now* (the data interval's start, ``anti_cold_start=
"interval_start"``, default) or reload everything (``"everything"``: correct, but a full read).

**Data gaps.** Starting from "now" silently skips every change made between the last loaded row and the
current interval (e.g. while the pipeline was paused). Nothing fails; the rows are simply never read.
The ``load`` task logs the gap and returns it: the keys in the source before the interval end and not
in the target.

**Persistence strategies (the fix).** ``variant="fixed"`` keeps the watermark in the warehouse next to
the data (``state.watermarks``, typed, compare-and-set, every change in ``state.watermark_history``).
When that row is lost too it *recovers* instead of guessing: the watermark is rebuilt from
``max(updated_at)`` of the target (the data already loaded is the ground truth), stored with an audited
``reset``, and the read continues from there — no gap, and only the delta is read.

Observe: Admin -> Variables (``..._71_06_01_watermark``), ``SELECT * FROM state.watermark_history WHERE
key LIKE '71_06_01/%' ORDER BY id`` (``reset: recovered ...`` after a loss), the target
``core.rows_71_06_01_<variant>``, ``state.run_metrics WHERE pipeline LIKE '71_06_01/%'`` (rows read and
the strategy) and the ``load`` log (``gap: [...]``). Trigger once with ``{"lose_state": true}`` after a
pause to see the gap in the anti-pattern and none in the fix.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag, run_variant_load, variant_params

DAG_ID = "71_06_01_lost_watermarks"

PARAMS = {
    # variant, source_table, target_table:
    **variant_params("public.rows_71_06_01", "core.rows_71_06_01_{variant}"),
    "lose_state": Param(False, type="boolean", description="delete the watermark before loading"),
    "anti_cold_start": Param("interval_start", enum=["interval_start", "everything"]),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.6", "anti-pattern", "reference", "intermediate", "failure"]
)
def lost_watermarks() -> None:
    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import lost_watermarks as lesson

        # the variant's load over this run's data interval; logs "state lost" and the summary with the gap
        return run_variant_load(
            lesson.load,
            params,
            DAG_ID,
            dag_run.run_id,
            lose_state=params["lose_state"],
            anti_cold_start=params["anti_cold_start"],
        )

    load()


lost_watermarks()
