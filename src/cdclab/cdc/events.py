"""Change events: Debezium envelopes (and Maxwell JSON) turned into one typed record.

Vocabulary:
- *change*: one row-level change of one source table: ``op`` is ``c`` (insert), ``u`` (update),
  ``d`` (delete), ``r`` (snapshot read) or ``t`` (truncate).
- *before* / *after*: the row images. ``before`` is complete only with REPLICA IDENTITY FULL.
- *position*: where the change sits in the source log: Postgres ``lsn`` (plus ``txId``), MySQL
  binlog file/position through Maxwell's ``xid``/``position``. Replays and out-of-order delivery are
  resolved by comparing positions, never by arrival order.
- *tombstone*: the Kafka record with a key and a null value that follows a delete, so log compaction
  can forget the key. It carries no change; consumers skip it.
- *heartbeat* / *transaction metadata*: Debezium's bookkeeping records on their own topics.
- *unavailable value*: Postgres does not log an unchanged TOASTed column; Debezium puts the
  placeholder :data:`UNAVAILABLE` there, and the merge keeps the target's current value.

A record that cannot be understood raises :class:`MalformedEvent` with the reason; the consumer
turns that into a dead-letter row and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import Any, Literal

import orjson

Op = Literal["c", "u", "d", "r", "t"]
OPS: frozenset[str] = frozenset({"c", "u", "d", "r", "t"})
UNAVAILABLE = "__debezium_unavailable_value"
SKIPPED_KINDS = ("tombstone", "heartbeat", "transaction")
_U64_LIMIT = 2.0**64


class MalformedEvent(ValueError):
    """A Kafka record is not a change event this library understands. Goes to the dead-letter table."""


@dataclass(frozen=True)
class Change:
    """One row change, whatever tool captured it."""

    op: Op
    table: str  # "schema.table" in the source
    key: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    position: int  # LSN (Debezium/Postgres) or a monotonic binlog position
    tx_id: str | None = None
    ts_ms: int | None = None
    snapshot: bool = False
    source: str = "debezium"
    unavailable: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_delete(self) -> bool:
        return self.op == "d"

    @property
    def row(self) -> dict[str, Any]:
        """The image to write: ``after`` for c/u/r, ``before`` for deletes."""
        image = self.before if self.op == "d" else self.after
        return dict(image or {})


@dataclass(frozen=True)
class Skipped:
    """A record that is valid but carries no row change (tombstone, heartbeat, transaction marker)."""

    kind: str


def _loads(raw: bytes | str | None, what: str) -> Any:
    if raw is None or raw == b"" or raw == "":
        return None
    # orjson refuses what the standard library reads (NaN/Infinity tokens): then the standard library
    # decides. It reads an integer past 64 bits as a float: see _inexact, the caller checks the images.
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"{what} is not valid JSON: {exc}") from None


def built(**fields: Any) -> Change:
    """A :class:`Change` from every one of its fields, without the frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field): the CDC sink makes one per record."""
    missing = _CHANGE_FIELDS.difference(fields)
    if missing:
        raise TypeError(f"built() needs every field of Change; missing {sorted(missing)}")
    out = object.__new__(Change)
    out.__dict__.update(fields)
    return out


def unavailable_columns(image: Mapping[str, Any] | None) -> frozenset[str]:
    """The columns of a row image that hold Debezium's unchanged-TOAST placeholder."""
    if not image or UNAVAILABLE not in image.values():  # one scan in C; nearly every image has none
        return _NONE
    return frozenset(k for k, v in image.items() if v == UNAVAILABLE)


_NONE: frozenset[str] = frozenset()
_CHANGE_FIELDS = frozenset(f.name for f in fields(Change))


