"""71.1.2 Change data capture concepts: the same changes of one ``shop`` table captured three ways
(log-, query- and trigger-based) into one warehouse table, for ``dags/71_01_02_cdc_concepts.py``.

Vocabulary:
- *changes table*: one row per captured change, ``(style, op, row_id, version, tier, row_image,
  source_position, run_id)``; ``UNIQUE (style, source_position)`` makes every style idempotent on its
  own position (a Kafka ``topic/partition/offset``, a poll's ``id:version``, an audit row's id).
- *fence*: the source's ``pg_current_wal_lsn()`` noted before the log is read (:func:`current_lsn`);
  Debezium has published everything committed before it once its heartbeat row
  (``<prefix>.public.cdc_heartbeat``) arrives with an LSN at or past it. The DAG waits for that with the
  Kafka provider's deferrable sensor (:class:`cdclab.cdc.heartbeat.HeartbeatSensor`) between the fence
  task and :func:`capture_log`.
- *audit table*: ``<source>_audit`` in ``shop``, filled by an ``AFTER`` row trigger and emptied as a
  queue by :func:`capture_trigger`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import closing
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from cdclab.cdc import events
from cdclab.cdc.consumer import consume_into_postgres
from cdclab.cdc.pipeline import kafka_bootstrap
from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, transaction
from cdclab.delta import pull
from cdclab.state import watermarks as state

log = logging.getLogger(__name__)

STYLES = ("log", "query", "trigger")

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

AUDIT_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (audit_id bigserial PRIMARY KEY, op text NOT NULL, "
    "row_id bigint NOT NULL, old_row jsonb, new_row jsonb, "
    "txid bigint NOT NULL DEFAULT txid_current(), changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
)

AUDIT_TRIGGER = (
    "CREATE OR REPLACE TRIGGER cdclab_audit AFTER INSERT OR UPDATE OR DELETE ON {} "
    "FOR EACH ROW EXECUTE FUNCTION public.cdclab_audit_row({})"
)

INSERT_CHANGE = (
    "INSERT INTO {} (style, op, row_id, version, tier, row_image, source_position, run_id) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (style, source_position) DO NOTHING"
)


def insert_change(cur: Any, changes_table: str, style: str, change: tuple[Any, ...]) -> int:
    """Insert one captured change ``(op, row_id, version, tier, row_image, position, run_id)``
    unless its ``(style, position)`` is already there; returns the rows inserted (0 or 1)."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not one of {STYLES}")
    cur.execute(sql.SQL(INSERT_CHANGE).format(ident(changes_table)), (style, *change))
    return int(cur.rowcount)


def prepare(changes_table: str, source: str, audit: str) -> None:
    """Create the changes table (warehouse) and install the audit table and trigger on ``source`` (shop),
    idempotently; the shop side runs under an advisory lock so two runs do not race on the trigger."""
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        with wh, wh.cursor() as cur:
            cur.execute(sql.SQL(CHANGES_DDL).format(ident(changes_table)))
    with transaction(SHOP) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('cdclab.71_01_02.audit'))")
        cur.execute(AUDIT_FUNCTION)
        cur.execute(sql.SQL(AUDIT_DDL).format(ident(audit)))
        cur.execute(sql.SQL(AUDIT_TRIGGER).format(ident(source), sql.Literal(audit)))


def current_lsn() -> int:
    """The source's ``pg_current_wal_lsn()`` as a number: the fence."""
    with transaction(SHOP) as cur:
        cur.execute("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        return int(cur.fetchone()[0])


def capture_log(
    *,
    changes_table: str,
    topic: str,
    group: str,
    run_id: str,
    who: str,
    fence: int | None = None,
    reached: int | None = None,
    kafka_conn_id: str = "kafka_default",
) -> dict[str, Any]:
    """Log-based: consume ``topic`` exactly once (offsets in ``state.kafka_offsets``) into the changes
    table, one row per Debezium change; malformed records are dead-lettered. Call it once Debezium has
    passed the fence (``fence``: the LSN noted before, ``reached``: the heartbeat's LSN that passed it;
    both only logged and returned): the run reads to the end offsets it sees at its start."""
    bootstrap = kafka_bootstrap(kafka_conn_id)

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
            insert_change(
                cur,
                changes_table,
                "log",
                (change.op, row["id"], row.get("version"), row.get("tier"), Json(row), position, run_id),
            )
        return rejects

    result = consume_into_postgres(
        bootstrap=bootstrap,
        topics=[topic],
        group=group,
        connect=lambda: connect(WAREHOUSE),
        handler=handler,
        who=who,
    )
    log.info(
        "log-based: fence LSN %s, Debezium at %s; %s records from %s, %s dead letters",
        fence,
        reached,
        result.records,
        topic,
        result.dead_letters,
    )
    return {
        "records": result.records,
        "dead_letters": result.dead_letters,
        "fence": fence,
        "reached": reached,
    }


def capture_query(
    *, changes_table: str, source: str, state_key: str, dag_id: str, run_id: str
) -> dict[str, Any]:
    """Query-based: poll ``updated_at`` past the watermark ``state_key`` (:func:`cdclab.delta.pull.pull`) and
    record the current image of every row found; a poll cannot tell an insert from an update, so
    version 1 is recorded as ``c`` ("never updated") and anything later as ``u``."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        p = pull.pull(shop, wh, source, state_key)
        captured = 0
        with wh, wh.cursor() as cur:
            for row in p.rows:
                image = Json({k: str(v) if v is not None else None for k, v in row.items()})
                op = "c" if row["version"] == 1 else "u"
                position = f"{row['id']}:{row['version']}"
                captured += insert_change(
                    cur,
                    changes_table,
                    "query",
                    (op, row["id"], row["version"], row["tier"], image, position, run_id),
                )
            pull.advance(wh, p, dag_id=dag_id, run_id=run_id)
    log.info("query-based: polled %s rows since %s, %s new changes", len(p.rows), p.old, captured)
    return {"polled": len(p.rows), "captured": captured}


def _audit_changes(audit: str, rows: Iterable[tuple[Any, ...]], run_id: str) -> list[tuple[Any, ...]]:
    changes = []
    for audit_id, op, row_id, old_row, new_row in rows:
        image = new_row if new_row is not None else old_row
        position = f"{audit}/{audit_id}"
        changes.append((op, row_id, image.get("version"), image.get("tier"), Json(image), position, run_id))
    return changes


def capture_trigger(*, changes_table: str, audit: str, run_id: str) -> dict[str, Any]:
    """Trigger-based: copy the audit rows into the changes table, commit, then delete them from the
    audit table (a queue: a crash in between re-copies them, which the position makes harmless)."""
    with transaction(SHOP) as cur:
        cur.execute(
            sql.SQL("SELECT audit_id, op, row_id, old_row, new_row FROM {} ORDER BY audit_id").format(
                ident(audit)
            )
        )
        rows = cur.fetchall()
    with transaction(WAREHOUSE) as cur:
        for change in _audit_changes(audit, rows, run_id):
            insert_change(cur, changes_table, "trigger", change)
    if rows:  # only after the warehouse committed: the audit table is a queue
        with transaction(SHOP) as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE audit_id = ANY(%s)").format(ident(audit)),
                ([r[0] for r in rows],),
            )
    log.info("trigger-based: %s audit rows moved from %s", len(rows), audit)
    return {"captured": len(rows)}
