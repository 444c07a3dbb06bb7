"""Tumbling event-time windows, watermark, allowed lateness and de-duplication (pure logic)."""

from __future__ import annotations

import datetime as dt
import json
from datetime import UTC

import pytest
from psycopg2 import sql

from cdclab.streams.windows import (
    Checkpoint,
    ClickEvent,
    MalformedClickEventError,
    StreamConfig,
    StreamTables,
    assign,
    parse_event,
)
from cdclab.workload import clickstream_events

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CFG = StreamConfig(window=dt.timedelta(minutes=5), allowed_lateness=dt.timedelta(minutes=2))


def ev(
    event_id: str, minute: float, event_type: str = "page_view", ingest_minute: float | None = None
) -> ClickEvent:
    at = T0 + dt.timedelta(minutes=minute)
    ingest = None if ingest_minute is None else T0 + dt.timedelta(minutes=ingest_minute)
    return ClickEvent(event_id=event_id, user_id=1, event_type=event_type, event_time=at, ingest_time=ingest)


def verdicts(
    events: list[ClickEvent], cp: Checkpoint | None = None, seen: frozenset[str] = frozenset()
) -> list[str]:
    return [d.verdict for d in assign(events, cp or Checkpoint(), CFG, seen).decisions]


def test_events_fall_into_half_open_tumbling_windows_aligned_to_the_epoch() -> None:
    out = assign([ev("a", 0), ev("b", 4.99), ev("c", 5)], Checkpoint(), CFG)
    w1 = (T0, T0 + dt.timedelta(minutes=5), "page_view")
    w2 = (T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=10), "page_view")
    assert out.counts == {w1: (2, 0), w2: (1, 0)}


def test_counts_are_kept_per_window_and_event_type() -> None:
    out = assign(
        [ev("a", 1, "page_view"), ev("b", 2, "purchase"), ev("c", 3, "page_view")], Checkpoint(), CFG
    )
    assert {k[2]: v for k, v in out.counts.items()} == {"page_view": (2, 0), "purchase": (1, 0)}


def test_watermark_is_max_event_time_minus_allowed_lateness() -> None:
    out = assign([ev("a", 3), ev("b", 9), ev("c", 7)], Checkpoint(), CFG)
    assert out.checkpoint.max_event_time == T0 + dt.timedelta(minutes=9)
    assert out.checkpoint.watermark(CFG) == T0 + dt.timedelta(minutes=7)
    assert Checkpoint().watermark(CFG) is None


def test_an_event_whose_window_closed_but_within_allowed_lateness_counts_as_late() -> None:
    # max event time 6:00 closes [0, 5) in event time; watermark 4:00 < 5:00, so [0, 5) is not final
    out = assign([ev("a", 6), ev("b", 4)], Checkpoint(), CFG)
    assert [d.verdict for d in out.decisions] == ["on_time", "late"]
    assert out.counts[(T0, T0 + dt.timedelta(minutes=5), "page_view")] == (1, 1)


def test_an_event_whose_window_ends_at_or_before_the_watermark_is_too_late_and_not_counted() -> None:
    # max 7:00 -> watermark 5:00 == end of [0, 5): that window is final
    out = assign([ev("a", 7), ev("b", 4.5)], Checkpoint(), CFG)
    assert [d.verdict for d in out.decisions] == ["on_time", "too_late"]
    assert (T0, T0 + dt.timedelta(minutes=5), "page_view") not in out.counts
    assert out.checkpoint.too_late == 1
    assert "is final" in out.decisions[1].reason
    assert "12:05" in out.decisions[1].reason


def test_out_of_order_events_within_the_open_window_are_on_time() -> None:
    assert verdicts([ev("a", 3), ev("b", 1), ev("c", 2)]) == ["on_time", "on_time", "on_time"]


def test_a_redelivered_event_id_is_a_duplicate_within_a_batch_and_across_batches() -> None:
    first = assign([ev("a", 1), ev("a", 1)], Checkpoint(), CFG)
    assert [d.verdict for d in first.decisions] == ["on_time", "duplicate"]
    assert sum(n for n, _ in first.counts.values()) == 1
    assert verdicts([ev("a", 1)], first.checkpoint, frozenset({"a"})) == ["duplicate"]


def test_a_duplicate_of_a_too_late_event_is_a_duplicate_not_a_second_too_late_record() -> None:
    assert verdicts([ev("x", 10), ev("a", 1), ev("a", 1)]) == ["on_time", "too_late", "duplicate"]


def test_an_event_far_ahead_of_its_ingest_time_is_future_and_does_not_move_the_watermark() -> None:
    out = assign(
        [ev("a", 1, ingest_minute=1.1), ev("b", 60, ingest_minute=2), ev("c", 1.5, ingest_minute=2)],
        Checkpoint(),
        CFG,
    )
    assert [d.verdict for d in out.decisions] == ["on_time", "future", "on_time"]
    assert out.checkpoint.max_event_time == T0 + dt.timedelta(minutes=1.5)


def test_the_watermark_only_moves_forward() -> None:
    cp = assign([ev("a", 20)], Checkpoint(), CFG).checkpoint
    out = assign([ev("b", 19)], cp, CFG)
    assert out.checkpoint.max_event_time == T0 + dt.timedelta(minutes=20)