def _inexact(image: Any) -> bool:
    """Whether a decoded row image holds a float that may be an integer orjson could not hold exactly
    (an integral value of 2**64 or more: JSON ``18446744073709551616`` and ``1.8446744073709552e19``
    decode alike). Such a record is decoded again by the standard library, which keeps big integers."""
    if not isinstance(image, dict):
        return False
    kinds = set(map(type, image.values()))  # in C: most images hold neither a float nor a list
    if float not in kinds and list not in kinds:
        return False
    for v in image.values():
        if type(v) is float and abs(v) >= _U64_LIMIT and v.is_integer():
            return True
        if type(v) is list and any(type(e) is float and abs(e) >= _U64_LIMIT for e in v):
            return True
    return False


def _exact_loads(raw: bytes | str | None, what: str) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"{what} is not valid JSON: {exc}") from None


def unwrap(doc: Any) -> Any:
    """A parsed key or value without the JSON converter's schemas wrapper (``schemas.enable=true``)."""
    if isinstance(doc, dict) and "payload" in doc and "schema" in doc:
        return doc["payload"]  # schemas.enable=true wrapper
    return doc


def json_document(raw: bytes | str | None) -> Any:
    """A record's key or value as JSON, the converter's schemas wrapper removed; ``None`` for a
    tombstone or for bytes that are not JSON (for readers that skip what they do not understand:
    the heartbeat sensor, the CDC debugging lesson; the sink's parser raises :class:`MalformedEvent`)."""
    if raw is None:
        return None
    try:
        return unwrap(json.loads(raw))
    except ValueError:
        return None


def parse_debezium(
    key: bytes | str | None, value: bytes | str | None, topic: str = "", require_key: bool = True
) -> Change | Skipped:
    """Parse one Kafka record written by Debezium with the JSON converter (schemas on or off).

    ``require_key=False`` accepts the key-less records of a table without a primary key (append mode,
    :mod:`cdclab.cdc.append`)."""
    if topic.startswith("__debezium-heartbeat") or topic.endswith(".heartbeat"):
        return Skipped("heartbeat")
    if topic.endswith(".transaction"):
        return Skipped("transaction")
    payload = unwrap(_loads(value, "value"))
    if payload is None:
        return Skipped("tombstone")
    if isinstance(payload, dict) and (_inexact(payload.get("after")) or _inexact(payload.get("before"))):
        payload = unwrap(_exact_loads(value, "value"))
    if not isinstance(payload, dict):
        raise MalformedEvent(f"value is {type(payload).__name__}, expected a Debezium envelope object")
    op = payload.get("op")
    if op not in OPS:
        raise MalformedEvent(f"unknown op {op!r}; expected one of {sorted(OPS)}")
    source = payload.get("source")
    if not isinstance(source, dict):
        raise MalformedEvent("envelope has no 'source' block")
    before, after = payload.get("before"), payload.get("after")
    if op in ("c", "r", "u") and not isinstance(after, dict):
        raise MalformedEvent(f"op {op!r} without an 'after' image")
    if op == "d" and not isinstance(before, dict):
        raise MalformedEvent("delete without a 'before' image (is REPLICA IDENTITY set?)")
    lsn = source.get("lsn")
    if lsn is None and op == "r":
        # incremental-snapshot reads carry no LSN of their own; their place in the log is the last
        # LSN the connector had processed when it read the chunk: sequence = [last, current]
        lsn = _sequence_position(source.get("sequence"))
    if not isinstance(lsn, int):
        raise MalformedEvent(f"source.lsn is {lsn!r}, expected an integer")
    table = f"{source.get('schema', 'public')}.{source.get('table', '')}"
    key_obj = unwrap(_loads(key, "key")) or {}
    if _inexact(key_obj):
        key_obj = unwrap(_exact_loads(key, "key")) or {}
    if op != "t" and not key_obj and require_key:
        raise MalformedEvent("record has no key: the source table needs a primary key")
    unavailable = unavailable_columns(after)
    tx = source.get("txId")
    return built(
        op=op,
        table=table,
        key=dict(key_obj) if isinstance(key_obj, dict) else {},
        before=before,
        after=after,
        position=lsn,
        tx_id=None if tx is None else str(tx),
        ts_ms=source.get("ts_ms"),
        snapshot=str(source.get("snapshot", "false")) not in ("false", "False", ""),
        source="debezium",
        unavailable=unavailable,
    )


