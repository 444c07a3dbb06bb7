"""Issue 14's SQL-unpack idea for the CDC sink, as the feasibility probe (:mod:`bench.raw_probe`) runs it.
Not part of the library: measured, it moves the sink's CPU to PostgreSQL instead of removing it (the
figures are in :mod:`bench.raw_probe`), so :func:`cdclab.cdc.pipeline.replicate` does not use it.

The idea: :func:`cdclab.cdc.pipeline.replicate` spends most of its single core building Python objects
per record (parse, decode, sort, stage). Here the records' key and value bytes are joined into one JSON
array instead (C-speed byte work, no parse) and one SQL statement reads it with
``jsonb_array_elements``, checks every record as the Python path would, keeps the last change per key,
decodes each column with an SQL expression equal to its :mod:`cdclab.cdc.coltypes` codec and runs the
position-guarded upsert, the delete ledger's clean-up, the hard deletes and the ledger's inserts
(:mod:`cdclab.cdc.merge`'s statements, as data-modifying CTEs of one statement).

Vocabulary:
- *eligible route*: every column's codec has an SQL expression here (:data:`SQL_CODECS`: ``identity``
  of a scalar type, ``numeric``, ``date``, ``timestamptz``), hard deletes, no renamed columns.
- *eligible batch* (:func:`raw_batch`, bytes only): every record of an eligible route, with a key, a
  value that is Debezium JSON without the schemas wrapper (starts ``{"before":``: the lab's connector
  writes no schemas) or a tombstone, and no unchanged-TOAST placeholder anywhere in it.
- *checks*: the statement counts the records the Python path would treat otherwise (malformed, a
  truncate, a snapshot read without an LSN, a NULL key column, an image whose columns are not exactly
  the target's, a value whose codec would refuse it or whose SQL expression is not proven equal, a
  source time outside ``[0, 2**32 s)``); when any is found it writes nothing and the batch is meant to
  take the Python path. So is a batch whose statement fails (:func:`apply_batch`, under a savepoint):
  the Python path then meets the same error and handles it as it always did.

Known gaps, had it been built in: a ``source.lsn`` written in exponent notation (``1e3``) passes the
checks (jsonb normalises it) where the Python path dead-letters it; two Kafka keys of different JSON
types whose values cast to the same key (``{"id": 1}`` and ``{"id": "1"}``) land in separate
partitions of ``DISTINCT ON`` (the upsert then fails: Python path). Debezium writes neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2 import sql

from cdclab.cdc.events import UNAVAILABLE
from cdclab.cdc.merge import MergeResult, _execute, _Payload, _StagedRows

# codecs with an SQL expression here, proven equal to the Python codec for every value the checks pass
SQL_CODECS = frozenset({"identity", "numeric", "date", "timestamptz"})
_UNAVAILABLE_BYTES = UNAVAILABLE.encode()
_ENVELOPE_START = b'{"before":'
_TS_MS_LIMIT = 2**32 * 1000
_MAX_BYTES = (
    64 * 2**20
)  # merge._JSON_MAX_BYTES: a bigger batch is COPYed by the Python path  # merge._TS_MS_EXACT: source times the Python path adds to the epoch
# io.debezium.time.ZonedTimestamp as zoned_timestamp passes it on unchanged but for 'T' -> ' ', Z -> +00
_ZONED = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2}){0,2})$"


def route_eligible(codecs: Mapping[str, str], types: Mapping[str, str], key: Sequence[str]) -> bool:
    """Whether every column of a route has an SQL decoder (``codecs``: column -> codec, identity left
    out; ``types``: column -> target type [DEFAULT ...]). Arrays, hstore, floats, bytea, bits, times and
    timestamps without zone are decoded in Python."""
    if not key or not types:
        return False
    for col, kind in types.items():
        name = codecs.get(col, "identity")
        if name not in SQL_CODECS:
            return False
        if name == "identity" and ("[]" in kind or kind.split()[0] == "hstore"):
            return False
    return True


@dataclass
class RawBatch:
    """A batch as the fast path sends it: per topic the JSON array of ``[key, value]`` pairs and how many
    records it holds; the tombstones it skipped."""

    payloads: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    tombstones: int = 0


def raw_batch(batch: Iterable[Any], eligible: Mapping[str, bool], slim: bool = False) -> RawBatch | None:
    """The batch as :class:`RawBatch`, or ``None`` when a record needs the Python path (a route that is
    not eligible, a record without a key, a value that is not a bare Debezium envelope, the
    unchanged-TOAST placeholder). Bytes only: nothing is parsed.

    ``slim`` (a measurement of the idea's ceiling, not exact): each value is cut to its ``before`` and
    ``after`` images, and ``source.lsn``, ``op`` and ``source.ts_ms`` are found by byte search and sent
    as three more elements (``[key, images, lsn, "op", ts_ms]``): PostgreSQL parses about a third of the
    bytes. The cut trusts Debezium's field order and does not check the source block as the Python path
    does (see :func:`slim_element`)."""
    parts: dict[str, list[bytes]] = {}
    tombstones = 0
    for msg in batch:
        topic = msg.topic()
        if not eligible.get(topic):
            return None
        value = msg.value()
        if not value:  # None or b"": a tombstone (events._loads reads both as None)
            tombstones += 1
            continue
        key = msg.key()
        if (
            not key
            or type(value) is not bytes
            or type(key) is not bytes
            or not value.startswith(_ENVELOPE_START)
            or _UNAVAILABLE_BYTES in value
        ):
            return None
        out = parts.get(topic)
        if out is None:
            out = parts[topic] = []
        if slim:
            element = slim_element(key, value)
            if element is None:
                return None
            out += (element, b",")
        else:
            out += (b"[", key, b",", value, b"],")
    raw = RawBatch(tombstones=tombstones)
    for topic, out in parts.items():
        out[-1] = b"]" if slim else b"]]"
        data = raw.payloads[topic] = b"[" + b"".join(out)
        if len(data) > _MAX_BYTES:
            return None
        raw.counts[topic] = len(out) // (2 if slim else 5)
    return raw


def slim_element(key: bytes, value: bytes) -> bytes | None:
    """``[key, {"before":...,"after":...}, lsn, "op", ts_ms]`` cut from a Debezium value by byte search
    (``None`` when a piece is not where Debezium puts it). For measuring only: a ``,"source":{`` inside
    an image (a column named ``source``) or a source block in another order would be cut wrongly."""
    i = value.rfind(b',"source":{')
    j = value.find(b',"lsn":', i)
    t = value.find(b',"ts_ms":', i)
    o = value.rfind(b',"op":"')
    if i < 0 or j < 0 or t < 0 or o < 0:
        return None
    je = value.find(b",", j + 7)
    te = value.find(b",", t + 9)
    lsn, ts = value[j + 7 : je], value[t + 9 : te]
    if not lsn.isdigit() or not ts.isdigit():
        return None
    return b"[" + key + b"," + value[:i] + b"}," + lsn + b',"' + value[o + 7 : o + 8] + b'",' + ts + b"]"


# ----------------------------------------------------------------------------- SQL per column


def value_expr(x: str, codec: str, target_type: str) -> str:
    """The SQL expression that decodes the JSON value ``x`` (an expression of type jsonb) of a column
    with ``codec`` to ``target_type``, as :mod:`cdclab.cdc.coltypes` plus the merge's cast do."""
    t = target_type
    text = f"({x} #>> '{{}}')"
    if codec == "identity":
        return f"{text}::{t}"
    if codec == "numeric":
        return (
            f"(CASE {text} WHEN 'NAN' THEN 'NaN' WHEN 'POSITIVE_INFINITY' THEN 'Infinity' "
            f"WHEN 'NEGATIVE_INFINITY' THEN '-Infinity' ELSE {text} END)::{t}"
        )
    if codec == "date":
        return (
            f"(CASE {text}::int WHEN -2147472692 THEN 'infinity'::date WHEN -2147472691 THEN "
            f"'-infinity'::date ELSE date '1970-01-01' + {text}::int END)::{t}"
        )
    if codec == "timestamptz":
        return f"{text}::timestamptz::{t}"
    raise ValueError(f"no SQL decoder for codec {codec!r}")


def value_check(x: str, codec: str) -> str | None:
    """An SQL condition that holds when the JSON value ``x`` decodes in SQL exactly as in Python (also
    when Python would refuse it: a value that fails this check sends the batch to the Python path)."""
    kind = f"jsonb_typeof({x})"
    if codec == "numeric":  # decimal.handling.mode=string: a JSON number would travel as a Python float
        return f"coalesce({kind} IN ('string', 'null'), true)"
    if codec == "date":  # days as an integer: int(value) in Python
        return f"coalesce({kind} = 'null' OR ({kind} = 'number' AND ({x} #>> '{{}}') ~ '^-?[0-9]+$'), true)"
    if codec == "timestamptz":  # a zoned ISO timestamp with a 4-digit year past 0000, or NULL
        return (
            f"coalesce({kind} = 'null' OR ({kind} = 'string' AND ({x} #>> '{{}}') ~ '{_ZONED}' "
            f"AND left({x} #>> '{{}}', 4) <> '0000'), true)"
        )
    return None


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table(name: str) -> str:
    """``schema.table`` quoted as :func:`cdclab.common.db.ident` does."""
    return ".".join(map(_q, name.split(".")))


_WRITTEN = ("_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at")


def merge_statement(
    target: str,
    key: Sequence[str],
    columns: Sequence[str],
    types: Mapping[str, str],
    codecs: Mapping[str, str],
    slim: bool = False,
) -> tuple[sql.Composable, _Payload]:
    """The one statement of a batch of ``target`` (hard deletes) and the payload placeholder it reads
    (set its ``data`` before each run). It returns one row: the records failing the checks, then rows
    upserted, upsert candidates, rows deleted."""
    payload = _Payload(b"")
    known = "ARRAY[" + ", ".join(_lit(c) for c in columns) + "]::text[]"

    def col(image: str, c: str) -> str:
        return value_expr(f"{image} -> {_lit(c)}", codecs.get(c, "identity"), types[c])

    checks = [
        "jsonb_typeof(a.v) = 'object'",
        "NOT (a.v ? 'schema' AND a.v ? 'payload')",
        *(() if slim else ("jsonb_typeof(a.v -> 'op') = 'string'",)),
        "a.op IN ('c', 'r', 'u', 'd')",
        "jsonb_typeof(a.src) = 'object'",
        "(a.op = 'd' OR jsonb_typeof(a.v -> 'after') = 'object')",
        "(a.op <> 'd' OR jsonb_typeof(a.v -> 'before') = 'object')",
        "jsonb_typeof(a.src -> 'lsn') = 'number'",
        "(a.src ->> 'lsn') ~ '^-?[0-9]+$'",
        "jsonb_typeof(a.src -> 'schema') = 'string'",
        "jsonb_typeof(a.src -> 'table') = 'string'",
        "(a.src -> 'ts_ms' IS NULL OR jsonb_typeof(a.src -> 'ts_ms') = 'null' OR "
        "(jsonb_typeof(a.src -> 'ts_ms') = 'number' AND (a.src ->> 'ts_ms') ~ '^[0-9]+$' "
        f"AND (a.src ->> 'ts_ms')::numeric < {_TS_MS_LIMIT}))",
        "jsonb_typeof(a.k) = 'object'",
        "a.k <> '{}'::jsonb",
        "NOT (a.k ? 'schema' AND a.k ? 'payload')",
        *(f"(a.k ->> {_lit(c)}) IS NOT NULL" for c in key),
        # the image written has exactly the target's columns (else: drift, or a partial change)
        f"(a.op = 'd' OR (a.v -> 'after' ?& {known} AND (a.v -> 'after') - {known} = '{{}}'::jsonb))",
        f"(a.op <> 'd' OR (a.v -> 'before') - {known} = '{{}}'::jsonb)",
    ]
    for c in columns:  # the Python path decodes every image (key, before, after): each must pass
        codec = codecs.get(c, "identity")
        for image in ("a.k", "a.v -> 'before'", "a.v -> 'after'"):
            check = value_check(f"({image}) -> {_lit(c)}", codec)
            if check is not None:
                checks.append(check)
    written = [*columns, *_WRITTEN]
    cols = ", ".join(map(_q, written))
    sets = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in written if c not in key)
    keys = ", ".join(map(_q, key))

    def match(a: str, b: str) -> str:
        return " AND ".join(f"{a}.{_q(c)} = {b}.{_q(c)}" for c in key)

    t, ledger = _table(target), _table(target + "__deleted")
    # identifiers quoted by _q, literals by _lit, types from the target's catalog: S608 does not apply
    if slim:  # [key, images, lsn, op, ts_ms]: the source block as the checks read it
        a = (
            "r.e ->> 3 AS op, jsonb_build_object('lsn', r.e -> 2, 'ts_ms', r.e -> 4, "
            "'schema', '', 'table', '') AS src"
        )
    else:
        a = "r.e -> 1 ->> 'op' AS op, r.e -> 1 -> 'source' AS src"
    text = f"""WITH a AS MATERIALIZED (
    SELECT r.ord, r.e -> 0 AS k, r.e -> 1 AS v, {a}
    FROM jsonb_array_elements({payload.token}::jsonb) WITH ORDINALITY AS r(e, ord)
), chk AS (
    SELECT count(*) FILTER (WHERE NOT coalesce({" AND ".join(checks)}, false)) AS bad FROM a
), w AS MATERIALIZED (
    SELECT DISTINCT ON (a.src ->> 'schema', a.src ->> 'table', a.k)
        a.k, a.op, CASE WHEN a.op = 'd' THEN a.v -> 'before' ELSE a.v -> 'after' END AS img,
        (a.src ->> 'lsn')::bigint AS pos, (a.src ->> 'ts_ms')::bigint AS ts_ms
    FROM a WHERE (SELECT bad FROM chk) = 0
    ORDER BY a.src ->> 'schema', a.src ->> 'table', a.k, (a.src ->> 'lsn')::bigint DESC, a.ord DESC
), up AS MATERIALIZED (
    SELECT {", ".join(f"{col('w.img', c)} AS {_q(c)}" for c in columns)},
        w.pos AS _source_position, w.op::char(1) AS _source_op,
        'epoch'::timestamptz + w.ts_ms * interval '1 millisecond' AS _source_ts,
        false AS _deleted, NULL::timestamptz AS _deleted_at
    FROM w WHERE w.op <> 'd'
), ins AS (
    INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM up u
    WHERE NOT EXISTS (SELECT 1 FROM {ledger} d WHERE {match("d", "u")} AND d._source_position >= u._source_position)
    ON CONFLICT ({keys}) DO UPDATE SET {sets}, _loaded_at = now()
    WHERE t._source_position < EXCLUDED._source_position
    RETURNING 1
), clean AS (
    DELETE FROM {ledger} l USING up u
    WHERE {match("l", "u")} AND l._source_position < u._source_position AND EXISTS (SELECT 1 FROM ins)
    RETURNING 1
), dx AS MATERIALIZED (
    SELECT {", ".join(f"{col('w.k', c)} AS {_q(c)}" for c in key)}, w.pos AS _source_position
    FROM w WHERE w.op = 'd'
), del AS (
    DELETE FROM {t} t USING dx x WHERE {match("t", "x")} AND t._source_position < x._source_position
    RETURNING 1
), led AS (
    INSERT INTO {ledger} AS l ({keys}, _source_position) SELECT {keys}, _source_position FROM dx
    ON CONFLICT ({keys}) DO UPDATE
    SET _source_position = greatest(l._source_position, EXCLUDED._source_position), _deleted_at = now()
    RETURNING 1
)
SELECT (SELECT bad FROM chk), (SELECT count(*) FROM ins), (SELECT count(*) FROM up),
       (SELECT count(*) FROM del), (SELECT count(*) FROM clean), (SELECT count(*) FROM led)"""  # noqa: S608
    return sql.SQL(text), payload


def apply_batch(
    cur: Any,
    raw: RawBatch,
    statement: Callable[[str], tuple[str, sql.Composable, _Payload]],
) -> dict[str, MergeResult] | None:
    """Apply a :class:`RawBatch` under a savepoint: per topic ``statement(topic)`` gives its target, its
    statement and payload placeholder. ``None`` (nothing written) when a record fails the checks or a
    statement fails: the caller then applies the batch by the Python path, which meets the same error
    and handles it as it always did. How :func:`cdclab.cdc.pipeline.replicate`'s handler would call it."""
    if cur.connection.encoding != "UTF8":
        return None
    done: dict[str, MergeResult] = {}
    cur.execute("SAVEPOINT cdclab_raw")
    try:
        for topic, data in raw.payloads.items():
            target, stmt, payload = statement(topic)
            result = apply_raw(cur, stmt, payload, data)
            if result is None:
                cur.execute("ROLLBACK TO SAVEPOINT cdclab_raw")
                return None
            done[target] = result
    except psycopg2.Error as exc:
        try:
            cur.execute("ROLLBACK TO SAVEPOINT cdclab_raw")
        except psycopg2.Error:
            raise exc from None
        return None
    cur.execute("RELEASE SAVEPOINT cdclab_raw")
    return done


def apply_raw(cur: Any, stmt: sql.Composable, payload: _Payload, data: bytes) -> MergeResult | None:
    """Run the batch's statement with ``data`` as its payload; ``None`` (nothing written) when a record
    failed the checks."""
    payload.data = data
    _execute(cur, stmt, _StagedRows(sql.SQL(""), payloads=(payload,)))
    bad, written, candidates, deleted, _, _ = cur.fetchone()
    if bad:
        return None
    return MergeResult(upserted=written, stale=max(candidates - written, 0), deleted=deleted)
