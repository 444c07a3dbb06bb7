"""
# 71.3.3 Merge/Upsert Patterns — MERGE vs INSERT ... ON CONFLICT, conflicts resolved by LSN

**MERGE statement.** Each batch of Debezium changes is reduced to the latest change per key, written
with its log position (LSN) into a staging table (`<target>__merge__stage`, kept until the next
batch) and applied with one Postgres 15 `MERGE`: `WHEN MATCHED AND t._source_position >=
s._source_position THEN DO NOTHING`, `WHEN MATCHED AND op = 'd' THEN DELETE`, `WHEN MATCHED THEN
UPDATE`, `WHEN NOT MATCHED THEN INSERT` (`cdclab.cdc.merge_variants.merge_statement`).

**Upsert logic.** The same batch, in the same transaction, goes through
`INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE t._source_position < EXCLUDED._source_position`
(`cdclab.cdc.merge.apply_changes`) into `<target>__upsert`. The `compare` task then asserts that
both targets hold exactly the same rows; the `variants` param picks which ones run.

**Conflict resolution.** The winner is the change with the higher source position, never the one
that arrived last: a replay from offset 0 (`cdclab offsets reset`, or
`UPDATE state.kafka_offsets SET next_offset = 0`), a batch handed over in reverse order
(`delivery = "reversed"`) or an older batch applied after a newer one all leave the targets as they
are. Rows counted as `*_stale` in the task's return value were older than what the target holds.

**Delete handling.** A delete removes the row and writes its key and position into the delete
ledger `<target>__deleted`, so a late or replayed *older* insert cannot resurrect it, while a *newer*
re-insert of the same key passes the ledger and brings the row back.

**Observe it in the lab.** Trigger the DAG (Airflow UI, DAG `71_03_03_merge_upsert`) and compare
`warehouse.core.customers__merge` with `warehouse.core.customers__upsert` and `shop.public.customers`;
look at the last staged batch in `core.customers__merge__stage` and at the ledgers
`core.customers__merge__deleted` / `core.customers__upsert__deleted`. The `apply` task's XCom shows
per-variant counts and the microseconds each variant spent (`merge_us`, `upsert_us`); offsets are in
`state.kafka_offsets` under the group `71_03_03_merge_upsert.merge+upsert`.
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import from_params, lesson_dag

DEFAULT_TABLES = ["public.customers", "public.products", "public.orders"]

PARAMS = {
    "tables": Param(DEFAULT_TABLES, type="array", description="source tables (schema.table)"),
    "consumer_group": Param(
        "71_03_03_merge_upsert", type="string", description="base group; the variant set is appended"
    ),
    "topic_prefix": Param("shop", type="string"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("", type="string"),
    "variants": Param(
        ["merge", "upsert"],
        type="array",
        items={"enum": ["merge", "upsert"]},
        description="which variants apply the batches",
    ),
    "delivery": Param(
        "log",
        enum=["log", "reversed"],
        description="'reversed' hands every batch over in reverse arrival order",
    ),
    "batch_size": Param(500, type="integer", minimum=1),
}


@lesson_dag(
    schedule="*/5 * * * *", tags=["71.3", "merge", "reference", "patterns", "intermediate", "success"]
)
def merge_upsert():
    @task
    def apply() -> dict:
        from cdclab.cdc.merge_variants import replicate_variants

        ctx = get_current_context()
        p = ctx["params"]
        summary = replicate_variants(
            p["tables"],
            p["variants"],
            **from_params(
                p,
                "consumer_group",
                "topic_prefix",
                "target_schema",
                "target_prefix",
                "delivery",
                "batch_size",
            ),
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )
        return summary.as_dict()

    @task
    def compare() -> dict:
        """Both variants saw the same batches in the same transactions: their targets must be equal."""
        from cdclab.cdc.merge_variants import compare_variants

        p = get_current_context()["params"]
        compared = compare_variants(
            p["tables"],
            p["variants"],
            **from_params(p, "topic_prefix", "target_schema", "target_prefix"),
        )
        return {"compared": compared}

    apply() >> compare()


merge_upsert()
