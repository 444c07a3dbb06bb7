"""# 71.2.1 Execution date processing: the data interval bounds the load

Each run loads **the orders placed in its data interval** `[data_interval_start, data_interval_end)`
from `shop` into a warehouse table partitioned by day, and a rerun of an interval replaces exactly
that day. No wall clock (`now()`), no "yesterday" arithmetic: the scheduler's window is the truth,
so backfills and reruns load the same rows every time.

1. **data_interval_start / data_interval_end.** The schedule is an *interval* timetable,
   `CronDataIntervalTimetable("0 0 * * *", "UTC")`: the run for 2026-02-01 has
   `[2026-02-01T00:00Z, 2026-02-02T00:00Z)`. A cron *string* would be a `CronTriggerTimetable`
   whose runs have `start == end` (an empty window); `cdclab.intervals.from_context` refuses that with
   `EmptyIntervalError` instead of silently loading nothing. (Old name: `execution_date`; in
   Airflow 3 the run's `logical_date` is not used for bounds.)
2. **Date-bounded queries.** Both ends are applied half-open, `ordered_at >= start AND ordered_at < end`
   (never `BETWEEN`): an order stamped exactly at midnight belongs to the next day only.
3. **Partition alignment.** The target `core.orders_by_day` is `PARTITION BY RANGE (ordered_at)`
   with one partition per day; `prepare_partition` maps the interval onto partitions
   (`cdclab.intervals.partitions_for(policy="raise")`) and creates the one partition it fills. An
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
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

import pendulum
from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

from cdclab import partitioning
from cdclab.intervals import interval_for_run, partition_of

COLUMNS = [
    ("id", "bigint"),
    ("customer_id", "bigint"),
    ("status", "text"),
    ("ordered_at", "timestamptz not null"),
    ("total", "numeric(12, 2)"),
    ("updated_at", "timestamptz"),
    ("loaded_by_run", "text"),
]
SOURCE_COLUMNS = [name for name, _ in COLUMNS if name != "loaded_by_run"]


def _ident(name: str) -> str:
    """Jinja macro: a quoted ``"schema"."table"`` for a validated table name."""
    partitioning.check_table_name(name)
    return ".".join(f'"{part}"' for part in name.split("."))


def _partition_table(parent: str, interval_start: pendulum.DateTime) -> str:
    """Jinja macro: the name of the daily partition that holds ``interval_start``."""
    return partitioning.partition_table(parent, partition_of(interval_start, "day"))


REPLACE_PARTITION_SQL = """
-- one transaction (the hook commits once, after the last statement):
-- empty the interval's partition, refill it from the staged interval
TRUNCATE {{ ident(partition_table(params.target, run_interval_of(dag, dag_run).start)) }};
INSERT INTO {{ ident(params.target) }} (id, customer_id, status, ordered_at, total, updated_at, loaded_by_run)
SELECT id, customer_id, status, ordered_at, total, updated_at, %(run_id)s
FROM {{ ident(params.staging) }}
WHERE ordered_at >= %(start)s AND ordered_at < %(end)s;
"""


@dag(
    dag_id="71_02_01_execution_date",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.2", "reference", "core", "intermediate", "success"],
    doc_md=__doc__,
    params={"source": "public.orders", "target": "core.orders_by_day", "staging": "staging.orders_by_day"},
    user_defined_macros={
        "ident": _ident,
        "partition_table": _partition_table,
        "run_interval_of": interval_for_run,
    },
)
def _71_02_01_execution_date():
    @task
    def prepare_partition(params: dict | None = None) -> list[str]:
        """Create the partitioned parent and the partition(s) the data interval fills (policy: raise)."""
        from cdclab.db import WAREHOUSE, transaction
        from cdclab.ddl import ensure as ensure_ddl
        from cdclab.intervals import from_context, partitions_for

        p = params or {}
        window = from_context(get_current_context())
        parts = partitions_for(window, grain="day", policy="raise")
        with transaction(WAREHOUSE) as cur:
            ensure_ddl(
                cur,
                p["target"],
                partitioning.create_parent_sql(p["target"], COLUMNS, "ordered_at", ["id", "ordered_at"]),
            )
            for part in parts:
                ensure_ddl(cur, p["target"], partitioning.create_partition_sql(p["target"], part))
        return [partitioning.partition_table(p["target"], part) for part in parts]

    @task
    def extract_interval(params: dict | None = None) -> int:
        """Copy the interval's source rows into staging, bounds from the task context (Python usage)."""
        from psycopg2 import sql
        from psycopg2.extras import execute_values

        from cdclab.db import SHOP, WAREHOUSE, ident, transaction
        from cdclab.intervals import from_context

        p = params or {}
        window = from_context(get_current_context())
        where, bounds = window.sql_predicate("ordered_at")
        cols = sql.SQL(", ").join(map(sql.Identifier, SOURCE_COLUMNS))
        with transaction(SHOP) as src:
            src.execute(
                sql.SQL("SELECT {cols} FROM {src} WHERE {where} ORDER BY id").format(
                    cols=cols, src=ident(p["source"]), where=where
                ),
                bounds,
            )
            rows = src.fetchall()
        with transaction(WAREHOUSE) as cur:
            cur.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {stg} (LIKE {tgt})").format(
                    stg=ident(p["staging"]), tgt=ident(p["target"])
                )
            )
            cur.execute(
                sql.SQL("DELETE FROM {stg} WHERE {where}").format(stg=ident(p["staging"]), where=where),
                bounds,
            )
            execute_values(
                cur,
                sql.SQL("INSERT INTO {stg} ({cols}) VALUES %s")
                .format(stg=ident(p["staging"]), cols=cols)
                .as_string(cur),
                rows,
            )
        return len(rows)

    replace = SQLExecuteQueryOperator(
        task_id="replace_partition",
        conn_id="warehouse",
        sql=REPLACE_PARTITION_SQL,
        split_statements=True,  # psycopg 3 binds server-side: one statement per execute, one transaction
        parameters={
            "start": "{{ run_interval_of(dag, dag_run).start }}",
            "end": "{{ run_interval_of(dag, dag_run).end }}",
            "run_id": "{{ run_id }}",
        },
    )

    prepare_partition() >> extract_interval() >> replace


_71_02_01_execution_date()
