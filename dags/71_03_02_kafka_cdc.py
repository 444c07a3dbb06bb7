"""
# 71.3.2 Kafka CDC Processing — topics, message processing, offsets you can see, exactly once

**CDC topics.** Debezium writes one topic per captured table, `<prefix>.<schema>.<table>`
(here `shop.public.customers`, ...), keyed by the primary key so all changes of a row land in one
partition in log order; `shop.transaction` carries BEGIN/END markers with event counts, and a
delete is followed by a *tombstone* (same key, null value) so log compaction can drop the key.

**Message processing.** `describe_topics` lists the CDC topics with their earliest/end offsets;
`process` parses each record (`cdclab.cdc.events.parse_debezium`): changes are merged by position
(LSN), tombstones/heartbeats are counted and skipped, malformed records go to
`warehouse.dlq.kafka_records` with the reason.

**Offset management.** Offsets are not Kafka's committed offsets: the next offset per
(group, topic, partition) lives in `warehouse.state.kafka_offsets`, written in the same transaction
as the merged rows, and the consumer *seeks* to it on start (`assign`, auto-commit off,
`isolation.level=read_committed` so aborted Connect transactions are never seen). To replay, set the
`replay_from` param (`earliest` or an offset) — the run first moves the group there — or run
`cdclab offsets reset --group 71_03_02_kafka_cdc --topic shop.public.customers --to earliest`.
`report_lag` records end offset, next offset and lag per partition in `state.kafka_lag`.

**One run per group, one target per group.** A run holds the consumer group's advisory lock (a second
run of the group waits), moves offsets compare-and-set (a reset made during a run is never
overwritten), and the group is bound to its targets in `state.kafka_group_targets`: triggering this DAG
with another DAG's `consumer_group` and another target is refused (also before a `replay_from` reset),
instead of advancing that DAG's offsets past changes its table never got. A record that fails to apply
is dead-lettered with the database error; a TRUNCATE in the source stops the run with the remedy.

**Exactly once.** Debezium's source side runs with `exactly.once.source.support=enabled` (records and
source offsets in one Kafka transaction); this side stores consumer offsets with the data. A replay
or a crash re-reads records, and the LSN guard makes re-applied changes no-ops: the warehouse ends
equal to the source, with no duplicate and no gap.

**Observe it in the lab.** `.venv/bin/cdclab offsets show --group 71_03_02_kafka_cdc`;
`SELECT * FROM state.kafka_lag ORDER BY measured_at DESC;` in `warehouse`; the task logs of
`process` show records/batches/dead letters/skipped tombstones.
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import from_params, lesson_dag

LAG_TABLE = "state.kafka_lag"  # this DAG's own table, created by report_lag

PARAMS = {
    "tables": Param(["public.customers", "public.products"], type="array"),
    "consumer_group": Param("71_03_02_kafka_cdc", type="string"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("kcdc_", type="string"),
    "replay_from": Param(
        None,
        type=["null", "string", "integer"],
        description="earliest | latest | an offset: move the group there before processing",
    ),
    "batch_size": Param(200, type="integer", minimum=1),
}


@lesson_dag(
    schedule="*/10 * * * *", tags=["71.3", "cdc", "kafka", "success", "reference", "patterns", "advanced"]
)
def kafka_cdc():
    @task
    def describe_topics() -> dict:
        from cdclab.cdc.offsets import end_offsets
        from cdclab.cdc.pipeline import kafka_bootstrap

        p = get_current_context()["params"]
        bootstrap = kafka_bootstrap("kafka_default")
        return {
            f"shop.{t}": {str(k): list(v) for k, v in end_offsets(bootstrap, f"shop.{t}").items()}
            for t in p["tables"]
        }

    @task
    def replay_if_asked(topics: dict) -> dict:
        from cdclab.lessons import replication

        p = get_current_context()["params"]
        if p["replay_from"] in (None, ""):
            return {}
        # refuses to move another target's group (the same check the consuming run makes)
        return replication.replay(
            p["tables"],
            topics,
            group=p["consumer_group"],
            **from_params(p, "target_schema", "target_prefix", "replay_from"),
            who="71_03_02_kafka_cdc replay_from",
        )

    @task
    def process(_moved: dict) -> dict:
        from cdclab.cdc.pipeline import replicate

        ctx = get_current_context()
        p = ctx["params"]
        return replicate(
            p["tables"],
            group=p["consumer_group"],
            **from_params(p, "target_schema", "target_prefix", "batch_size"),
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )

    @task
    def report_lag(_summary: dict) -> list[dict]:
        from cdclab.lessons import replication

        ctx = get_current_context()
        return replication.record_lag(ctx["params"]["consumer_group"], ctx["run_id"], lag_table=LAG_TABLE)

    report_lag(process(replay_if_asked(describe_topics())))


kafka_cdc()
