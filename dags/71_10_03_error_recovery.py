"""
# 71.10.3 Error recovery — retry, dead-letter, fill the gaps, validate

An hourly interval load of a source table (``id, event_time, amount``) into a target
(``cdclab.ops.recovery``). Every interval's outcome is written to a ledger, so nothing that failed stays
failed unnoticed.

**Failure handling.** Transient errors (``TransientSourceError``, dropped connections) are retried in the
task with exponential backoff (`retry_attempts`, `retry_base_delay`); a row that can never load (amount
NULL, not a number, negative) is a poison row: it goes to ``dlq.rejected_rows`` with its reason and the
rest of the interval loads. An interval that still fails after every retry is marked ``failed`` in
``state.interval_ledger``; later intervals still run, then the task fails (``IntervalsFailedError``) so
the run shows red.

**Reprocessing strategies.** An interval load replaces the interval in the target (delete + insert in
one transaction): re-running any interval, manually (clear the task) or by gap filling, is idempotent.

**Gap filling.** Each run first re-runs the failed intervals and the missing ones (runs that never
happened) since the pipeline's first interval, oldest first, then its own.

**Validation.** After loading, each interval is checked: source rows == target rows + dead letters and
the checksum of the valid source rows == the target's; results in ``state.validation_results``; a
mismatch fails the run (``ValidationError``).

Inject faults from the trigger form: `transient_failures` ``{"<interval start ISO>": n}`` fails the first
n attempts of that interval; `hard_failures` ``["<interval start ISO>"]`` fails every attempt.

Set-up: with the default params the DAG's ``setup`` task first creates the source
``public.events_71_10_03`` in ``shop`` if needed and writes four events into the run's interval (ids
derived from it, idempotent; ``cdclab.lessons.demos.build_recovery_source``), one of them a poison row
(amount ``'n/a'``): every run loads three rows into ``core.events_71_10_03`` and dead-letters one into
``dlq.rejected_rows``. With another ``source_table`` it does nothing.

Observe: ``SELECT * FROM state.interval_ledger WHERE pipeline = '71_10_03' ORDER BY interval_start``,
``dlq.rejected_rows``, ``state.validation_results``; the target ``core.events_71_10_03``; the `load`
task log shows every attempt and backoff.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, demo_setup, lesson_dag

DAG_ID = "71_10_03_error_recovery"
DEMO = {"source_table": "public.events_71_10_03"}

PARAMS = {
    "source_table": Param(DEMO["source_table"], type="string"),
    "target_table": Param("core.events_71_10_03", type="string"),
    "pipeline": Param("71_10_03", type="string"),
    "retry_attempts": Param(3, type="integer", minimum=1),
    "retry_base_delay": Param(0.2, type="number", minimum=0),
    "transient_failures": Param({}, type="object"),
    "hard_failures": Param([], type="array"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.10", "best-practice", "reference", "intermediate", "success"],
)
def error_recovery() -> None:
    @demo_setup(DEMO)
    def setup(params: dict[str, Any], dag_run: Any = None) -> str:
        """Default params: the demo source rows of this interval (one poison row). Other tables: nothing."""
        from airflow.sdk import get_current_context

        from cdclab.lessons import operations
        from cdclab.time.intervals import run_interval

        start = run_interval(get_current_context()).start
        operations.build_recovery_demo(DEMO["source_table"], start)
        return f"demo: 4 source events in the interval starting {start.isoformat()}, one poison row"

    @task
    def load(
        params: dict[str, Any],
        dag_run: Any = None,
    ) -> list[dict[str, Any]]:
        from dataclasses import asdict

        from airflow.sdk import get_current_context

        from cdclab.lessons import operations
        from cdclab.ops import recovery
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        results = operations.load_with_recovery(
            recovery.Interval(iv.start, iv.end),
            pipeline=params["pipeline"],
            source=params["source_table"],
            target=params["target_table"],
            run_id=dag_run.run_id,
            fault=operations.injected_faults(params["transient_failures"], params["hard_failures"]),
            attempts=params["retry_attempts"],
            base_delay=params["retry_base_delay"],
        )
        for r in results:
            print(r)
        failed = [r.start for r in results if r.status == "failed"]
        if failed:
            raise recovery.IntervalsFailedError(
                f"intervals {failed} failed after {params['retry_attempts']} attempts; they are 'failed' in "
                "state.interval_ledger and the next run re-runs them (or clear this task)"
            )
        return [asdict(r) for r in results]

    @task
    def validate(loaded: list[dict[str, Any]], params: dict[str, Any]) -> int:
        from cdclab.lessons import operations
        from cdclab.ops import recovery

        bad = operations.validate_loaded(
            loaded, pipeline=params["pipeline"], source=params["source_table"], target=params["target_table"]
        )
        if bad:
            raise recovery.ValidationError(
                f"intervals {bad} differ between source and target (see state.validation_results); "
                "re-run them by clearing the load task"
            )
        return len(loaded)

    loaded = load()
    setup() >> loaded
    validate(loaded)


error_recovery()
