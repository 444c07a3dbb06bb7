"""Apply change events to a warehouse table so that it equals the source, whatever the delivery order.

Vocabulary:
- *target*: a warehouse table mirroring one source table: the source's columns and types, the same
  primary key, plus bookkeeping columns ``_source_position`` (LSN of the change that wrote the row),
  ``_source_op``, ``_source_ts`` and ``_loaded_at``.
- *position guard*: a change is applied only when its position is greater than the row's
  ``_source_position``; a replayed or late older change can never regress a row.
- *delete ledger*: hard deletes remove the row, and remember the key with its position in
  ``<target>__deleted`` so that a late, older insert of the same key cannot resurrect it.
- *delete mode*: ``hard`` (row removed), ``soft`` (``_deleted = true`` + ``_deleted_at``, the row stays).
- *schema policy*: what to do when a change carries a column the target lacks: ``evolve`` adds the
  column (type and default from the source catalog when given, else ``text``: a default matters,
  because ``ADD COLUMN ... DEFAULT`` in the source fills existing rows without any change event), ``fail`` raises
  :class:`SchemaDrift`.

- *staged rows*: a batch's rows (the last change per key, by position) travel to the server as one
  ``jsonb`` literal, an array per change (:func:`_json_source`), read by ``jsonb_array_elements`` with
  every field as text (``e->>i``) and applied by set-based statements that cast each column to the
  target's type: one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` for the upserts, one
  ``DELETE``/``UPDATE`` for the deletes, one statement each for the delete ledger. The text of each value
  is the one the staging ``COPY`` carried and the casts are the ones the row-by-row ``VALUES`` statements
  used (text input of the target type), so values, errors and their SQLSTATEs are the same. A batch with
  a value JSON cannot carry exactly (a NUL in a string, an integer past 64 bits, more than 64 MB) is
  written with ``COPY`` into a session-local temporary table of text columns instead (:func:`stage`) and
  read by the same statements. A change that lacks columns (an unchanged TOASTed value, a column added
  after it was written) keeps its own statement over the columns it carries.
- *round trips per batch*: one catalog read (the target's columns and types, and whether the ledger is
  empty: then the ledger's clean-up after the upsert is skipped, it would find nothing), the upsert, the
  clean-up, and for deletes two statements.

The statements are built with ``psycopg2.sql``; :func:`cdclab.cdc.merge_variants.merge_statement` is
the staged ``MERGE`` variant with the same guarantees (71_03_03 runs both and checks they agree).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from operator import itemgetter
from typing import Any, Literal

import orjson
from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc.events import Change, latest_per_key
from cdclab.common.db import ident
from cdclab.common.options import one_of

DeleteMode = Literal["hard", "soft"]
SchemaPolicy = Literal["evolve", "fail"]
OnConflict = Literal["update", "nothing"]
BOOKKEEPING = ("_source_position", "_source_op", "_source_ts", "_loaded_at", "_deleted", "_deleted_at")


class SchemaDrift(RuntimeError):
    """A change has columns the target lacks and the schema policy is ``fail``."""


@dataclass
class MergeResult:
    upserted: int = 0
    deleted: int = 0
    stale: int = 0  # changes older than the row they would have written

    def __iadd__(self, other: MergeResult) -> MergeResult:
        self.upserted += other.upserted
        self.deleted += other.deleted
        self.stale += other.stale
        return self


def source_columns(cur: Any, table: str) -> list[tuple[str, str]]:
    """(name, SQL type) of a table's columns, in order, from the catalog of the connection's database."""
    cur.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (table,),
    )
    return [(r[0], r[1]) for r in cur.fetchall()]


def primary_key(cur: Any, table: str) -> list[str]:
    cur.execute(
        """SELECT a.attname FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        (table,),
    )
    return [r[0] for r in cur.fetchall()]


def column_defs(columns: Iterable[tuple[str, str]], extra: Iterable[str] = ()) -> sql.Composed:
    """The column list of a ``CREATE TABLE``: each ``(name, type)`` with the name quoted, then the
    ``extra`` definitions (bookkeeping columns, checks) as written."""
    return sql.SQL(", ").join(
        [*(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns), *map(sql.SQL, extra)]
    )


