"""Exactly-once effect from at-least-once delivery: idempotent writes, transactions, dedup, checkpoints.

Kafka delivers *at least once*: after a crash a consumer reads again from its last checkpoint, so some
records arrive twice; producers retry, so some events are on the topic twice. "Exactly once" is an
*effect* built from four layers, shown here side by side on the same events:

Vocabulary:
- *delivery*: one processing of one Kafka record (partition, offset) by a consumer; logged append-only
  in ``<prefix><mode>_deliveries``, so every redelivery is visible and countable. A *redelivery* is a
  second delivery of the same (partition, offset): the consumer processed it, crashed before its
  checkpoint, and read it again.
- *producer duplicate*: the same ``event_id`` at two offsets (a producer retry); not a redelivery.
- *idempotent write* (layer 1): ``<prefix><mode>_events`` is upserted by the natural key ``event_id``;
  writing the same event again changes nothing (``IS DISTINCT FROM`` guard: not even a new row version).
- *transaction pattern* (layer 2, :data:`Mode`): ``transactional`` writes the rows and the next offsets
  in ONE Postgres transaction (:func:`cdclab.cdc.consumer.consume_into_postgres`): there is no moment at
  which rows are committed and the checkpoint is not, so nothing is ever redelivered.
  ``at_least_once`` commits the rows to Postgres, then the offsets to Kafka: a crash between the two
  (the fault point of :func:`consume_at_least_once`) redelivers the whole batch.
- *deduplication* (layer 3): by ``event_id``, within a batch (first occurrence wins) and across batches
  (the upsert): producer duplicates and redeliveries both end up as one row.
- *checkpoint* (layer 4): where a consumer records how far it got: ``state.kafka_offsets`` in the
  warehouse (``transactional``) or the consumer group's committed offsets in Kafka (``at_least_once``).
- *replay*: moving the checkpoint back to the start of the topic on purpose; with idempotent writes
  a replay redelivers every record and changes no event row.

Fault injection: ``CDCLAB_FAIL_AFTER_BATCHES=N`` kills the process (SIGKILL) while it handles batch N+1:
``transactional`` before that batch's transaction commits (nothing of it is visible), ``at_least_once``
after its rows are committed and before its offsets are (the batch is redelivered on restart).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc import consumer as kc
from cdclab.common import db
from cdclab.common.db import WAREHOUSE
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.common.options import InvalidOptionError, one_of
from cdclab.common.tablenames import SchemaTables, Table
from cdclab.streams.windows import ClickEvent, parse_records

log = logging.getLogger(__name__)

Mode = Literal["transactional", "at_least_once"]
MODES: tuple[Mode, ...] = get_args(Mode)
Handler = Callable[[Any, list[Any]], list[tuple[Any, str]]]


#: what :func:`check_mode` raises: the library's closed-option error, under the name this module had for it
UnknownModeError = InvalidOptionError


def check_mode(mode: str) -> Mode:
    """``mode`` when it is one of :data:`Mode` (``transactional``: offsets in the data transaction;
    ``at_least_once``: offsets committed to Kafka after the write), else :class:`UnknownModeError`."""
    return cast(Mode, one_of("mode", mode, Mode))


@dataclass(frozen=True)
class SinkTables(SchemaTables):
    """``<schema>.<prefix><mode>_deliveries`` and ``..._events``: each mode has its own pair."""

    mode: Mode

    def __post_init__(self) -> None:
        one_of("mode", self.mode, Mode)

    def name(self, what: str) -> sql.Identifier:
        return sql.Identifier(self.schema, f"{self.prefix}{self.mode}_{what}")

    deliveries = Table()
    events = Table()


_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {deliveries} (
    id              bigserial PRIMARY KEY,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    event_id        text NOT NULL,
    new_event       boolean NOT NULL,
    run             text,
    batch_no        integer NOT NULL,
    delivered_at    timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {events} (
    event_id     text PRIMARY KEY,
    user_id      bigint NOT NULL,
    event_type   text NOT NULL,
    event_time   timestamptz NOT NULL,
    first_offset bigint NOT NULL,
    written_at   timestamptz NOT NULL DEFAULT now()
);
"""


def ensure_tables(cur: Any, tables: SinkTables) -> None:
    ensure_ddl(
        cur,
        f"{tables.schema}.sink",
        sql.SQL(_DDL).format(**tables.identifiers()),
    )


