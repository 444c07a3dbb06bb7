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

The statements are ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` (the upsert variant) built with
``psycopg2.sql``; :func:`cdclab.cdc.merge_variants.merge_statement` is the staged ``MERGE`` variant with
the same guarantees (71_03_03 runs both and checks they agree).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc.events import Change, latest_per_key
from cdclab.db import ident
from cdclab.options import one_of

DeleteMode = Literal["hard", "soft"]
SchemaPolicy = Literal["evolve", "fail"]
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


def ensure_target(cur: Any, target: str, columns: Sequence[tuple[str, str]], key: Sequence[str]) -> None:
    """Create the target table (and its delete ledger) if missing. Idempotent."""
    if not key:
        raise ValueError(f"{target}: a CDC target needs a primary key; the source table has none")
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns]
    cols += [
        sql.SQL(c)
        for c in (
            "_source_position bigint NOT NULL",
            "_source_op char(1) NOT NULL",
            "_source_ts timestamptz",
            "_loaded_at timestamptz NOT NULL DEFAULT now()",
            "_deleted boolean NOT NULL DEFAULT false",
            "_deleted_at timestamptz",
        )
    ]
    pk = sql.SQL(", ").join(map(sql.Identifier, key))
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))").format(
            ident(target), sql.SQL(", ").join(cols), pk
        )
    )
    key_cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns if n in key
    )
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ({}, _source_position bigint NOT NULL, "
            "_deleted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY ({}))"
        ).format(ident(target + "__deleted"), key_cols, pk)
    )


def target_columns(cur: Any, target: str) -> list[str]:
    return [n for n, _ in source_columns(cur, target) if n not in BOOKKEEPING]


def _check_drift(
    cur: Any,
    target: str,
    known: list[str],
    changes: Iterable[Change],
    policy: SchemaPolicy,
    types: Mapping[str, str],
) -> list[str]:
    seen: dict[str, None] = {}
    for change in changes:
        for col in change.row:
            if col not in known and not (policy == "evolve" and types and col not in types):
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
    rows = [c for c in latest_per_key([c for c in changes if c.op != "t"])]
    if any(c.op == "t" for c in changes):
        raise SchemaDrift(
            f"{target}: a TRUNCATE arrived; truncate the target deliberately and reset "
            "its offsets, the merge will not guess"
        )
    if not rows:
        return result
    columns = _check_drift(cur, target, target_columns(cur, target), rows, schema_policy, source_types or {})
    upserts = [c for c in rows if c.op != "d"]
    deletes = [c for c in rows if c.op == "d"]
    full = [c for c in upserts if not c.unavailable and c.row.keys() >= set(columns)]
    partial = [c for c in upserts if c.unavailable or not c.row.keys() >= set(columns)]
    if full:
        result += _upsert(cur, target, key, columns, full)
    for change in partial:
        # an unchanged TOASTed column keeps the target's value; so does a column the change does not
        # carry because it was written before an ADD COLUMN in the source (a new row gets the default)
        keep = change.unavailable | (set(columns) - change.row.keys())
        result += _upsert(cur, target, key, [c for c in columns if c not in keep], [change])
    if deletes:
        result += _delete(cur, target, key, deletes, delete_mode)
    return result


def _upsert(
    cur: Any, target: str, key: Sequence[str], columns: Sequence[str], changes: Sequence[Change]
) -> MergeResult:
    cols = [*columns, "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]
    values = [
        tuple(c.row.get(col) for col in columns) + (c.position, c.op, _ts(c.ts_ms), False, None)
        for c in changes
    ]
    non_key = [c for c in cols if c not in key]
    stmt = sql.SQL(
        "INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM (VALUES %s) AS v ({cols}) "
        "WHERE NOT EXISTS (SELECT 1 FROM {ledger} d WHERE {ledger_match} AND d._source_position >= v._source_position) "
        "ON CONFLICT ({key}) DO UPDATE SET {sets}, _loaded_at = now() "
        "WHERE t._source_position < EXCLUDED._source_position"
    ).format(
        t=ident(target),
        ledger=ident(target + "__deleted"),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        ledger_match=sql.SQL(" AND ").join(sql.SQL("d.{k} = v.{k}").format(k=sql.Identifier(k)) for k in key),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in non_key),
    )
    # VALUES needs typed columns: cast each to the target's type
    types = dict(source_columns(cur, target))
    template = "(" + ", ".join(f"(%s)::{types[c]}" for c in cols) + ")"
    execute_values(cur, stmt.as_string(cur), values, template=template, page_size=len(values))
    written = cur.rowcount
    # rows neither inserted nor updated were stale (older than the target row) or already deleted
    stale = len(values) - written
    if written:
        _clear_ledger(cur, target, key, changes)
    return MergeResult(upserted=written, stale=max(stale, 0))


def _clear_ledger(cur: Any, target: str, key: Sequence[str], changes: Sequence[Change]) -> None:
    stmt = sql.SQL(
        "DELETE FROM {ledger} d USING (VALUES %s) AS v ({cols}) WHERE {match} "
        "AND d._source_position < v._source_position"
    ).format(
        ledger=ident(target + "__deleted"),
        cols=sql.SQL(", ").join(map(sql.Identifier, [*key, "_source_position"])),
        match=sql.SQL(" AND ").join(sql.SQL("d.{k} = v.{k}").format(k=sql.Identifier(k)) for k in key),
    )
    types = dict(source_columns(cur, target))
    template = "(" + ", ".join([f"(%s)::{types[k]}" for k in key] + ["%s::bigint"]) + ")"
    execute_values(
        cur,
        stmt.as_string(cur),
        [tuple(c.key.get(k) for k in key) + (c.position,) for c in changes],
        template=template,
        page_size=len(changes),
    )


def _delete(
    cur: Any, target: str, key: Sequence[str], changes: Sequence[Change], mode: DeleteMode
) -> MergeResult:
    types = dict(source_columns(cur, target))
    keyvals = [tuple(c.key.get(k) for k in key) + (c.position, _ts(c.ts_ms)) for c in changes]
    cols = sql.SQL(", ").join(map(sql.Identifier, [*key, "_source_position", "_source_ts"]))
    match = sql.SQL(" AND ").join(sql.SQL("t.{k} = v.{k}").format(k=sql.Identifier(k)) for k in key)
    template = "(" + ", ".join([f"(%s)::{types[k]}" for k in key] + ["%s::bigint", "%s::timestamptz"]) + ")"
    if mode == "hard":
        stmt = sql.SQL(
            "DELETE FROM {t} t USING (VALUES %s) AS v ({cols}) WHERE {match} "
            "AND t._source_position < v._source_position"
        ).format(t=ident(target), cols=cols, match=match)
    else:
        stmt = sql.SQL(
            "UPDATE {t} t SET _deleted = true, _deleted_at = coalesce(v._source_ts, now()), "
            "_source_position = v._source_position, _source_op = 'd', _loaded_at = now() "
            "FROM (VALUES %s) AS v ({cols}) WHERE {match} "
            "AND t._source_position < v._source_position"
        ).format(t=ident(target), cols=cols, match=match)
    execute_values(cur, stmt.as_string(cur), keyvals, template=template, page_size=len(keyvals))
    deleted = cur.rowcount
    if mode == "soft":
        deleted += flag_unseen_deletes(cur, target, key, changes)
    if mode == "hard":
        ledger_cols = sql.SQL(", ").join(map(sql.Identifier, [*key, "_source_position"]))
        stmt = sql.SQL(
            "INSERT INTO {ledger} ({cols}) VALUES %s ON CONFLICT ({key}) DO UPDATE "
            "SET _source_position = greatest({ledger}._source_position, EXCLUDED._source_position), "
            "_deleted_at = now()"
        ).format(
            ledger=ident(target + "__deleted"),
            cols=ledger_cols,
            key=sql.SQL(", ").join(map(sql.Identifier, key)),
        )
        execute_values(
            cur,
            stmt.as_string(cur),
            [kv[:-1] for kv in keyvals],
            template="(" + ", ".join([f"(%s)::{types[k]}" for k in key] + ["%s::bigint"]) + ")",
            page_size=len(keyvals),
        )
    return MergeResult(deleted=deleted)


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
    cols = [*columns, "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]
    values = [
        (*(c.row.get(col) for col in columns), c.position, "d", _ts(c.ts_ms), True, _ts(c.ts_ms) or "now")
        for c in deletes
    ]
    stmt = sql.SQL(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM (VALUES %s) AS v ({cols}) "
        "WHERE NOT EXISTS (SELECT 1 FROM {ledger} d WHERE {m} AND d._source_position >= v._source_position) "
        "ON CONFLICT ({k}) DO NOTHING"
    ).format(
        t=ident(target),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        ledger=ident(target + "__deleted"),
        m=sql.SQL(" AND ").join(sql.SQL("d.{k} = v.{k}").format(k=sql.Identifier(k)) for k in key),
        k=sql.SQL(", ").join(map(sql.Identifier, key)),
    )
    template = "(" + ", ".join(f"(%s)::{types[c]}" for c in cols) + ")"
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
