"""Pure parts of the staged merge and the Airflow-free consuming path: COPY text fields, staging table
names, connections read from ``AIRFLOW_CONN_*`` and the JSON decoder's fallback."""

from __future__ import annotations

import json

import pytest

from cdclab.cdc.events import Change, MalformedEvent, _loads, parse_debezium
from cdclab.cdc.merge import copy_text, stage_table
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
