"""
# 71.1.2 Change data capture concepts — the same changes captured three ways

**CDC fundamentals.** Change data capture turns "what does the table look like now" into "what
happened to it": a stream of inserts, updates and deletes, each with the row image and its position.
This DAG captures the changes of one ``shop`` table three ways into one warehouse table
(``staging.cdc_changes_71_01_02``, one row per captured change with its ``style``), so they can be
compared row by row. Each style is idempotent on its own position (a rerun captures nothing twice).

**Log-based CDC.** Debezium reads Postgres' write-ahead log (publication ``cdclab_shop``, slot
``cdclab_shop``) and publishes every committed change to ``shop.public.<table>``. ``log_based`` first
*fences*: it notes ``pg_current_wal_lsn()`` and waits until Debezium's heartbeat row
(``shop.public.cdc_heartbeat``, written every 5 s) arrives with a larger LSN — then everything committed
before the fence is in Kafka. It then reads the topic from the offsets stored for its consumer group
(``cdclab.cdc.consumer``: offsets in ``state.kafka_offsets`` in the same transaction as the rows).
Sees every insert, every intermediate update and deletes (with the before-image, thanks to
``REPLICA IDENTITY FULL``); no load on the tables themselves; needs WAL access and a running connector.

**Query-based CDC.** ``query_based`` polls ``updated_at`` past a watermark (``cdclab.delta``). It only
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

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_01_02_cdc_concepts"
KEY_COLUMNS = ["id"]

CHANGES_DDL = """CREATE TABLE IF NOT EXISTS {} (
    id              bigserial PRIMARY KEY,
    style           text NOT NULL CHECK (style IN ('log', 'query', 'trigger')),
    op              text NOT NULL CHECK (op IN ('c', 'u', 'd', 'r')),
    row_id          bigint NOT NULL,
    version         integer,
    tier            text,
    row_image       jsonb NOT NULL,
    source_position text NOT NULL,
    run_id          text,
    captured_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (style, source_position)
)"""

AUDIT_FUNCTION = """CREATE OR REPLACE FUNCTION public.cdclab_audit_row() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('INSERT INTO %s (op, row_id, old_row, new_row) VALUES ($1, $2, $3, $4)', TG_ARGV[0])
    USING CASE TG_OP WHEN 'INSERT' THEN 'c' WHEN 'UPDATE' THEN 'u' ELSE 'd' END,
          CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END,
          CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE to_jsonb(OLD) END,
          CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE to_jsonb(NEW) END;
    RETURN NULL;