TARGET_BOOKKEEPING = (
    "_source_position bigint NOT NULL",
    "_source_op char(1) NOT NULL",
    "_source_ts timestamptz",
    "_loaded_at timestamptz NOT NULL DEFAULT now()",
    "_deleted boolean NOT NULL DEFAULT false",
    "_deleted_at timestamptz",
)


def ensure_target(cur: Any, target: str, columns: Sequence[tuple[str, str]], key: Sequence[str]) -> None:
    """Create the target table (and its delete ledger) if missing. Idempotent."""
    if not key:
        raise ValueError(f"{target}: a CDC target needs a primary key; the source table has none")
    pk = sql.SQL(", ").join(map(sql.Identifier, key))
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            ident(target), column_defs(columns, TARGET_BOOKKEEPING), pk
        )
    )
    key_cols = column_defs((n, t) for n, t in columns if n in key)
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, _source_position bigint NOT NULL, "
            "_deleted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY ({}))"
        ).format(ident(target + "__deleted"), key_cols, pk)
    )


def target_columns(cur: Any, target: str, bookkeeping: Collection[str] = BOOKKEEPING) -> list[str]:
    """The columns of ``target`` that carry source data: all but its ``bookkeeping`` columns."""
    return [n for n, _ in source_columns(cur, target) if n not in bookkeeping]


def _check_drift(
    cur: Any,
    target: str,
    known: list[str],
    changes: Iterable[Change],
    policy: SchemaPolicy,
    types: Mapping[str, str],
) -> list[str]:
    """The target's columns after drift: ``known`` itself when no change carries a column the target
    lacks; else a new list with the added columns (``evolve``), or :class:`SchemaDrift` (``fail``)."""
    known_set = frozenset(known)
    seen: dict[str, None] = {}
    for change in changes:
        image = change.before if change.op == "d" else change.after
        if not image or image.keys() <= known_set:
            continue
        for col in image:
            if col not in known_set and not (policy == "evolve" and types and col not in types):
                # (with evolve, a column the source catalog no longer has was dropped since: ignored)
                seen[col] = None
    if not seen:
        return known
    if policy == "fail":
        raise SchemaDrift(
            f"{target}: changes carry column(s) {sorted(seen)} that the target lacks; "
            "add them to the target (ALTER TABLE) or run with schema_policy='evolve'"
        )
    for col in seen:
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                ident(target), sql.Identifier(col), sql.SQL(types.get(col, "text"))
            )
        )  # from the source catalog
    return known + list(seen)


def apply_changes(
    cur: Any,
    target: str,
    key: Sequence[str],
    changes: Sequence[Change],
    delete_mode: DeleteMode = "hard",
    schema_policy: SchemaPolicy = "fail",
    source_types: Mapping[str, str] | None = None,
) -> MergeResult:
    """Apply a batch of changes of one source table to ``target`` in the caller's transaction."""
    one_of("delete_mode", delete_mode, DeleteMode)
    one_of("schema_policy", schema_policy, SchemaPolicy)
    result = MergeResult()
    if any(c.op == "t" for c in changes):
        raise SchemaDrift(
            f"{target}: a TRUNCATE arrived; truncate the target deliberately and reset "
            "its offsets, the merge will not guess"
        )
    rows = latest_per_key(list(changes))
    if not rows:
        return result
    types, ledger_empty = _target_facts(cur, target)  # one round trip: columns, types, the ledger
    known = [n for n in types if n not in BOOKKEEPING]
    columns = _check_drift(cur, target, known, rows, schema_policy, source_types or {})
    if columns is not known:  # evolved: the added columns' types as the catalog now has them
        types = dict(source_columns(cur, target))
    wanted = set(columns)
    full: list[Change] = []
    partial: list[Change] = []
    deletes: list[Change] = []
    for c in rows:
        if c.op == "d":
            deletes.append(c)
        elif c.unavailable or not (c.after or {}).keys() >= wanted:
            partial.append(c)
        else:
            full.append(c)
    upsert_src = _json_source(key, columns, full) if full else None
    delete_src = _json_source(key, columns, deletes) if deletes else None
    if (full and upsert_src is None) or (deletes and delete_src is None):
        # a value JSON cannot carry exactly (NUL in a string, an integer past 64 bits...): COPY them
        stage_name = stage(cur, target, key, columns, [*full, *deletes])
        upsert_src = delete_src = _StagedRows(_table_rows(stage_name))
    if full and upsert_src:
        result += _upsert_staged(cur, target, key, columns, types, upsert_src, len(full), ledger_empty)
    for change in partial:
        # an unchanged TOASTed column keeps the target's value; so does a column the change does not
        # carry because it was written before an ADD COLUMN in the source (a new row gets the default)
        keep = change.unavailable | (wanted - change.row.keys())
        result += _upsert(cur, target, key, [c for c in columns if c not in keep], [change], types)
    if deletes and delete_src:
        result += _delete_staged(cur, target, key, columns, types, delete_src, delete_mode)
    return result