def upsert_events(cur: Any, tables: SinkTables, events: list[ClickEvent]) -> set[str]:
    """Idempotent write + dedup: one row per ``event_id``; returns the ids that were new."""
    first: dict[str, ClickEvent] = {}
    for e in events:
        first.setdefault(e.event_id, e)  # in-batch dedup: one INSERT may not touch a key twice
    if not first:
        return set()
    rows = execute_values(
        cur,
        sql.SQL("""INSERT INTO {t} AS t (event_id, user_id, event_type, event_time, first_offset) VALUES %s
                   ON CONFLICT (event_id) DO UPDATE SET user_id = EXCLUDED.user_id,
                       event_type = EXCLUDED.event_type, event_time = EXCLUDED.event_time
                   WHERE (t.user_id, t.event_type, t.event_time)
                         IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.event_type, EXCLUDED.event_time)
                   RETURNING event_id, (xmax = 0) AS inserted""")
        .format(t=tables.events)
        .as_string(cur),
        [(e.event_id, e.user_id, e.event_type, e.event_time, e.offset) for e in first.values()],
        fetch=True,
    )
    return {event_id for event_id, inserted in rows if inserted}


def batch_handler(tables: SinkTables, run: str = "") -> Handler:
    """Log every delivery, upsert the events; malformed records are returned as rejects (dead letters)."""
    counter = {"batch": 0}

    def handle(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        counter["batch"] += 1
        events, rejects = parse_records(batch, "malformed event")
        new = upsert_events(cur, tables, events)
        firsts: set[str] = set()
        rows = []
        for e in events:
            is_new = e.event_id in new and e.event_id not in firsts
            firsts.add(e.event_id)
            rows.append((e.partition, e.offset, e.event_id, is_new, run or None, counter["batch"]))
        if rows:
            execute_values(
                cur,
                sql.SQL(
                    "INSERT INTO {} (kafka_partition, kafka_offset, event_id, new_event, run, "
                    "batch_no) VALUES %s"
                )
                .format(tables.deliveries)
                .as_string(cur),
                rows,
            )
        return rejects

    return handle


def consume_at_least_once(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    connect: Callable[[], Any],
    handler: Handler,
    batch_size: int = 100,
    poll_timeout: float = 1.0,
    max_seconds: float = 300.0,
    idle_polls: int = 2,
) -> kc.ConsumeResult:
    """The classic loop: read a batch, commit its rows to Postgres, THEN commit its offsets to Kafka.

    The checkpoint is the consumer group's committed offset in Kafka. Reads from there up to the end
    offsets as of the start (a bounded run, like :func:`cdclab.cdc.consumer.consume_into_postgres`).
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    t0 = time.monotonic()
    fail_after = int(os.environ.get("CDCLAB_FAIL_AFTER_BATCHES", "0") or 0)
    result = kc.ConsumeResult()
    # the sink's client settings: a checkpoint outside the log stops the run (see below), no 1 s pause
    # whenever the local queue was full
    consumer = Consumer(kc.run_kafka_config(bootstrap, group))
    conn = connect()
    try:
        with conn, conn.cursor() as cur:
            kc.ensure_schema(cur)
        md = consumer.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return result
        parts = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10)}
        assignment, pending = [], {}
        for tp in parts:
            low, high = kc.watermarks(consumer, topic, tp.partition)
            start = committed.get(tp.partition, -1)
            kc.check_start(
                group,
                topic,
                tp.partition,
                start if start >= 0 else None,
                low,
                high,
                reset_hint=f"kafka-consumer-groups --reset-offsets --group {group} --topic {topic} --to-earliest",
            )
            result.positions[(topic, tp.partition)] = start if start >= 0 else low
            if (start if start >= 0 else low) < high:
                assignment.append(
                    TopicPartition(topic, tp.partition, start if start >= 0 else OFFSET_BEGINNING)
                )
                pending[tp.partition] = high
        if not assignment:
            return result
        consumer.assign(assignment)
        idle = 0
        while pending and time.monotonic() - t0 < max_seconds:
            batch: list[Any] = []
            for msg in consumer.consume(num_messages=batch_size, timeout=poll_timeout):
                err = msg.error()
                if err is not None:
                    if err.code() == -191:  # _PARTITION_EOF
                        continue
                    if err.code() in (-140, 1):  # _AUTO_OFFSET_RESET, OFFSET_OUT_OF_RANGE
                        raise kc.OffsetOutOfRange(
                            f"{group}: {msg.topic()}[{msg.partition()}]: the next offset is no longer in "
                            f"Kafka ({err.str()}); reload the target and reset the group's offsets"
                        )
                    raise KafkaException(err)
                batch.append(msg)
            if not batch:
                idle += 1
                for pos in consumer.position([TopicPartition(topic, p) for p in list(pending)]):
                    if pos.offset >= 0 and pos.offset >= pending[pos.partition]:
                        del pending[pos.partition]
                if idle >= idle_polls:
                    break
                continue
            idle = 0
            with conn, conn.cursor() as cur:  # 1. the rows, committed to Postgres
                rejects = handler(cur, batch)
                for record, reason in rejects:
                    kc.dead_letter(cur, group, record, reason)
            if fail_after and result.batches >= fail_after:
                os.kill(os.getpid(), signal.SIGKILL)  # rows committed, offsets not: the batch comes again
            positions = dict(result.positions)
            for msg in batch:
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1
            consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False
            )  # 2. the checkpoint, committed to Kafka
            result.positions = positions
            result.records += len(batch)
            result.batches += 1
            result.dead_letters += len(rejects)
            for p, end in list(pending.items()):
                if positions.get((topic, p), 0) >= end:
                    del pending[p]
    finally:
        consumer.close()
        conn.close()
    result.seconds = time.monotonic() - t0
    return result


def _earliest(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdclab-inspect"})
    try:
        md = consumer.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return {}
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[0]
            for p in md.topics[topic].partitions
        }
    finally:
        consumer.close()


def rewind(
    mode: Mode, *, bootstrap: str, topic: str, group: str, connect: Callable[[], Any]
) -> dict[int, int]:
    """Replay: move ``group``'s checkpoint back to the earliest offsets (in Postgres or in Kafka)."""
    one_of("mode", mode, Mode)
    from confluent_kafka import Consumer, TopicPartition

    earliest = _earliest(bootstrap, topic)
    if not earliest:
        return {}
    if mode == "transactional":
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                kc.ensure_schema(cur)
                kc.reset_offsets(cur, group, topic, earliest, who="replay")
        finally:
            conn.close()
    else:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o) for p, o in earliest.items()], asynchronous=False
            )
        finally:
            consumer.close()
    return earliest


