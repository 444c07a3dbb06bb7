"""
# 71.6.5 Assuming order (anti-pattern) — the last change to arrive is not the newest change

**Out-of-order data.** A change stream lands in ``staging.changes_71_06_05`` (``seq`` = arrival order,
``version`` = the row's version at the source, like an LSN or the shop's ``version`` column). Arrival
order and version order differ: producer retries, several producers or partitions, a replayed batch, a
slow consumer catching up after a rebalance all deliver an older change after a newer one.

**Race conditions.** ``variant="anti_pattern"`` applies each run's changes in arrival order with a plain
upsert: *last arrival wins*. Within one run an older version that arrives second overwrites the newer
one; across runs a delayed old change arriving hours later overwrites the current row.

**Missed updates.** The overwritten newer version is gone from the target, though the source and the
stream both have it; no error, no dead letter. The ``apply`` task returns the *regressed rows*: target
rows whose version is older than the newest version the stream delivered for that key.

**Order-independent design (the fix).** ``variant="fixed"`` makes the result independent of arrival
order: ``cdclab.merge.upsert.upsert_rows`` with ``version`` as the guard keeps the newest version per key
within the batch and updates the target only ``WHERE t.version < EXCLUDED.version``. Applying the same
changes in any order, or twice, gives the same table (commutative, idempotent). For Debezium streams
``cdclab.cdc.merge.apply_changes`` does the same with the LSN and also guards deletes (71.3.3).

Observe: ``SELECT * FROM staging.changes_71_06_05 ORDER BY seq`` next to ``SELECT * FROM
core.status_71_06_05_<variant> ORDER BY id``; the ``apply`` log lists ``regressed: [(id, version in
target, newest version)]``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from cdclab.dagkit import data_intervals, lesson_dag, variant_params

DAG_ID = "71_06_05_assuming_order"

PARAMS = {
    # variant, source_table, target_table:
    **variant_params(
        "staging.changes_71_06_05", "core.status_71_06_05_{variant}", source_description="in the warehouse"
    ),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.6", "anti-pattern", "reference", "intermediate", "failure"]
)
def assuming_order() -> None:
    @task
    def apply(params: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import antipattern_runs as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        r = lesson.apply_change_stream(
            variant=params["variant"],
            source=params["source_table"],
            target=params["target_table"],
            start=iv.start,
            end=iv.end,
        )
        print(f"{r.variant}: applied {r.applied} change(s) in arrival order of seq; regressed: {r.regressed}")
        return {"variant": r.variant, "applied": r.applied, "regressed": [list(x) for x in r.regressed]}

    apply()


assuming_order()