def _target_facts(cur: Any, target: str) -> tuple[dict[str, str], bool]:
    """The target's columns with their SQL types (as :func:`source_columns`), and whether its delete
    ledger is empty, in one round trip."""
    cur.execute(
        sql.SQL(
            """SELECT a.attname, format_type(a.atttypid, a.atttypmod), NOT EXISTS (SELECT 1 FROM {ledger})
               FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY a.attnum"""
        ).format(ledger=ident(target + "__deleted")),
        (target,),
    )
    rows = cur.fetchall()
    return {r[0]: r[1] for r in rows}, bool(rows and rows[0][2])


# ----------------------------------------------------------------------------- staging (COPY) and set-based apply

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_STAGE_META = ("_source_position", "_source_op", "_source_ts")


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)  # what psycopg2 sends: the shortest text that reads back as the same double


def _array_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return _array_literal(value)
    text = _plain_text(value)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array_literal(values: list[Any]) -> str:
    """PostgreSQL's array input form (``{"a","b",NULL}``), every element quoted: what ``ARRAY[...]`` of
    the same Python list reads as after the cast to the column's array type."""
    return "{" + ",".join(_array_element(v) for v in values) + "}"


def _plain_text(value: Any) -> str:
    """The text a value is read from by the target type's input function (before COPY escaping)."""
    kind = type(value)
    if kind is str:
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is Decimal:
        return str(value)
    if kind is float:
        return _float_text(value)
    if kind in (bytes, bytearray, memoryview):
        return "\\x" + bytes(value).hex()
    if kind is list:
        return _array_literal(value)
    if kind is dict:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):  # subclasses (enums, numpy scalars are not expected) read as their base
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value) if isinstance(value, str) else str(int(value))
    if isinstance(value, float):
        return _float_text(float(value))
    raise TypeError(f"cannot stage a value of type {kind.__name__}: {value!r:.200}")