def test_verdicts_do_not_depend_on_how_the_stream_is_cut_into_batches() -> None:
    raw = clickstream_events(
        7,
        400,
        late_fraction=0.1,
        duplicate_fraction=0.1,
        out_of_order_fraction=0.2,
        start=T0,
        lateness=dt.timedelta(seconds=60),
    )
    events = [parse_event(json.dumps(e), 0, i) for i, e in enumerate(raw)]
    cfg = StreamConfig(window=dt.timedelta(seconds=60), allowed_lateness=dt.timedelta(seconds=30))
    whole = assign(events, Checkpoint(), cfg)
    for size in (1, 7, 50):
        cp, seen, counts = Checkpoint(), set(), {}
        got: list[str] = []
        for i in range(0, len(events), size):
            out = assign(events[i : i + size], cp, cfg, frozenset(seen))
            got += [d.verdict for d in out.decisions]
            seen |= {d.event.event_id for d in out.decisions}
            for k, (n, late) in out.counts.items():
                old = counts.get(k, (0, 0))
                counts[k] = (old[0] + n, old[1] + late)
            cp = out.checkpoint
        assert got == [d.verdict for d in whole.decisions]
        assert counts == whole.counts
        assert cp == whole.checkpoint
    tally = whole.by_verdict()
    assert tally["duplicate"] == 40
    assert tally["too_late"] > 0
    assert tally["late"] > 0
    assert tally["on_time"] > 250


def test_each_verdict_is_counted_once_in_the_checkpoint() -> None:
    out = assign([ev("a", 7), ev("a", 7), ev("b", 4.5), ev("d", 11), ev("c", 8)], Checkpoint(), CFG)
    cp = out.checkpoint
    assert (cp.deliveries, cp.on_time, cp.late, cp.duplicates, cp.too_late, cp.future) == (5, 2, 1, 1, 1, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (None, "tombstone"),
        (json.dumps({"event_id": "a", "user_id": 1, "event_type": "x"}).encode(), "missing field"),
        (
            json.dumps(
                {"event_id": "a", "user_id": "1", "event_type": "x", "event_time": "2026-03-01T00:00:00Z"}
            ),
            "user_id must be an integer",
        ),
        (
            json.dumps(
                {"event_id": "a", "user_id": 1, "event_type": "x", "event_time": "2026-03-01T00:00:00"}
            ),
            "no UTC offset",
        ),
        (
            json.dumps({"event_id": "a", "user_id": 1, "event_type": "x", "event_time": "yesterday"}),
            "not ISO 8601",
        ),
    ],
)
def test_records_that_are_not_click_events_raise_with_the_reason(
    value: bytes | str | None, message: str
) -> None:
    with pytest.raises(MalformedClickEventError, match=message):
        parse_event(value)


def test_a_generated_event_parses_with_event_and_ingest_time_in_utc() -> None:
    raw = clickstream_events(1, 1, start=T0)[0]
    event = parse_event(json.dumps(raw).encode(), 0, 42)
    assert event.event_time == T0
    assert event.ingest_time is not None
    assert event.ingest_time > T0
    assert event.offset == 42
    assert event.event_id == raw["event_id"]


def test_stream_tables_are_quoted_identifiers_under_one_prefix() -> None:
    tables = StreamTables("marts", "clicks_x_")
    assert tables.windows == sql.Identifier("marts", "clicks_x_windows")
    assert tables.seen.strings == ("marts", "clicks_x_seen")


def test_a_negative_lateness_or_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamConfig(window=dt.timedelta(0))
    with pytest.raises(ValueError, match="negative"):
        StreamConfig(allowed_lateness=dt.timedelta(seconds=-1))


def test_a_dedup_horizon_shorter_than_a_window_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one window"):
        StreamConfig(window=dt.timedelta(seconds=60), dedup_horizon=dt.timedelta(seconds=59))
    assert StreamConfig(window=dt.timedelta(seconds=60), dedup_horizon=dt.timedelta(seconds=60))


class _Record:
    """A Kafka record as a consumer hands it over: value, partition, offset."""

    def __init__(self, value: bytes | None, offset: int) -> None:
        self._value, self._offset = value, offset

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


def test_a_batch_parses_into_its_click_events_and_the_records_that_are_none_with_the_reason() -> None:
    from cdclab.streams.windows import parse_records

    good = json.dumps(
        {"event_id": "e1", "user_id": 7, "event_type": "view", "event_time": "2026-01-01T00:00:00Z"}
    ).encode()
    tombstone, not_json = _Record(None, 1), _Record(b"{", 2)
    events, rejects = parse_records([_Record(good, 0), tombstone, not_json], "malformed event")
    assert [(e.event_id, e.user_id, e.offset) for e in events] == [("e1", 7, 0)]
    assert [r for r, _ in rejects] == [tombstone, not_json]
    assert rejects[0][1] == "malformed event: record has no value (a tombstone is not a click event)"
    assert parse_records([not_json])[1][0][1].startswith("malformed click event: value is not JSON")
