"""A Maxwell-format binlog producer: MariaDB row events -> Kafka, exactly once.

Why not the Maxwell daemon: Maven Central serves ``com.zendesk:maxwell`` only up to 1.22.6 (2019),
which loads Nashorn classes (``jdk.nashorn.api.scripting``) that JDK 15+ no longer has, so it stops
at the first row on the Java 17/25 available here; it also bundles Kafka clients older than Kafka 4
accepts. This module reads the binlog with a real replication client (``mysql-replication``) and
writes Maxwell's documented JSON, so the consumer side is the one a Maxwell user has.

Vocabulary:
- *binlog position*: ``(file, pos)`` of a row event in the MariaDB binary log; ``xoffset`` numbers the
  rows of one transaction. :func:`position_number` folds them into one monotonic integer.
- *Maxwell record*: key ``{"database", "table", "pk.<col>": ...}``; value ``{"database", "table",
  "type": insert|update|delete, "ts", "xid", "xoffset", "commit", "position", "data", "old"}``.
- *checkpoint*: the binlog position after the last transaction sent, written to the compacted topic
  ``_cdclab_maxwell_positions`` *inside the same Kafka transaction* as that transaction's records;
  on start the producer resumes from it. A crash re-sends nothing twice and skips nothing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

POSITIONS_TOPIC = "_cdclab_maxwell_positions"


def position_number(log_file: str, pos: int, xoffset: int = 0) -> int:
    """``binlog.000012:4567`` row 3 -> one integer that orders like the binlog (fits a bigint)."""
    try:
        filenum = int(log_file.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        raise ValueError(f"unexpected binlog file name {log_file!r}") from None
    return (filenum << 48) + (pos << 16) + min(xoffset, 0xFFFF)


def parse_position(text: str, xoffset: int = 0) -> int:
    log_file, _, pos = text.rpartition(":")
    return position_number(log_file, int(pos), xoffset)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        # the lab's MariaDB runs in UTC (default-time-zone = '+00:00')
        return value.replace(tzinfo=dt.UTC).isoformat() if value.tzinfo is None else value.isoformat()
    if isinstance(value, dt.date | dt.time | dt.timedelta):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set):
        return sorted(value)
    return value


def maxwell_records(
    database: str,
    table: str,
    kind: str,
    rows: list[dict[str, Any]],
    primary_key: list[str],
    ts: int,
    log_file: str,
    pos: int,
    first_xoffset: int,
) -> list[tuple[bytes, bytes]]:
    """Maxwell (key, value) pairs for the rows of one binlog row event."""
    out = []
    for i, row in enumerate(rows):
        if kind == "update":
            data, before = row["after_values"], row["before_values"]
            old = {k: _json_value(v) for k, v in before.items() if before.get(k) != data.get(k)}
        else:
            data, old = row["values"], None
        clean = {k: _json_value(v) for k, v in data.items()}
        value: dict[str, Any] = {
            "database": database,
            "table": table,
            "type": kind,
            "ts": ts,
            "xoffset": first_xoffset + i,
            "position": f"{log_file}:{pos}",
            "data": clean,
        }
        if old is not None:
            value["old"] = old
        key = {"database": database, "table": table, **{f"pk.{c}": clean.get(c) for c in primary_key}}
        out.append((json.dumps(key).encode(), json.dumps(value).encode()))
    return out


def _last_checkpoint(bootstrap: str, server: str) -> dict[str, Any] | None:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdclab-maxwell-resume-{os.getpid()}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        md = c.list_topics(POSITIONS_TOPIC, timeout=10)
        if POSITIONS_TOPIC not in md.topics or md.topics[POSITIONS_TOPIC].error is not None:
            return None
        found = None
        for p in md.topics[POSITIONS_TOPIC].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(POSITIONS_TOPIC, p), timeout=10)
            if high <= low:
                continue
            c.assign([TopicPartition(POSITIONS_TOPIC, p, low)])
            idle = 0
            while idle < 2:
                msgs = c.consume(500, timeout=0.5)
                real = [m for m in msgs if m.error() is None]
                idle = 0 if real else idle + 1
                for m in real:
                    value = m.value()
                    if m.key() == server.encode() and value:
                        found = json.loads(value)
        return found
    finally:
        c.close()


def run(
    *,
    host: str,
    port: int,
    user: str,
    password: str,
    bootstrap: str,
    schemas: list[str],
    status_file: Path,
    topic_prefix: str = "maxwell",
    server_id: int = 8401,
) -> None:
    """Stream row events of ``schemas`` to ``<topic_prefix>.<db>.<table>`` until SIGTERM."""
    from confluent_kafka import Producer
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import HeartbeatLogEvent, RotateEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    server = f"{host}:{port}"
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"cdclab-maxwell-{server}",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    checkpoint = _last_checkpoint(bootstrap, server)
    resume: dict[str, Any] = {}
    if checkpoint:
        resume = {"log_file": checkpoint["log_file"], "log_pos": checkpoint["log_pos"], "resume_stream": True}
    stream = BinLogStreamReader(
        connection_settings={"host": host, "port": port, "user": user, "passwd": password},
        server_id=server_id,
        blocking=True,
        slave_heartbeat=2.0,
        only_schemas=schemas,
        only_events=[
            WriteRowsEvent,
            UpdateRowsEvent,
            DeleteRowsEvent,
            XidEvent,
            RotateEvent,
            HeartbeatLogEvent,
        ],
        **resume,
    )
    pending: list[tuple[str, bytes, bytes]] = []
    xoffset = 0
    status_file.parent.mkdir(parents=True, exist_ok=True)

    def beat(extra: dict[str, Any]) -> None:
        tmp = status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "at": time.time(), **extra}))
        tmp.replace(status_file)

    beat({"state": "started", "resume": resume})
    try:
        for event in stream:
            if stop["now"]:
                break
            if isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
                kind = {WriteRowsEvent: "insert", UpdateRowsEvent: "update", DeleteRowsEvent: "delete"}[
                    type(event)
                ]
                pk = event.primary_key
                keys = [pk] if isinstance(pk, str) else list(pk or [])
                records = maxwell_records(
                    event.schema,
                    event.table,
                    kind,
                    event.rows,
                    keys,
                    event.timestamp,
                    stream.log_file,
                    event.packet.log_pos,
                    xoffset,
                )
                xoffset += len(records)
                pending += [(f"{topic_prefix}.{event.schema}.{event.table}", k, v) for k, v in records]
            elif isinstance(event, XidEvent):
                if pending:
                    producer.begin_transaction()
                    for i, (topic, key, value) in enumerate(pending):
                        doc = json.loads(value)
                        doc["xid"] = event.xid
                        if i == len(pending) - 1:
                            doc["commit"] = True
                        producer.produce(topic, key=key, value=json.dumps(doc).encode())
                    producer.produce(
                        POSITIONS_TOPIC,
                        key=server.encode(),
                        value=json.dumps(
                            {"log_file": stream.log_file, "log_pos": stream.log_pos, "xid": event.xid}
                        ).encode(),
                    )
                    producer.commit_transaction(30)
                pending, xoffset = [], 0
                beat({"state": "streaming", "log_file": stream.log_file, "log_pos": stream.log_pos})
            else:
                beat({"state": "streaming", "log_file": stream.log_file, "log_pos": stream.log_pos})
    finally:
        stream.close()
        producer.flush(10)


def main() -> None:
    from cdclab.lab.config import LabConfig

    cfg = LabConfig.load()
    run(
        host=cfg.host_of("mariadb"),
        port=cfg.port("mariadb"),
        user=cfg["MAXWELL_USER"],
        password=cfg["MAXWELL_PASSWORD"],
        bootstrap=cfg.kafka_bootstrap,
        schemas=["shop"],
        status_file=cfg.state / "maxwell" / "status.json",
    )


if __name__ == "__main__":
    main()