def copy_text(value: Any) -> str:
    """One field of ``COPY ... FROM STDIN`` text format: ``\\N`` for NULL, else the value's text with
    backslash, newline, carriage return and tab escaped."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str:
        if "\\" in value or "\n" in value or "\t" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if kind is int:
        return str(value)
    return _plain_text(value).translate(_COPY_ESCAPES)


def stage_table(target: str, columns: Sequence[str]) -> str:
    """The name of the session's temporary staging table for ``target`` with ``columns`` (a column added
    by schema evolution gives a new table)."""
    digest = hashlib.md5("\x00".join([target, *columns]).encode(), usedforsecurity=False).hexdigest()
    return f"cdclab_stage_{digest[:20]}"


def stage(
    cur: Any, target: str, key: Sequence[str], columns: Sequence[str], changes: Sequence[Change]
) -> str:
    """COPY ``changes`` (at most one per key) into the session's staging table for ``target``; returns
    its name. Every data column is ``text``: the casts to the target's types happen in the set-based
    statements, exactly as the row-by-row ``VALUES`` statements did. A delete stages its key and its
    before image. The table lives for the session and is emptied at commit (``ON COMMIT DELETE ROWS``)
    and at the start of each use (a per-record retry stages again in the same transaction)."""
    name = stage_table(target, columns)
    ident_ = sql.Identifier(name)
    cols = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
    cur.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {s} ({cols}, _source_position bigint NOT NULL, "
            "_source_op text NOT NULL, _source_ts text) ON COMMIT DELETE ROWS"
        ).format(s=ident_, cols=cols)
    )
    cur.execute(sql.SQL("DELETE FROM {s}").format(s=ident_))
    key_set = set(key)
    lines = []
    for c in changes:
        row = c.row
        if c.op == "d":
            row = {**row, **{k: v for k, v in c.key.items() if k in key_set}}
        ts = None if c.ts_ms is None else _ts(c.ts_ms)
        fields = [copy_text(row.get(col)) for col in columns]
        fields += [str(c.position), c.op, "\\N" if ts is None else ts]
        lines.append("\t".join(fields))
    buf = io.StringIO("\n".join(lines) + "\n")
    copy = sql.SQL("COPY {s} ({cols}) FROM STDIN").format(
        s=ident_, cols=sql.SQL(", ").join(map(sql.Identifier, [*columns, *_STAGE_META]))
    )
    cur.copy_expert(copy.as_string(cur), buf)
    return name


class _Payload(sql.Composable):
    """A batch's rows as JSON bytes, in a statement as a placeholder that :func:`_execute` replaces with
    the string literal: the bytes are never decoded, re-encoded or quoted character by character."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data
        self.token = f"\x00cdclab-json-{id(self)}\x00"  # NUL: no SQL text or identifier holds one

    def as_string(self, context: Any) -> str:
        return self.token

    def literal(self) -> bytes:
        """The JSON as an escape string literal (``E'...'``: backslashes doubled, quotes doubled),
        whatever ``standard_conforming_strings`` says; for a UTF8 client encoding."""
        return b"E'" + self.data.replace(b"\\", b"\\\\").replace(b"'", b"''") + b"'"


def _execute(cur: Any, stmt: sql.Composable, staged: _StagedRows | None = None) -> None:
    """``cur.execute(stmt)`` with the JSON payloads of ``staged`` spliced in as literals."""
    text = stmt.as_string(cur)
    used = [p for p in (staged.payloads if staged else ()) if p.token in text]
    if not used:
        cur.execute(text)
    elif cur.connection.encoding == "UTF8":
        query = text.encode()
        for p in used:
            query = query.replace(p.token.encode(), p.literal(), 1)
        cur.execute(query)
    else:  # another client encoding: psycopg2 quotes and encodes the text
        for p in used:
            text = text.replace(p.token, sql.Literal(p.data.decode()).as_string(cur), 1)
        cur.execute(text)


@dataclass(frozen=True)
class _StagedRows:
    """Where the set-based statements read a batch's staged rows: ``rows``, a ``FROM`` item named ``s``
    with every data column as text, ``_source_position`` (bigint), ``_source_op`` and ``_source_ts``
    (text, or timestamptz: both read with ``::timestamptz``); ``key_rows``, when given, a smaller item
    with only the key columns, ``_source_position`` and ``_source_op`` (the ledger's clean-up);
    ``payloads``: the JSON they read (:func:`_execute`)."""

    rows: sql.Composable
    key_rows: sql.Composable | None = None
    payloads: tuple[_Payload, ...] = ()

    def keys(self) -> sql.Composable:
        return self.key_rows if self.key_rows is not None else self.rows


def _table_rows(stage_name: str) -> sql.Composable:
    return sql.SQL("{} AS s").format(sql.Identifier(stage_name))


_JSON_NATIVE = frozenset({str, int, bool, type(None)})
# ms since 1970 below which _ts's float arithmetic is exact to the microsecond (2**32 s: year 2106), so
# that 'epoch' + ms in SQL is the very timestamp _ts renders
_TS_MS_EXACT = 2**32 * 1000
# a bigger batch is COPYed: one statement stays far below PostgreSQL's 1 GB and jsonb's 256 MB limits
_JSON_MAX_BYTES = 64 * 2**20


