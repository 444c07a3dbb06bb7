"""
# 71.8.4 Duplicate detection — find duplicated rows, trace them to the load that wrote them, fix, prevent

The classic cause: a load that *appends* (plain ``INSERT``) into a table without a key, and a retry or a
cleared task that runs it again. Nothing fails; counts just drift upwards. The load under investigation
tags every row with ``_load_run_id`` and ``_loaded_at`` (``cdclab.ops.diagnostics.append_rows``); this DAG
investigates the target, repairs it and closes the door.

**Finding duplicates.** ``find`` lists every key with more than one row and hashes each row over its
data columns (``cdclab.delta.detection.row_hash``; load metadata excluded). Same key + same hash is an *exact*
duplicate (a rerun copied the row); same key + different hash is a *version* duplicate (a later change
was appended instead of upserted). One finding per key, one summary.

**Source analysis.** ``attribute`` charges each duplicate row (every row of a key but the first loaded)
to the load run that wrote it: ``exact`` copies point at a rerun of the same interval, ``changed`` rows
at an append-only load of changes. One finding per load run.

**Deduplication fixes.** ``deduplicate`` keeps the latest row of each key (highest ``version``, then
``updated_at``, then the latest load) and deletes the rest in one transaction; the finding records the
counts before and after.

**Prevention.** ``prevent`` adds ``UNIQUE (<key>)`` (``{"add_constraint": true}``, the default), so the
same rerun now fails loudly with a unique violation instead of duplicating; the load must become an
upsert (``INSERT ... ON CONFLICT``, ``cdclab.merge.upsert``) to be idempotent. It then proves no key has two
rows (``DuplicatesRemainError`` otherwise).

Set-up: with the default params the DAG's ``setup`` task first rebuilds the demo target
``core.customers_71_08_04`` as the broken load left it (``cdclab.lessons.demos.build_duplicates``, idempotent):
customers 1-5 appended by ``demo-load-1``, 1-3 appended again by its retry ``demo-load-1-retry``
(exact duplicates) and a changed customer 2 appended by ``demo-load-2`` (a version duplicate). Every
run then finds 3 keys, charges them to the two loads, keeps 5 rows and adds the unique key. With
another ``target_table`` it does nothing.

Observe: ``SELECT check_name, subject, verdict, detail FROM state.findings_71_08_04 ORDER BY id``;
``SELECT _load_run_id, count(*) FROM core.customers_71_08_04 GROUP BY 1``; ``\\d core.customers_71_08_04``
shows the constraint.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, demo_setup, lesson_dag

DAG_ID = "71_08_04_duplicate_detection"
DEMO = {"target_table": "core.customers_71_08_04"}


def _duplicate_run(params: dict[str, Any], dag_run: Any) -> Any:
    from cdclab.lessons.investigations import DuplicateRun

    return DuplicateRun.from_params(params, DAG_ID, dag_run.run_id)


PARAMS = {
    "target_table": Param(DEMO["target_table"], type="string"),
    "key_column": Param("id", type="string"),
    "order_columns": Param(["version", "updated_at"], type="array", description="latest first"),
    "findings_table": Param("state.findings_71_08_04", type="string"),
    "add_constraint": Param(True, type="boolean"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.8", "debugging", "reference", "intermediate", "success"]
)
def duplicate_detection() -> None:
    @demo_setup(DEMO)
    def setup(params: dict[str, Any], dag_run: Any = None) -> str:
        """Default params: rebuild the demo target with its duplicates. Other tables: nothing to do."""
        from cdclab.lessons import investigations as lesson

        lesson.build_duplicates_demo(DEMO["target_table"])
        return "demo: 9 rows, 3 keys duplicated by a retried append and an appended change"

    @task
    def find(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import investigations as lesson

        keys, dups = lesson.find_duplicates(_duplicate_run(params, dag_run))
        print(f"{keys} duplicated key(s) in {params['target_table']}")
        return dups

    @task
    def attribute(dups: list[dict[str, Any]], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import investigations as lesson

        per_run = lesson.attribute_duplicates(_duplicate_run(params, dag_run), dups)
        print(f"duplicates by load run: {per_run}")

    @task
    def deduplicate(params: dict[str, Any], dag_run: Any = None) -> int:
        from cdclab.lessons import investigations as lesson

        return lesson.deduplicate(_duplicate_run(params, dag_run))

    @task
    def prevent(deleted: int, params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import investigations as lesson

        lesson.prevent_duplicates(
            _duplicate_run(params, dag_run), deleted, add_constraint=params["add_constraint"]
        )

    found = find()
    setup() >> found
    attribute(found) >> (removed := deduplicate())
    prevent(removed)


duplicate_detection()
