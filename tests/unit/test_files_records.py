"""Partner-file parsing: formats, offsets, and one clear error per kind of corrupt input."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta

import pytest

from cdclab.files import errors, producer
from cdclab.files.detection import filter_by_time
from cdclab.files.records import parse_object
from cdclab.files.store import ObjectInfo, matches


@pytest.mark.parametrize("key", ["a.csv", "a.jsonl", "a.csv.gz", "a.jsonl.gz"])
def test_every_format_parses_to_the_same_rows(key: str) -> None:
    rows = producer.make_rows(25, 3)
    got = parse_object(key, producer.file_bytes(rows, key))
    assert sorted(r.values() for r in got) == producer.expected(rows)


def test_offsets_point_at_the_start_of_each_line() -> None:
    data = producer.file_bytes(producer.make_rows(5, 1), "a.jsonl")
    got = parse_object("a.jsonl", data)
    assert [r.offset for r in got] == [0] + [i + 1 for i, b in enumerate(data[:-1]) if b == ord("\n")]


@pytest.mark.parametrize(
    ("kind", "key", "error"),
    [
        ("empty", "a.csv", errors.EmptyFile),
        ("truncated_gzip", "a.jsonl.gz", errors.TruncatedGzip),
        ("bad_row", "a.csv", errors.BadRecord),
        ("bad_row", "a.jsonl", errors.BadRecord),
    ],
)
def test_each_kind_of_corruption_has_its_own_error_and_reason(kind, key, error) -> None:
    data = producer.corrupt(kind, key, producer.make_rows(10, 1))
    with pytest.raises(error) as info:
        parse_object(key, data)
    assert info.value.reason == error.reason
    if kind == "bad_row":
        assert info.value.offset is not None
        assert info.value.offset > 0


def test_naive_timestamps_are_refused() -> None:
    data = b"event_id,customer_id,sku,qty,amount,event_time\n1,2,S,1,9.99,2026-03-29T02:30:00\n"
    with pytest.raises(errors.BadRecord, match="no UTC offset"):
        parse_object("a.csv", data)


def test_a_gzip_member_holding_nothing_is_an_empty_file() -> None:
    with pytest.raises(errors.EmptyFile):
        parse_object("a.csv.gz", gzip.compress(b""))


def test_patterns_match_relative_to_the_prefix() -> None:
    assert matches("landing/p/part-1.csv", "landing/p/", "part-*")
    assert matches("landing/p/dt=1/x.csv", "landing/p/", "*.csv")
    assert not matches("landing/p/_manifest.json", "landing/p/", "part-*")
    assert not matches("landing/q/part-1.csv", "landing/p/", "*")


def test_objects_older_than_watermark_minus_lag_are_skipped_younger_ones_checked() -> None:
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    objs = [ObjectInfo("b", f"k{i}", 1, "e", t + timedelta(minutes=i)) for i in range(-10, 3)]
    kept = filter_by_time(objs, t, timedelta(minutes=5))
    assert [o.key for o in kept] == [f"k{i}" for i in range(-4, 3)]
    assert filter_by_time(objs, None, timedelta(0)) == objs
