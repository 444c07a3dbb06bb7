"""
# 71.10.5 Incremental documentation — generated from the live system, so it cannot go stale

Hand-written pipeline docs drift the day after they are written. This DAG generates the operations
documentation of every incremental pipeline from what actually exists (``cdclab.lessons.opsdocs``) and
publishes it as Markdown to MinIO, with its table of contents in ``state.docs_index``.

**Strategy documentation.** Every DAG file in the DAG folder is read with ``ast``, never imported (no DB
access, no side effects): its ``dag_id``, the schedule/timetable as written, its tags and the strategy
section of its docstring (title and first paragraph), one table row and one section per DAG.

**State schema.** Every table in the warehouse schema ``state`` with its columns and types, read from
``information_schema`` when the task runs: a new state table appears in the next generation.

**Recovery runbook.** The procedures for a lost watermark (restore from the 71_10_02 snapshot or an audited
reset), a lagging or broken consumer group (offsets report/reset, dead letters), failed or missing
intervals (ledger, gap filling, validation) and dead-lettered rows.

**Operations guide.** Where to look day to day: the health dashboard view, lab status, backups, strategy
recommendations, run metrics.

Observe: the object `lab-tests/docs/incremental-operations.md` (MinIO console, port 9001) and
``SELECT position, level, title, anchor FROM state.docs_index ORDER BY doc_uri, position``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import from_params, lesson_dag

DAG_ID = "71_10_05_documentation"
DAGS_FOLDER = str(Path(__file__).parent)  # a path computation, no I/O

PARAMS = {
    "dags_folder": Param("", type="string", description="default: the folder of this file"),
    "bucket": Param("lab-tests", type="string"),
    "prefix": Param("docs", type="string"),
    "document": Param("incremental-operations.md", type="string"),
}


@lesson_dag(schedule="@daily", tags=["71.10", "best-practice", "reference", "beginner", "success"])
def documentation() -> None:
    @task
    def collect(params: dict[str, Any]) -> list[dict[str, Any]]:
        from dataclasses import asdict

        from cdclab.lessons import opsdocs

        cards = opsdocs.read_dag_folder(Path(params["dags_folder"] or DAGS_FOLDER))
        print(f"{len(cards)} DAGs: {[c.dag_id for c in cards]}")
        return [asdict(c) for c in cards]

    @task
    def publish(cards: list[dict[str, Any]], params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import operations, opsdocs

        doc = operations.publish_docs(
            [opsdocs.DagCard(**c) for c in cards],
            **from_params(params, "bucket", "prefix", "document"),
            run_id=dag_run.run_id,
        )
        print(
            f"wrote {doc.uri}: {doc.characters} characters, {doc.headings} headings, {doc.state_tables} state tables"
        )
        return {
            "uri": doc.uri,
            "dags": len(cards),
            "state_tables": doc.state_tables,
            "headings": doc.headings,
        }

    publish(collect())


documentation()
