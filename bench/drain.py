"""The processes the CDC sink benchmark times, each started fresh (imports and start-up included):

- ``ours``: :func:`cdclab.cdc.pipeline.replicate`, one catch-up run of a new consumer group from offset 0
  (exactly once: offsets stored with the rows);
- ``bare``: a bare confluent-kafka consumer (``read_committed``) that reads the same topic from offset 0
  and decodes every key and value with orjson, writing nothing: the ceiling of any Python sink.

Each prints one JSON line with what it did; the parent measures wall time and CPU (``wait4``).
Connections come from the ``AIRFLOW_CONN_*`` variables the parent passes (no Airflow import)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid


def ours(args: argparse.Namespace) -> dict[str, object]:
    from cdclab.cdc.pipeline import replicate

    summary = replicate(
        [args.table],
        group=args.group,
        topic_prefix=args.topic_prefix,
        target_schema="core",
        target_prefix=args.target_prefix,
        batch_size=args.batch,
        max_seconds=args.max_seconds,
        who="bench",
    )
    return {k: summary[k] for k in ("records", "batches", "dead_letters", "seconds", "targets", "paths")}


def bare(args: argparse.Namespace) -> dict[str, object]:
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    from cdclab.cdc.consumer import FETCH_KAFKA_CONFIG

    consumer = Consumer(
        {
            "bootstrap.servers": args.bootstrap,
            "group.id": f"bench-bare-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            **FETCH_KAFKA_CONFIG,  # the same client settings as our sink's consumer
        }
    )
    low, high = consumer.get_watermark_offsets(TopicPartition(args.topic, 0), timeout=10)
    consumer.assign([TopicPartition(args.topic, 0, low)])
    records = decoded = 0
    t0 = time.monotonic()
    while True:
        batch = consumer.consume(num_messages=args.batch, timeout=0.5)
        for msg in batch:
            if msg.error() is not None:
                continue
            records += 1
            key, value = msg.key(), msg.value()
            if key:
                orjson.loads(key)
            if value:
                orjson.loads(value)
                decoded += 1
        if not batch:
            (tp,) = consumer.position([TopicPartition(args.topic, 0)])
            if tp.offset >= high or time.monotonic() - t0 > args.max_seconds:
                break
    consumer.close()
    return {"records": records, "decoded_values": decoded, "seconds": round(time.monotonic() - t0, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drain")
    p.add_argument("kind", choices=["ours", "bare"])
    p.add_argument("--table", default="")
    p.add_argument("--group", default="")
    p.add_argument("--topic-prefix", default="")
    p.add_argument("--target-prefix", default="bench_ours_")
    p.add_argument("--topic", default="")
    p.add_argument("--bootstrap", default="")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--max-seconds", type=float, default=3600)
    args = p.parse_args(argv)
    out = ours(args) if args.kind == "ours" else bare(args)
    print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
