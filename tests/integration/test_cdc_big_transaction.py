"""A single source transaction of 300,000 rows replicates with bounded memory: the consuming process
reads it in batches of 5,000, each applied with its offsets in one warehouse transaction, and its
memory stays flat while it works through the transaction.

Why 300,000 rows suffice (it was 1,000,000: two minutes of CI, three quarters of them Debezium writing
the transaction, for the same property). What must be big is the transaction against what the consumer
may hold at once: a batch (5,000 records) and librdkafka's local fetch queue (at most 64 MiB or 100,000
records), the most it buffers ahead. A record of this table is ~630 bytes on Kafka, so the transaction
is 60 batches and ~180 MB raw. The process reads the first fifth (12 batches: the fetch queue has filled
and the apply thread runs, the steady state), then the rest (~145 MB raw, more than twice the fetch
queue), in two runs of ``replicate`` in one process (the second resumes mid-transaction from the stored
offsets). Asserted: the target equals the source (count, sum, digest); the peak resident memory grows
over the rest by less than half the rest's raw size (a consumer that kept the records it applied, even
as raw bytes, would grow by all of it; even a fetch queue still empty after the first part and full
after the rest stays below it); and the peak stays under PEAK_RSS_LIMIT_MB.

``CDCLAB_BIG_TX_ROWS`` changes the row count (default 300,000; the test refuses a size whose rest is
not more than twice the fetch queue)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from psycopg2 import sql

LOG_SERVICES = ["connect"]
ROWS = int(os.environ.get("CDCLAB_BIG_TX_ROWS", "300000"))
BATCH = 5000
FETCH_QUEUE_MB = 64  # librdkafka's queued.max.messages.kbytes (the consumer does not change it)
# Measured: 186 MB alone at 1,000,000 rows (276 MB before the consumer's pipelining), 412 MB in a full CI
# run; 183 MB at 200,000 rows.
PEAK_RSS_LIMIT_MB = 600

CONSUMER = """
import json, resource, sys
from cdclab.cdc.pipeline import replicate
table, group, topic, first = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
batch = int(sys.argv[5])
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
one = replicate([table], group=group, target_schema="core", batch_size=batch, max_seconds=1500,
                stop_at={(topic, 0): first})
after_first = peak()
rest = replicate([table], group=group, target_schema="core", batch_size=batch, max_seconds=1500)
print(json.dumps({"first": one, "rest": rest, "peak_first_mb": after_first, "peak_rss_mb": peak()}))
"""


def end_offset(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdclab-peek"})
    try:
        md = consumer.list_topics(topic, timeout=10)
        if topic not in md.topics or md.topics[topic].error is not None:
            return 0
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def record_bytes(bootstrap: str, topic: str, offset: int) -> int:
    """The size (key + value) of the record at ``offset``: every row of the table has the same shape."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "cdclab-peek", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None and msg.value() is not None:
                return len(msg.key() or b"") + len(msg.value())
        raise AssertionError(f"no record at offset {offset} of {topic} in 30 s")
    finally:
        consumer.close()


def test_a_big_transaction_replicates_with_flat_bounded_memory(lab, names, shop_db, warehouse_db, cdc_fence):
    table, group = names("bigtx"), names("grp")
    topic = f"shop.public.{table}"
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE public.{} (id bigint PRIMARY KEY, v integer NOT NULL, note text)").format(t)
        )
        # one transaction (autocommit: one statement is one transaction)
        cur.execute(
            sql.SQL(
                "INSERT INTO public.{} SELECT g, mod(g, 1000), 'row ' || g FROM generate_series(1, %s) g"
            ).format(t),
            (ROWS,),
        )
    cdc_fence(timeout=1200)  # the fence row is committed after the transaction: on Kafka after all of it
    end = end_offset(lab.kafka_bootstrap, topic)
    assert end >= ROWS, "Debezium did not write the transaction in time"
    size = record_bytes(lab.kafka_bootstrap, topic, end // 2)
    first = end // 5

    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", CONSUMER, f"public.{table}", group, topic, str(first), str(BATCH)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    peak_first, peak = result["peak_first_mb"], result["peak_rss_mb"]
    read_first, read_rest = result["first"]["records"], result["rest"]["records"]
    rest_raw_mb = read_rest * size / 2**20
    print(
        f"\n{ROWS} rows in one transaction ({size} B a record, {ROWS * size / 2**20:.0f} MB raw): "
        f"{read_first} + {read_rest} records in {result['first']['batches']} + {result['rest']['batches']} "
        f"batches, {time.monotonic() - started:.0f}s, peak RSS {peak_first:.0f} MB after the first part, "
        f"{peak:.0f} MB at the end (the rest: {rest_raw_mb:.0f} MB raw)"
    )
    with shop_db.cursor() as s, warehouse_db.cursor() as w:
        s.execute(
            sql.SQL("SELECT count(*), sum(v), md5(string_agg(note, ',' ORDER BY id)) FROM public.{}").format(
                t
            )
        )
        w.execute(
            sql.SQL("SELECT count(*), sum(v), md5(string_agg(note, ',' ORDER BY id)) FROM core.{}").format(t)
        )
        assert w.fetchone() == s.fetchone()
    # the property is about a transaction much larger than what the consumer may buffer
    assert read_first >= 2 * BATCH and read_rest >= 10 * BATCH, (read_first, read_rest)
    assert rest_raw_mb > 2 * FETCH_QUEUE_MB, (
        f"the rest is {rest_raw_mb:.0f} MB raw, not more than twice the fetch queue: too small to show anything"
    )
    assert peak - peak_first < rest_raw_mb / 2, (
        f"peak RSS grew {peak - peak_first:.0f} MB over the last {read_rest} records ({rest_raw_mb:.0f} MB "
        "raw): the consumer keeps what it has applied"
    )
    assert peak < PEAK_RSS_LIMIT_MB, (
        f"peak RSS {peak:.0f} MB: the consumer does not stream in bounded batches"
    )
