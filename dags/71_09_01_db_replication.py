"""
# 71.9.1 Database Replication — CDC setup, schema handling, initial load, ongoing sync

**CDC setup.** The source runs with `wal_level=logical`; Debezium's role `cdc_replicator` has
`REPLICATION` and `SELECT` only; the publication `cdclab_shop` (created by the superuser, filtered to
schema `public`) and the slot `cdclab_shop` are named explicitly in `connectors/shop-postgres-source.json`,
with heartbeats (`public.cdc_heartbeat`) so the slot advances on a quiet database. `check_connector`
fails fast when the connector or its task is not RUNNING.

**Initial load.** A table whose history is not in Kafka (new to the pipeline, or retention removed it)
is loaded by a Debezium *incremental snapshot*: `initial_snapshot` inserts an `execute-snapshot` signal
into `public.debezium_signal` once per table (remembered in `warehouse.state.replication_snapshots`);
Debezium re-reads the table in key chunks *while writes keep running* and interleaves `op=r` events with
the stream, so the hand-over has no gap and no stale overwrite. (Copying the table and streaming from the
copy's LSN would lose changes of transactions open during the copy — see `cdclab.cdc.replication`.)

**Schema handling.** `ALTER TABLE ... ADD COLUMN` in the source shows up as a new field in the events.
With `schema_policy=fail` (default) the run fails loudly (`SchemaDrift`), nothing is applied and the
offsets stay put; with `evolve` the column is added to the target with the source's type and the
batch is applied.

**Column types and key-less tables.** Every column is replicated so that `col::text` equals the
source's, or the run fails before writing with the table, column, type and remedy
(`cdclab.cdc.coltypes`; enums become `text`, domains their base type; see `docs/cdc_types.md`). A table
without a primary key is refused in `tables`; list it in `keyless_tables` to keep it as an insert-only
ledger of its change events instead (`cdclab.cdc.append`: one row per event with its LSN and Kafka
position, so a replay appends nothing twice).

**Ongoing sync.** Each run catches the targets up (`cdclab.cdc.pipeline.replicate`, offsets stored with
the data), then `compare` computes a checksum of source and target over the source's columns and
records it in `warehouse.state.replication_checks` (`equal` is true when the tables match).

**Observe it in the lab.** `SELECT * FROM state.replication_checks ORDER BY checked_at DESC;`,
`SELECT * FROM state.replication_snapshots;` (warehouse), `SELECT * FROM public.debezium_signal;` (shop),
the connector log `make logs S=connect` ("Incremental snapshot ...").
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import from_params, lesson_dag

DEFAULT_TABLES = ["public.customers", "public.products"]

PARAMS = {
    "tables": Param(DEFAULT_TABLES, type="array"),
    "consumer_group": Param("71_09_01_db_replication", type="string"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("repl_", type="string"),
    "schema_policy": Param("fail", enum=["fail", "evolve"]),
    "initial_snapshot": Param(True, type="boolean"),
    "connector": Param("shop-postgres-source", type="string"),
    "keyless_tables": Param([], type="array"),
}


@lesson_dag(
    schedule="*/15 * * * *",
    tags=["71.9", "replication", "cdc", "success", "reference", "example", "intermediate"],
)
def db_replication():
    @task
    def check_connector() -> str:
        from airflow.sdk import Connection

        from cdclab.cdc.replication import require_running

        p = get_current_context()["params"]
        return require_running(Connection.get("kafka_connect").host, p["connector"])["connector"]["state"]

    @task
    def initial_snapshot(_state: str) -> dict:
        from cdclab.lessons import replication

        ctx = get_current_context()
        p = ctx["params"]
        if not p["initial_snapshot"]:
            return {}
        return replication.request_snapshots(p["tables"], ctx["run_id"])

    @task
    def sync(_requested: dict) -> dict:
        from cdclab.cdc.pipeline import replicate

        ctx = get_current_context()
        p = ctx["params"]
        who = f"{ctx['dag'].dag_id}/{ctx['run_id']}"
        summary = (
            replicate(
                p["tables"],
                group=p["consumer_group"],
                **from_params(p, "target_schema", "target_prefix", "schema_policy"),
                who=who,
                # a new group on a topic whose history retention removed is refused, unless the
                # initial_snapshot task has requested the snapshot that re-reads those rows
                snapshotted=p["tables"] if p["initial_snapshot"] else [],
            )
            if p["tables"]
            else {}
        )
        if p["keyless_tables"]:
            from cdclab.cdc.append import replicate_append

            summary["append"] = replicate_append(
                p["keyless_tables"],
                group=p["consumer_group"],
                target_schema=p["target_schema"],
                target_prefix=p["target_prefix"],
                who=who,
            )
        return summary

    @task
    def compare(_summary: dict) -> list[dict]:
        from cdclab.lessons import replication

        ctx = get_current_context()
        p = ctx["params"]
        return replication.compare(
            p["tables"],
            target_schema=p["target_schema"],
            target_prefix=p["target_prefix"],
            run_id=ctx["run_id"],
        )

    compare(sync(initial_snapshot(check_connector())))


db_replication()
