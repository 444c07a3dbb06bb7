"""Slowly changing dimension type 2 driven by change events: every tracked change is a new version.

Vocabulary:
- *dimension*: a warehouse table with one row per *version* of a source row: the source's columns
  plus ``valid_from``, ``valid_to``, ``is_current``, ``_deleted``, ``_row_hash``, ``_source_position``
  and ``_last_position``. Its primary key is (source key, ``_source_position``); a partial unique
  index allows one current version per key.
- *version*: the state of a source row between two changes of its tracked columns. It is valid over
  the half-open range ``[valid_from, valid_to)``; the *current* version has ``valid_to IS NULL`` and
  ``is_current = true``.
- *effective dates*: ``valid_from`` is the source commit time of the change that opened the version
  (Debezium ``source.ts_ms``), ``valid_to`` the commit time of the change that closed it. They are
  the source's clock, never the loader's: a replay next week writes the same dates. Two
  transactions committed within the same millisecond give an empty range (``valid_from =
  valid_to``); versions of a key are ordered by ``_source_position``.
- *tracked columns*: only a change of one of these opens a new version. A change of untracked
  columns only is applied *in place* to the current version (type 1 behaviour for those columns).
  ``None`` tracks every non-key column.
- *row hash* (``_row_hash``): md5 of the tracked values as Debezium delivered them; comparing hashes,
  not Python values, keeps the comparison independent of how Postgres hands types back.
- *retire, then insert*: a batch is written with two statements (as dlt does): one UPDATE that
  closes (or touches in place) current versions, then one INSERT of the new versions.
- *position guard*: a key's *guard* is the highest ``_last_position`` among its versions (the change
  that opened, touched or closed one). Changes at or below it are *stale* and ignored, so a replay
  from offset 0 writes nothing: the dimension is idempotent under replay.
- *delete*: closes the current version (``valid_to`` = the delete's commit time, ``is_current =
  false``, ``_deleted = true``); a later re-insert of the key opens a fresh version.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Unpack

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc.events import UNAVAILABLE, Change
from cdclab.cdc.merge import column_defs, keys_match, source_columns, target_columns
from cdclab.cdc.merge_variants import StreamSummary, replicate_with
from cdclab.cdc.pipeline import ConsumeOptions, TableRoute, keys_per_target, routes_for
from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl

SCD_COLUMNS = (
    "valid_from",
    "valid_to",
    "is_current",
    "_deleted",
    "_row_hash",
    "_source_position",
    "_last_position",
    "_loaded_at",
)

Key = tuple[Any, ...]


class Scd2Error(RuntimeError):
    """Base class of this module's errors."""


class ReservedColumn(Scd2Error):
    """The source has a column whose name the dimension uses for its own bookkeeping."""


class UnknownTrackedColumn(Scd2Error):
    """A tracked column is not a column of the source table."""


class MissingCommitTime(Scd2Error):
    """A change has no ``ts_ms``: its version would have no effective date."""


class TruncateArrived(Scd2Error):
    """A TRUNCATE has no meaning for a history; reload the dimension deliberately."""


class ConcurrentWriter(Scd2Error):
    """Fewer current versions were retired than planned: someone else wrote the dimension meanwhile."""


@dataclass
class Version:
    """One version of one key, as planned or as read from the dimension."""

    key: Key
    values: dict[str, Any]
    valid_from: dt.datetime
    row_hash: str
    source_position: int
    last_position: int
    valid_to: dt.datetime | None = None
    deleted: bool = False
    stored: bool = False  # already a row of the dimension
    touched: bool = False  # a stored version whose untracked values changed in place

    @property
    def is_current(self) -> bool:
        return self.valid_to is None and not self.deleted


@dataclass
class KeyState:
    """What the dimension holds for one key: its guard and its current version (if any)."""

    guard: int = 0
    current: Version | None = None


@dataclass
class Plan:
    """The two statements' rows: stored versions to retire/touch, and new versions to insert."""

    retire: list[Version] = field(default_factory=list)
    insert: list[Version] = field(default_factory=list)
    stale: int = 0
    touched: int = 0