def _json_items(columns: Sequence[str], payload: _Payload, ts_ms: bool | None) -> sql.Composable:
    """``(SELECT e->>0 AS c0, ..., position, op[, source time] FROM jsonb_array_elements(...)) AS s``:
    ``ts_ms`` True: the time is milliseconds added to the epoch; False: text; None: no time field."""
    n = len(columns)
    fields = [
        *(sql.SQL("e->>{} AS {}").format(sql.Literal(i), sql.Identifier(c)) for i, c in enumerate(columns)),
        sql.SQL("(e->>{})::bigint AS _source_position").format(sql.Literal(n)),
        sql.SQL("e->>{} AS _source_op").format(sql.Literal(n + 1)),
    ]
    if ts_ms is not None:
        ts = "'epoch'::timestamptz + (e->>{})::bigint * interval '1 millisecond'" if ts_ms else "e->>{}"
        fields.append(sql.SQL(ts + " AS _source_ts").format(sql.Literal(n + 2)))
    return sql.SQL("(SELECT {} FROM jsonb_array_elements({}::jsonb) AS e) AS s").format(
        sql.SQL(", ").join(fields), payload
    )


def _json_source(key: Sequence[str], columns: Sequence[str], changes: Sequence[Change]) -> _StagedRows | None:
    """``changes`` (at most one per key) as one ``jsonb`` literal read by ``jsonb_array_elements``: an
    array per change of the data columns, then position, op and source time; or ``None`` when a value
    cannot travel exactly that way (the caller COPYs the batch instead).

    Exactness: the statements read every field as text (``e->>i``) and cast it to the target's type, as
    they read the COPY staging table's text columns. A ``str`` travels as a JSON string and comes back as
    the same text; an ``int`` (up to 64 bits) and a ``bool`` as a JSON number or boolean whose text is
    ``str(int)`` or ``true``/``false``, what :func:`_plain_text` writes; ``None`` as null. Every other value
    (float, Decimal, bytes, list, dict, subclasses) travels as the string :func:`_plain_text` makes of it,
    the very text COPY would carry. Refused (``None``): an integer past 64 bits or a string that is not
    valid Unicode (orjson raises), a NUL character (``jsonb`` refuses ``\\u0000`` with another error
    than COPY's), and a batch of more than 64 MB of JSON (COPY streams it; one statement would not).
    The source time travels as milliseconds (SQL adds them to the epoch) when every change's ``ts_ms``
    is an int in [0, 2**32 s); else as the text :func:`_ts` renders."""
    key_set = set(key)
    rows: list[list[Any]] = []
    for c in changes:
        if c.op == "d":
            image = {**(c.before or {}), **{k: v for k, v in c.key.items() if k in key_set}}
        else:
            image = c.after or {}
        rows.append([*map(image.get, columns), c.position, c.op, c.ts_ms])
    return json_rows(key, columns, rows)


def json_rows(key: Sequence[str], columns: Sequence[str], rows: list[list[Any]]) -> _StagedRows | None:
    """:func:`_json_source` of rows already built (each ``[*values of columns, position, op, ts_ms]``,
    at most one per key; the lists are changed in place): the CDC sink's lean path
    (:mod:`cdclab.cdc.lean`) builds them without a :class:`Change`, and both paths encode them here."""
    n = len(columns)
    ts_ms = all(r[n + 2] is None or (type(r[n + 2]) is int and 0 <= r[n + 2] < _TS_MS_EXACT) for r in rows)
    if not ts_ms:
        for r in rows:
            r[n + 2] = _ts(r[n + 2])
    if not set(map(type, chain.from_iterable(rows))) <= _JSON_NATIVE:
        rows = [[v if type(v) in _JSON_NATIVE else _plain_text(v) for v in r] for r in rows]
    try:
        data = orjson.dumps(rows)
    except orjson.JSONEncodeError:
        return None
    if b"\\u0000" in data or len(data) > _JSON_MAX_BYTES:
        return None
    payload = _Payload(data)
    item = _json_items(columns, payload, ts_ms)
    if len(key) == n:
        return _StagedRows(item, payloads=(payload,))
    pick = itemgetter(*(columns.index(k) for k in key), n, n + 1)
    key_payload = _Payload(orjson.dumps(list(map(pick, rows))))
    return _StagedRows(item, _json_items(key, key_payload, None), (payload, key_payload))


