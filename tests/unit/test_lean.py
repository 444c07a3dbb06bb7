"""The CDC sink's lean path (:mod:`cdclab.cdc.lean`), its database-free part: a plain batch gives the very
JSON the Python path gives the merge statements, and each record that is not plain sends the batch to the
Python path."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import orjson
import pytest

from cdclab.cdc import events, lean, merge, pipeline
from tests.unit._kafka_records import TOPIC, Msg

TYPES = {
    "id": "bigint",
    "status": "text",
    "total": "numeric(12,2)",
    "placed_on": "date",
    "updated_at": "timestamp with time zone",
    "paid": "boolean",
    "note": "text",
}
CODECS = {"total": "numeric", "placed_on": "date", "updated_at": "timestamptz"}
ROUTE = pipeline.TableRoute(
    source="public.orders", topic=TOPIC, target="core.orders", key=("id",), types=TYPES, codecs=CODECS
)
COLUMNS = list(TYPES)


def row(id_: Any, n: int = 0, **over: Any) -> dict[str, Any]:
    image = {
        "id": id_,
        "status": f"s{n}",
        "total": f"{n}.50",
        "placed_on": 19000 + n,
        "updated_at": f"2026-12-01T10:00:{n % 60:02d}.123456Z",
        "paid": n % 2 == 0,
        "note": None if n % 3 else f"note {n}",
    }
    return {**image, **over}


def record(op: str, image: dict[str, Any], lsn: Any, key: Any = None, **over: Any) -> Msg:
    value: dict[str, Any] = {
        "before": image if op == "d" else None,
        "after": None if op == "d" else image,
        "source": {"schema": "public", "table": "orders", "lsn": lsn, "ts_ms": 1_796_000_000_000 + 7},
        "op": op,
        "ts_ms": 1,
    }
    value.update(over)
    k = {"id": image["id"]} if key is None else key
    return Msg(json.dumps(k).encode(), json.dumps(value).encode())


def python_input(batch: list[Msg], route: pipeline.TableRoute = ROUTE) -> list[Any]:
    """What :func:`cdclab.cdc.merge.apply_changes` sends for ``batch``: its JSON payloads per topic."""
    per_topic, rejects = pipeline.sort_batch(batch, {route.topic: route}, pipeline.debezium_parser, {})
    assert not rejects
    out = []
    for topic, changes in per_topic.items():
        rows = events.latest_per_key(list(changes))
        columns = list(route.types)
        full = [c for c in rows if c.op != "d"]
        deletes = [c for c in rows if c.op == "d"]
        assert all(not c.unavailable and c.after and c.after.keys() >= set(columns) for c in full)
        up = merge._json_source(route.key, columns, full) if full else None
        down = merge._json_source(route.key, columns, deletes) if deletes else None
        out.append((topic, up and [p.data for p in up.payloads], down and [p.data for p in down.payloads]))
    return out


def lean_input(batch: list[Msg], route: pipeline.TableRoute = ROUTE) -> tuple[list[Any], dict[str, int]]:
    skipped: dict[str, int] = defaultdict(int)
    taken = lean.prepare(batch, {route.topic: route}, skipped)
    assert taken is not None
    out = []
    for topic, part in taken.topics.items():
        split = lean.rows(part, list(route.types))
        assert split is not None
        upserts, deletes = split
        up = merge.json_rows(route.key, list(route.types), upserts) if upserts else None
        down = merge.json_rows(route.key, list(route.types), deletes) if deletes else None
        out.append((topic, up and [p.data for p in up.payloads], down and [p.data for p in down.payloads]))
    return out, dict(skipped)


def plain_batch() -> list[Msg]:
    batch = [record("r", row(i, i), 100) for i in range(1, 6)]  # snapshot reads share a position
    batch += [record("u", row(1, 50 + n), 200 + n) for n in range(30)]  # a hot key
    batch += [record("c", row(7, 7), 300), record("d", row(7, 7), 301), Msg(b'{"id": 7}', None)]
    batch += [record("d", row(3, 0, status="", note=None), 302), Msg(b'{"id": 3}', None)]
    batch += [record("u", row(2, 9), 150)]  # out of position order (a concurrent transaction)
    batch += [record("u", row(4, 4, total=None, placed_on=None, updated_at=None, status=None), 305)]
    batch += [record("u", row(5, 1), 310), record("u", row(5, 2), 310)]  # equal positions: the later wins
    batch += [record("c", row(6, 6), 250), record("c", row(8, 8), 120)]
    return batch


def test_a_plain_batch_gives_the_python_paths_json_byte_for_byte_and_counts_its_tombstones() -> None:
    batch = plain_batch()
    got, skipped = lean_input(batch)
    assert got == python_input(batch)
    assert skipped == {"tombstone": 2}
    rows = json.loads(got[0][1][0])
    # latest_per_key's order: keys by their first position (8 arrived after 6 with an earlier position)
    assert [r[0] for r in rows] == [1, 2, 4, 5, 8, 6]
    assert rows[0][1] == "s79" and rows[3][1] == "s2"


def test_positions_in_order_give_the_same_json_too() -> None:
    batch = [record("c", row(i % 7, i), 10 + i) for i in range(40)] + [record("d", row(3, 0), 99)]
    assert lean_input(batch)[0] == python_input(batch)


def test_a_composite_key_and_a_key_column_with_a_codec() -> None:
    types = {"day": "date", "shop": "text", "qty": "integer"}
    route = pipeline.TableRoute(
        source="public.daily",
        topic=TOPIC,
        target="core.daily",
        key=("shop", "day"),
        types=types,
        codecs={"day": "date"},
    )

    def rec(op: str, day: int, shop: str, qty: int, lsn: int) -> Msg:
        image = {"day": day, "shop": shop, "qty": qty}
        return record(op, image, lsn, key={"shop": shop, "day": day})

    batch = [rec("c", 1, "a", 1, 5), rec("c", 1, "b", 2, 6), rec("u", 1, "a", 3, 7), rec("d", 1, "b", 2, 8)]
    batch += [rec("c", 2, "a", 9, 4)]
    assert lean_input(batch, route)[0] == python_input(batch, route)


def wrapped(msg: Msg) -> Msg:
    """``msg`` as the JSON converter writes it with ``schemas.enable=true`` (key and value)."""

    def wrap(raw: bytes | None) -> bytes | None:
        return raw and json.dumps({"schema": {"type": "struct"}, "payload": json.loads(raw)}).encode()

    return Msg(wrap(msg.k), wrap(msg.v), msg.t, msg.o)


def test_records_with_the_schemas_wrapper_are_lean_and_give_the_same_json() -> None:
    batch = [wrapped(m) for m in plain_batch()]
    batch.append(Msg(b'{"schema": {}, "payload": {"id": 11}}', b'{"schema": {}, "payload": null}'))
    got, skipped = lean_input(batch)
    assert got == python_input(batch) == lean_input(plain_batch())[0]
    assert skipped == {"tombstone": 3}


def test_a_batch_of_tombstones_has_no_topic_and_counts_them() -> None:
    taken = lean.prepare([Msg(b'{"id":1}', None), Msg(b'{"id":2}', b"")], {TOPIC: ROUTE}, skipped := {})
    assert taken is not None and taken.topics == {} and skipped == {"tombstone": 2}


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(Msg(b'{"id":9}', b'{"op": "c", "after": '), id="malformed JSON"),
        pytest.param(Msg(b'{"id":9}', b'{"op":"c","after":{"id":NaN}}'), id="NaN token"),
        pytest.param(Msg(b'{"id":9}', b"[1]"), id="not an object"),
        pytest.param(record("t", row(9), 5), id="truncate"),
        pytest.param(record("x", row(9), 5), id="unknown op"),
        pytest.param(record("u", row(9, note=events.UNAVAILABLE), 5), id="TOAST placeholder"),
        pytest.param(record("u", row(9), 5, key={"id": None}), id="NULL key"),
        pytest.param(record("u", row(None), 5, key={"id": 9}), id="NULL key column in the image"),
        pytest.param(Msg(None, record("u", row(9), 5).v), id="no Kafka key"),
        pytest.param(record("u", row(9), 5, key={"id": 8}), id="Kafka key differs from the image"),
        pytest.param(record("u", row(9), 5, key={"id": 9, "x": 1}), id="Kafka key has more columns"),
        pytest.param(record("u", row(9.0), 5, key={"id": 9.0}), id="float key"),
        pytest.param(record("u", row(9, extra=1), 5), id="column set differs"),
        pytest.param(record("u", {"id": 9, "status": "x"}, 5), id="partial image"),
        pytest.param(record("u", row(9), "5"), id="lsn not an integer"),
        pytest.param(record("r", row(9), 5, source={"sequence": '["5","6"]'}), id="no lsn"),
        pytest.param(record("u", row(9, placed_on="soon"), 5), id="a codec refuses the value"),
        pytest.param(record("c", row(9), 5, after=None), id="create without an after image"),
        pytest.param(record("d", row(9), 5, before=None), id="delete without a before image"),
        pytest.param(
            Msg(b'{"id":9}', json.dumps({"schema": {}, "payload": [1]}).encode()),
            id="schemas wrapper around something else",
        ),
        pytest.param(
            record("u", row(9), 5, source={"schema": "public", "table": "other", "lsn": 5}),
            id="another source table",
        ),
        pytest.param(Msg(b'{"id":9}', record("u", row(9), 5).v, t="shop.public.unknown"), id="unknown topic"),
    ],
)
def test_a_record_that_is_not_plain_sends_the_whole_batch_to_the_python_path(bad: Msg) -> None:
    skipped: dict[str, int] = {}
    batch = [*plain_batch(), bad]
    assert lean.prepare(batch, {TOPIC: ROUTE}, skipped) is None
    assert skipped == {}  # the Python path counts the tombstones


def test_a_big_integer_orjson_rounds_sends_the_topic_to_the_python_path_at_apply() -> None:
    value = record("u", row(9), 5).v or b""
    big = Msg(b'{"id":9}', value.replace(b'"paid": true', b'"paid": 18446744073709551616'))
    assert big.v != value
    taken = lean.prepare([big], {TOPIC: ROUTE}, {})
    assert taken is not None
    assert lean.rows(taken.topics[TOPIC], COLUMNS) is None


def test_images_whose_columns_are_not_the_targets_go_to_the_python_path_at_apply() -> None:
    taken = lean.prepare([record("u", row(9), 5)], {TOPIC: ROUTE}, {})
    assert taken is not None
    part = taken.topics[TOPIC]
    assert lean.rows(part, COLUMNS) is not None
    assert lean.rows(part, [*COLUMNS, "added_later"]) is None  # a partial image: the Python path
    assert lean.rows(part, COLUMNS[:-1]) is None  # drift: the schema policy decides


def test_an_update_with_a_before_image_is_lean_and_a_before_image_a_codec_refuses_is_not() -> None:
    fine = record("u", row(9, 1), 5, before=row(9, 0))
    assert lean_input([fine])[0] == python_input([fine])
    bad = record("u", row(9, 1), 5, before=row(9, 0, placed_on="soon"))
    assert lean.prepare([bad], {TOPIC: ROUTE}, {}) is None


# ----------------------------------------------------------------------------- lean.payload: the wrapper's payload


def _wrapped(schema: Any, payload: Any) -> bytes:
    """What Kafka Connect's JSON converter writes with schemas.enable=true: no white space."""
    return json.dumps({"schema": schema, "payload": payload}, separators=(",", ":")).encode()