@dataclass
class Scd2Result:
    opened: int = 0
    retired: int = 0
    touched: int = 0
    stale: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"opened": self.opened, "retired": self.retired, "touched": self.touched, "stale": self.stale}


def row_hash(values: Mapping[str, Any], tracked: Sequence[str]) -> str:
    """md5 of the tracked values (JSON, in tracked-column order)."""
    payload = json.dumps([values.get(c) for c in tracked], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.md5(payload.encode(), usedforsecurity=False).hexdigest()


def resolve_tracked(columns: Sequence[str], key: Sequence[str], tracked: Sequence[str] | None) -> list[str]:
    """The tracked columns, checked against the source's columns (``None``: every non-key column)."""
    if tracked is None:
        return [c for c in columns if c not in key]
    unknown = [c for c in tracked if c not in columns]
    if unknown:
        raise UnknownTrackedColumn(
            f"tracked column(s) {unknown} are not columns of the source ({list(columns)}); "
            "fix the tracked_columns setting"
        )
    return list(dict.fromkeys(tracked))


def _commit_time(change: Change) -> dt.datetime:
    if change.ts_ms is None:
        raise MissingCommitTime(
            f"{change.table} change at position {change.position} has no ts_ms; SCD2 needs the source "
            "commit time (Debezium's source.ts_ms)"
        )
    return dt.datetime.fromtimestamp(change.ts_ms / 1000, tz=dt.UTC)


def plan_versions(
    changes: Sequence[Change],
    states: Mapping[Key, KeyState],
    key: Sequence[str],
    columns: Sequence[str],
    tracked: Sequence[str],
) -> Plan:
    """Walk each key's changes in position order from its current state; pure, no I/O.

    Returns the stored versions to retire or touch and the new versions to insert (new versions that
    were already closed within the batch are inserted closed).
    """
    if any(c.op == "t" for c in changes):
        raise TruncateArrived(
            "a TRUNCATE arrived: a history cannot be truncated by a change event; reload the "
            "dimension deliberately and reset the consumer group's offsets"
        )
    plan = Plan()
    by_key: dict[Key, list[Change]] = {}
    for change in changes:
        by_key.setdefault(tuple(change.key.get(k) for k in key), []).append(change)
    for k, key_changes in by_key.items():
        state = states.get(k, KeyState())
        guard = state.guard
        current = replace(state.current) if state.current is not None else None
        for change in sorted(key_changes, key=lambda c: c.position):
            if change.position <= guard:
                plan.stale += 1
                continue
            guard = change.position
            at = _commit_time(change)
            if current is not None and at < current.valid_from:
                at = current.valid_from  # a snapshot read stamped after a change it precedes: never go back
            if change.op == "d":
                if current is not None:
                    current.valid_to, current.deleted, current.last_position = at, True, change.position
                    _emit(plan, current)
                    current = None
                continue
            image = dict(change.after or {})
            values = {c: image.get(c) for c in columns}
            for c in columns:  # a TOASTed column the change did not carry keeps the previous value
                if (c in change.unavailable or values[c] == UNAVAILABLE) and current is not None:
                    values[c] = current.values.get(c)
            digest = row_hash(values, tracked)
            if current is not None and current.row_hash == digest:
                current.values, current.last_position = values, change.position
                current.touched = current.stored
                plan.touched += 1
                continue
            if current is not None:
                current.valid_to, current.last_position = at, change.position
                _emit(plan, current)
            current = Version(
                key=k,
                values=values,
                valid_from=at,
                row_hash=digest,
                source_position=change.position,
                last_position=change.position,
            )
        if current is not None and (
            not current.stored
            or (state.current is not None and current.last_position != state.current.last_position)
        ):
            _emit(plan, current)
    return plan


def _emit(plan: Plan, version: Version) -> None:
    (plan.retire if version.stored else plan.insert).append(version)


# --------------------------------------------------------------------------- SQL


DIMENSION_BOOKKEEPING = (
    "valid_from timestamptz NOT NULL",
    "valid_to timestamptz",
    "is_current boolean NOT NULL",
    "_deleted boolean NOT NULL DEFAULT false",
    "_row_hash text NOT NULL",
    "_source_position bigint NOT NULL",
    "_last_position bigint NOT NULL",
    "_loaded_at timestamptz NOT NULL DEFAULT now()",
    "CHECK (is_current = (valid_to IS NULL))",
    "CHECK (valid_to IS NULL OR valid_to >= valid_from)",
)


def dimension_ddl(
    dimension: str, source_types: Sequence[tuple[str, str]], key: Sequence[str]
) -> list[sql.Composable]:
    """CREATE TABLE + the one-current-version-per-key index, for a dimension of a source table."""
    reserved = [n for n, _ in source_types if n in SCD_COLUMNS]
    if reserved:
        raise ReservedColumn(
            f"source column(s) {reserved} collide with the dimension's bookkeeping {list(SCD_COLUMNS)}; "
            "rename them in a view or replicate a projection"
        )
    if not key:
        raise Scd2Error(f"{dimension}: the source table has no primary key; SCD2 needs one to follow a row")
    cols = column_defs(source_types, DIMENSION_BOOKKEEPING)
    keys = sql.SQL(", ").join(map(sql.Identifier, key))
    table = dimension.split(".")[-1]
    index = f"{table[:40]}_current_{hashlib.md5(dimension.encode(), usedforsecurity=False).hexdigest()[:8]}"
    return [
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}, _source_position))").format(
            ident(dimension), cols, keys
        ),
        sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({}) WHERE is_current").format(
            sql.Identifier(index), ident(dimension), keys
        ),
    ]


