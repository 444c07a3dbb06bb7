"""Column types: Debezium's JSON values turned back into the source's values, and the per-column plan."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from cdclab.cdc import coltypes
from cdclab.cdc.coltypes import (
    UNAVAILABLE,
    SourceColumn,
    UnsupportedColumnType,
    bits_codec,
    bytea_from_base64,
    civil_from_days,
    date_from_days,
    days_from_civil,
    decode_row,
    float_value,
    hstore_from_json,
    plan_column,
    plan_table,
    time_from_micros,
    timestamp_from_micros,
    timestamp_from_millis,
    zoned_timestamp,
)
from cdclab.cdc.events import Change
from cdclab.cdc.pipeline import _default, decode_change


@pytest.mark.parametrize("days", [-719162, -1, 0, 1, 11016, 19000, 2932896])
def test_civil_from_days_agrees_with_python_dates_in_their_range(days):
    d = dt.date(1970, 1, 1) + dt.timedelta(days=days)
    assert civil_from_days(days) == (d.year, d.month, d.day)
    assert days_from_civil(d.year, d.month, d.day) == days


def test_dates_outside_pythons_range_including_bc_and_infinity():
    assert date_from_days(days_from_civil(-4712, 1, 1)) == "4713-01-01 BC"
    assert date_from_days(days_from_civil(0, 12, 31)) == "0001-12-31 BC"
    assert date_from_days(days_from_civil(1, 1, 1)) == "0001-01-01"
    assert date_from_days(days_from_civil(5874897, 12, 31)) == "5874897-12-31"
    # Debezium's infinity sentinels are PostgreSQL's internal ones, wrapped to 32 bits
    assert coltypes.DATE_POS_INFINITY == days_from_civil(-5877611, 6, 21)
    assert coltypes.DATE_NEG_INFINITY == days_from_civil(-5877611, 6, 22)
    assert date_from_days(coltypes.DATE_POS_INFINITY) == "infinity"
    assert date_from_days(coltypes.DATE_NEG_INFINITY) == "-infinity"
    assert date_from_days(None) is None


def test_times_and_timestamps_keep_microseconds():
    assert time_from_micros(0) == "00:00:00.000000"
    assert time_from_micros(86_400_000_000) == "24:00:00.000000"
    assert time_from_micros(45_296_000_001) == "12:34:56.000001"
    assert timestamp_from_micros(1) == "1970-01-01 00:00:00.000001"
    assert timestamp_from_micros(-1) == "1969-12-31 23:59:59.999999"
    bc = days_from_civil(-4712, 1, 1) * 86_400_000_000 + 1
    assert timestamp_from_micros(bc) == "4713-01-01 00:00:00.000001 BC"
    assert timestamp_from_micros(coltypes.TS_POS_INFINITY_MICROS) == "infinity"
    assert timestamp_from_micros(coltypes.TS_NEG_INFINITY_MICROS) == "-infinity"
    assert timestamp_from_millis(1_500) == "1970-01-01 00:00:01.500000"
    assert coltypes.PG_MIN_TIMESTAMP_MICROS == days_from_civil(-4713, 11, 24) * 86_400_000_000
    assert coltypes.PG_MAX_TIMESTAMP_MICROS == days_from_civil(294277, 1, 1) * 86_400_000_000 - 1
    # what Debezium wrote for '294276-12-31 23:59:59.999999' (a Java long overflow): refused, not written
    with pytest.raises(ValueError, match="overflowed"):
        timestamp_from_micros(-9223372036853775810)
    with pytest.raises(ValueError, match="overflowed"):
        timestamp_from_micros(2**63 - 1)  # what it wrote for 294270-01-01


def test_zoned_timestamps_get_postgres_years():
    assert zoned_timestamp("2026-03-01T10:00:00.123456Z") == "2026-03-01 10:00:00.123456+00"
    assert zoned_timestamp("+294276-12-31T23:59:59.999999Z") == "294276-12-31 23:59:59.999999+00"
    assert zoned_timestamp("-4712-01-01T00:00:00Z") == "4713-01-01 00:00:00+00 BC"
    assert zoned_timestamp("infinity") == "infinity"
    assert zoned_timestamp(None) is None


def test_bytea_and_bits():
    assert bytea_from_base64("3q2+7w==") == b"\xde\xad\xbe\xef"
    assert bytea_from_base64("") == b""
    assert bytea_from_base64(base64.b64encode(UNAVAILABLE.encode()).decode()) == UNAVAILABLE
    # '101' is bit 0 and bit 2 set: one byte 0b101, little-endian
    assert bits_codec(3)(base64.b64encode(bytes([0b101])).decode()) == "101"
    assert bits_codec(10)(base64.b64encode((0b0100000001).to_bytes(2, "little")).decode()) == "0100000001"
    assert bits_codec(8)("") == "00000000"  # all zeros: BitSet.toByteArray() is empty
    assert bits_codec(1)(True) == "1"
    with pytest.raises(ValueError, match="bit"):
        bits_codec(2)(base64.b64encode(bytes([0b111])).decode())


def test_numeric_special_values_get_postgres_spelling():
    assert [coltypes.numeric_text(v) for v in ("NAN", "POSITIVE_INFINITY", "NEGATIVE_INFINITY", "-1.50")] == [
        "NaN",
        "Infinity",
        "-Infinity",
        "-1.50",
    ]


def test_a_garbled_multidimensional_text_array_is_refused():
    assert coltypes.text_array(["a", None, "[L not java"]) == ["a", None, "[L not java"]
    with pytest.raises(ValueError, match="multi-dimensional"):
        coltypes.text_array(["[Ljava.lang.String;@3f8c94d9", "[Ljava.lang.String;@c143e1d"])


def test_decode_row_leaves_nulls_and_toast_placeholders_alone():
    codecs = {"d": "date", "b": "bytea", "t": "time"}
    row = {"d": 0, "b": None, "t": UNAVAILABLE, "other": 5}
    assert decode_row(row, codecs) == {"d": "1970-01-01", "b": None, "t": UNAVAILABLE, "other": 5}


def test_decode_change_converts_key_and_images_and_marks_unavailable_bytea():
    placeholder = base64.b64encode(UNAVAILABLE.encode()).decode()
    change = Change(
        op="u",
        table="public.t",
        key={"day": 1},
        before={"day": 1, "blob": "AA=="},
        after={"day": 1, "blob": placeholder},
        position=10,
    )
    out = decode_change(change, {"day": "date", "blob": "bytea"})
    assert out.key == {"day": "1970-01-02"}
    assert out.before == {"day": "1970-01-02", "blob": b"\x00"}
    assert out.after == {"day": "1970-01-02", "blob": UNAVAILABLE}
    assert out.unavailable == frozenset({"blob"})


def col(name="c", base="int4", sql_type=None, kind="b", schema="pg_catalog", typmod=-1, **kw) -> SourceColumn:
    return SourceColumn(
        name=name,
        sql_type=sql_type or base,
        base=base,
        base_sql_type=kw.pop("base_sql_type", sql_type or base),
        kind=kind,
        schema=schema,
        typmod=typmod,
        **kw,
    )


def test_plans_map_enums_to_text_and_domains_to_their_base_type():
    assert (
        plan_column("public.t", col(base="mood", sql_type="mood", kind="e", schema="public")).target_type
        == "text"
    )
    domain = col(base="numeric", sql_type="positive_amount", base_sql_type="numeric(10,2)", is_domain=True)
    assert plan_column("public.t", domain).target_type == "numeric(10,2)"
    arr = col(base="_int4", sql_type="integer[]", element="int4", element_kind="b")
    assert (plan_column("public.t", arr).target_type, plan_column("public.t", arr).codec) == (
        "integer[]",
        "identity",
    )
    texts = col(base="_text", sql_type="text[]", element="text", element_kind="b")
    assert plan_column("public.t", texts).codec == "text_array"
    assert plan_column("public.t", col(base="timestamp", typmod=3)).codec == "timestamp_millis"
    assert plan_column("public.t", col(base="timestamp", typmod=-1)).codec == "timestamp_micros"
    assert plan_column("public.t", col(base="timestamp", typmod=6)).codec == "timestamp_micros"
    assert plan_column("public.t", col(base="bit", typmod=12)).codec == "bits:12"


def test_unsupported_types_are_refused_with_table_column_type_and_remedy():
    with pytest.raises(UnsupportedColumnType) as err:
        plan_table(
            "public.t",
            [
                col("ok", "int4"),
                col("flags", "varbit", sql_type="bit varying(8)"),
                col("at", "timetz", sql_type="time with time zone"),
                col("pt", "point"),
                col("name", "citext", schema="public"),
                col("spots", "_point", sql_type="point[]", element="point", element_kind="b"),
                col("moods", "_mood", sql_type="mood[]", schema="public", element="mood", element_kind="e"),
            ],
        )
    text = str(err.value)
    for column, type_ in [
        ("flags", "bit varying(8)"),
        ("at", "time with time zone"),
        ("pt", "point"),
        ("name", "citext"),
        ("spots", "point[]"),
        ("moods", "mood[]"),
    ]:
        assert f"public.t.{column} has type {type_}" in text
    assert "public.t.ok " not in text
    assert text.count("Remedy:") == 6


def test_target_defaults_of_mapped_columns():
    assert _default("'happy'::mood", "text", mapped=True) == " DEFAULT 'happy'::text"
    assert _default("pick_mood()", "text", mapped=True) == ""
    assert _default("now()", "timestamp with time zone", mapped=False) == " DEFAULT now()"
    assert _default("nextval('s'::regclass)", "bigint", mapped=False) == ""
    assert _default(None, "text", mapped=True) == ""


def test_hstore_json_becomes_hstore_text_with_quotes_backslashes_and_nulls():
    assert hstore_from_json(None) is None
    assert hstore_from_json("{}") == ""
    assert hstore_from_json('{"a":"1","n":null}') == '"a"=>"1", "n"=>NULL'
    # a NULL value is not the text 'NULL'; quotes and backslashes are escaped; empty key and value kept
    assert hstore_from_json('{"NULL":"NULL","q\\"k":"b\\\\s","":""}') == (
        '"NULL"=>"NULL", "q\\"k"=>"b\\\\s", ""=>""'
    )
    assert hstore_from_json({"ü 🐘": "=>,"}) == '"ü 🐘"=>"=>,"'  # hstore.handling.mode=map
    assert hstore_from_json(f'{{"{UNAVAILABLE}":"{UNAVAILABLE}"}}') == UNAVAILABLE
    with pytest.raises(ValueError, match="JSON object"):
        hstore_from_json('{"a": 1}')
    plan = plan_column("public.t", col("tags", "hstore", schema="public"))
    assert (plan.target_type, plan.codec) == ("hstore", "hstore")


def test_negative_zero_float_is_sent_as_text():
    assert float_value(-0.0) == "-0"
    assert float_value(0.0) == 0.0
    assert float_value(1.5) == 1.5
    assert float_value("NaN") == "NaN"
    assert plan_column("public.t", col("f", "float8")).codec == "float"


def test_row_decoder_matches_decode_row_and_skips_identity_columns():
    codecs = {"d": "date", "ts": "timestamptz", "i": "identity", "gone": "date"}
    decode = coltypes.row_decoder(codecs)
    row = {"d": 20000, "ts": "2026-03-01T10:00:00Z", "i": 7, "extra": UNAVAILABLE}
    assert (
        decode(row)
        == decode_row(row, codecs)
        == {
            "d": "2024-10-04",
            "ts": "2026-03-01 10:00:00+00",
            "i": 7,
            "extra": UNAVAILABLE,
        }
    )
    assert decode(None) is None
    assert row["d"] == 20000  # the image is copied, not changed


def test_zoned_timestamp_fast_path_agrees_with_the_general_one():
    # four-digit years take the short path; year 0000 and signed years take the general one
    assert zoned_timestamp("0001-01-01T00:00:00Z") == "0001-01-01 00:00:00+00"
    assert zoned_timestamp("0000-06-15T12:00:00+02:00") == "0001-06-15 12:00:00+02:00 BC"
    assert zoned_timestamp("9999-12-31T23:59:59.999999-05:30") == "9999-12-31 23:59:59.999999-05:30"
    assert zoned_timestamp("+2026-03-01T10:00:00Z") == "2026-03-01 10:00:00+00"
