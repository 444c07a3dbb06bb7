"""Pure parts of the consumer's guards (issue 11): start checks, TRUNCATE stop, connector settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdclab.cdc.consumer import OffsetOutOfRange, check_start
from cdclab.cdc.pipeline import TableRoute, TruncateArrived, debezium_parser, sort_batch
from tests.unit._kafka_records import Msg

ROOT = Path(__file__).resolve().parents[2]
ITEMS = "shop.public.items"


def envelope(op: str, lsn: int, after: dict | None = None) -> bytes:
    source = {"schema": "public", "table": "items", "lsn": lsn, "txId": 1, "ts_ms": 1}
    return json.dumps({"op": op, "before": None, "after": after, "source": source}).encode()


ROUTE = TableRoute(
    source="public.items",
    topic="shop.public.items",
    target="core.items",
    key=("id",),
    types={"id": "integer"},
)


def test_a_truncate_event_stops_the_merge_naming_table_topic_offset_and_remedy():
    batch = [
        Msg(b'{"id": 1}', envelope("c", 10, {"id": 1}), ITEMS, 41),
        Msg(None, envelope("t", 11), ITEMS, 42),
    ]
    with pytest.raises(TruncateArrived) as stop:
        sort_batch(batch, {ROUTE.topic: ROUTE}, debezium_parser, {})
    message = str(stop.value)
    for part in ("public.items", "core.items", "shop.public.items[0] offset 42", "snapshot", "--to 43"):
        assert part in message


def test_offsets_never_jump_silently():
    check_start("g", "t", 0, None, 0, 10)  # a new group on a topic that starts at 0
    check_start("g", "t", 0, 5, 3, 10)  # a stored offset inside the log
    with pytest.raises(OffsetOutOfRange, match=r"new consumer group.*snapshot"):
        check_start("g", "t", 0, None, 4, 10)
    with pytest.raises(OffsetOutOfRange, match=r"below the earliest offset 15.*offsets reset"):
        check_start("g", "t", 0, 10, 15, 20)
    with pytest.raises(OffsetOutOfRange, match="beyond the end"):
        check_start("g", "t", 0, 30, 0, 20)


def test_the_connector_emits_truncate_events_for_the_consumer_to_stop_on():
    config = json.loads((ROOT / "connectors" / "shop-postgres-source.json").read_text())["config"]
    assert config["skipped.operations"] == "none"


def test_a_new_group_may_start_above_zero_only_when_a_snapshot_was_requested() -> None:
    from cdclab.cdc.consumer import OffsetOutOfRange, check_start

    with pytest.raises(OffsetOutOfRange, match="earliest offset is 34"):
        check_start("g", "shop.public.t", 0, None, 34, 90)
    check_start("g", "shop.public.t", 0, None, 34, 90, snapshotted=True)  # the snapshot re-reads the rows
    with pytest.raises(OffsetOutOfRange, match="below the earliest"):  # a stored offset is never excused
        check_start("g", "shop.public.t", 0, 10, 34, 90, snapshotted=True)
