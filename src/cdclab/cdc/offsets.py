"""Inspect and move the offsets that exactly-once consumers keep in ``warehouse.state.kafka_offsets``.

Vocabulary:
- *next offset*: the offset a group reads next in a partition (what the table stores).
- *end offset*: the partition's high watermark in Kafka (one past the last written offset).
- *lag*: end offset - next offset; records written but not yet applied. Transaction markers take
  offsets too, so a caught-up group can show a lag of 1 or 2 on a topic written transactionally.
- *reset*: set a group's next offset (to ``earliest``, ``latest`` or a number) so its next run replays
  or skips; the merge's position guard makes a replay harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cdclab.cdc.consumer import ensure_schema, reset_offsets, watermarks


@dataclass(frozen=True)
class OffsetRow:
    group: str
    topic: str
    partition: int
    next_offset: int
    end_offset: int | None
    updated_at: Any
    updated_by: str | None

    @property
    def lag(self) -> int | None:
        return None if self.end_offset is None else max(self.end_offset - self.next_offset, 0)


def end_offsets(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """partition -> (earliest, end) offsets of ``topic``; empty when the topic does not exist."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "cdclab-offsets-inspect", "enable.auto.commit": False}
    )
    try:
        md = consumer.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return {}
        return {p: watermarks(consumer, topic, p) for p in md.topics[topic].partitions}
    finally:
        consumer.close()


def report(cur: Any, bootstrap: str, group: str | None = None) -> list[OffsetRow]:
    """Every stored offset (of one group, or all) with the topic's end offset and the lag."""
    ensure_schema(cur)
    cur.execute(
        "SELECT consumer_group, topic, kafka_partition, next_offset, updated_at, updated_by "
        "FROM state.kafka_offsets WHERE %s::text IS NULL OR consumer_group = %s "
        "ORDER BY consumer_group, topic, kafka_partition",
        (group, group),
    )
    rows = cur.fetchall()
    ends: dict[str, dict[int, tuple[int, int]]] = {}
    out = []
    for g, topic, partition, next_offset, updated_at, updated_by in rows:
        if topic not in ends:
            ends[topic] = end_offsets(bootstrap, topic)
        end = ends[topic].get(partition)
        out.append(
            OffsetRow(
                g, topic, partition, next_offset, None if end is None else end[1], updated_at, updated_by
            )
        )
    return out


def reset(
    cur: Any, bootstrap: str, group: str, topic: str, to: str | int, who: str = "cdclab offsets reset"
) -> dict[int, int]:
    """Move ``group`` on ``topic`` to ``earliest``, ``latest`` or an explicit offset (every partition)."""
    ensure_schema(cur)
    bounds = end_offsets(bootstrap, topic)
    if not bounds:
        raise ValueError(f"topic {topic!r} does not exist in Kafka ({bootstrap})")
    targets: dict[int, int] = {}
    for partition, (low, high) in bounds.items():
        if to == "earliest":
            targets[partition] = low
        elif to == "latest":
            targets[partition] = high
        else:
            offset = int(to)
            if not low <= offset <= high:
                raise ValueError(f"offset {offset} is outside {topic}[{partition}]'s range [{low}, {high}]")
            targets[partition] = offset
    reset_offsets(cur, group, topic, targets, who)
    return targets


def format_report(rows: list[OffsetRow]) -> str:
    header = ("GROUP", "TOPIC", "PART", "NEXT", "END", "LAG", "UPDATED BY")
    body = [
        (
            r.group,
            r.topic,
            str(r.partition),
            str(r.next_offset),
            "-" if r.end_offset is None else str(r.end_offset),
            "-" if r.lag is None else str(r.lag),
            r.updated_by or "",
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in [header, *body]
    )