def _sequence_position(sequence: object) -> int | None:
    try:
        values = json.loads(sequence) if isinstance(sequence, str) else sequence
        return int(values[0]) if isinstance(values, list) and values and values[0] is not None else None
    except (ValueError, TypeError):
        return None


MAXWELL_OPS = {"insert": "c", "update": "u", "delete": "d", "bootstrap-insert": "r"}


def parse_maxwell(
    value: bytes | str | None, key_columns: tuple[str, ...], position: int | None = None
) -> Change | Skipped:
    """Parse Maxwell's JSON (``type``, ``database``, ``table``, ``data``, ``old``, ``xid``, ``ts``).

    The position comes from Maxwell's ``position`` (``binlog.000003:1234``, written with
    ``output_binlog_position``) and ``xoffset``; a caller without them passes one (e.g. the Kafka offset
    of a single-partition topic).
    """
    payload = _loads(value, "value")
    if payload is None:
        return Skipped("tombstone")
    if not isinstance(payload, dict):
        raise MalformedEvent("Maxwell value is not an object")
    kind = payload.get("type")
    if kind in ("bootstrap-start", "bootstrap-complete", "table-create", "table-alter", "database-create"):
        return Skipped(str(kind))
    if kind not in MAXWELL_OPS:
        raise MalformedEvent(f"unknown Maxwell type {kind!r}")
    data = payload.get("data")
    if not isinstance(data, dict):
        raise MalformedEvent("Maxwell event without 'data'")
    old = payload.get("old") or {}
    missing = [c for c in key_columns if c not in data]
    if missing:
        raise MalformedEvent(f"Maxwell event lacks key column(s) {missing}")
    if position is None:
        from cdclab.cdc.maxwell import parse_position

        if not isinstance(payload.get("position"), str):
            raise MalformedEvent("Maxwell event without 'position' (enable output_binlog_position)")
        try:
            position = parse_position(payload["position"], int(payload.get("xoffset") or 0))
        except ValueError as exc:
            raise MalformedEvent(f"bad Maxwell position {payload['position']!r}: {exc}") from None
    op = MAXWELL_OPS[str(kind)]
    before = {**data, **old} if op == "u" else (dict(data) if op == "d" else None)
    return Change(
        op=op,  # type: ignore[arg-type]
        table=f"{payload.get('database')}.{payload.get('table')}",
        key={c: data[c] for c in key_columns},
        before=before,
        after=None if op == "d" else dict(data),
        position=position,
        tx_id=None if payload.get("xid") is None else str(payload["xid"]),
        ts_ms=int(payload["ts"]) * 1000 if isinstance(payload.get("ts"), int) else None,
        source="maxwell",
    )


_position = attrgetter("position")


def latest_per_key(changes: list[Change]) -> list[Change]:
    """Keep the change with the highest position per key (later arrival wins a tie).

    When the winner lacks a TOASTed column (:data:`UNAVAILABLE`) and an earlier change of the same
    key in this batch carried it, the value is taken from there, so the batch does not lose it.
    """
    best: dict[tuple[Any, ...], Change] = {}
    for change in sorted(changes, key=_position):
        key = change.key
        # (table, (column, value), ...): one tuple per key, built once (this runs for every change)
        k = (change.table, *key.items()) if len(key) == 1 else (change.table, *sorted(key.items()))
        if change.unavailable:
            current = best.get(k)
            if current is not None and current.after:
                filled = {
                    c: current.after[c]
                    for c in change.unavailable
                    if c in current.after and current.after[c] != UNAVAILABLE
                }
                if filled:
                    change = replace(
                        change,
                        after={**(change.after or {}), **filled},
                        unavailable=change.unavailable - frozenset(filled),
                    )
        best[k] = change
    return list(best.values())
