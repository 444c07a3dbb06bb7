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
- *checkpoint*: the MariaDB GTID position (``@@gtid_binlog_pos`` form, ``domain-server-seq`` per
  domain) after the last transaction sent, with its binlog file/position alongside, written to the
  compacted topic ``_cdclab_maxwell_positions`` *inside the same Kafka transaction* as that
  transaction's records; on start the producer reads that topic to its end offset and resumes by GTID
  (so ``FLUSH BINARY LOGS`` or a new file changes nothing). A crash re-sends nothing twice and skips
  nothing. Each record carries its transaction's ``gtid``.
- *no checkpoint*: the producer refuses to start unless told where: ``--from-start`` (the oldest
  binlog still present), ``--from-gtid <gtid>`` or ``CDCLAB_MAXWELL_START=oldest|<gtid>``. The lab's
  launchers pass ``--from-start`` until ``<state>/maxwell/checkpointed`` exists (written after the
  first committed checkpoint), so a lab's first start works and a lost checkpoint later is loud.
- Only transactions that end with an XID (InnoDB) are sent; row events of non-transactional tables
  are not supported.
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
    gtid: str | None = None,
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
        if gtid:
            value["gtid"] = gtid
        if old is not None:
            value["old"] = old
        key = {"database": database, "table": table, **{f"pk.{c}": clean.get(c) for c in primary_key}}
        out.append((json.dumps(key).encode(), json.dumps(value).encode()))
    return out


class NoCheckpointError(RuntimeError):
    """No checkpoint for this server and no explicit start position: refusing to guess one."""


class CheckpointTopicError(RuntimeError):
    """The checkpoint topic exists but cannot be made compacted, or cannot be read to its end."""


START_ENV = "CDCLAB_MAXWELL_START"
MARKER_NAME = "checkpointed"


def ensure_positions_topic(bootstrap: str, topic: str = POSITIONS_TOPIC) -> None:
    """Create ``topic`` compacted (one partition); an existing topic that is not compacted is altered to
    ``cleanup.policy=compact``, and if that fails the producer refuses to start (a checkpoint in a
    delete-policy topic is gone after ``retention.ms``)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(timeout=15)
    if topic not in md.topics:
        fut = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"})]
        )[topic]
        try:
            fut.result(30)
            return
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise CheckpointTopicError(f"cannot create the checkpoint topic {topic!r}: {exc}") from exc
    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    policy = configs["cleanup.policy"].value if "cleanup.policy" in configs else "delete"
    if "compact" in (policy or "").split(","):
        return
    print(
        f"maxwell: checkpoint topic {topic!r} has cleanup.policy={policy}; altering it to compact", flush=True
    )
    entry = ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
    try:
        admin.incremental_alter_configs(
            [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])]
        )[resource].result(30)
    except KafkaException as exc:
        raise CheckpointTopicError(
            f"the checkpoint topic {topic!r} has cleanup.policy={policy} (its checkpoints expire) and "
            f"altering it to compact failed: {exc}; set cleanup.policy=compact on it and start again"
        ) from exc


def _last_checkpoint(
    bootstrap: str, server: str, topic: str = POSITIONS_TOPIC, timeout: float = 60.0
) -> dict[str, Any] | None:
    """The last committed checkpoint of ``server``: every partition is read up to the high watermark
    queried first (read_committed), never "until the polls come back empty"."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdclab-maxwell-resume-{os.getpid()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    # the true end offset (high watermark): a read_committed client's query answers the last stable
    # offset instead, which stops short of a checkpoint whose transaction is still being committed
    ends = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdclab-maxwell-resume-{os.getpid()}",
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return None
        found = None
        for p in md.topics[topic].partitions:
            tp = TopicPartition(topic, p)
            low, high = ends.get_watermark_offsets(tp, timeout=10, cached=False)
            if high <= low:
                continue
            c.assign([TopicPartition(topic, p, low)])
            deadline = time.monotonic() + timeout
            at_eof = -1  # the offset at which librdkafka last reported the partition's end
            while True:
                position = c.position([TopicPartition(topic, p)])[0].offset
                if max(position, at_eof) >= high:
                    break
                if time.monotonic() > deadline:
                    raise CheckpointTopicError(
                        f"reading checkpoint topic {topic!r} partition {p}: at offset {position} after "
                        f"{timeout:.0f}s, end offset {high} not reached; refusing to start from a partial read"
                    )
                for m in c.consume(500, timeout=1.0):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            # the end (past a trailing commit marker, which a position may not pass)
                            at_eof = m.offset() or -1
                        continue
                    value = m.value()
                    if m.key() == server.encode() and value:
                        found = json.loads(value)
            c.unassign()
        return found
    finally:
        c.close()
        ends.close()


