"""Kafka -> Postgres with exactly-once effect: offsets live in the same transaction as the data.

Vocabulary:
- *offset store*: ``state.kafka_offsets`` in ``warehouse``: one row per (consumer group, topic,
  partition) holding the *next* offset to read. It is written in the same database transaction as
  the rows the batch produced, so either both the rows and the new offset are committed or neither.
- *batch*: the records read in one poll loop (at most ``batch_size``), applied in one transaction.
- *catch-up run*: a bounded run — a task reads until it reaches the partitions' end offsets as they
  were when it started (the *high watermarks*), then stops; the next run starts where it stopped.
- *dead letter*: a record that cannot be parsed or applied goes to ``dlq.kafka_records`` with the
  reason, in the same transaction, and its offset advances with the others: nothing is lost silently
  and one bad record does not block the partition.

Why not Kafka's committed offsets: a consumer that commits to Kafka after writing to Postgres
duplicates on a crash between the two; one that commits before loses. Storing the offset with the
data and *seeking* to it on start (``assign`` at the stored offset, auto-commit off, isolation
``read_committed``) removes the window. Kafka's own commit is still done afterwards, for visibility
in tools like ``kafka-consumer-groups``, but nothing reads it back.

Fault injection for tests: ``CDCLAB_FAIL_AFTER_BATCHES=N`` makes the process kill itself (SIGKILL,
no cleanup) after applying N batches but before committing the N+1th — a crash mid-stream.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2.extras import Json

from cdclab.ddl import ensure as ensure_ddl

OFFSETS_DDL = """
CREATE SCHEMA IF NOT EXISTS state;
CREATE SCHEMA IF NOT EXISTS dlq;
CREATE TABLE IF NOT EXISTS state.kafka_offsets (
    consumer_group text NOT NULL,
    topic          text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset    bigint NOT NULL CHECK (next_offset >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     text,
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
CREATE TABLE IF NOT EXISTS dlq.kafka_records (
    id              bigserial PRIMARY KEY,
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    record_key      text,
    record_value    text,
    reason          text NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (consumer_group, topic, kafka_partition, kafka_offset)
);
"""

Record = Any  # confluent_kafka.Message
BatchHandler = Callable[[Any, list[Record]], list[tuple[Record, str]]]
"""Applies a batch inside the open transaction (given its cursor); returns (record, reason) rejects."""


class OffsetOutOfRange(RuntimeError):
    """A stored offset is outside what the topic still holds (retention deleted it, or it was reset)."""


@dataclass
class ConsumeResult:
    records: int = 0
    batches: int = 0
    dead_letters: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    seconds: float = 0.0


def watermarks(
    consumer: Any, topic: str, partition: int, timeout: float = 10.0, attempts: int = 20
) -> tuple[int, int]:
    """(earliest, end) offsets of a partition, riding out a leader election (e.g. a broker restart)."""
    from confluent_kafka import KafkaException, TopicPartition

    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if attempt == attempts - 1 or (
                not exc.args[0].retriable() and exc.args[0].code() not in (6, 3, 5)
            ):
                raise
            time.sleep(min(0.5 * (attempt + 1), 3))
    raise AssertionError("unreachable")


def reached(consumer: Any, pending: dict[tuple[str, int], int]) -> None:
    """Drop from ``pending`` the partitions whose fetch position has reached their end offset."""
    from confluent_kafka import TopicPartition

    if not pending:
        return
    for tp in consumer.position([TopicPartition(t, p) for (t, p) in list(pending)]):
        key = (tp.topic, tp.partition)
        if key in pending and tp.offset >= 0 and tp.offset >= pending[key]:
            del pending[key]


def ensure_schema(cur: Any) -> None:
    ensure_ddl(cur, "state.kafka_offsets", OFFSETS_DDL)


def stored_offsets(cur: Any, group: str, topic: str) -> dict[int, int]:
    cur.execute(
        "SELECT kafka_partition, next_offset FROM state.kafka_offsets "
        "WHERE consumer_group = %s AND topic = %s",
        (group, topic),
    )
    return {int(p): int(o) for p, o in cur.fetchall()}


def save_offsets(cur: Any, group: str, positions: dict[tuple[str, int], int], who: str = "") -> None:
    for (topic, partition), offset in positions.items():
        cur.execute(
            """INSERT INTO state.kafka_offsets (consumer_group, topic, kafka_partition, next_offset, updated_by)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (consumer_group, topic, kafka_partition)
               DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now(), updated_by = EXCLUDED.updated_by""",
            (group, topic, partition, offset, who or None),
        )


def reset_offsets(cur: Any, group: str, topic: str, offsets: dict[int, int], who: str = "reset") -> None:
    """Replay from chosen offsets: the next run of ``group`` starts there (the merge's position guard
    keeps a replay from regressing rows)."""
    save_offsets(cur, group, {(topic, p): o for p, o in offsets.items()}, who)


def dead_letter(cur: Any, group: str, record: Record, reason: str) -> None:
    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw.decode("utf-8", errors="replace")

    cur.execute(
        """INSERT INTO dlq.kafka_records (consumer_group, topic, kafka_partition, kafka_offset, record_key,
                                          record_value, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO UPDATE SET reason = EXCLUDED.reason""",
        (
            group,
            record.topic(),
            record.partition(),
            record.offset(),
            text(record.key()),
            text(record.value()),
            reason[:2000],
        ),
    )


def consume_into_postgres(
    *,
    bootstrap: str,
    topics: Sequence[str],
    group: str,
    connect: Callable[[], Any],
    handler: BatchHandler,
    batch_size: int = 500,
    poll_timeout: float = 0.5,
    max_seconds: float = 300.0,
    idle_polls: int = 20,
    who: str = "",
    kafka_config: dict[str, Any] | None = None,
) -> ConsumeResult:
    """Read ``topics`` from the offsets stored for ``group`` up to their current end, apply each batch
    with ``handler`` and store the next offsets in the same transaction. Returns what it did."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    t0 = time.monotonic()
    fail_after = int(os.environ.get("CDCLAB_FAIL_AFTER_BATCHES", "0") or 0)
    conn = connect()
    result = ConsumeResult()
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            **(kafka_config or {}),
        }
    )
    try:
        with conn, conn.cursor() as cur:
            ensure_schema(cur)
            stored = {t: stored_offsets(cur, group, t) for t in topics}
        md = consumer.list_topics(timeout=10)
        assignment: list[Any] = []
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            if topic not in md.topics or md.topics[topic].error is not None:
                continue  # the topic does not exist yet: nothing to read
            for partition in md.topics[topic].partitions:
                low, high = watermarks(consumer, topic, partition)
                start = stored[topic].get(partition)
                if start is not None and start < low:
                    raise OffsetOutOfRange(
                        f"{group}: stored offset {start} for {topic}[{partition}] is below the earliest "
                        f"offset {low} still in Kafka (retention removed records); reset the offsets and "
                        f"reload the target from a snapshot"
                    )
                if start is not None and start > high:
                    raise OffsetOutOfRange(
                        f"{group}: stored offset {start} for {topic}[{partition}] is beyond the end {high}; "
                        "was the topic recreated? reset the offsets (cdclab offsets reset)"
                    )
                first = OFFSET_BEGINNING if start is None else start
                result.positions[(topic, partition)] = low if start is None else start
                if (start if start is not None else low) < high:
                    assignment.append(TopicPartition(topic, partition, first))
                    ends[(topic, partition)] = high
        if not assignment:
            result.seconds = time.monotonic() - t0
            return result
        consumer.assign(assignment)
        pending: dict[tuple[str, int], int] = dict(ends)
        idle = 0
        while pending and time.monotonic() - t0 < max_seconds:
            batch: list[Any] = []
            polled = consumer.consume(num_messages=batch_size, timeout=poll_timeout)
            for msg in polled:
                error = msg.error()
                if error is not None:
                    if error.code() == -191:  # _PARTITION_EOF
                        continue
                    raise KafkaException(error)
                batch.append(msg)
            if not batch:
                # Transaction markers occupy offsets but are never delivered: the consumer's position
                # (not the last record's offset) says whether a partition has reached its end offset.
                idle += 1
                reached(consumer, pending)
                if pending and idle >= idle_polls:
                    break  # records are due but none came for idle_polls polls: stop, the next run resumes
                continue
            idle = 0
            if fail_after and result.batches >= fail_after:
                os.kill(os.getpid(), signal.SIGKILL)
            positions = dict(result.positions)
            for msg in batch:
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1
            with conn, conn.cursor() as cur:
                rejects = handler(cur, batch)
                for record, reason in rejects:
                    dead_letter(cur, group, record, reason)
                save_offsets(cur, group, positions, who)
            result.positions = positions
            result.records += len(batch)
            result.batches += 1
            result.dead_letters += len(rejects)
            for key, end in list(pending.items()):
                if positions.get(key, 0) >= end:
                    del pending[key]
            reached(consumer, pending)
        # Past the last record there may only be transaction markers: move the stored offsets over them,
        # so the reported lag of a caught-up group is 0 (no data is involved, nothing can be lost).
        moved = {}
        for tp in consumer.position([TopicPartition(t, p) for (t, p) in ends]):
            key = (tp.topic, tp.partition)
            if tp.offset >= 0 and tp.offset > result.positions.get(key, 0) and tp.offset <= ends[key]:
                moved[key] = tp.offset
        if moved:
            with conn, conn.cursor() as cur:
                save_offsets(cur, group, moved, who)
            result.positions.update(moved)
        # informational only: lets kafka-consumer-groups show the group's progress
        commit = [TopicPartition(t, p, o) for (t, p), o in result.positions.items()]
        if commit:
            try:
                consumer.commit(offsets=commit, asynchronous=False)
            except KafkaException:
                pass
    finally:
        consumer.close()
        conn.close()
    result.seconds = time.monotonic() - t0
    return result


def payload_json(value: Any) -> Json:
    return Json(value)
