"""cdclab.cdc.slots: what counts as a lost slot, how the loss is worded, how a snapshot's end is read."""

from __future__ import annotations

import json

import pytest

from cdclab.cdc import slots


def state(**kw):
    base = dict(
        name="s",
        plugin="pgoutput",
        database="shop",
        active=False,
        wal_status="reserved",
        restart_lsn="0/1",
        confirmed_flush_lsn="0/1",
        retained_bytes=10,
    )
    return slots.SlotState(**{**base, **kw})


def test_a_missing_or_invalidated_slot_is_lost_and_others_are_not():
    assert slots.lost_reason("s", None) == "replication slot s does not exist"
    lost = slots.lost_reason("s", state(wal_status="lost", restart_lsn=None, retained_bytes=None))
    assert lost is not None and "invalidated" in lost and "max_slot_wal_keep_size" in lost
    for ok in ("reserved", "extended", "unreserved", None):
        assert slots.lost_reason("s", state(wal_status=ok)) is None


def test_the_loss_names_the_remedy_and_warns_against_a_plain_restart():
    text = slots.remedy("conn-a")
    assert "conn-a" in text and "re-snapshot" in text and "recover" in text
    assert "Do NOT just restart the connector" in text


def test_the_slot_name_defaults_to_debeziums():
    assert slots.connector_slot({"slot.name": "x"}) == "x"
    assert slots.connector_slot({}) == slots.DEFAULT_SLOT == "debezium"


def envelope(op, snapshot, wrapped=False):
    payload = {"op": op, "source": {"snapshot": snapshot, "lsn": 1}, "after": {"id": 1}}
    return json.dumps({"schema": {}, "payload": payload} if wrapped else payload).encode()


@pytest.mark.parametrize("wrapped", [False, True])
def test_snapshot_markers_are_read_from_the_source_block(wrapped):
    assert slots.snapshot_marker(envelope("r", "last", wrapped)) == "last"
    assert (
        slots.snapshot_marker(envelope("r", "last_in_data_collection", wrapped)) == "last_in_data_collection"
    )
    assert slots.snapshot_marker(envelope("r", "true", wrapped)) is None
    assert slots.snapshot_marker(envelope("r", "first", wrapped)) is None
    assert slots.snapshot_marker(envelope("c", "false", wrapped)) == "stream"
    assert slots.snapshot_marker(envelope("d", "false", wrapped)) == "stream"


def test_records_without_an_envelope_are_no_marker():
    assert slots.snapshot_marker(None) is None  # tombstone
    assert slots.snapshot_marker(b"") is None
    assert slots.snapshot_marker(b"not json") is None
    assert slots.snapshot_marker(json.dumps({"status": "BEGIN"}).encode()) is None  # transaction marker