def _typed(columns: Sequence[str], types: Mapping[str, str]) -> sql.Composable:
    """``s.c::type AS c, ...``: each staged text column read as the target's type."""
    return sql.SQL(", ").join(
        sql.SQL("s.{c}::{t} AS {c}").format(c=sql.Identifier(c), t=sql.SQL(types[c])) for c in columns
    )


def _row_columns(columns: Sequence[str]) -> list[str]:
    """The columns an upsert or a tombstone writes: the data columns and the bookkeeping it sets."""
    return [*columns, "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]


def _selected(select: sql.Composable) -> sql.Composable:
    """A ``SELECT`` over the staging table as the rows ``v`` of :func:`guarded_insert`/:func:`clear_ledger`."""
    return sql.SQL("({}) AS v").format(select)


def _values(cols: Sequence[str]) -> sql.Composable:
    """``(VALUES %s) AS v (cols)``: rows passed by ``execute_values`` as the rows ``v``."""
    return sql.SQL("(VALUES %s) AS v ({})").format(sql.SQL(", ").join(map(sql.Identifier, cols)))


def _values_template(cols: Sequence[str], types: Mapping[str, str]) -> str:
    """``execute_values`` template casting each value to its column's type (``VALUES`` needs typed columns)."""
    return "(" + ", ".join(f"(%s)::{types[c]}" for c in cols) + ")"


def guarded_insert(
    target: str,
    key: Sequence[str],
    cols: Sequence[str],
    rows: sql.Composable,
    on_conflict: OnConflict = "update",
) -> sql.Composed:
    """The position-guarded upsert of ``rows`` (a ``FROM`` item named ``v`` with ``cols``) into ``target``.

    A row is written only when the delete ledger does not remember its key at its position or later (a
    late, older insert cannot resurrect a deleted key). ``update``: a key the target holds is updated
    only when the row's position is greater than the target's ``_source_position`` (older changes are
    stale); ``nothing``: a key the target holds is left alone (a tombstone for a key never seen).

    The ledger test is a scalar subquery, ``(ledger position of v's key) >= v's position IS NOT TRUE``,
    the same rows as ``NOT EXISTS`` (the ledger's primary key is the key: at most one row; no row or a
    NULL position is not TRUE), because Postgres runs it as one primary-key probe per row. For
    ``NOT EXISTS`` it planned a hash anti join that read the whole ledger for every batch (its estimate
    of a batch is 100 rows): 6 ms of a 9 ms upsert of 500 rows against a ledger of 16,700 keys, and
    growing with the ledger; the probes took 1.5 ms.
    """
    one_of("on_conflict", on_conflict, OnConflict)
    if on_conflict == "update":
        non_key = [c for c in cols if c not in key]
        conflict = sql.SQL(
            "DO UPDATE SET {sets}, _loaded_at = now() WHERE t._source_position < EXCLUDED._source_position"
        ).format(
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in non_key
            )
        )
    else:
        conflict = sql.SQL("DO NOTHING")
    return sql.SQL(
        "INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM {rows} "
        "WHERE ((SELECT d._source_position FROM {ledger} d WHERE {ledger_match}) >= v._source_position) IS NOT TRUE "
        "ON CONFLICT ({key}) {conflict}"
    ).format(
        t=ident(target),
        ledger=ident(target + "__deleted"),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        rows=rows,
        ledger_match=_match("d", key),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        conflict=conflict,
    )


