"""
# 71.8.4 Duplicate detection — find duplicated rows, trace them to the load that wrote them, fix, prevent

The classic cause: a load that *appends* (plain ``INSERT``) into a table without a key, and a retry or a
cleared task that runs it again. Nothing fails; counts just drift upwards. The load under investigation
tags every row with ``_load_run_id`` and ``_loaded_at`` (``cdclab.diagnostics.append_rows``); this DAG
investigates the target, repairs it and closes the door.

**Finding duplicates.** ``find`` lists every key with more than one row and hashes each row over its
data columns (``cdclab.delta.row_hash``; load metadata excluded). Same key + same hash is an *exact*
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
upsert (``INSERT ... ON CONFLICT``, ``cdclab.upsert``) to be idempotent. It then proves no key has two
rows (``DuplicatesRemainError`` otherwise).

Set-up: with the default params the DAG's ``setup`` task first rebuilds the demo target
``core.customers_71_08_04`` as the broken load left it (``cdclab.demos.build_duplicates``, idempotent):
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

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_08_04_duplicate_detection"
DEMO = {"target_table": "core.customers_71_08_04"}


def _finding(cur: Any, params: dict[str, Any], run_id: str, **kw: Any) -> None:
    from cdclab.diagnostics import record_finding

    record_finding(cur, params["findings_table"], dag_id=DAG_ID, run_id=run_id, **kw)


def _count(cur: Any, table: str) -> int:
    from psycopg2 import sql

    from cdclab.db import ident

    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table)))
    return int(cur.fetchone()[0])


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.8", "debugging", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "target_table": Param(DEMO["target_table"], type="string"),
        "key_column": Param("id", type="string"),
        "order_columns": Param(["version", "updated_at"], type="array", description="latest first"),
        "findings_table": Param("state.findings_71_08_04", type="string"),
        "add_constraint": Param(True, type="boolean"),
    },
)
def duplicate_detection() -> None:
    @task
    def setup(params: dict[str, Any]) -> bool:
        """Default params: rebuild the demo target with its duplicates. Other tables: nothing to do."""
        from cdclab import demos
        from cdclab.db import WAREHOUSE, connect

        if not demos.uses_demo_tables(params, DEMO, DEMO):
            print("custom table: setup leaves it as it is")
            return False
        wh = connect(WAREHOUSE)
        try:
            demos.build_duplicates(wh, DEMO["target_table"])
        finally:
            wh.close()
        print("demo: 9 rows, 3 keys duplicated by a retried append and an appended change")
        return True

    @task
    def find(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, transaction

        with transaction(WAREHOUSE) as cur:
            d.ensure_findings(cur, params["findings_table"])
            dups = d.duplicate_rows(
                cur, params["target_table"], params["key_column"], params["order_columns"]
            )
            by_key: dict[Any, list[d.DuplicateRow]] = {}
            for r in dups:
                by_key.setdefault(r.key, []).append(r)
            for k, rows in by_key.items():
                hashes = {r.row_hash for r in rows}
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="finding_duplicates",
                    subject=str(k),
                    verdict="exact_duplicate" if len(hashes) == 1 else "version_duplicate",
                    detail={
                        "rows": len(rows),
                        "distinct_rows": len(hashes),
                        "load_runs": [r.load_run_id for r in rows],
                    },
                )
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="summary",
                subject=params["target_table"],
                verdict="duplicates" if by_key else "ok",
                detail={
                    "rows": _count(cur, params["target_table"]),
                    "duplicated_keys": len(by_key),
                    "extra_rows": sum(len(v) - 1 for v in by_key.values()),
                },
            )
        print(f"{len(by_key)} duplicated key(s) in {params['target_table']}")
        return [{"load_run_id": r.load_run_id, "first_load": r.first_load, "exact": r.exact} for r in dups]

    @task
    def attribute(dups: list[dict[str, Any]], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.db import WAREHOUSE, transaction

        per_run: dict[str, dict[str, int]] = {}
        for r in dups:
            if r["first_load"]:
                continue
            counts = per_run.setdefault(r["load_run_id"] or "<untagged>", {"exact": 0, "changed": 0})
            counts["exact" if r["exact"] else "changed"] += 1
        with transaction(WAREHOUSE) as cur:
            for run, counts in sorted(per_run.items()):
                verdict = "rerun_append" if counts["changed"] == 0 else "append_of_changes"
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="source_analysis",
                    subject=run,
                    verdict=verdict,
                    detail=counts,
                )
        print(f"duplicates by load run: {per_run}")

    @task
    def deduplicate(params: dict[str, Any], dag_run: Any = None) -> int:
        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, transaction

        with transaction(WAREHOUSE) as cur:
            before = _count(cur, params["target_table"])
            deleted = d.deduplicate(
                cur, params["target_table"], params["key_column"], params["order_columns"]
            )
            after = _count(cur, params["target_table"])
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="deduplication",
                subject=params["target_table"],
                verdict="deduplicated" if deleted else "nothing_to_do",
                detail={"before": before, "deleted": deleted, "after": after},
            )
        return deleted

    @task
    def prevent(deleted: int, params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, transaction

        with transaction(WAREHOUSE) as cur:
            left = d.duplicate_rows(
                cur, params["target_table"], params["key_column"], params["order_columns"]
            )
            if left:
                raise d.DuplicatesRemainError(
                    f"{len(left)} rows still share a key in {params['target_table']} after deduplication; "
                    "a load is appending concurrently — pause it and rerun"
                )
            if not params["add_constraint"]:
                verdict = "skipped"
            elif d.add_unique_key(cur, params["target_table"], params["key_column"]):
                verdict = "unique_constraint_added"
            else:
                verdict = "already_present"
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="prevention",
                subject=params["target_table"],
                verdict=verdict,
                detail={"key": params["key_column"], "deleted": deleted},
            )

    found = find()
    setup() >> found
    attribute(found) >> (removed := deduplicate())
    prevent(removed)


duplicate_detection()