def start_from_args(from_start: bool, from_gtid: str | None, env: dict[str, str] | None = None) -> str | None:
    """Where to start without a checkpoint: ``"oldest"``, a GTID position, or ``None`` (refuse)."""
    if from_start:
        return "oldest"
    if from_gtid:
        return from_gtid
    value = (env if env is not None else dict(os.environ)).get(START_ENV, "").strip()
    if value in ("oldest", "from-start", "start"):
        return "oldest"
    return value or None


def first_start_args(state: Path) -> list[str]:
    """The launchers' arguments: ``--from-start`` on a lab's very first start only (until the producer
    has committed a checkpoint and written ``<state>/maxwell/checkpointed``)."""
    return [] if (state / "maxwell" / MARKER_NAME).exists() else ["--from-start"]


def _oldest_gtid_pos(host: str, port: int, user: str, password: str) -> tuple[str, str]:
    """(oldest binlog file still present, the GTID position at its start)."""
    import pymysql

    conn = pymysql.connect(host=host, port=port, user=user, password=password)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            first = cur.fetchone()
            if first is None:
                raise RuntimeError("MariaDB has no binary logs (log_bin is off)")
            cur.execute("SELECT BINLOG_GTID_POS(%s, 4)", (first[0],))
            row = cur.fetchone()
            return str(first[0]), str((row or [""])[0] or "")
    finally:
        conn.close()


def advance_gtid(state: str, gtid: str) -> str:
    """``state`` (``domain-server-seq`` per domain, comma separated) with ``gtid``'s domain moved to it."""
    domains = {g.split("-", 1)[0]: g for g in state.split(",") if g.strip()}
    domains[gtid.split("-", 1)[0]] = gtid
    return ",".join(domains[d] for d in sorted(domains, key=int))


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
    start: str | None = None,
    tables: list[str] | None = None,
    positions_topic: str = POSITIONS_TOPIC,
    transactional_id: str | None = None,
    marker_file: Path | None = None,
) -> None:
    """Stream row events of ``schemas`` to ``<topic_prefix>.<db>.<table>`` until SIGTERM.

    Resumes from the last checkpoint (a MariaDB GTID position, with file/position alongside). Without
    one it starts at ``start`` (``"oldest"``: the oldest binlog still present, or a GTID position) and
    refuses to start when that is ``None``."""
    from confluent_kafka import Producer
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, RotateEvent, XidEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    server = f"{host}:{port}"
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    ensure_positions_topic(bootstrap, positions_topic)
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id or f"cdclab-maxwell-{server}",
            "enable.idempotence": True,
            "linger.ms": 5,
        }
    )
    # fences a previous instance and aborts its open transaction, so the read below sees the end
    producer.init_transactions(30)
    checkpoint = _last_checkpoint(bootstrap, server, positions_topic)
    if checkpoint:
        gtid_state = checkpoint.get("gtid")
        if gtid_state is None:  # a checkpoint written before GTIDs were recorded
            gtid_state = _binlog_gtid_pos(
                host, port, user, password, checkpoint["log_file"], checkpoint["log_pos"]
            )
        resume: dict[str, Any] = {"from": "checkpoint", **checkpoint, "gtid": gtid_state}
    elif start is None:
        raise NoCheckpointError(
            f"maxwell: no checkpoint for {server} in topic {positions_topic!r}, and no start position given. "
            "Starting at the current binlog would lose the changes before it. Say where to start: "
            f"--from-start (the oldest binlog still present), --from-gtid <domain-server-seq>, or "
            f"{START_ENV}=oldest|<gtid>."
        )
    elif start == "oldest":
        oldest_file, gtid_state = _oldest_gtid_pos(host, port, user, password)
        resume = {"from": "oldest", "log_file": oldest_file, "gtid": gtid_state}
    else:
        gtid_state = start
        resume = {"from": "gtid", "gtid": gtid_state}
    stream = BinLogStreamReader(
        connection_settings={"host": host, "port": port, "user": user, "passwd": password},
        server_id=server_id,
        blocking=True,
        slave_heartbeat=2.0,
        only_schemas=schemas,
        only_tables=tables,
        is_mariadb=True,
        auto_position=gtid_state,
        only_events=[
            WriteRowsEvent,
            UpdateRowsEvent,
            DeleteRowsEvent,
            XidEvent,
            RotateEvent,
            HeartbeatLogEvent,
            MariadbGtidEvent,
        ],
    )
    pending: list[tuple[str, bytes, bytes]] = []
    xoffset = 0
    current_gtid: str | None = None
    status_file.parent.mkdir(parents=True, exist_ok=True)

    def beat(extra: dict[str, Any]) -> None:
        tmp = status_file.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"pid": os.getpid(), "at": time.time(), "resumed_from": resume["from"], **extra})
        )
        tmp.replace(status_file)

    beat({"state": "started", "resume": resume})
    try:
        for event in stream:
            if stop["now"]:
                break
            if isinstance(event, MariadbGtidEvent):
                current_gtid = event.gtid
                pending, xoffset = [], 0
            elif isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
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
                    current_gtid,
                )
                xoffset += len(records)
                pending += [(f"{topic_prefix}.{event.schema}.{event.table}", k, v) for k, v in records]
            elif isinstance(event, XidEvent):
                if current_gtid:
                    gtid_state = advance_gtid(gtid_state, current_gtid)
                if pending:
                    producer.begin_transaction()
                    for i, (topic, key, value) in enumerate(pending):
                        doc = json.loads(value)
                        doc["xid"] = event.xid
                        if i == len(pending) - 1:
                            doc["commit"] = True
                        producer.produce(topic, key=key, value=json.dumps(doc).encode())
                    producer.produce(
                        positions_topic,
                        key=server.encode(),
                        value=json.dumps(
                            {
                                "gtid": gtid_state,
                                "log_file": stream.log_file,
                                "log_pos": stream.log_pos,
                                "xid": event.xid,
                            }
                        ).encode(),
                    )
                    producer.commit_transaction(30)
                    if marker_file is not None and not marker_file.exists():
                        marker_file.parent.mkdir(parents=True, exist_ok=True)
                        marker_file.write_text(json.dumps({"at": time.time(), "gtid": gtid_state}))
                pending, xoffset, current_gtid = [], 0, None
                # the library reconnects (a MariaDB restart) from auto_position: keep it at the checkpoint
                stream.auto_position = gtid_state
                beat(
                    {
                        "state": "streaming",
                        "log_file": stream.log_file,
                        "log_pos": stream.log_pos,
                        "gtid": gtid_state,
                    }
                )
            else:
                beat(
                    {
                        "state": "streaming",
                        "log_file": stream.log_file,
                        "log_pos": stream.log_pos,
                        "gtid": gtid_state,
                    }
                )
    finally:
        stream.close()
        producer.flush(10)


