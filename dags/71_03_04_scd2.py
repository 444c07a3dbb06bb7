"""
# 71.3.4 SCD Type 2 Implementation — a dimension's full history, built from Debezium change events

**Slowly changing dimensions.** `marts.dim_customers` keeps one row per *version* of each customer
instead of overwriting it. The changes come from the Debezium topic `shop.public.customers`; every
change of a *tracked* column (`tracked_columns`, by default email, full_name and tier) closes the
current version and opens a new one. A change of untracked columns only (e.g. `home_tz`, or the
trigger-maintained `updated_at`/`version`) is applied in place to the current version.

**History tracking.** A batch is written with two statements, as dlt does: *retire* (one UPDATE
closing the current versions of changed keys) then *insert* (one INSERT of the new versions,
including versions opened and closed within the same batch). Each version carries the position
(LSN) of the change that opened it (`_source_position`) and of the last change applied to it
(`_last_position`); changes at or below a key's highest position are stale, so a replay from offset
0 writes nothing.

**Effective dates.** `valid_from` is the source commit time of the opening change (Debezium
`source.ts_ms`), `valid_to` that of the closing change: the source's clock, not the loader's, so a
late or repeated load writes the same dates. Ranges are half-open, `[valid_from, valid_to)`.

**Current flag.** `is_current` is true on exactly one version of each live key (a partial unique
index enforces it). A delete closes the current version (`valid_to` set, `is_current = false`,
`_deleted = true`); a later re-insert opens a new current version. The `verify` task fails when any
key's versions overlap or leave a gap that no delete explains.

**Observe it in the lab.** Update a customer's tier in `shop` a few times, trigger the DAG, then:
`SELECT id, tier, valid_from, valid_to, is_current, _deleted FROM marts.dim_customers WHERE id = 1
ORDER BY _source_position;` in `warehouse`. "As of" queries: `... WHERE valid_from <= t AND
(valid_to IS NULL OR valid_to > t)`. The `apply` task's XCom shows opened/retired/touched/stale
counts; offsets are in `state.kafka_offsets` under the group `71_03_04_scd2`.
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import from_params, lesson_dag

DEFAULT_TABLES = ["public.customers"]
DEFAULT_TRACKED = {"public.customers": ["email", "full_name", "tier"]}

PARAMS = {
    "tables": Param(DEFAULT_TABLES, type="array", description="source tables (schema.table)"),
    "tracked_columns": Param(
        DEFAULT_TRACKED,
        type="object",
        description="per source table, the columns whose change opens a new version (absent: all non-key)",
    ),
    "consumer_group": Param("71_03_04_scd2", type="string"),
    "topic_prefix": Param("shop", type="string"),
    "target_schema": Param("marts", type="string"),
    "target_prefix": Param("dim_", type="string"),
    "batch_size": Param(500, type="integer", minimum=1),
}


@lesson_dag(schedule="*/5 * * * *", tags=["71.3", "scd2", "reference", "patterns", "advanced", "success"])
def scd2():
    @task
    def apply() -> dict:
        from cdclab.cdc.scd2 import replicate_scd2

        ctx = get_current_context()
        p = ctx["params"]
        summary = replicate_scd2(
            p["tables"],
            p["tracked_columns"],
            **from_params(
                p, "consumer_group", "topic_prefix", "target_schema", "target_prefix", "batch_size"
            ),
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )
        return summary.as_dict()

    @task
    def verify() -> dict:
        """Every key's versions chain without overlap; gaps only after a delete."""
        from cdclab.cdc.scd2 import verify_histories

        p = get_current_context()["params"]
        verified = verify_histories(
            p["tables"],
            **from_params(p, "topic_prefix", "target_schema", "target_prefix"),
        )
        return {"verified": verified}

    apply() >> verify()


scd2()
