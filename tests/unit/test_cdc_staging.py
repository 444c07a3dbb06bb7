"""Pure parts of the staged merge and the Airflow-free consuming path: COPY text fields, the JSON batch
and its fallback to COPY, staging table names, connections read from ``AIRFLOW_CONN_*`` and the JSON decoder's fallback."""

from __future__ import annotations

import json

import pytest

from cdclab.cdc.events import Change, MalformedEvent, _loads, parse_debezium
from cdclab.cdc.merge import _json_source, _Payload, _plain_text, _ts, copy_text, stage_table
from cdclab.common.db import env_connection


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (None, "\\N"),
        ("plain", "plain"),
        ("a\tb\nc\rd\\e", "a\\tb\\nc\\rd\\\\e"),
        ("\\N", "\\\\N"),  # the text \N, not NULL
        (42, "42"),
        (-(2**70), str(-(2**70))),
        (True, "true"),
        (False, "false"),
        (1.5, "1.5"),
        (1e-300, "1e-300"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
        (b"\x00\xff\n", "\\\\x00ff0a"),  # bytea hex input, its backslash escaped for COPY
        ([], "{}"),
        ([1, None, "x"], '{"1",NULL,"x"}'),
        (['q"', "b\\", "NULL", " sp "], '{"q\\\\"","b\\\\\\\\","NULL"," sp "}'),
        ([[1, 2], [3, 4]], '{{"1","2"},{"3","4"}}'),
        ({"k": "v\t"}, '{"k": "v\\\\t"}'),
    ],
)
def test_copy_text_writes_what_the_target_types_input_reads(value, field):
    assert copy_text(value) == field


def test_copy_text_refuses_a_value_it_cannot_write_exactly():
    with pytest.raises(TypeError, match="cannot stage"):
        copy_text(object())


def test_a_staging_table_is_per_target_and_column_set():
    a = stage_table("core.orders", ["id", "total"])
    assert a == stage_table("core.orders", ["id", "total"])
    assert a != stage_table("core.orders", ["id", "total", "note"])  # schema evolution: a new table
    assert a != stage_table("core.orders2", ["id", "total"])
    assert a.startswith("cdclab_stage_") and len(a) < 64


def test_connections_come_from_airflow_conn_variables_without_airflow(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgresql://wh%40user:p%2Fw%3Ad@127.0.0.1:15432/warehouse")
    monkeypatch.setenv(
        "AIRFLOW_CONN_KAFKA_DEFAULT",
        json.dumps({"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:19092"}}),
    )
    monkeypatch.delenv("AIRFLOW_CONN_NOPE", raising=False)
    pg = env_connection("warehouse")
    assert pg is not None
    assert (pg.host, pg.port, pg.schema, pg.login, pg.password) == (
        "127.0.0.1",
        15432,
        "warehouse",
        "wh@user",
        "p/w:d",
    )
    kafka = env_connection("kafka_default")
    assert kafka is not None and kafka.extra_dejson["bootstrap.servers"] == "127.0.0.1:19092"
    assert env_connection("nope") is None


def test_the_fast_decoder_falls_back_to_the_standard_library_and_keeps_its_errors():
    assert _loads(b'{"a": 1, "b": [true, null, "x"]}', "value") == {"a": 1, "b": [True, None, "x"]}
    assert _loads(b'{"x": NaN}', "value")["x"] != 0  # a token orjson refuses: the standard library reads it
    assert _loads(b"", "value") is None and _loads(None, "value") is None
    with pytest.raises(MalformedEvent, match="value is not valid JSON"):
        _loads(b"{oops", "value")


def test_integers_past_64_bits_are_decoded_exactly():
    big = 123456789012345678901234567890
    value = json.dumps(
        {
            "schema": {},
            "payload": {
                "op": "c",
                "before": None,
                "after": {"id": 1, "n": big, "m": [big, 1], "f": 1.5e30},
                "source": {"lsn": 10, "schema": "public", "table": "t"},
            },
        }
    )
    change = parse_debezium(b'{"id": 1}', value.encode())
    assert isinstance(change, Change)
    assert change.after == {"id": 1, "n": big, "m": [big, 1], "f": 1.5e30}
    assert type(change.after["n"]) is int


def _staged_json(changes, columns=("id", "v"), key=("id",)):
    staged = _json_source(list(key), list(columns), changes)
    return None if staged is None else [json.loads(p.data) for p in staged.payloads]


def _change(value, op="c", ts_ms=1_790_000_000_123, position=16):
    image = {"id": 1, "v": value}
    return Change(
        op=op,
        table="public.t",
        key={"id": 1},
        before=image if op == "d" else None,
        after=None if op == "d" else image,
        position=position,
        ts_ms=ts_ms,
    )


@pytest.mark.parametrize(
    "value",
    [
        None,
        "plain",
        "a\tb\nc\rd\\e",
        "\\N",
        42,
        -(2**63),
        2**64 - 1,
        True,
        1.5,
        1e16,
        1e-300,
        float("nan"),
        float("-inf"),
        -0.0,
        b"\x00\xff\n",
        [],
        [1, None, "x"],
        [[1, 2], [3, 4]],
        {"k": "v\t", "n": [1, 2.5]},
    ],
)
def test_the_json_batch_carries_each_value_as_the_text_the_copy_carried(value):
    """The statements read every JSON field as text (``e->>i``): a string or an integer as itself, a
    boolean as true/false, anything else as the string ``_plain_text`` makes, the text COPY carried."""
    (rows, keys) = _staged_json([_change(value)])
    (row,) = rows
    assert row[:2] == [
        1,
        value if value is None or type(value) in (str, int, bool) else _plain_text(value),
    ]
    assert row[2:] == [16, "c", 1_790_000_000_123]  # position, op, source time in ms
    assert keys == [[1, 16, "c"]]  # the ledger's clean-up reads only the key and the position


@pytest.mark.parametrize(
    ("value", "why"),
    [(2**64, "past 64 bits"), (-(2**63) - 1, "past 64 bits"), ("nul\x00", "NUL"), ("\ud800", "not Unicode")],
)
def test_a_batch_json_cannot_carry_exactly_goes_to_copy(value, why):
    assert _staged_json([_change(1), _change(value)]) is None, why


def test_a_source_time_outside_the_exact_range_travels_as_the_text_copy_carried():
    far = 2**32 * 1000  # from here on _ts's float arithmetic is not exact to the microsecond
    (rows, _) = _staged_json([_change(1, ts_ms=far), _change(2, ts_ms=None)])
    assert [r[4] for r in rows] == [_ts(far), None]
    (rows, _) = _staged_json([_change(1, ts_ms=0), _change(2, ts_ms=None)])
    assert [r[4] for r in rows] == [0, None]


def test_a_delete_stages_its_before_image_with_the_key_of_the_event():
    change = Change(
        op="d", table="public.t", key={"id": 7}, before={"id": None, "v": "x"}, after=None, position=3
    )
    (rows, _) = _staged_json([change])
    assert rows == [[7, "x", 3, "d", None]]


def test_the_json_literal_doubles_backslashes_and_quotes():
    assert _Payload(b'["it\'s", "a\\\\b"]').literal() == b"E'[\"it''s\", \"a\\\\\\\\b\"]'"
