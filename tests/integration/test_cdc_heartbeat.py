"""The 71_01_02 fence's trigger (the Kafka provider's AwaitMessageTrigger, cdclab.cdc.heartbeat) against the
lab's Kafka, run inline as ``dag.test()`` runs it: it fires on the first heartbeat at or past the fence,
leaves its consumer group at once (a second wait of the same group is not held for the session
timeout), and gives up with DebeziumBehind when no heartbeat passes the fence."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from cdclab.cdc.heartbeat import APPLY_FUNCTION, DebeziumBehind, HeartbeatTrigger
from cdclab.streams.windows import ensure_topic

LOG_SERVICES = ["kafka"]
SESSION_TIMEOUT = 45  # librdkafka's session.timeout.ms default, in seconds


@pytest.fixture
def topic(lab: Any, names: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A one-partition heartbeat topic and a Kafka connection with the test's own consumer group."""
    name, conn_id = names("hb"), names("kafka").upper()
    ensure_topic(name, bootstrap=lab.kafka_bootstrap)
    extra = {"bootstrap.servers": lab.kafka_bootstrap, "group.id": names("grp")}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps({"conn_type": "kafka", "extra": extra}))
    yield name, conn_id.lower()
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    for future in admin.delete_topics([name], operation_timeout=30).values():
        future.result(60)


class Debezium(threading.Thread):
    """Writes a heartbeat every 0.3 s with LSNs 1, 2, 3, ... (as the connector does, every 5 s)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap})
        self.topic, self.lsn, self.stop = topic, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.lsn += 1
            self.producer.produce(self.topic, json.dumps({"op": "u", "source": {"lsn": self.lsn}}).encode())
            self.producer.flush(5)
            self.stop.wait(0.3)


def wait(topic: str, conn_id: str, fence: int, seconds: float) -> Any:
    trigger = HeartbeatTrigger(
        wait_seconds=seconds,
        topics=[topic],
        apply_function=APPLY_FUNCTION,
        apply_function_kwargs={"fence_lsn": fence},
        kafka_config_id=conn_id,
        poll_interval=0,
        commit_offset=False,
    )

    async def first() -> Any:
        return await anext(trigger.run())

    event = asyncio.run(first())
    assert trigger._consumer is None  # closed: the group was left before the event was handed on
    return event.payload


def test_each_wait_fires_past_its_fence_and_the_next_wait_is_not_held_by_the_last(lab, topic):
    name, conn_id = topic
    debezium = Debezium(lab.kafka_bootstrap, name)
    debezium.start()
    try:
        fence = 5
        for _ in range(3):
            t0 = time.monotonic()
            reached = wait(name, conn_id, fence, seconds=SESSION_TIMEOUT)
            took = time.monotonic() - t0
            assert reached >= fence
            assert took < SESSION_TIMEOUT / 2, (
                f"a wait took {took:.1f} s: the previous consumer held the group"
            )
            fence = debezium.lsn + 3  # a fence a second ahead of the heartbeats written so far
    finally:
        debezium.stop.set()
        debezium.join()


def test_no_heartbeat_past_the_fence_fails_with_the_remedy(lab, topic):
    name, conn_id = topic
    debezium = Debezium(lab.kafka_bootstrap, name)
    debezium.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(DebeziumBehind, match="is the connector RUNNING"):
            wait(name, conn_id, 10**12, seconds=4)
        assert 4 <= time.monotonic() - t0 < 20
    finally:
        debezium.stop.set()
        debezium.join()