def ensure_dimension(
    cur: Any, dimension: str, source_types: Sequence[tuple[str, str]], key: Sequence[str]
) -> None:
    for stmt in dimension_ddl(dimension, source_types, key):
        ensure_ddl(cur, dimension, stmt)


def _d(columns: Sequence[str]) -> sql.Composable:
    """``d.c1, d.c2, ...``"""
    return sql.SQL(", ").join(sql.SQL("d.{}").format(sql.Identifier(c)) for c in columns)


def _of_keys(
    cur: Any,
    dimension: str,
    key: Sequence[str],
    keys: Sequence[Key],
    template: str,
    select: sql.Composable,
    rest: sql.Composable,
) -> list[tuple[Any, ...]]:
    """``SELECT <select> FROM dimension d JOIN (VALUES keys) AS v (key) ON <same key> <rest>``."""
    return execute_values(
        cur,
        sql.SQL("SELECT {select} FROM {dim} d JOIN (VALUES %s) AS v ({k}) ON {m} {rest}")
        .format(
            select=select,
            dim=ident(dimension),
            k=sql.SQL(", ").join(map(sql.Identifier, key)),
            m=keys_match("d", "v", key),
            rest=rest,
        )
        .as_string(cur),
        list(keys),
        template=template,
        page_size=len(keys),
        fetch=True,
    )


def load_states(
    cur: Any, dimension: str, key: Sequence[str], columns: Sequence[str], keys: Sequence[Key]
) -> dict[Key, KeyState]:
    """Guard and current version (locked FOR UPDATE) of ``keys``."""
    if not keys:
        return {}
    types = dict(source_columns(cur, dimension))
    template = "(" + ", ".join(f"%s::{types[k]}" for k in key) + ")"
    guards = _of_keys(
        cur,
        dimension,
        key,
        keys,
        template,
        sql.SQL("{dk}, max(d._last_position)").format(dk=_d(key)),
        sql.SQL("GROUP BY {dk}").format(dk=_d(key)),
    )
    states: dict[Key, KeyState] = {tuple(r[:-1]): KeyState(guard=int(r[-1])) for r in guards}
    want = [*columns, "valid_from", "_row_hash", "_source_position", "_last_position"]
    current = _of_keys(
        cur, dimension, key, keys, template, _d(want), sql.SQL("WHERE d.is_current FOR UPDATE OF d")
    )
    for row in current:
        values = dict(zip(columns, row[: len(columns)], strict=True))
        valid_from, digest, opened, last = row[len(columns) :]
        k = tuple(values[c] for c in key)
        states.setdefault(k, KeyState(guard=int(last))).current = Version(
            key=k,
            values=values,
            valid_from=valid_from,
            row_hash=digest,
            source_position=int(opened),
            last_position=int(last),
            stored=True,
        )
    return states


