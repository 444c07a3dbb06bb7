"""
# 71.1.1 Incremental vs full load — the same table loaded both ways, side by side

Every run loads ``shop.public.customers`` twice into the warehouse and measures both:

**Full load pattern.** ``full_load`` reads every source row and replaces the target in one
transaction (``TRUNCATE`` + ``INSERT``, readers see the old or the new table, never half). Simple,
self-healing (hard deletes and any past mistake disappear on the next run), no state to keep.

**Incremental benefits.** ``incremental_load`` reads only rows with ``updated_at`` at or after the
stored high watermark (``state.watermarks``), upserts them guarded by ``version`` and advances the
watermark in the same warehouse transaction. Rows read and written grow with the *changes*, not with
the table: on a quiet hour the full load still reads every row, the incremental load reads about one
(the row at the watermark itself — the lower bound is closed so equal timestamps are never missed).

**When to use each.** Full: small or slowly changing tables, sources without a reliable change column,
targets that must mirror hard deletes, first loads and repairs. Incremental: large tables with a
trustworthy ``updated_at``/``version``, frequent schedules, sources that must not be scanned fully.
CDC: hard deletes and every intermediate change must arrive, without scanning the table. The
``when_to_use`` task shows it rather than says it: on a private (temp) 20-row copy in ``shop`` it loads
the same baseline three ways (full reload, ``updated_at > watermark``, trigger-captured change events),
then applies one interval of changes — an insert, an update, a hard delete, a change reverted within the
interval (tier ``gold`` and back), an update that forgets ``updated_at`` — and records per strategy what
it caught, missed and read. Every run records the same matrix: full catches all but the reverted state
and reads all 20 rows; incremental reads 3 rows and misses the hard delete, the reverted state and the
silent update; CDC reads 6 change events and catches all five. The decision table is derived from that
matrix (e.g. "target must mirror hard deletes" -> full, cdc; "read only the changes" -> incremental, cdc).

**Trade-offs (measured).** Each run appends one row per strategy to ``state.run_metrics``
(rows read, rows written, duration in ms). Measured on the lab's test (40 rows, then 2 updates and
1 insert, then a quiet hour): full read/wrote 40/40, 41/41, 41/41; incremental read/wrote 40/40, 4/3,
1/0. Durations were 16-27 ms (full) against 20-36 ms (incremental): at this size the incremental load
is *not* faster — its fixed cost (reading and advancing the watermark, an extra round trip) outweighs
40 rows. Rows read by the full load grow with the table, by the incremental load with the changes, so
the crossover comes quickly as the table grows; pick by volume, not by habit. The price of
incremental: state to keep and recover (see ``71_01_03_watermarks``), hard deletes are invisible to an
``updated_at`` query (the incremental target keeps a row the source deleted — the test shows it; CDC or
soft deletes fix that, see ``71_01_02_cdc_concepts``), and a wrong watermark silently skips data.

Observe: ``SELECT strategy, rows_read, rows_written, duration_ms FROM state.run_metrics WHERE pipeline
LIKE '71_01_01/%' ORDER BY id``; the targets ``core.customers_71_01_01_full`` and
``core.customers_71_01_01_incremental``; the ``compare`` task log prints the side-by-side numbers.
When to use each: ``SELECT strategy, rows_read, caught, missed, state_kept FROM core.strategies_71_01_01
WHERE run_id = '<run>'`` and ``SELECT need, strategies, evidence FROM core.strategies_71_01_01_decisions
WHERE run_id = '<run>'`` (the ``when_to_use`` task log prints both).

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_01_01_basics"


def _load_run(params: dict[str, Any], dag_run: Any) -> Any:
    """The metrics/watermark key (default ``71_01_01/<source>``) and this run with its data interval."""
    from airflow.sdk import get_current_context

    from cdclab.lessons.basics import LoadRun
    from cdclab.time.intervals import run_interval

    iv = run_interval(get_current_context())  # derived from the timetable if the run has none
    pipeline = params["pipeline"] or f"71_01_01/{params['source_table']}"
    return LoadRun(pipeline, DAG_ID, dag_run.run_id, iv.start, iv.end)


PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "full_target": Param("core.customers_71_01_01_full", type="string"),
    "incremental_target": Param("core.customers_71_01_01_incremental", type="string"),
    "pipeline": Param("", type="string", description="metrics/watermark key; default 71_01_01/<source>"),
    "strategies_table": Param(
        "core.strategies_71_01_01", type="string", description="when-to-use results; + _decisions"
    ),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.1", "basics", "reference", "core", "beginner", "success"]
)
def basics() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import basics as lesson

        lesson.prepare(params["source_table"], (params["full_target"], params["incremental_target"]))

    @task
    def full_load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import basics as lesson

        metrics = lesson.full_load(params["source_table"], params["full_target"], _load_run(params, dag_run))
        print(f"full load: {metrics}")
        return metrics

    @task
    def incremental_load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import basics as lesson

        metrics, old, skipped = lesson.incremental_load(
            params["source_table"], params["incremental_target"], _load_run(params, dag_run)
        )
        print(f"incremental load from watermark {old}: {metrics}; skipped (already loaded) {skipped}")
        return metrics

    @task
    def compare(full: dict[str, Any], incremental: dict[str, Any]) -> dict[str, Any]:
        for name, m in (("full", full), ("incremental", incremental)):
            print(
                f"{name:<12} read {m['rows_read']:>8} written {m['rows_written']:>8} "
                f"{m['duration_ms']:>10.1f} ms"
            )
        ratio = incremental["rows_read"] / full["rows_read"] if full["rows_read"] else 0.0
        print(f"the incremental load read {ratio:.1%} of what the full load read")
        return {"full": full, "incremental": incremental}

    @task
    def when_to_use(params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import when_to_use as lesson

        outcomes = lesson.run_strategies()
        for o in outcomes:
            print(f"{o.strategy:<12} read {o.rows_read:>3}  caught {list(o.caught)}  missed {list(o.missed)}")
        for need, strategies, evidence in lesson.record(params["strategies_table"], dag_run.run_id, outcomes):
            print(f"{need:<52} -> {strategies} ({evidence})")

    prepared = prepare()
    full, incremental = full_load(), incremental_load()
    prepared >> [full, incremental]
    compare(full, incremental)
    when_to_use()


basics()
