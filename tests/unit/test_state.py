"""Pure logic of cdclab.state.watermarks: typing, canonical encoding and validation of watermarks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cdclab.state import watermarks as state

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_timestamptz_watermarks_encode_canonically_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    a = state.encode(datetime(2026, 3, 1, 13, 0, tzinfo=cet), "timestamptz")
    b = state.encode(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), "timestamptz")
    assert a == b == "2026-03-01T12:00:00.000000+00:00"
    assert state.decode(a, "timestamptz") == NOW


@pytest.mark.parametrize(
    ("value", "value_type"),
    [(42, "bigint"), ("cursor-token", "text"), ({"p0": 10, "p1": [1, 2]}, "json"), (NOW, "timestamptz")],
)
def test_every_type_round_trips(value: object, value_type: str) -> None:
    assert state.decode(state.encode(value, value_type), value_type) == value


def test_json_encoding_is_independent_of_key_order() -> None:
    assert state.encode({"b": 1, "a": 2}, "json") == state.encode({"a": 2, "b": 1}, "json")


@pytest.mark.parametrize(
    ("value", "value_type"),
    [
        ("2026-01-01", "timestamptz"),
        (datetime(2026, 1, 1), "timestamptz"),  # noqa: DTZ001 - the naive value is the point
        ("12", "bigint"),
        (True, "bigint"),
        (1.5, "bigint"),
        (7, "text"),
        ({1, 2}, "json"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(value: object, value_type: str) -> None:
    with pytest.raises(state.WatermarkTypeError):
        state.validate(value, value_type, now=NOW)


def test_an_unknown_type_name_is_refused() -> None:
    with pytest.raises(state.WatermarkTypeError, match="unknown watermark type"):
        state.validate(1, "integer")


def test_a_watermark_in_the_future_is_refused_beyond_the_tolerance() -> None:
    state.validate(NOW + timedelta(minutes=4), "timestamptz", now=NOW)
    with pytest.raises(state.WatermarkInFutureError, match="later than now"):
        state.validate(NOW + timedelta(minutes=6), "timestamptz", now=NOW)


def test_malformed_stored_text_gives_a_type_error_that_says_reset() -> None:
    with pytest.raises(state.WatermarkTypeError, match="reset"):
        state.decode("yesterday", "timestamptz")
    with pytest.raises(state.WatermarkTypeError):
        state.decode("2026-01-01T00:00:00", "timestamptz")  # no offset


def test_typed_documents_refuse_a_different_declared_type() -> None:
    doc = state.typed_document(5, "bigint")
    assert state.parse_typed_document(doc, "bigint") == 5
    with pytest.raises(state.WatermarkTypeError, match="holds a bigint"):
        state.parse_typed_document(doc, "timestamptz")
    with pytest.raises(state.WatermarkTypeError, match="typed watermark document"):
        state.parse_typed_document('"2026-01-01"', "timestamptz")


def test_xcom_payload_keeps_the_type() -> None:
    payload = state.xcom_payload(NOW, "timestamptz")
    assert payload == {"type": "timestamptz", "value": "2026-03-01T12:00:00.000000+00:00"}
    assert state.from_xcom_payload(payload, "timestamptz") == NOW
    assert state.from_xcom_payload(None, "timestamptz") is None
