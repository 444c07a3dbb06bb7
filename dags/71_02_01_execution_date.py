"""# 71.2.1 Execution date processing: the data interval bounds the load

Each run loads **the orders placed in its data interval** `[data_interval_start, data_interval_end)`
from `shop` into a warehouse table partitioned by day, and a rerun of an interval replaces exactly
that day. No wall clock (`now()`), no "yesterday" arithmetic: the scheduler's window is the truth,
so backfills and reruns load the same rows every time.

1. **data_interval_start / data_interval_end.** The schedule is an *interval* timetable,
   `CronDataIntervalTimetable("0 0 * * *", "UTC")`: the run for 2026-02-01 has
   `[2026-02-01T00:00Z, 2026-02-02T00:00Z)`. A cron *string* would be a `CronTriggerTimetable`
   whose runs have `start == end` (an empty window); `cdclab.time.intervals.from_context` refuses that with
   `EmptyIntervalError` instead of silently loading nothing. (Old name: `execution_date`; in
   Airflow 3 the run's `logical_date` is not used for bounds.)
2. **Date-bounded queries.** Both ends are applied half-open, `ordered_at >= start AND ordered_at < end`
   (never `BETWEEN`): an order stamped exactly at midnight belongs to the next day only.
3. **Partition alignment.** The target `core.orders_by_day` is `PARTITION BY RANGE (ordered_at)`
   with one partition per day; `prepare_partition` maps the interval onto partitions
   (`cdclab.time.intervals.partitions_for(policy="raise")`) and creates the one partition it fills. An
   interval that is not a whole day raises `UnalignedIntervalError`. Because partition == interval,
   `replace_partition` empties and refills that one partition in one transaction: reruns are idempotent
   and rows deleted in the source disappear.
4. **Template usage.** `extract_interval` reads the interval in Python (from the task context);
   `replace_partition` is a `SQLExecuteQueryOperator` whose SQL is a Jinja template:
   the interval's bounds go in as *bound parameters* (`parameters=` is a templated field), read with the
   `run_interval_of(dag, dag_run)` macro rather than `{{ data_interval_start }}`, which a run without a
   logical date does not have) and the partition name comes from a `partition_table` macro,
   quoted by the `ident` macro. Rendered SQL is visible on the task's *Rendered Template* tab.

**Observe it:** Airflow UI → `71_02_01_execution_date` → a run → `replace_partition` → Rendered Template;
in `warehouse`: `\\d+ core.orders_by_day` lists the partitions,
`SELECT tableoid::regclass, count(*) FROM core.orders_by_day GROUP BY 1` shows rows per day.
Params: `source` (shop table), `target`, `staging` (warehouse tables) — tests pass their own.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import get_current_context, task

from cdclab.dagkit import data_intervals, lesson_dag
from cdclab.time import partitions as partitioning
from cdclab.time.intervals import interval_for_run

PARAMS = {"source": "public.orders", "target": "core.orders_by_day", "staging": "staging.orders_by_day"}


@lesson_dag(
    schedule=data_intervals("0 0 * * *"),
    tags=["71.2", "reference", "core", "intermediate", "success"],
    user_defined_macros={
        "ident": partitioning.quoted_name,
        "partition_table": partitioning.partition_table_at,
        "run_interval_of": interval_for_run,
    },
)
def _71_02_01_execution_date():
    @task
    def prepare_partition(params: dict | None = None) -> list[str]:
        """Create the partitioned parent and the partition(s) the data interval fills (policy: raise)."""
        from cdclab.time.intervals import from_context

        window = from_context(get_current_context())
        return partitioning.prepare_day_partitions((params or {})["target"], window)

    @task
    def extract_interval(params: dict | None = None) -> int:
        """Copy the interval's source rows into staging, bounds from the task context (Python usage)."""
        from cdclab.time.intervals import from_context

        p = params or {}
        window = from_context(get_current_context())
        return partitioning.stage_interval(p["source"], p["staging"], p["target"], window)

    replace = SQLExecuteQueryOperator(
        task_id="replace_partition",
        conn_id="warehouse",
        sql=partitioning.REPLACE_PARTITION_TEMPLATE,  # Jinja: TRUNCATE the interval's partition, refill it
        split_statements=True,  # psycopg 3 binds server-side: one statement per execute, one transaction
        parameters={
            "start": "{{ run_interval_of(dag, dag_run).start }}",
            "end": "{{ run_interval_of(dag, dag_run).end }}",
            "run_id": "{{ run_id }}",
        },
    )

    prepare_partition() >> extract_interval() >> replace


_71_02_01_execution_date()
