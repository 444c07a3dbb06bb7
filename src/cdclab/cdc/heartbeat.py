"""Wait until Debezium has passed an LSN fence, with the official Kafka provider's deferrable sensor.

Vocabulary:
- *fence*: the source's ``pg_current_wal_lsn()``, noted before the log is read
  (:func:`cdclab.lessons.cdc_concepts.current_lsn`).
- *heartbeat*: every ``heartbeat.interval.ms`` (5 s, ``connectors/shop-postgres-source.json``) Debezium
  runs its ``heartbeat.action.query``, an upsert into ``public.cdc_heartbeat``; the change event on
  ``<topic.prefix>.public.cdc_heartbeat`` (:func:`heartbeat_topic`) carries that write's ``source.lsn``.
  Debezium reads the slot in commit order, so once a heartbeat with ``source.lsn >= fence`` is on Kafka,
  every change committed before the fence is on Kafka too.
- :class:`HeartbeatSensor`: the provider's ``AwaitMessageSensor`` with :func:`heartbeat_reached` as its
  apply function. It *defers*: the worker slot is free while the triggerer polls the topic. Its event
  (the task's XCom) is the heartbeat's LSN.

How the provider's consumer reads here: ``AwaitMessageTrigger`` subscribes with the connection's
``group.id`` (``cdclab-airflow`` for the lab's ``kafka_default``). The sensor commits nothing
(``commit_offset=False``), so that group never has a position on the heartbeat topic and every wait starts
at the topic's end (``auto.offset.reset`` latest): it reads only heartbeats published after it subscribed,
skips any that are still behind the fence, and fires on the first one at or past it: the next heartbeat,
within about one interval. Nothing of the wait is kept, which is why at-least-once reading is fine here;
the *data* is read by :mod:`cdclab.cdc.consumer` with offsets in the warehouse (exactly once), never by
this sensor. Two waits at the same moment share the group and its one partition: one of them gets it
only once the other has closed its consumer and the group has rebalanced (expected: seconds; not measured).

The provider's trigger closes its consumer in ``cleanup()``, which the triggerer calls after the event;
``dag.test()`` runs a trigger inline and never calls it, so the consumer stayed in the group until the
broker's session timeout (45 s), and the next wait on the topic stood still that long (measured: 44 s per
run after the first). :class:`HeartbeatTrigger` therefore closes the consumer itself, before it yields.

A Debezium that is paused or failed never sends the heartbeat: after ``timeout`` (the DAG's
``fence_timeout_seconds``) the trigger raises :class:`DebeziumBehind`, which names the remedy (check
``GET /connectors/shop-postgres-source/status`` on Kafka Connect). The triggerer enforces the same
timeout on its own; ``dag.test()`` does not, hence the trigger's own deadline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.apache.kafka.sensors.kafka import AwaitMessageSensor
from airflow.providers.apache.kafka.triggers.await_message import AwaitMessageTrigger
from airflow.triggers.base import TriggerEvent

from cdclab.cdc.events import json_document

APPLY_FUNCTION = "cdclab.cdc.heartbeat.heartbeat_reached"


def heartbeat_topic(topic_prefix: str) -> str:
    """The topic of the heartbeat table's changes for a connector's ``topic.prefix``."""
    return f"{topic_prefix}.public.cdc_heartbeat"


def heartbeat_reached(message: Any, fence_lsn: int | str) -> int | None:
    """The apply function of :class:`HeartbeatSensor`: the heartbeat's LSN when it is at or past
    ``fence_lsn``, else ``None`` (keep waiting). A tombstone, a record that is not JSON or one without
    an integer ``source.lsn`` is not a heartbeat past the fence: ``None``."""
    value = json_document(message.value())
    source = value.get("source") if isinstance(value, dict) else None
    lsn = source.get("lsn") if isinstance(source, dict) else None
    if isinstance(lsn, int) and not isinstance(lsn, bool) and lsn >= int(fence_lsn):
        return lsn
    return None


class DebeziumBehind(RuntimeError):
    """No heartbeat at or past the fence within the wait: the connector is paused, failed or far behind."""


class HeartbeatTrigger(AwaitMessageTrigger):
    """The provider's ``AwaitMessageTrigger`` that closes its consumer (leaves the group) as soon as a
    message matched, before yielding the event, instead of only in ``cleanup()``; and that gives up after
    ``wait_seconds`` with :class:`DebeziumBehind` (the triggerer also enforces the task's timeout, but
    ``dag.test()`` runs triggers inline without one)."""

    def __init__(self, *, wait_seconds: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wait_seconds = wait_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{__name__}.HeartbeatTrigger", {**kwargs, "wait_seconds": self.wait_seconds}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        messages = super().run()
        try:
            async with asyncio.timeout(self.wait_seconds):
                event = await anext(messages)
        except TimeoutError:
            fence = self.apply_function_kwargs.get("fence_lsn")
            raise DebeziumBehind(
                f"no Debezium heartbeat at or past LSN {fence} on {list(self.topics)} within "
                f"{self.wait_seconds} s: is the connector RUNNING (GET /connectors/shop-postgres-source/status "
                f"on Kafka Connect)?"
            ) from None
        finally:
            await messages.aclose()
            await self.cleanup()
        yield event


class HeartbeatSensor(AwaitMessageSensor):
    """Defer until a heartbeat at or past ``fence_lsn`` (an XCom or a number) is on
    :func:`heartbeat_topic` ``(topic_prefix)``; ``topic_prefix`` may be a template. ``timeout_param``
    names the DAG param that holds the timeout in seconds (read when the task runs, so a Trigger's conf
    applies); without it, ``timeout`` as usual."""

    def __init__(
        self,
        *,
        fence_lsn: Any,
        topic_prefix: str,
        kafka_config_id: str = "kafka_default",
        timeout_param: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poll_interval", 0)  # the trigger sleeps this long after every skipped heartbeat
        super().__init__(
            topics=[heartbeat_topic(topic_prefix)],
            apply_function=APPLY_FUNCTION,
            apply_function_kwargs={"fence_lsn": fence_lsn},
            kafka_config_id=kafka_config_id,
            commit_offset=False,
            **kwargs,
        )
        self.timeout_param = timeout_param

    def execute(self, context: Any) -> Any:
        """``AwaitMessageSensor.execute`` with :class:`HeartbeatTrigger` and the timeout from the params."""
        timeout = float(context["params"][self.timeout_param] if self.timeout_param else self.timeout)
        self.defer(
            trigger=HeartbeatTrigger(
                wait_seconds=timeout,
                topics=self.topics,
                apply_function=self.apply_function,
                apply_function_args=self.apply_function_args,
                apply_function_kwargs=self.apply_function_kwargs,
                kafka_config_id=self.kafka_config_id,
                poll_timeout=self.poll_timeout,
                poll_interval=self.poll_interval,
                commit_offset=self.commit_offset,
            ),
            method_name="execute_complete",
            timeout=dt.timedelta(seconds=timeout),
        )