def _binlog_gtid_pos(host: str, port: int, user: str, password: str, log_file: str, log_pos: int) -> str:
    import pymysql

    conn = pymysql.connect(host=host, port=port, user=user, password=password)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (log_file, int(log_pos)))
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None or row[0] is None:
        raise CheckpointTopicError(
            f"the checkpoint's binlog position {log_file}:{log_pos} has no GTID position "
            "(the file was purged?); restart from a known GTID with --from-gtid"
        )
    return str(row[0])


def main(argv: list[str] | None = None) -> None:
    import argparse

    from cdclab.lab.config import LabConfig

    ap = argparse.ArgumentParser(prog="python -m cdclab.cdc.maxwell", description=__doc__.splitlines()[0])
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--from-start", action="store_true", help="no checkpoint: start at the oldest binlog")
    where.add_argument("--from-gtid", metavar="GTID", help="no checkpoint: start after this GTID position")
    ap.add_argument("--schema", action="append", dest="schemas", help="databases to read (default: shop)")
    ap.add_argument("--table", action="append", dest="tables", help="only these tables (default: all)")
    ap.add_argument("--topic-prefix", default="maxwell")
    ap.add_argument("--positions-topic", default=POSITIONS_TOPIC)
    ap.add_argument("--server-id", type=int, default=8401)
    ap.add_argument("--status-file", type=Path)
    args = ap.parse_args(argv)
    cfg = LabConfig.load()
    lab_instance = args.positions_topic == POSITIONS_TOPIC
    state_dir = cfg.state / "maxwell"
    try:
        run(
            host=cfg.host_of("mariadb"),
            port=cfg.port("mariadb"),
            user=cfg["MAXWELL_USER"],
            password=cfg["MAXWELL_PASSWORD"],
            bootstrap=cfg.kafka_bootstrap,
            schemas=args.schemas or ["shop"],
            tables=args.tables,
            status_file=args.status_file or state_dir / "status.json",
            topic_prefix=args.topic_prefix,
            server_id=args.server_id,
            start=start_from_args(args.from_start, args.from_gtid),
            positions_topic=args.positions_topic,
            transactional_id=None if lab_instance else f"cdclab-maxwell-{args.positions_topic}",
            marker_file=state_dir / MARKER_NAME if lab_instance else None,
        )
    except (NoCheckpointError, CheckpointTopicError) as exc:
        raise SystemExit(str(exc)) from None


if __name__ == "__main__":
    main()
