"""The CDC sink's fast path, its pure parts: which routes have SQL decoders, how a batch's bytes become
one JSON array (or the Python path), and the SQL text of each column's decoder and check."""

from __future__ import annotations

import json

import pytest
from bench import rawmerge

from tests.unit._kafka_records import TOPIC, Msg


def envelope(op: str = "c", after: dict[str, object] | None = None) -> bytes:
    value = {"before": None, "after": after or {"id": 1}, "source": {"lsn": 5}, "op": op}
    return json.dumps(value, separators=(",", ":")).encode()


def test_a_route_is_eligible_only_when_every_column_has_an_sql_decoder() -> None:
    types = {"id": "bigint", "total": "numeric(12,2)", "d": "date", "ts": "timestamp with time zone"}
    codecs = {"total": "numeric", "d": "date", "ts": "timestamptz"}
    assert rawmerge.route_eligible(codecs, types, ("id",))
    assert not rawmerge.route_eligible(codecs, types, ())
    assert not rawmerge.route_eligible({**codecs, "f": "float"}, {**types, "f": "double precision"}, ("id",))
    assert not rawmerge.route_eligible(codecs, {**types, "tags": "text[]"}, ("id",))
    assert not rawmerge.route_eligible(codecs, {**types, "h": "hstore"}, ("id",))
    assert not rawmerge.route_eligible({**codecs, "b": "bits:3"}, {**types, "b": "bit(3)"}, ("id",))


def test_a_batch_becomes_one_json_array_of_key_value_pairs_per_topic_and_tombstones_are_counted() -> None:
    a, b = envelope(), envelope("u", {"id": 2})
    raw = rawmerge.raw_batch(
        [Msg(b'{"id":1}', a), Msg(b'{"id":1}', None), Msg(b'{"id":2}', b)], {TOPIC: True}
    )
    assert raw is not None
    assert raw.tombstones == 1
    assert raw.counts == {TOPIC: 2}
    assert json.loads(raw.payloads[TOPIC]) == [[{"id": 1}, json.loads(a)], [{"id": 2}, json.loads(b)]]


def test_an_empty_value_is_a_tombstone_and_a_batch_of_tombstones_has_no_payload() -> None:
    raw = rawmerge.raw_batch([Msg(b'{"id":1}', b"")], {TOPIC: True})
    assert raw is not None and raw.tombstones == 1 and raw.payloads == {}


@pytest.mark.parametrize(
    "msg",
    [
        Msg(b'{"id":1}', envelope(), "other.topic"),  # a route without SQL decoders
        Msg(None, envelope()),  # no key: the Python path dead-letters it
        Msg(b"", envelope()),
        Msg(b'{"id":1}', b'{"schema":{},"payload":' + envelope() + b"}"),  # the schemas wrapper
        Msg(b'{"id":1}', b"not json"),
        Msg(b'{"id":1}', envelope(after={"id": 1, "doc": "__debezium_unavailable_value"})),  # TOAST
    ],
)
def test_a_record_the_python_path_must_judge_sends_the_whole_batch_there(msg: Msg) -> None:
    fine = Msg(b'{"id":9}', envelope())
    assert rawmerge.raw_batch([fine, msg], {TOPIC: True, "other.topic": False}) is None


def test_column_decoders_mirror_the_python_codecs() -> None:
    x = "j"
    assert rawmerge.value_expr(x, "identity", "bigint") == "(j #>> '{}')::bigint"
    numeric = rawmerge.value_expr(x, "numeric", "numeric(12,2)")
    assert "WHEN 'NAN' THEN 'NaN'" in numeric and numeric.endswith("::numeric(12,2)")
    date = rawmerge.value_expr(x, "date", "date")
    assert "date '1970-01-01' + (j #>> '{}')::int" in date
    assert "-2147472692 THEN 'infinity'::date" in date and "-2147472691 THEN '-infinity'::date" in date
    assert rawmerge.value_expr(x, "timestamptz", "timestamp with time zone").startswith(
        "(j #>> '{}')::timestamptz"
    )
    with pytest.raises(ValueError, match="no SQL decoder"):
        rawmerge.value_expr(x, "bytea", "bytea")


def test_values_whose_sql_decoding_is_not_proven_equal_are_checked() -> None:
    assert rawmerge.value_check("j", "identity") is None
    assert "('string', 'null')" in (rawmerge.value_check("j", "numeric") or "")
    assert "'^-?[0-9]+$'" in (rawmerge.value_check("j", "date") or "")
    zoned = rawmerge.value_check("j", "timestamptz") or ""
    assert "<> '0000'" in zoned


def test_the_statement_quotes_names_and_reads_one_payload() -> None:
    stmt, payload = rawmerge.merge_statement(
        'core.odd"name', ("id",), ["id", "total"], {"id": "bigint", "total": "numeric"}, {"total": "numeric"}
    )
    text = str(stmt._wrapped)  # sql.SQL's text
    assert '"core"."odd""name"' in text and '"core"."odd""name__deleted"' in text
    assert text.count(payload.token) == 1
