"""
# 71.5.5 Incremental testing — a self-check suite of the incremental load, run as a DAG

**Test incremental logic.** The load under test is ``cdclab.lessons.selfcheck.load_step``: a watermarked pull
(closed lower bound) upserted with a ``version`` guard, rows and watermark in one transaction. The check
``logic_reload_is_idempotent`` loads, loads again, and expects no second write.

**State simulation.** ``state_preset_watermark`` does not replay history to reach a state: it presets the
watermark with an audited ``reset`` (``state.watermark_history`` keeps the reason) and expects only the rows
after it.

**Edge cases.** ``edge_empty_interval`` (no change: nothing written, the watermark and its history stay),
``edge_equal_timestamps`` (five rows on one instant read in pages of two, then a sixth on the same instant
committed later: all six, none twice), ``edge_null_cursor`` (``raise`` refuses the load and leaves no state,
``exclude`` loads the rest).

**Integration tests.** Each check runs against its own scratch tables (``public.<scratch_prefix>_<check>``
in ``shop``, ``staging.<scratch_prefix>_<check>`` in ``warehouse``), created fresh and dropped afterwards.
``integration_end_to_end`` runs one real load step of ``source_table`` into ``target_table`` and compares
both tables in full: a missing or different row fails it; a row the target still has but the source no
longer has is a hard delete at the source, which a timestamp cursor cannot see (71.1.1), reported in the
detail, not a failure (the lab's live workload deletes customers). Each run writes one row per check to ``results_table``; ``verdict`` fails the run with
``SelfCheckFailedError`` when any check failed.

**A suite that can fail.** A test that never fails proves nothing, so the load under test can be broken on
purpose with the `defect` param (``none`` by default): ``drop_rows`` loses the last row of every read while
the watermark moves past it (a silent gap: ``logic_reload_is_idempotent``, ``state_preset_watermark``,
``edge_equal_timestamps``, ``edge_null_cursor`` and ``integration_end_to_end`` fail), ``duplicate_rows``
applies every row twice without the version guard (a redelivered or re-read row is written again:
``logic_reload_is_idempotent`` and ``edge_empty_interval`` fail), ``corrupt_values`` truncates text values
(only the full comparison, ``integration_end_to_end``, sees it: checks of counts and keys alone would pass
a corrupt load). Trigger the DAG with ``{"defect": "drop_rows"}`` (on a scratch `target_table` and
`watermark_key`, as the real load is broken too) and watch the run go red in ``verdict`` with the failed
checks' names, each with a ``passed = false`` row and its reason in `results_table`.

Observe: ``SELECT run_id, check_name, passed, detail FROM state.selfcheck_71_05_05 ORDER BY id``; the
Graph view shows one task per check; the target ``staging.customers_71_05_05``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_05_05_testing"
CHECKS = [
    "logic_reload_is_idempotent",
    "state_preset_watermark",
    "edge_empty_interval",
    "edge_equal_timestamps",
    "edge_null_cursor",
]

PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "target_table": Param("staging.customers_71_05_05", type="string"),
    "watermark_key": Param("", type="string", description="default: 71_05_05/<source>-><target>"),
    "results_table": Param("state.selfcheck_71_05_05", type="string"),
    "scratch_prefix": Param("selfcheck_71_05_05", type="string"),
    "defect": Param(
        "none",
        enum=["none", "drop_rows", "duplicate_rows", "corrupt_values"],
        description="break the load under test on purpose, to see the checks catch it",
    ),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.5", "testing", "reference", "intermediate", "success"]
)
def testing() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import incremental_testing as lesson

        lesson.prepare(params["source_table"], params["target_table"], params["results_table"])

    def make_check(check: str) -> Any:
        @task(task_id=check)
        def run_one(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
            from cdclab.lessons import incremental_testing as lesson

            passed, detail = lesson.run_check(
                check, params["scratch_prefix"], params["defect"], params["results_table"], dag_run.run_id
            )
            print(f"{check}: {'passed' if passed else 'FAILED'} - {detail}")
            return {"check": check, "passed": passed}

        return run_one()

    @task
    def integration_end_to_end(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import incremental_testing as lesson

        src, tgt = params["source_table"], params["target_table"]
        passed, detail, loaded = lesson.end_to_end(
            src,
            tgt,
            lesson.watermark_key(params["watermark_key"], src, tgt),
            params["results_table"],
            defect=params["defect"],
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(f"integration_end_to_end: {detail}")
        return {"check": "integration_end_to_end", "passed": passed, **loaded}

    @task
    def verdict(outcomes: list[dict[str, Any]], params: dict[str, Any]) -> int:
        from cdclab.lessons.selfcheck import SelfCheckFailedError

        failed = [o["check"] for o in outcomes if not o["passed"]]
        if failed:
            raise SelfCheckFailedError(
                f"self-checks failed: {failed}; read their detail in {params['results_table']} for this run"
            )
        return len(outcomes)

    prepared = prepare()
    outcomes = []
    for check in CHECKS:
        out = make_check(check)
        prepared >> out
        outcomes.append(out)
    e2e = integration_end_to_end()
    prepared >> e2e
    verdict([*outcomes, e2e])


testing()
