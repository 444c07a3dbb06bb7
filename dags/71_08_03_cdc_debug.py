"""
# 71.8.3 CDC debugging — follow one row from the WAL to the warehouse, check positions, read, replay

A CDC pipeline (Debezium -> Kafka -> ``cdclab.cdc.pipeline.replicate`` -> warehouse) hides its state in
three places: the topic, the stored offsets and the target. Each run of this DAG first replicates
(the pipeline under investigation), then looks at all three and writes what it saw into a findings table.

**Event tracing.** ``trace`` reads the table's topic ``shop.public.<table>`` from the beginning without
moving any offset (``cdclab.cdc.inspect.read_topic``), picks the records of one key (``trace_key``) and
lists them in order (partition, offset, op, version, LSN, transaction), then compares the last event
with the target row: ``match`` / ``deleted`` (last event a delete and the row is gone) / ``mismatch``.

**Offset verification.** ``offsets_before`` and ``offsets_after`` compare the group's stored next offsets
(``state.kafka_offsets``, written in the same transaction as the rows) with the topic's end offsets
(``cdclab.cdc.offsets.report``): the lag before is the records written since the last run, the lag
after must be 0; an offset beyond the end or below retention is reported as such.

**Message inspection.** ``inspect`` decodes every record and counts creates, updates, deletes,
snapshot reads, tombstones and malformed records, and lists the group's dead letters
(``dlq.kafka_records``) with their reason and the first bytes of the value.

**Replay testing.** ``replay`` re-applies the offsets ``[replay_from_offset, stored next offset)`` into a
scratch target (``<target>__replay``, created fresh) with the same merge, and compares every key the
range touched with the real target: a replay must reproduce it (``ReplayMismatchError`` otherwise).

Observe: ``SELECT check_name, subject, verdict, detail FROM state.findings_71_08_03 ORDER BY id``;
``cdclab offsets show --group <group>``; ``SELECT * FROM dlq.kafka_records WHERE consumer_group = '<group>'``;
the topic in any Kafka client.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, from_params, lesson_dag

DAG_ID = "71_08_03_cdc_debug"


def _debug_run(params: dict[str, Any], dag_run: Any) -> Any:
    from cdclab.lessons.cdc_debug import CdcDebugRun

    return CdcDebugRun(
        params["source_table"],
        params["consumer_group"],
        params["target_schema"],
        params["target_prefix"],
        params["findings_table"],
        params["kafka_conn_id"],
        DAG_ID,
        dag_run.run_id,
    )


PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "consumer_group": Param("cdclab-71_08_03", type="string"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("dbg_", type="string"),
    "trace_key": Param(1, type="integer"),
    "replay_from_offset": Param(0, type="integer", minimum=0),
    "findings_table": Param("state.findings_71_08_03", type="string"),
    "kafka_conn_id": Param("kafka_default", type="string"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.8", "debugging", "reference", "advanced", "success"]
)
def cdc_debug() -> None:
    @task
    def offsets_before(params: dict[str, Any], dag_run: Any = None) -> int:
        from cdclab.lessons import cdc_debug as lesson

        return lesson.check_offsets(_debug_run(params, dag_run), "offsets_before")

    @task
    def replicate(lag: int, params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.cdc.pipeline import replicate as run

        return run(
            [params["source_table"]],
            group=params["consumer_group"],
            **from_params(params, "target_schema", "target_prefix", "kafka_conn_id"),
            who=f"{DAG_ID}/{dag_run.run_id}",
            max_seconds=60,
        )

    @task
    def trace(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> str:
        from cdclab.lessons import cdc_debug as lesson

        return lesson.trace(_debug_run(params, dag_run), params["trace_key"])

    @task
    def offsets_after(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> int:
        from cdclab.lessons import cdc_debug as lesson

        return lesson.check_offsets(_debug_run(params, dag_run), "offsets_after")

    @task
    def inspect(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab.lessons import cdc_debug as lesson

        return lesson.inspect(_debug_run(params, dag_run))

    @task
    def replay(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import cdc_debug as lesson

        lesson.replay(_debug_run(params, dag_run), params["replay_from_offset"])

    done = replicate(offsets_before())
    trace(done)
    offsets_after(done)
    inspect(done)
    replay(done)


cdc_debug()
