"""
# 71.8.1 Data gap investigation — find the missing rows, say why they are missing, backfill exactly them

A pipeline that skips an interval does not fail: the target just lacks rows. This DAG investigates a
target against its source and leaves the whole investigation in a findings table.

**Gap detection.** ``detect`` compares the keys of the source (``shop``) with the keys of the target
(``warehouse``) and groups the missing keys by the grid window (``grain_minutes``) of their cursor
column: each group is a *gap* ``[start, end)`` with its keys (``cdclab.ops.diagnostics.find_gaps``).

**Root cause analysis.** ``root_cause`` explains each gap from two pieces of state: the
processed-interval ledger (``state.processed_intervals``: which windows the pipeline loaded, when, by
which run, how many rows) and the watermark history (``state.watermark_history``):
``loaded_incompletely`` — the ledger covers the window, so the rows were committed after it was
processed (late commits); ``watermark_jumped`` — a watermark move spans the window but no load read it
(a manual reset, a watermark set to ``now()``); ``interval_never_run`` — neither (a paused DAG, a run
marked success by hand, ``catchup=False`` after an outage).

**Recovery procedures.** ``repair`` backfills exactly the gap windows (an idempotent upsert of the
source rows of each window) and writes a ``backfill`` ledger entry in the same transaction, so the
ledger tells the truth afterwards.

**Prevention strategies.** ``verify`` proves no gap remains (``GapRemainsError`` otherwise) and checks
that the ledger is contiguous (no window between the first and the last one unprocessed). The
prevention that makes this DAG unnecessary: interval timetables with ``catchup=True`` (a skipped
interval is run later), a ledger written in the load's transaction, a watermark that only moves by
compare-and-set after the load (``71_01_03``) and this reconciliation scheduled after every load.

Set-up: with the default params the DAG investigates its own demo tables, and its ``setup`` task first
(re)builds the broken situation there (``cdclab.lessons.demos.build_gap``, idempotent): ``public.events_71_08_01``
in ``shop`` with five events over 2026-01-01 10:00-13:00, ``core.events_71_08_01`` and the ledger
holding only 10:00 and 12:00 — the 11:00 run never happened. Every run then finds, explains and
backfills that gap (rows 3 and 4). With other table names ``setup`` does nothing.

Observe: ``SELECT check_name, subject, verdict, detail FROM state.findings_71_08_01 ORDER BY id``;
``SELECT * FROM state.processed_intervals WHERE pipeline = '<pipeline>' ORDER BY interval_start``;
``state.watermark_history``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, demo_setup, lesson_dag

DAG_ID = "71_08_01_gap_investigation"
DEMO = {
    "source_table": "public.events_71_08_01",
    "target_table": "core.events_71_08_01",
    "pipeline": "71_08_01/events",
    "ledger_table": "state.processed_intervals",
}


def _gap_run(params: dict[str, Any], dag_run: Any) -> Any:
    from cdclab.lessons.investigations import GapRun

    return GapRun.from_params(params, DAG_ID, dag_run.run_id)


PARAMS = {
    "source_table": Param(DEMO["source_table"], type="string"),
    "target_table": Param(DEMO["target_table"], type="string"),
    "key_column": Param("id", type="string"),
    "cursor_column": Param("event_at", type="string"),
    "pipeline": Param(DEMO["pipeline"], type="string", description="ledger name of the load"),
    "watermark_key": Param("", type="string", description="watermark of the load, if it has one"),
    "grain_minutes": Param(60, type="integer", minimum=1),
    "findings_table": Param("state.findings_71_08_01", type="string"),
    "ledger_table": Param(DEMO["ledger_table"], type="string"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.8", "debugging", "reference", "intermediate", "success"]
)
def gap_investigation() -> None:
    @demo_setup(DEMO)
    def setup(params: dict[str, Any], dag_run: Any = None) -> str:
        """Default params: (re)build the demo gap in the demo tables. Other tables: nothing to do."""
        from cdclab.lessons import investigations as lesson

        lesson.build_gap_demo(
            DEMO["source_table"], DEMO["target_table"], DEMO["pipeline"], DEMO["ledger_table"]
        )
        return "demo: the 11:00 interval of 2026-01-01 was never run; rows 3 and 4 are missing"

    @task
    def detect(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import investigations as lesson

        gaps = lesson.detect_gaps(_gap_run(params, dag_run))
        print(f"{len(gaps)} gap(s): " + "; ".join(f"{g.start}..{g.end}: {g.missing_keys}" for g in gaps))
        return [g.as_dict() for g in gaps]

    @task
    def root_cause(gaps: list[dict[str, Any]], params: dict[str, Any], dag_run: Any = None) -> list[str]:
        from cdclab.lessons import investigations as lesson

        return lesson.explain_gaps(_gap_run(params, dag_run), gaps)

    @task
    def repair(
        gaps: list[dict[str, Any]], causes: list[str], params: dict[str, Any], dag_run: Any = None
    ) -> int:
        from cdclab.lessons import investigations as lesson

        return lesson.backfill_gaps(_gap_run(params, dag_run), gaps, causes)

    @task
    def verify(repaired: int, params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import investigations as lesson

        lesson.verify_no_gaps(_gap_run(params, dag_run), repaired)

    gaps = detect()
    setup() >> gaps
    causes = root_cause(gaps)
    verify(repair(gaps, causes))


gap_investigation()