def retire_sql(dimension: str, key: Sequence[str], columns: Sequence[str]) -> sql.Composed:
    """Statement 1: close (or touch in place) stored current versions; guarded by ``_last_position``."""
    non_key = [c for c in columns if c not in key]
    sets = [
        sql.SQL("{c} = CASE WHEN v._touched THEN v.{c} ELSE d.{c} END").format(c=sql.Identifier(c))
        for c in non_key
    ]
    vcols = [
        *key,
        "_source_position",
        "valid_to",
        "_deleted",
        "_last_position",
        "_row_hash",
        "_touched",
        *non_key,
    ]
    return sql.SQL(
        "UPDATE {dim} d SET valid_to = v.valid_to, is_current = v.valid_to IS NULL, _deleted = v._deleted, "
        "_last_position = v._last_position, _row_hash = v._row_hash, {sets}, _loaded_at = now() "
        "FROM (VALUES %s) AS v ({vcols}) "
        "WHERE {m} AND d._source_position = v._source_position AND d.is_current "
        "AND d._last_position < v._last_position"
    ).format(
        dim=ident(dimension),
        sets=sql.SQL(", ").join(sets),
        vcols=sql.SQL(", ").join(map(sql.Identifier, vcols)),
        m=keys_match("d", "v", key),
    )


def insert_sql(dimension: str, columns: Sequence[str]) -> sql.Composed:
    """Statement 2: insert the new versions (open or already closed within the batch)."""
    cols = [*columns, "valid_from", "valid_to", "is_current", "_deleted", "_row_hash", "_source_position"]
    cols += ["_last_position"]
    return sql.SQL("INSERT INTO {dim} ({cols}) VALUES %s").format(
        dim=ident(dimension), cols=sql.SQL(", ").join(map(sql.Identifier, cols))
    )


def dimension_columns(cur: Any, dimension: str) -> list[str]:
    return target_columns(cur, dimension, SCD_COLUMNS)


def apply_scd2(
    cur: Any,
    dimension: str,
    key: Sequence[str],
    changes: Sequence[Change],
    tracked: Sequence[str] | None = None,
) -> Scd2Result:
    """Apply one batch of changes of one source table to ``dimension``, in the caller's transaction."""
    result = Scd2Result()
    if not changes:
        return result
    columns = dimension_columns(cur, dimension)
    tracking = resolve_tracked(columns, key, tracked)
    keys = list(dict.fromkeys(tuple(c.key.get(k) for k in key) for c in changes))
    states = load_states(cur, dimension, key, columns, keys)
    plan = plan_versions(changes, states, key, columns, tracking)
    types = dict(source_columns(cur, dimension))
    non_key = [c for c in columns if c not in key]
    if plan.retire:
        rows = [
            (*v.key, v.source_position, v.valid_to, v.deleted, v.last_position, v.row_hash, v.touched)
            + tuple(v.values.get(c) if v.touched else None for c in non_key)
            for v in plan.retire
        ]
        casts = [types[k] for k in key] + ["bigint", "timestamptz", "boolean", "bigint", "text", "boolean"]
        casts += [types[c] for c in non_key]
        template = "(" + ", ".join(f"%s::{t}" for t in casts) + ")"
        execute_values(
            cur,
            retire_sql(dimension, key, columns).as_string(cur),
            rows,
            template=template,
            page_size=len(rows),
        )
        if cur.rowcount != len(rows):
            raise ConcurrentWriter(
                f"{dimension}: retired {cur.rowcount} of {len(rows)} current versions; another writer changed "
                "the dimension during this batch (run one writer per dimension: max_active_runs=1)"
            )
    if plan.insert:
        rows = [
            tuple(v.values.get(c) for c in columns)
            + (
                v.valid_from,
                v.valid_to,
                v.is_current,
                v.deleted,
                v.row_hash,
                v.source_position,
                v.last_position,
            )
            for v in plan.insert
        ]
        casts = [types[c] for c in columns] + ["timestamptz", "timestamptz", "boolean", "boolean", "text"]
        casts += ["bigint", "bigint"]
        template = "(" + ", ".join(f"%s::{t}" for t in casts) + ")"
        execute_values(
            cur, insert_sql(dimension, columns).as_string(cur), rows, template=template, page_size=len(rows)
        )
    result.opened = len(plan.insert)
    result.retired = sum(1 for v in plan.retire if v.valid_to is not None) + sum(
        1 for v in plan.insert if v.valid_to is not None
    )
    result.touched, result.stale = plan.touched, plan.stale
    return result


