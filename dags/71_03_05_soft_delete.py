"""
# 71.3.5 Soft Delete Processing — deleted flags, tombstones, an archive, and recovery

**Deleted flag handling.** The source deletes rows in two ways: *soft* (an UPDATE sets
`is_deleted = true` and `deleted_at`) and *hard* (a DELETE). In the warehouse both become soft
deletes: the row stays in `core.soft_<table>` with `_deleted = true` and `_deleted_at` (the source's
`deleted_at` for a soft delete, the delete's commit time for a hard one), so reports can still join
to it and "live" is simply `WHERE NOT _deleted`. A delete of a key the warehouse never saw (inserted
and deleted between two runs) still leaves a flagged row (`cdclab.cdc.merge_variants.apply_soft_deletes`).

**Tombstone records.** After each delete Debezium writes a *tombstone*: the same key with a null
value, so that log compaction can eventually drop the key from the topic. It carries no change: the
`apply` task counts tombstones (`skipped.tombstone` in its XCom) and skips them; they are neither
errors nor dead letters.

**Archive patterns.** The `archive` task moves rows deleted more than `archive_after_days` before the
end of the run's data interval (daily intervals, scheduler time, not the wall clock) into
`core.soft_<table>__archive`, in one statement, in one transaction: a row is either in the target or
in the archive, never both or neither. The archived keys are written into the delete ledger
`core.soft_<table>__deleted` with their position, so a replayed older change cannot bring them back.

**Recovery.** A row un-deleted in the source (`is_deleted = false`) or re-inserted after a hard
delete is a *newer* change: it passes the position guard and the delete ledger and the row is live
again (`_deleted = false`), whether it was flagged or already archived; the archive keeps the row as
it was when it was deleted.

**Observe it in the lab.** In `shop`: `UPDATE customers SET is_deleted = true, deleted_at = now()
WHERE id = 1; DELETE FROM payments WHERE id = 1;` — trigger the DAG and look at
`SELECT id, _deleted, _deleted_at FROM core.soft_customers WHERE _deleted` in `warehouse`, at
`core.soft_customers__archive` after a run whose interval ends `archive_after_days` later, and at the
tombstones in topic `shop.public.customers` (records with a null value).

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import data_intervals, from_params, lesson_dag

DEFAULT_TABLES = ["public.customers", "public.products"]

PARAMS = {
    "tables": Param(DEFAULT_TABLES, type="array", description="source tables (schema.table)"),
    "consumer_group": Param("71_03_05_soft_delete", type="string"),
    "topic_prefix": Param("shop", type="string"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("soft_", type="string"),
    "flag_column": Param("is_deleted", type="string", description="the source's soft-delete flag"),
    "at_column": Param("deleted_at", type="string", description="the source's soft-delete time"),
    "archive_after_days": Param(30, type="integer", minimum=0),
    "batch_size": Param(500, type="integer", minimum=1),
}


@lesson_dag(
    schedule=data_intervals("0 0 * * *"),
    tags=["71.3", "soft-delete", "reference", "patterns", "intermediate", "success"],
)
def soft_delete():
    @task
    def apply() -> dict:
        from cdclab.cdc.merge_variants import replicate_soft_deletes

        ctx = get_current_context()
        p = ctx["params"]
        summary = replicate_soft_deletes(
            p["tables"],
            **from_params(
                p,
                "flag_column",
                "at_column",
                "consumer_group",
                "topic_prefix",
                "target_schema",
                "target_prefix",
                "batch_size",
            ),
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )
        return summary.as_dict()

    @task
    def archive() -> dict:
        """Rows deleted before (interval end - archive_after_days) move to the archive, atomically."""
        from cdclab.cdc.merge_variants import archive_cutoff, archive_deleted_tables
        from cdclab.time.intervals import run_interval

        ctx = get_current_context()
        p = ctx["params"]
        cutoff = archive_cutoff(run_interval(ctx).end, p["archive_after_days"])
        moved = archive_deleted_tables(
            p["tables"],
            cutoff,
            **from_params(p, "topic_prefix", "target_schema", "target_prefix"),
        )
        return {"cutoff": cutoff.isoformat(), "archived": moved}

    apply() >> archive()


soft_delete()