END $$"""


class DebeziumBehind(RuntimeError):
    """Debezium did not reach the fence LSN in time (connector paused, failed or far behind)."""


def _names(params: dict[str, Any]) -> dict[str, str]:
    source = params["source_table"]
    return {
        "source": source,
        "audit": params["audit_table"] or f"{source}_audit",
        "topic": f"{params['topic_prefix']}.{source}",
        "query_key": f"{params['state_key'] or '71_01_02/' + source}/query",
    }


def _wait_for_debezium(bootstrap: str, fence_lsn: int, timeout: float, heartbeat_topic: str) -> int:
    """Block until a heartbeat change with ``source.lsn >= fence_lsn`` is in Kafka; returns its LSN."""
    import json
    import time

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cdclab-fence",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    deadline = time.monotonic() + timeout
    try:
        tp = TopicPartition(heartbeat_topic, 0)
        _, high = consumer.get_watermark_offsets(tp, timeout=10)
        consumer.assign([TopicPartition(heartbeat_topic, 0, max(high - 1, 0))])
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() is not None or msg.value() is None:
                continue
            lsn = json.loads(msg.value()).get("source", {}).get("lsn")
            if isinstance(lsn, int) and lsn >= fence_lsn:
                return lsn
    finally:
        consumer.close()
    raise DebeziumBehind(
        f"no Debezium heartbeat at or past LSN {fence_lsn} within {timeout:.0f} s on {heartbeat_topic}: is the "
        "connector RUNNING (curl localhost:8083/connectors/shop-postgres-source/status)?"
    )


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.1", "cdc", "reference", "core", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source_table": Param("public.customers", type="string"),
        "changes_table": Param("staging.cdc_changes_71_01_02", type="string"),
        "audit_table": Param("", type="string", description="default <source_table>_audit (in shop)"),
        "consumer_group": Param("cdclab-71_01_02", type="string"),
        "topic_prefix": Param("shop", type="string"),
        "state_key": Param("", type="string", description="watermark key prefix; default 71_01_02/<source>"),
        "fence_timeout_seconds": Param(60, type="integer", minimum=1),
    },
)
def cdc_concepts() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from psycopg2 import sql

        from cdclab import state
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        n = _names(params)
        wh = connect(WAREHOUSE)
        try:
            state.ensure_schema(wh)
            with wh, wh.cursor() as cur:
                cur.execute(sql.SQL(CHANGES_DDL).format(ident(params["changes_table"])))
        finally:
            wh.close()
        shop = connect(SHOP)
        try:
            with shop, shop.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('cdclab.71_01_02.audit'))")
                cur.execute(AUDIT_FUNCTION)
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (audit_id bigserial PRIMARY KEY, op text NOT NULL, "
                        "row_id bigint NOT NULL, old_row jsonb, new_row jsonb, "
                        "txid bigint NOT NULL DEFAULT txid_current(), changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                    ).format(ident(n["audit"]))
                )
                cur.execute(
                    sql.SQL(
                        "CREATE OR REPLACE TRIGGER cdclab_audit AFTER INSERT OR UPDATE OR DELETE ON {} "
                        "FOR EACH ROW EXECUTE FUNCTION public.cdclab_audit_row({})"
                    ).format(ident(n["source"]), sql.Literal(n["audit"]))
                )
        finally:
            shop.close()

    @task
    def log_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from psycopg2 import sql
        from psycopg2.extras import Json

        from cdclab.cdc import events
        from cdclab.cdc.consumer import consume_into_postgres
        from cdclab.cdc.pipeline import kafka_bootstrap
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        n = _names(params)
        bootstrap = kafka_bootstrap("kafka_default")
        shop = connect(SHOP)
        try:
            with shop.cursor() as cur:
                cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
                fence = int(cur.fetchone()[0])
        finally:
            shop.close()
        reached = _wait_for_debezium(
            bootstrap,
            fence,
            params["fence_timeout_seconds"],
            f"{params['topic_prefix']}.public.cdc_heartbeat",
        )
        insert = sql.SQL(
            "INSERT INTO {} (style, op, row_id, version, tier, row_image, source_position, run_id) "
            "VALUES ('log', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (style, source_position) DO NOTHING"
        ).format(ident(params["changes_table"]))

        def handler(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
            rejects = []
            for msg in batch:
                try:
                    change = events.parse_debezium(msg.key(), msg.value(), msg.topic())
                except events.MalformedEvent as exc:
                    rejects.append((msg, str(exc)))
                    continue
                if isinstance(change, events.Skipped):
                    continue
                row = change.row
                position = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
                cur.execute(
                    insert,
                    (
                        change.op,
                        row["id"],
                        row.get("version"),
                        row.get("tier"),
                        Json(row),
                        position,
                        dag_run.run_id,
                    ),
                )
            return rejects

        result = consume_into_postgres(
            bootstrap=bootstrap,
            topics=[n["topic"]],
            group=params["consumer_group"],
            connect=lambda: connect(WAREHOUSE),
            handler=handler,
            who=f"{DAG_ID}/{dag_run.run_id}",
        )
        print(
            f"log-based: fence LSN {fence}, Debezium at {reached}; {result.records} records from "
            f"{n['topic']}, {result.dead_letters} dead letters"
        )
        return {"records": result.records, "dead_letters": result.dead_letters}

    @task
    def query_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from psycopg2 import sql
        from psycopg2.extras import Json

        from cdclab import delta, state
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        n = _names(params)
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            store = state.TableWatermarkStore(wh)
            old = store.read(n["query_key"], "timestamptz")
            with shop.cursor() as cur:
                cur.execute("SELECT now()")
                upper = cur.fetchone()[0]
            oldest_open = delta.oldest_open_transaction_start(shop, n["source"])
            upper = min(upper, oldest_open) if oldest_open else upper
            result = delta.read_timestamp_delta(
                shop, n["source"], cursor_column="updated_at", key_columns=KEY_COLUMNS, since=old, until=upper
            )
            shop.rollback()
            captured = 0
            with wh, wh.cursor() as cur:
                for row in result.rows:
                    # a poll cannot tell an insert from an update; version 1 means "never updated"
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (style, op, row_id, version, tier, row_image, source_position, run_id) "
                            "VALUES ('query', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (style, source_position) DO NOTHING"
                        ).format(ident(params["changes_table"])),
                        (
                            "c" if row["version"] == 1 else "u",
                            row["id"],
                            row["version"],
                            row["tier"],
                            Json({k: str(v) if v is not None else None for k, v in row.items()}),
                            f"{row['id']}:{row['version']}",
                            dag_run.run_id,
                        ),
                    )
                    captured += cur.rowcount
                new = delta.next_watermark(old, result)
                if new is not None and new != old:
                    store.advance(
                        n["query_key"],
                        old,
                        new,
                        value_type="timestamptz",
                        dag_id=DAG_ID,
                        run_id=dag_run.run_id,
                    )
        finally:
            shop.close()
            wh.close()
        print(f"query-based: polled {len(result.rows)} rows since {old}, {captured} new changes")
        return {"polled": len(result.rows), "captured": captured}

    @task
    def trigger_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from psycopg2 import sql
        from psycopg2.extras import Json

        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        n = _names(params)
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with shop.cursor() as cur:
                cur.execute(
                    sql.SQL("SELECT audit_id, op, row_id, old_row, new_row FROM {} ORDER BY audit_id").format(
                        ident(n["audit"])
                    )
                )
                audit = cur.fetchall()
            shop.rollback()
            with wh, wh.cursor() as cur:
                for audit_id, op, row_id, old_row, new_row in audit:
                    image = new_row if new_row is not None else old_row
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (style, op, row_id, version, tier, row_image, source_position, run_id) "
                            "VALUES ('trigger', %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (style, source_position) DO NOTHING"
                        ).format(ident(params["changes_table"])),
                        (
                            op,
                            row_id,
                            image.get("version"),
                            image.get("tier"),
                            Json(image),
                            f"{n['audit']}/{audit_id}",
                            dag_run.run_id,
                        ),
                    )
            # only after the warehouse committed: the audit table is a queue
            if audit:
                with shop, shop.cursor() as cur:
                    cur.execute(
                        sql.SQL("DELETE FROM {} WHERE audit_id = ANY(%s)").format(ident(n["audit"])),
                        ([a[0] for a in audit],),
                    )
        finally:
            shop.close()
            wh.close()
        print(f"trigger-based: {len(audit)} audit rows moved from {n['audit']}")
        return {"captured": len(audit)}

    prepared = prepare()
    prepared >> [log_based(), query_based(), trigger_based()]


cdc_concepts()