def layer_report(cur: Any, tables: SinkTables) -> dict[str, int]:
    """What each layer did, from the tables: deliveries, redeliveries, producer duplicates, event rows."""
    cur.execute(
        sql.SQL("""SELECT count(*),
                                  count(DISTINCT (kafka_partition, kafka_offset)),
                                  count(DISTINCT event_id)
                           FROM {d}""").format(d=tables.deliveries)
    )
    deliveries, offsets, event_ids = cur.fetchone()
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(tables.events))
    (rows,) = cur.fetchone()
    return {
        "deliveries": int(deliveries),
        "distinct_offsets": int(offsets),
        "redeliveries": int(deliveries - offsets),
        "producer_duplicates": int(offsets - event_ids),
        "event_rows": int(rows),
    }


def run(
    mode: str,
    *,
    bootstrap: str,
    topic: str,
    group: str,
    tables: SinkTables,
    conn_id: str = WAREHOUSE,
    application_name: str = "cdclab",
    batch_size: int = 100,
    max_seconds: float = 300.0,
    replay: bool = False,
    who: str = "",
) -> dict[str, Any]:
    """One bounded consumer run in ``mode``; returns the consumer's counts and the :func:`layer_report`.

    The sink tables, the checkpoint (``transactional``) and the report live in the database of the Airflow
    connection ``conn_id``; every connection the run opens carries ``application_name``
    (``pg_stat_activity``)."""
    checked = check_mode(mode)

    def connect() -> Any:
        return db.connect(conn_id, application_name)

    if tables.mode != checked:
        raise ValueError(
            f"tables are for mode {tables.mode!r}, the run is {checked!r}: use SinkTables(..., mode)"
        )
    with db.transaction(conn_id, application_name) as cur:
        ensure_tables(cur, tables)
    rewound = (
        rewind(checked, bootstrap=bootstrap, topic=topic, group=group, connect=connect) if replay else {}
    )
    handler = batch_handler(tables, who)
    if checked == "transactional":
        result = kc.consume_into_postgres(
            bootstrap=bootstrap,
            topics=[topic],
            group=group,
            connect=connect,
            handler=handler,
            batch_size=batch_size,
            max_seconds=max_seconds,
            who=who,
            targets={topic: f"{tables.schema}.{tables.prefix}{tables.mode}_events"},
        )
    else:
        result = consume_at_least_once(
            bootstrap=bootstrap,
            topic=topic,
            group=group,
            connect=connect,
            handler=handler,
            batch_size=batch_size,
            max_seconds=max_seconds,
        )
    with db.transaction(conn_id, application_name) as cur:
        report = layer_report(cur, tables)
    summary = {
        "mode": checked,
        "records": result.records,
        "batches": result.batches,
        "dead_letters": result.dead_letters,
        "replayed_from": {str(p): o for p, o in rewound.items()},
        "checkpoint": {f"{t}[{p}]": o for (t, p), o in result.positions.items()},
        "checkpoint_store": "warehouse state.kafka_offsets"
        if checked == "transactional"
        else f"Kafka consumer group {group}",
        "layers": report,
        "seconds": round(result.seconds, 3),
    }
    log.info("exactly-once demo (%s): %s", checked, summary)
    return summary