_SCHEMA = {
    "type": "struct",
    "fields": [{"type": "int64", "optional": False, "field": "id"}],
    "optional": False,
}


@pytest.mark.parametrize(
    ("schema", "body"),
    [
        (_SCHEMA, {"op": "c", "after": {"id": 1, "note": "x"}}),
        # a column named payload in the image, and the text ,"payload": inside a string value
        (_SCHEMA, {"op": "u", "after": {"id": 2, "payload": {"a": 1}, "s": ',"payload":'}}),
        # a structural ,"payload": key inside the schema (a map parameter): the slice is refused, parsed whole
        ({**_SCHEMA, "parameters": {"a": "1", "payload": "2"}}, {"op": "d", "before": {"id": 3}}),
        ({**_SCHEMA, "default": {"x": {"y": 1, "payload": {"z": [1, 2]}}}}, {"id": 4}),
        (_SCHEMA, None),  # a tombstone's payload
        (_SCHEMA, 7),
    ],
)
def test_payload_is_the_wrappers_payload_whatever_the_schema_holds(schema: Any, body: Any) -> None:
    raw = _wrapped(schema, body)
    assert lean.payload(raw) == body == events.json_document(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"op":"c","after":{"id":1}}', {"op": "c", "after": {"id": 1}}),  # no wrapper
        (b'{"schema": {}, "payload": {"id": 1}}', {"id": 1}),  # other spacing
        (b'{"payload":{"id":1},"schema":{}}', {"id": 1}),  # other key order
        (b'{"schema":{},"payload":{"id":1},"extra":2}', {"id": 1}),  # a key after the payload
        (b'{"schema":{"x":1}}', {"schema": {"x": 1}}),
    ],
)
def test_payload_parses_anything_else_whole_as_the_python_path_does(raw: bytes, expected: Any) -> None:
    assert lean.payload(raw) == expected == events.json_document(raw)


@pytest.mark.parametrize("raw", [b'{"schema":{},"payload":{"id":1}', b'{"schema":{},"payload":}', b"nope"])
def test_payload_refuses_bytes_that_are_not_json(raw: bytes) -> None:
    with pytest.raises(orjson.JSONDecodeError):
        lean.payload(raw)


def test_rows_of_a_table_with_one_column_and_of_several() -> None:
    one = lean.LeanTopic(frozenset({"id"}), [({"id": 1}, 10, "c", 5), ({"id": 2}, 11, "d", 6)])
    assert lean.rows(one, ["id"]) == ([[1, 10, "c", 5]], [[2, 11, "d", 6]])
    two = lean.LeanTopic(frozenset({"id", "n"}), [({"n": "x", "id": 1}, 10, "u", None)])
    assert lean.rows(two, ["id", "n"]) == ([[1, "x", 10, "u", None]], [])
    assert lean.rows(two, ["n", "id"]) == ([["x", 1, 10, "u", None]], [])
