"""The pure pieces of the streaming path and its latency benchmark: percentiles, the latency summary,
a follow run's poll, and the arguments a follow run refuses before it connects anywhere."""

from __future__ import annotations

import threading

import pytest
from bench.latency import percentile, summarize

from cdclab.cdc.consumer import consume_into_postgres, poll_available


def test_percentiles_interpolate_between_the_closest_ranks():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1  # order of the input does not matter
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile([5.0], 99) == 5.0
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 50) == pytest.approx(50.5)


def test_a_percentile_of_nothing_or_out_of_range_is_an_error():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"0\.\.100"):
        percentile([1.0], 101)


def test_the_latency_summary_is_in_milliseconds():
    got = summarize([0.1, 0.2, 0.3, 0.4, 1.0])
    assert got == {
        "n": 5,
        "p50_ms": 300.0,
        "p90_ms": 760.0,
        "p99_ms": 976.0,
        "min_ms": 100.0,
        "max_ms": 1000.0,
        "mean_ms": 400.0,
    }
    assert summarize([]) == {"n": 0}


class FakeClient:
    """Stands in for confluent_kafka.Consumer's poll/consume (pure logic under test, no Kafka)."""

    def __init__(self, queued: list[str]) -> None:
        self.queued = queued
        self.calls: list[tuple[str, float]] = []

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", timeout))
        return self.queued.pop(0) if self.queued else None

    def consume(self, num_messages: int, timeout: float) -> list[str]:
        self.calls.append(("consume", timeout))
        out, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return out


def test_a_follow_poll_waits_for_the_first_record_only_and_takes_what_has_arrived():
    client = FakeClient(["a", "b", "c", "d"])
    assert poll_available(client, batch_size=3, timeout=0.2) == ["a", "b", "c"]
    assert client.calls == [("poll", 0.2), ("consume", 0)]  # the rest is taken without waiting
    assert poll_available(client, batch_size=3, timeout=0.2) == ["d"]
    assert poll_available(client, batch_size=3, timeout=0.2) == []
    assert poll_available(FakeClient(["x", "y"]), batch_size=1, timeout=0.2) == ["x"]


def test_a_follow_run_refuses_end_offsets_and_an_empty_batch_size_before_connecting():
    def never() -> None:
        raise AssertionError("connected")

    common = {"bootstrap": "unused:1", "topics": ["t"], "group": "g", "connect": never, "handler": None}
    with pytest.raises(ValueError, match="stop_at bounds a catch-up run"):
        consume_into_postgres(**common, follow=threading.Event(), stop_at={("t", 0): 5})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        consume_into_postgres(**common, batch_size=0)  # type: ignore[arg-type]
