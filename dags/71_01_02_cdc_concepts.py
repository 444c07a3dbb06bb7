"""
# 71.1.2 Change data capture concepts — the same changes captured three ways

**CDC fundamentals.** Change data capture turns "what does the table look like now" into "what
happened to it": a stream of inserts, updates and deletes, each with the row image and its position.
This DAG captures the changes of one ``shop`` table three ways into one warehouse table
(``staging.cdc_changes_71_01_02``, one row per captured change with its ``style``), so they can be
compared row by row. Each style is idempotent on its own position (a rerun captures nothing twice).

**Log-based CDC.** Debezium reads Postgres' write-ahead log (publication ``cdclab_shop``, slot
``cdclab_shop``) and publishes every committed change to ``shop.public.<table>``. The log side first
*fences*: ``fence`` notes ``pg_current_wal_lsn()``, and ``await_heartbeat`` (the Kafka provider's
deferrable ``AwaitMessageSensor``, ``cdclab.cdc.heartbeat``) waits, without holding a worker slot, until
Debezium's heartbeat row (``shop.public.cdc_heartbeat``, written every 5 s) arrives with an LSN at or past
it — then everything committed before the fence is in Kafka. ``log_based`` then reads the topic from the
offsets stored for its consumer group (``cdclab.cdc.consumer``: offsets in ``state.kafka_offsets`` in
the same transaction as the rows; the sensor only waits, it never reads the data).
Sees every insert, every intermediate update and deletes (with the before-image, thanks to
``REPLICA IDENTITY FULL``); no load on the tables themselves; needs WAL access and a running connector.

**Query-based CDC.** ``query_based`` polls ``updated_at`` past a watermark (``cdclab.delta.detection``). It only
sees the *current* state at poll time: two updates between polls arrive as one, and a hard delete
leaves no row to find — it is simply never seen. Cheap and needs nothing but a column and an index.

**Trigger-based CDC.** ``prepare`` installs (idempotently) an ``AFTER INSERT OR UPDATE OR DELETE`` row
trigger that writes every change into an audit table in ``shop`` (``<table>_audit``). ``trigger_based``
copies the audit rows into the warehouse, commits, then deletes them from the audit table (a queue:
a crash in between re-copies, which the position makes harmless). Sees everything, like the log, but
adds a write to every source transaction and only captures changes made after it was installed.

Observe: ``SELECT style, op, row_id, version, tier FROM staging.cdc_changes_71_01_02 ORDER BY style,
id``; the topic ``shop.public.customers`` in Kafka; the audit table ``public.customers_audit`` in shop;
the consumer group's offsets in ``state.kafka_offsets``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from cdclab.cdc.heartbeat import HeartbeatSensor
from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_01_02_cdc_concepts"


def _names(params: dict[str, Any]) -> dict[str, str]:
    source = params["source_table"]
    return {
        "source": source,
        "audit": params["audit_table"] or f"{source}_audit",
        "topic": f"{params['topic_prefix']}.{source}",
        "query_key": f"{params['state_key'] or '71_01_02/' + source}/query",
    }


PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "changes_table": Param("staging.cdc_changes_71_01_02", type="string"),
    "audit_table": Param("", type="string", description="default <source_table>_audit (in shop)"),
    "consumer_group": Param("cdclab-71_01_02", type="string"),
    "topic_prefix": Param("shop", type="string"),
    "state_key": Param("", type="string", description="watermark key prefix; default 71_01_02/<source>"),
    "fence_timeout_seconds": Param(60, type="integer", minimum=1),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.1", "cdc", "reference", "core", "intermediate", "success"]
)
def cdc_concepts() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import cdc_concepts as lesson

        n = _names(params)
        lesson.prepare(params["changes_table"], n["source"], n["audit"])

    @task
    def fence() -> int:
        """The source's current WAL position: what Debezium must pass before the log is read."""
        from cdclab.lessons import cdc_concepts as lesson

        return lesson.current_lsn()

    @task
    def log_based(
        params: dict[str, Any], fence_lsn: int, reached: int, dag_run: Any = None
    ) -> dict[str, Any]:
        from cdclab.lessons import cdc_concepts as lesson

        return lesson.capture_log(
            changes_table=params["changes_table"],
            topic=_names(params)["topic"],
            group=params["consumer_group"],
            run_id=dag_run.run_id,
            who=f"{DAG_ID}/{dag_run.run_id}",
            fence=fence_lsn,
            reached=reached,
        )

    @task
    def query_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_concepts as lesson

        n = _names(params)
        return lesson.capture_query(
            changes_table=params["changes_table"],
            source=n["source"],
            state_key=n["query_key"],
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )

    @task
    def trigger_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_concepts as lesson

        return lesson.capture_trigger(
            changes_table=params["changes_table"], audit=_names(params)["audit"], run_id=dag_run.run_id
        )

    prepared = prepare()
    fenced = fence()
    heartbeat = HeartbeatSensor(
        task_id="await_heartbeat",
        fence_lsn=fenced,
        topic_prefix="{{ params.topic_prefix }}",
        timeout_param="fence_timeout_seconds",
        # A heartbeat already on the topic fires the trigger within a second of the deferral; under load
        # the executor's event for the deferring try can then arrive after the task was queued to resume,
        # and the scheduler marks the try failed ("finished with state success, but the task instance's
        # state attribute is queued"; seen once in 100 runs, CI 2026-12-01). Another try waits again.
        retries=3,
        retry_delay=timedelta(seconds=5),
    )
    prepared >> fenced
    prepared >> [log_based(fence_lsn=fenced, reached=heartbeat.output), query_based(), trigger_based()]


cdc_concepts()
