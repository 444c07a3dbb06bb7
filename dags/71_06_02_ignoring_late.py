"""
# 71.6.2 Ignoring late data (anti-pattern) — each interval computed once, late rows never counted

**Data completeness issues.** Hourly totals by *event time*: ``variant="anti_pattern"`` sums the events
with ``event_time`` in the run's data interval ``[start, end)`` once and never looks at that hour
again. An event that *arrives* after its hour was computed (a phone back online, a retried batch, a
slow upstream job) is in the source but never in the totals. Nothing fails.

**Reconciliation problems.** The ``reconcile`` task compares every hour in the target with the source as
it is *now* and writes each difference (target total, source total, difference) to
``<target>__reconciliation``. For the anti-pattern the differences are exactly the late amounts, and
they stay there: no later run repairs them.

**Business impact.** Daily revenue, order counts, billing: the dashboard under-reports by the late
amount, finance's reconciliation against the source system fails, and a rerun "fixes" the number only
by accident (whoever backfills the hour happens to count the late rows).

**Late handling patterns (the fix).** ``variant="fixed"`` recomputes a *reprocessing window*: the
current interval plus ``lookback_intervals`` earlier ones (``cdclab.time.intervals.Window.widen``), and
replaces those buckets idempotently (delete + insert in one transaction). Late rows that arrive within the
lookback are counted on the next run; anything later than the lookback shows up in
``<target>__reconciliation`` (the safety net) instead of vanishing — size the lookback from the observed
lateness, or trigger a backfill for the hours listed there.

Observe: ``SELECT * FROM marts.totals_71_06_02_<variant> ORDER BY bucket_start``, ``SELECT * FROM
marts.totals_71_06_02_<variant>__reconciliation ORDER BY id`` and the ``aggregate`` / ``reconcile`` logs
(buckets recomputed, differences found).

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag, variant_params

DAG_ID = "71_06_02_ignoring_late"
GRAIN = pendulum.duration(hours=1)

PARAMS = {
    # variant, source_table, target_table:
    **variant_params("public.events_71_06_02", "marts.totals_71_06_02_{variant}"),
    "lookback_intervals": Param(2, type="integer", minimum=0, description="fixed variant only"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.6", "anti-pattern", "reference", "intermediate", "failure"]
)
def ignoring_late() -> None:
    @task
    def aggregate(params: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import ignoring_late as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        variant, window, buckets = lesson.aggregate(
            params["source_table"],
            params["target_table"],
            params["variant"],
            start=iv.start,
            end=iv.end,
            grain=GRAIN,
            lookback_intervals=params["lookback_intervals"],
        )
        print(f"{variant}: recomputed {buckets} bucket(s) in {window}")
        return {"variant": variant, "window": str(window), "buckets": buckets}

    @task
    def reconcile(params: dict[str, Any], dag_run: Any = None) -> list[list[str | None]]:
        from cdclab.lessons import ignoring_late as lesson

        diffs = lesson.reconcile(
            params["source_table"], params["target_table"], params["variant"], GRAIN, dag_run.run_id
        )
        for bucket, have, truth in diffs:
            print(f"bucket {bucket}: target {have}, source {truth} -> late rows not counted")
        print(f"{len(diffs)} bucket(s) differ from the source")
        return lesson.diffs_xcom(diffs)

    aggregate() >> reconcile()


ignoring_late()
