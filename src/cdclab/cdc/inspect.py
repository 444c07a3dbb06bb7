"""Look at topics without moving anyone's offsets (assign, never commit): counts, records, waits."""

from __future__ import annotations

import time
import uuid
from typing import Any

from cdclab.cdc.consumer import watermarks


def read_topic(bootstrap: str, topic: str, limit: int = 100_000, timeout: float = 5.0) -> list[Any]:
    """Every committed record of ``topic`` (all partitions) from the beginning, up to ``limit``."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdclab-inspect-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
        }
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout)
        if topic not in md.topics or md.topics[topic].error is not None:
            return []
        ends, starts = {}, {}
        for p in md.topics[topic].partitions:
            low, high = watermarks(consumer, topic, p, timeout)
            if high > low:
                ends[p], starts[p] = high, low
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        out: list[Any] = []
        idle = 0
        tps = [TopicPartition(topic, p) for p in ends]
        while len(out) < limit and idle < 10:
            batch = consumer.consume(num_messages=1000, timeout=0.1)
            for m in batch:
                err = m.error()
                if err is not None and err.code() in (
                    KafkaError._AUTO_OFFSET_RESET,
                    KafkaError.OFFSET_OUT_OF_RANGE,
                ):
                    raise KafkaException(err)  # retention removed records while reading: never skip them
            real = [m for m in batch if m.error() is None]
            out.extend(real)
            idle = 0 if real else idle + 1
            # every partition read to its end offset (past a trailing transaction marker): done, without
            # waiting for an empty consume (that wait was 0.5-1 s of every read)
            if all(pos.offset >= ends[pos.partition] for pos in consumer.position(tps)):
                break
        return out[:limit]
    finally:
        consumer.close()


def wait_for_records(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """Wait until ``topic`` holds at least ``count`` committed records; return them."""
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = read_topic(bootstrap, topic)
        if len(records) >= count:
            return records
        time.sleep(0.5)
    raise TimeoutError(
        f"{topic} holds {len(records)} records after {timeout:.0f}s, expected at least {count}"
    )