def clear_ledger(target: str, key: Sequence[str], rows: sql.Composable) -> sql.Composed:
    """Forget deleted keys that ``rows`` (a ``FROM`` item named ``v``: the key and ``_source_position``)
    wrote again at a later position.

    The ledger rows are found by one primary-key probe per row of ``rows`` (a ``LATERAL`` subquery that
    ``OFFSET 0`` keeps from being flattened into a join) and deleted by their ``ctid``. The plain
    ``DELETE ... USING rows`` was planned as a hash join over the whole ledger for every batch (4.6 ms
    for 500 rows against 16,700 ledger keys, growing with the ledger; this form: 0.7 ms)."""
    return sql.SQL(
        "DELETE FROM {ledger} d WHERE d.ctid = ANY (ARRAY(SELECT x.ctid FROM {rows} CROSS JOIN LATERAL "
        "(SELECT l.ctid FROM {ledger} l WHERE {match} AND l._source_position < v._source_position OFFSET 0) x))"
    ).format(ledger=ident(target + "__deleted"), rows=rows, match=_match("l", key))


def _upsert_staged(
    cur: Any,
    target: str,
    key: Sequence[str],
    columns: Sequence[str],
    types: Mapping[str, str],
    staged: _StagedRows,
    count: int,
    ledger_empty: bool = False,
) -> MergeResult:
    """The guarded upsert of the staged rows, then the ledger's clean-up: skipped when the ledger was
    empty when the batch began (``ledger_empty``: nothing in this call writes it before the clean-up, so
    the ``DELETE`` would find nothing)."""
    cols = _row_columns(columns)
    source = sql.SQL(
        "SELECT {typed}, s._source_position, s._source_op::char(1) AS _source_op, "
        "s._source_ts::timestamptz AS _source_ts, false AS _deleted, NULL::timestamptz AS _deleted_at "
        "FROM {s} WHERE s._source_op <> 'd'"
    ).format(typed=_typed(columns, types), s=staged.rows)
    _execute(cur, guarded_insert(target, key, cols, _selected(source)), staged)
    written = cur.rowcount
    if written and not ledger_empty:
        keys = sql.SQL("SELECT {typed}, s._source_position FROM {s} WHERE s._source_op <> 'd'").format(
            typed=_typed(key, types), s=staged.keys()
        )
        _execute(cur, clear_ledger(target, key, _selected(keys)), staged)
    return MergeResult(upserted=written, stale=max(count - written, 0))


def keys_match(a: str, b: str, key: Sequence[str]) -> sql.Composable:
    """``a.k1 = b.k1 AND a.k2 = b.k2 ...``: rows of aliases ``a`` and ``b`` with the same key."""
    return sql.SQL(" AND ").join(
        sql.SQL("{a}.{k} = {b}.{k}").format(a=sql.Identifier(a), b=sql.Identifier(b), k=sql.Identifier(k))
        for k in key
    )


def _match(alias: str, key: Sequence[str]) -> sql.Composable:
    return keys_match(alias, "v", key)


def _delete_staged(
    cur: Any,
    target: str,
    key: Sequence[str],
    columns: Sequence[str],
    types: Mapping[str, str],
    staged: _StagedRows,
    mode: DeleteMode,
) -> MergeResult:
    s = staged.rows
    deletes = sql.SQL(
        "(SELECT {typed}, s._source_position, s._source_ts::timestamptz AS _source_ts FROM {s} "
        "WHERE s._source_op = 'd') AS v"
    ).format(typed=_typed(key, types), s=s)
    if mode == "hard":
        stmt = sql.SQL(
            "DELETE FROM {t} t USING {v} WHERE {match} AND t._source_position < v._source_position"
        ).format(t=ident(target), v=deletes, match=_match("t", key))
    else:
        stmt = sql.SQL(
            "UPDATE {t} t SET _deleted = true, _deleted_at = coalesce(v._source_ts, now()), "
            "_source_position = v._source_position, _source_op = 'd', _loaded_at = now() "
            "FROM {v} WHERE {match} AND t._source_position < v._source_position"
        ).format(t=ident(target), v=deletes, match=_match("t", key))
    _execute(cur, stmt, staged)
    deleted = int(cur.rowcount)
    if mode == "soft":
        # a delete of a key the target never held still leaves a flagged row (see flag_unseen_deletes)
        tombstones = sql.SQL(
            "SELECT {typed}, s._source_position, "
            "'d'::char(1) AS _source_op, s._source_ts::timestamptz AS _source_ts, true AS _deleted, "
            "coalesce(s._source_ts::timestamptz, now()) AS _deleted_at FROM {s} "
            "WHERE s._source_op = 'd'"
        ).format(typed=_typed(columns, types), s=s)
        _execute(
            cur, guarded_insert(target, key, _row_columns(columns), _selected(tombstones), "nothing"), staged
        )
        deleted += int(cur.rowcount)
    else:
        _execute(
            cur,
            sql.SQL(
                "INSERT INTO {ledger} AS l ({cols}) SELECT {typed}, s._source_position FROM {s} "
                "WHERE s._source_op = 'd' ON CONFLICT ({k}) DO UPDATE "
                "SET _source_position = greatest(l._source_position, EXCLUDED._source_position), "
                "_deleted_at = now()"
            ).format(
                ledger=ident(target + "__deleted"),
                cols=sql.SQL(", ").join(map(sql.Identifier, [*key, "_source_position"])),
                typed=_typed(key, types),
                s=s,
                k=sql.SQL(", ").join(map(sql.Identifier, key)),
            ),
            staged,
        )
    return MergeResult(deleted=deleted)


