"""A CDC fence: wait until Debezium has published every change committed so far, without sleeping.

How: insert a row with a fresh token into ``public.cdclab_fence`` in the shop database (a table the
connector captures, as it captures every table of ``public``) and read that table's topic,
``<topic.prefix>.public.cdclab_fence``, until the token arrives. Debezium streams the replication
slot in commit order with one task, so when the fence row (committed after everything the caller
committed) is on Kafka, so is every earlier change. The consumer reads ``read_committed``: under
exactly-once delivery a record is visible only once the Kafka transaction that wrote it, and every
earlier one, has committed.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg2

from cdclab.lab.config import LabConfig

FENCE_TABLE = "public.cdclab_fence"
TOPIC_PREFIX = "shop"
"""The connector's ``topic.prefix`` (connectors/shop-postgres-source.json)."""


class FenceTimeout(AssertionError):
    """The fence row did not reach Kafka in time: Debezium is behind, stopped or failed."""


def _ensure_table(conn: Any) -> None:
    with conn.cursor() as cur:
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS public.cdclab_fence "
                "(token text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())"
            )
        except psycopg2.errors.UniqueViolation:  # two sessions created it at once: it exists now
            pass


def _high_watermark(consumer: Any, topic: str) -> int | None:
    from confluent_kafka import TopicPartition

    meta = consumer.list_topics(topic, timeout=10)
    if topic not in meta.topics or meta.topics[topic].error is not None:
        return None
    _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    return int(high)


def cdc_fence(cfg: LabConfig, timeout: float = 180, topic_prefix: str = TOPIC_PREFIX) -> str:
    """Block until every change committed in ``shop`` before this call is on Kafka; return the token."""
    from confluent_kafka import Consumer, TopicPartition

    topic = f"{topic_prefix}.{FENCE_TABLE}"
    consumer = Consumer(
        {
            "bootstrap.servers": cfg.kafka_bootstrap,
            "group.id": f"cdclab-fence-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    token = uuid.uuid4().hex
    conn = psycopg2.connect(cfg.pg_dsn("shop"))
    conn.autocommit = True
    try:
        _ensure_table(conn)
        start = _high_watermark(consumer, topic) or 0  # read only what comes after this point
        with conn.cursor() as cur:
            cur.execute("INSERT INTO public.cdclab_fence (token) VALUES (%s)", [token])
        deadline = time.monotonic() + timeout
        assigned = False
        while time.monotonic() < deadline:
            if not assigned:
                if _high_watermark(consumer, topic) is None:  # Debezium creates the topic with the first row
                    time.sleep(0.5)
                    continue
                consumer.assign([TopicPartition(topic, 0, start)])
                assigned = True
            msg = consumer.poll(1.0)
            raw = None if msg is None or msg.error() is not None else msg.value()
            if raw is None:
                continue
            value = json.loads(raw)
            if isinstance(value, dict) and "schema" in value:  # JSON converter with schemas.enable
                value = value.get("payload")
            after = (value or {}).get("after") or {}
            if after.get("token") == token:
                return token
        raise FenceTimeout(
            f"the fence row {token} written to shop.{FENCE_TABLE} did not reach topic {topic} in "
            f"{timeout:.0f} s: the Debezium connector is behind, paused or failed (check the connect log "
            f"and GET /connectors/shop-postgres-source/status)"
        )
    finally:
        consumer.close()
        with conn.cursor() as cur:
            cur.execute("DELETE FROM public.cdclab_fence WHERE token = %s", [token])
        conn.close()
