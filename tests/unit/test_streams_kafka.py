"""Where streams' Kafka clients get their config: the producer settings this module needs are added to a
connection's extra and a contradicting extra is refused, on the provider-hook path as well."""

from __future__ import annotations

import json

import pytest

from cdclab.streams.windows import (
    PRODUCER_REQUIRED,
    ProducerConfigConflictError,
    ensure_topic,
    produce_events,
    producer,
    producer_config,
)

pytestmark = pytest.mark.unit


def test_the_required_producer_settings_are_added_to_the_connection_extra() -> None:
    extra = {"bootstrap.servers": "kafka:9092", "security.protocol": "SASL_SSL", "group.id": "g"}
    config = producer_config(extra, "conn")
    assert config == {
        "bootstrap.servers": "kafka:9092",
        "security.protocol": "SASL_SSL",
        "linger.ms": 5,
        **PRODUCER_REQUIRED,
    }
    assert "group.id" not in config  # a consumer property: a producer would only warn about it
    assert extra["group.id"] == "g"  # the caller's dict is left alone


def test_the_connection_may_set_a_default_or_repeat_a_required_setting() -> None:
    config = producer_config(
        {"bootstrap.servers": "k:1", "linger.ms": 50, "acks": "-1", "enable.idempotence": "true"}, "conn"
    )
    assert config["linger.ms"] == 50
    assert config["acks"] == "all" and config["enable.idempotence"] is True


@pytest.mark.parametrize(("key", "value"), [("acks", "1"), ("acks", 0), ("enable.idempotence", False)])
def test_a_connection_that_contradicts_a_required_setting_is_refused(key: str, value: object) -> None:
    with pytest.raises(ProducerConfigConflictError, match=f"conn 'x' sets {key}="):
        producer_config({"bootstrap.servers": "k:1", key: value}, "conn 'x'")


@pytest.mark.parametrize(
    "kwargs", [{}, {"kafka_conn_id": "kafka_default", "bootstrap": "127.0.0.1:9092"}], ids=["none", "both"]
)
def test_a_client_needs_exactly_one_of_a_connection_and_a_bootstrap(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="exactly one of kafka_conn_id"):
        producer(**kwargs)
    with pytest.raises(ValueError, match="exactly one of kafka_conn_id"):
        ensure_topic("t", **kwargs)
    with pytest.raises(ValueError, match="exactly one of kafka_conn_id"):
        produce_events("t", [], **kwargs)


def test_the_provider_hook_path_applies_the_same_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """KafkaProducerHook builds the config from the connection's extra; our hook adds the settings to
    it, so a connection with acks=1 fails before any Producer exists."""
    extra = {"bootstrap.servers": "127.0.0.1:9", "acks": "1"}
    monkeypatch.setenv("AIRFLOW_CONN_UNIT_STREAMS_KAFKA", json.dumps({"conn_type": "kafka", "extra": extra}))
    with pytest.raises(
        ProducerConfigConflictError, match="Airflow connection 'unit_streams_kafka' sets acks"
    ):
        producer(kafka_conn_id="unit_streams_kafka")