def _upsert(
    cur: Any,
    target: str,
    key: Sequence[str],
    columns: Sequence[str],
    changes: Sequence[Change],
    types: Mapping[str, str] | None = None,
) -> MergeResult:
    """The row-by-row ``VALUES`` upsert over ``columns`` (``types``: the target's, read when not given)."""
    types = types if types is not None else dict(source_columns(cur, target))
    cols = _row_columns(columns)
    values = [
        tuple(c.row.get(col) for col in columns) + (c.position, c.op, _ts(c.ts_ms), False, None)
        for c in changes
    ]
    stmt = guarded_insert(target, key, cols, _values(cols))
    template = _values_template(cols, types)
    execute_values(cur, stmt.as_string(cur), values, template=template, page_size=len(values))
    written = cur.rowcount
    # rows neither inserted nor updated were stale (older than the target row) or already deleted
    stale = len(values) - written
    if written:
        ledger_cols = [*key, "_source_position"]
        execute_values(
            cur,
            clear_ledger(target, key, _values(ledger_cols)).as_string(cur),
            [tuple(c.key.get(k) for k in key) + (c.position,) for c in changes],
            template=_values_template(ledger_cols, {**types, "_source_position": "bigint"}),
            page_size=len(changes),
        )
    return MergeResult(upserted=written, stale=max(stale, 0))


def flag_unseen_deletes(cur: Any, target: str, key: Sequence[str], changes: Sequence[Change]) -> int:
    """Soft mode: a delete of a key the target never held (inserted and deleted between two batches'
    cut points) still leaves a flagged row, its before image — so the end state does not depend on where
    batches split. A key the ledger remembers at the delete's position or later (an archived row) is
    left alone."""
    deletes = [c for c in latest_per_key([c for c in changes if c.op != "t"]) if c.op == "d"]
    if not deletes:
        return 0
    columns = target_columns(cur, target)
    types = dict(source_columns(cur, target))
    cols = _row_columns(columns)
    values = [
        (*(c.row.get(col) for col in columns), c.position, "d", _ts(c.ts_ms), True, _ts(c.ts_ms) or "now")
        for c in deletes
    ]
    stmt = guarded_insert(target, key, cols, _values(cols), "nothing")
    template = _values_template(cols, types)
    execute_values(cur, stmt.as_string(cur), values, template=template, page_size=len(values))
    return int(cur.rowcount)


def _ts(ts_ms: int | None) -> str | None:
    if ts_ms is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC).isoformat()


def rows_of(
    cur: Any, table: str, columns: Sequence[str], key: Sequence[str], where: sql.Composable | None = None
) -> list[tuple[Any, ...]]:
    """Rows of ``table`` restricted to ``columns`` and ordered by ``key`` (for comparisons)."""
    stmt = sql.SQL("SELECT {cols} FROM {t} {where} ORDER BY {key}").format(
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        t=ident(table),
        where=where or sql.SQL(""),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
    )
    cur.execute(stmt)
    return [tuple(r) for r in cur.fetchall()]
