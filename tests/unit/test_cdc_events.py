"""Parsing change events: Debezium envelopes and Maxwell JSON into one typed change record."""

from __future__ import annotations

import json

import pytest

from cdclab.cdc.events import (
    UNAVAILABLE,
    Change,
    MalformedEvent,
    Skipped,
    latest_per_key,
    parse_debezium,
    parse_maxwell,
)
from cdclab.cdc.merge_variants import merge_statement


def envelope(op: str, before=None, after=None, lsn: int = 100, table: str = "customers", **source) -> bytes:
    return json.dumps(
        {
            "op": op,
            "before": before,
            "after": after,
            "ts_ms": 1,
            "source": {
                "schema": "public",
                "table": table,
                "lsn": lsn,
                "txId": 7,
                "ts_ms": 1000,
                "snapshot": "false",
                **source,
            },
        }
    ).encode()


def test_an_insert_becomes_a_change_with_its_after_image_and_lsn():
    c = parse_debezium(
        b'{"id": 1}', envelope("c", after={"id": 1, "email": "a"}, lsn=42), "shop.public.customers"
    )
    assert isinstance(c, Change)
    assert (c.op, c.table, c.key, c.row, c.position, c.tx_id) == (
        "c",
        "public.customers",
        {"id": 1},
        {"id": 1, "email": "a"},
        42,
        "7",
    )


def test_a_delete_writes_its_before_image():
    c = parse_debezium(b'{"id": 1}', envelope("d", before={"id": 1, "email": "a"}))
    assert isinstance(c, Change) and c.is_delete and c.row == {"id": 1, "email": "a"}


def test_tombstones_heartbeats_and_transaction_markers_are_skipped_not_lost():
    assert parse_debezium(b'{"id": 1}', None) == Skipped("tombstone")
    assert parse_debezium(b"{}", b'{"ts_ms": 1}', "__debezium-heartbeat.shop") == Skipped("heartbeat")
    assert parse_debezium(None, b'{"status": "BEGIN"}', "shop.transaction") == Skipped("transaction")


def test_the_schemas_enabled_wrapper_is_unwrapped():
    inner = json.loads(envelope("u", before={"id": 1}, after={"id": 1, "x": 2}))
    c = parse_debezium(
        json.dumps({"schema": {}, "payload": {"id": 1}}).encode(),
        json.dumps({"schema": {}, "payload": inner}).encode(),
    )
    assert isinstance(c, Change) and c.key == {"id": 1} and c.after == {"id": 1, "x": 2}


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b'{"id": 1}', b"not json", "not valid JSON"),
        (b'{"id": 1}', b"[1, 2]", "expected a Debezium envelope"),
        (b'{"id": 1}', envelope("x", after={"id": 1}), "unknown op"),
        (b'{"id": 1}', envelope("c"), "without an 'after' image"),
        (b'{"id": 1}', envelope("d"), "delete without a 'before' image"),
        (b'{"id": 1}', envelope("c", after={"id": 1}, lsn="abc"), "source.lsn"),  # type: ignore[arg-type]
        (None, envelope("c", after={"id": 1}), "no key"),
    ],
)
def test_malformed_records_raise_with_a_reason(key, value, reason):
    with pytest.raises(MalformedEvent, match=reason):
        parse_debezium(key, value)


def test_unavailable_toast_values_are_marked_and_filled_from_an_earlier_change_in_the_batch():
    insert = parse_debezium(b'{"id": 1}', envelope("c", after={"id": 1, "doc": "big", "n": 1}, lsn=1))
    update = parse_debezium(
        b'{"id": 1}', envelope("u", before={"id": 1}, after={"id": 1, "doc": UNAVAILABLE, "n": 2}, lsn=2)
    )
    assert isinstance(update, Change) and update.unavailable == {"doc"}
    (winner,) = latest_per_key([insert, update])  # type: ignore[list-item]
    assert winner.after == {"id": 1, "doc": "big", "n": 2} and not winner.unavailable


def test_the_latest_position_wins_whatever_the_arrival_order():
    a = parse_debezium(b'{"id": 1}', envelope("u", before={"id": 1}, after={"id": 1, "v": "new"}, lsn=20))
    b = parse_debezium(b'{"id": 1}', envelope("u", before={"id": 1}, after={"id": 1, "v": "old"}, lsn=10))
    (winner,) = latest_per_key([a, b])  # type: ignore[list-item]
    assert winner.after == {"id": 1, "v": "new"}


def test_maxwell_updates_carry_the_old_values_as_before_image():
    value = json.dumps(
        {
            "database": "shop",
            "table": "customers",
            "type": "update",
            "ts": 1700000000,
            "xid": 99,
            "commit": True,
            "data": {"id": 1, "tier": "gold"},
            "old": {"tier": "basic"},
        }
    )
    c = parse_maxwell(value, ("id",), position=5)
    assert isinstance(c, Change)
    assert (c.op, c.table, c.key, c.before, c.after, c.tx_id, c.source) == (
        "u",
        "shop.customers",
        {"id": 1},
        {"id": 1, "tier": "basic"},
        {"id": 1, "tier": "gold"},
        "99",
        "maxwell",
    )


def test_maxwell_unknown_types_and_missing_keys_are_malformed():
    with pytest.raises(MalformedEvent, match="unknown Maxwell type"):
        parse_maxwell(json.dumps({"type": "upsert", "data": {"id": 1}}), ("id",), 1)
    with pytest.raises(MalformedEvent, match="lacks key"):
        parse_maxwell(json.dumps({"type": "insert", "data": {"x": 1}}), ("id",), 1)


def test_the_merge_statement_guards_by_position_and_handles_deletes():
    text = repr(merge_statement("core.customers", "staging.customers", ["id"], ["id", "email"]))
    assert "MERGE INTO" in text and "_source_position" in text and "THEN DELETE" in text


def test_incremental_snapshot_reads_take_their_position_from_the_sequence():
    c = parse_debezium(
        b'{"id": 5}',
        envelope("r", after={"id": 5}, lsn=None, snapshot="incremental", sequence='["96028064","96028064"]'),
    )
    assert isinstance(c, Change) and c.op == "r" and c.position == 96028064 and c.snapshot


def test_built_change_equals_the_constructed_one_and_needs_every_field():
    from cdclab.cdc.events import Change, built

    fields = dict(op="u", table="public.t", key={"id": 1}, before=None, after={"id": 1}, position=5,
                  tx_id="9", ts_ms=1, snapshot=False, source="debezium", unavailable=frozenset())  # fmt: skip
    assert built(**fields) == Change(**fields)
    del fields["tx_id"]
    with pytest.raises(TypeError, match="tx_id"):
        built(**fields)


def test_json_document_unwraps_schemas_and_gives_none_for_what_is_not_json():
    from cdclab.cdc.events import json_document

    assert json_document(b'{"schema": {"type": "struct"}, "payload": {"id": 1}}') == {"id": 1}
    assert json_document(b'{"id": 1}') == {"id": 1}
    assert json_document(None) is None
    assert json_document(b"\xff not json") is None
    assert json_document("[1, 2]") == [1, 2]
