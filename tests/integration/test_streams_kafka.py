"""streams' Kafka clients against the lab's Kafka: through the Airflow connection ``kafka_default`` (the
provider's KafkaAdminClientHook / KafkaProducerHook, what the DAG tasks use) and through a bootstrap
string (tests, bench): a one-partition topic is created once, a multi-partition topic is refused, and
events arrive in order, keyed by user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from cdclab.streams.windows import MultiPartitionTopicError, ensure_topic, produce_events, topic_partitions

LOG_SERVICES = ["kafka"]


@pytest.fixture
def topics(lab: Any) -> Iterator[list[str]]:
    """Topics the test names here are deleted afterwards."""
    made: list[str] = []
    yield made
    if made:
        admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
        for future in admin.delete_topics(made, operation_timeout=30).values():
            try:
                future.result(60)
            except Exception as exc:  # a topic the test never created
                if "UNKNOWN_TOPIC" not in str(exc):
                    raise


def read_all(lab: Any, topic: str, n: int) -> list[tuple[bytes, dict]]:
    consumer = Consumer(
        {"bootstrap.servers": lab.kafka_bootstrap, "group.id": f"{topic}.reader", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        out = []
        for msg in consumer.consume(num_messages=n + 10, timeout=10):
            assert msg.error() is None, msg.error()
            out.append((msg.key(), json.loads(msg.value())))
        return out
    finally:
        consumer.close()


def test_through_the_airflow_connection_a_new_topic_gets_one_partition_once(lab, names, topics):
    topic = names("one")
    topics.append(topic)
    assert topic_partitions(None, topic, kafka_conn_id="kafka_default") is None
    ensure_topic(topic, kafka_conn_id="kafka_default")
    ensure_topic(topic, kafka_conn_id="kafka_default")  # exists: nothing to do
    assert topic_partitions(lab.kafka_bootstrap, topic) == 1


@pytest.mark.parametrize("through", ["connection", "bootstrap"])
def test_a_topic_with_three_partitions_is_refused(lab, names, topics, through):
    topic = names("three")
    topics.append(topic)
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    source = (
        {"kafka_conn_id": "kafka_default"} if through == "connection" else {"bootstrap": lab.kafka_bootstrap}
    )
    with pytest.raises(MultiPartitionTopicError, match=f"topic '{topic}' has 3 partitions"):
        ensure_topic(topic, **source)


@pytest.mark.parametrize("through", ["connection", "bootstrap"])
def test_events_arrive_in_order_keyed_by_user(lab, names, topics, through):
    topic = names("ev")
    topics.append(topic)
    source = (
        {"kafka_conn_id": "kafka_default"} if through == "connection" else {"bootstrap": lab.kafka_bootstrap}
    )
    ensure_topic(topic, **source)
    events = [{"event_id": f"e{i}", "user_id": i % 7, "event_type": "click"} for i in range(50)]
    assert produce_events(topic, events, **source) == 50
    assert read_all(lab, topic, 50) == [(str(e["user_id"]).encode(), e) for e in events]
