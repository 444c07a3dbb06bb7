"""The fence sensor's apply function: fire on the first Debezium heartbeat at or past the fence LSN, and
only on a heartbeat; and the sensor asks the provider's trigger for exactly that, committing nothing."""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any

import pytest

from cdclab.cdc.heartbeat import (
    APPLY_FUNCTION,
    HeartbeatSensor,
    HeartbeatTrigger,
    heartbeat_reached,
    heartbeat_topic,
)

pytestmark = pytest.mark.unit


class Record:
    """A consumed record as the trigger hands it to the apply function: only ``value()`` is read."""

    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value


def heartbeat(lsn: Any, schemas: bool = False) -> Record:
    payload = {
        "before": None,
        "after": {"id": 1},
        "source": {"lsn": lsn, "table": "cdc_heartbeat"},
        "op": "u",
    }
    doc = {"schema": {"type": "struct"}, "payload": payload} if schemas else payload
    return Record(json.dumps(doc).encode())


@pytest.mark.parametrize("schemas", [False, True], ids=["plain", "with-schema"])
def test_a_heartbeat_at_or_past_the_fence_fires_with_its_lsn(schemas: bool) -> None:
    assert heartbeat_reached(heartbeat(1000, schemas), fence_lsn=1000) == 1000
    assert heartbeat_reached(heartbeat(1001, schemas), fence_lsn="1000") == 1001  # a rendered template


def test_a_heartbeat_behind_the_fence_keeps_the_sensor_waiting() -> None:
    assert heartbeat_reached(heartbeat(999), fence_lsn=1000) is None


@pytest.mark.parametrize(
    "record",
    [
        Record(None),
        Record(b"not json"),
        Record(b"[1, 2]"),
        heartbeat(None),
        heartbeat("2000"),
        heartbeat(True),
    ],
    ids=["tombstone", "not-json", "not-an-object", "no-lsn", "lsn-as-text", "lsn-bool"],
)
def test_anything_but_a_heartbeat_with_an_integer_lsn_is_not_a_match(record: Record) -> None:
    assert heartbeat_reached(record, fence_lsn=0) is None


def test_the_sensor_waits_on_the_heartbeat_topic_and_commits_nothing() -> None:
    sensor = HeartbeatSensor(task_id="await_heartbeat", fence_lsn=5, topic_prefix="shop", timeout_param="t")
    assert sensor.topics == [heartbeat_topic("shop")] == ["shop.public.cdc_heartbeat"]
    assert sensor.apply_function == APPLY_FUNCTION
    assert import_module(APPLY_FUNCTION.rsplit(".", 1)[0]).heartbeat_reached is heartbeat_reached
    assert sensor.apply_function_kwargs == {"fence_lsn": 5}
    assert sensor.commit_offset is False
    assert sensor.poll_interval == 0


def test_the_trigger_serializes_as_itself_so_the_triggerer_runs_the_closing_variant() -> None:
    trigger = HeartbeatTrigger(wait_seconds=60, topics=["shop.public.cdc_heartbeat"], commit_offset=False)
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    assert getattr(import_module(module), name) is HeartbeatTrigger
    assert kwargs["topics"] == ["shop.public.cdc_heartbeat"] and kwargs["commit_offset"] is False
    assert HeartbeatTrigger(**kwargs).wait_seconds == 60  # what the triggerer rebuilds it from