class HistoryBroken(Scd2Error):
    """The dimension's versions of some key overlap, leave a gap without a delete, or have two current rows."""


def history_violations(cur: Any, dimension: str, key: Sequence[str]) -> list[tuple[Any, ...]]:
    """Keys whose versions (ordered by position) break the history: a version that is not the last but
    is still open, overlaps its successor, or ends before it without having been deleted."""
    keys = sql.SQL(", ").join(map(sql.Identifier, key))
    cur.execute(
        sql.SQL(
            "SELECT DISTINCT {k} FROM (SELECT {k}, valid_to, _deleted, "
            "lead(valid_from) OVER w AS next_from FROM {dim} WINDOW w AS (PARTITION BY {k} ORDER BY _source_position)) h "
            "WHERE next_from IS NOT NULL AND (valid_to IS NULL OR valid_to > next_from "
            "OR (valid_to < next_from AND NOT _deleted)) ORDER BY {k}"
        ).format(k=keys, dim=ident(dimension))
    )
    return [tuple(r) for r in cur.fetchall()]


# --------------------------------------------------------------------------- the 71.3.4 DAG's steps


def replicate_scd2(
    tables: Sequence[str],
    tracked_columns: Mapping[str, Sequence[str]],
    *,
    consumer_group: str,
    topic_prefix: str = "shop",
    target_schema: str = "marts",
    target_prefix: str = "dim_",
    **consume: Unpack[ConsumeOptions],
) -> StreamSummary:
    """Create each table's dimension, then apply every batch of its changes (:func:`apply_scd2`) in the
    transaction that also stores the Kafka offsets. ``tracked_columns`` maps a source table
    (``schema.table``) to the columns whose change opens a new version; a table it does not name tracks
    every non-key column. ``consume``: as for :func:`cdclab.cdc.merge_variants.replicate_with`."""

    def prepare(cur: Any, route: TableRoute) -> None:
        ensure_dimension(cur, route.target, list(route.types.items()), route.key)

    def hook(cur: Any, route: TableRoute, changes: list[Change]) -> dict[str, int]:
        return apply_scd2(cur, route.target, route.key, changes, tracked_columns.get(route.source)).as_dict()

    return replicate_with(
        tables,
        hook,
        prepare=prepare,
        group=consumer_group,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        **consume,
    )


def verify_histories(
    tables: Sequence[str],
    *,
    topic_prefix: str = "shop",
    target_schema: str = "marts",
    target_prefix: str = "dim_",
) -> list[str]:
    """Every key's versions chain without overlap; gaps only after a delete (:func:`history_violations`
    for each table's dimension, in one transaction). Raises :class:`HistoryBroken` naming up to 20 keys
    per dimension; returns the dimensions verified."""
    routes = routes_for(
        tables, topic_prefix=topic_prefix, target_schema=target_schema, target_prefix=target_prefix
    )
    broken = keys_per_target(routes, lambda cur, r: history_violations(cur, r.target, r.key))
    if broken:
        raise HistoryBroken(f"broken histories (overlap, open non-last version or unexplained gap): {broken}")
    return [r.target for r in routes]
