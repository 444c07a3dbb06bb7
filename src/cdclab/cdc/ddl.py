"""DDL mid-stream: bring a target in line with its source table's columns before a run applies events.

Debezium streams rows, not DDL: after ``ALTER TABLE`` in the source, the events simply look different
(a new field, a missing field, wider values, a field under a new name) while older events of the same
table may still be in flight. :func:`reconcile` compares the target's columns with the source catalog
at the start of each run and, by ``schema_policy``:

- ``fail``: raises :class:`cdclab.cdc.merge.SchemaDrift` naming every difference, before any row is
  written (nothing applied, offsets unchanged);
- ``evolve``: alters the target so it converges to the source.

Vocabulary:
- *source column number*: ``pg_attribute.attnum`` in the source; it survives ``RENAME COLUMN`` and is
  never reused after ``DROP COLUMN``. Each target column remembers it in its comment
  (``cdclab:source_attnum=5``), which is how a rename is told apart from a drop plus an add.
- *added column*: left to the events (:func:`cdclab.cdc.merge.apply_changes` adds it with the
  source's type and default when a change carries it, or raises under ``fail``).
- *dropped column*: dropped from the target under ``evolve``; in-flight events that still carry it
  are ignored for that column.
- *renamed column*: renamed in the target; in-flight events that carry the old name are read under
  the new one (:func:`rename_columns`).
- *retyped column*: ``ALTER COLUMN ... TYPE`` to the source's type (widening: ``integer`` to
  ``bigint``, ``varchar(5)`` to ``varchar(50)``); refused when the change would alter how Debezium
  encodes the values (e.g. ``date`` to ``timestamp``) or touches a primary-key column.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from psycopg2 import sql

from cdclab.cdc import coltypes
from cdclab.cdc.events import Change
from cdclab.cdc.merge import BOOKKEEPING, SchemaDrift
from cdclab.common.db import ident
from cdclab.common.options import one_of

COMMENT = "cdclab:source_attnum="
_COMMENT_RE = re.compile(re.escape(COMMENT) + r"(\d+)")


def _type_of(declared: str) -> str:
    return declared.split(" DEFAULT ", 1)[0]


def _target_columns(cur: Any, target: str) -> dict[str, tuple[str, int | None]]:
    """name -> (format_type, remembered source attnum) of the target's non-bookkeeping columns."""
    cur.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum)
           FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (target,),
    )
    out = {}
    for name, type_, comment in cur.fetchall():
        if name in BOOKKEEPING:
            continue
        m = _COMMENT_RE.search(comment or "")
        out[name] = (type_, int(m.group(1)) if m else None)
    return out


def _remember(cur: Any, target: str, column: str, attnum: int) -> None:
    cur.execute(
        sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
            ident(target), sql.Identifier(column), sql.Literal(f"{COMMENT}{attnum}")
        )
    )


def plan(
    target_cols: dict[str, tuple[str, int | None]], source_types: dict[str, str], attnums: dict[str, int]
) -> tuple[dict[str, str], list[str], dict[str, tuple[str, str]]]:
    """(renames old -> new, dropped, retyped name -> (target type, source type)) — pure, for tests."""
    by_num = {n: name for name, n in attnums.items()}
    renames: dict[str, str] = {}
    dropped: list[str] = []
    for name, (_type, num) in target_cols.items():
        if num is not None and num in by_num:
            if by_num[num] != name:
                renames[name] = by_num[num]
        elif num is not None or name not in source_types:
            dropped.append(name)
    retyped: dict[str, tuple[str, str]] = {}
    for name, (type_, _num) in target_cols.items():
        new = renames.get(name, name)
        if name in dropped or new not in source_types:
            continue
        wanted = _type_of(source_types[new])
        if wanted != type_:
            retyped[new] = (type_, wanted)
    return renames, dropped, retyped


def reconcile(cur: Any, route: Any, policy: str) -> dict[str, str]:
    """Check (``fail``) or align (``evolve``) ``route.target`` with the source; returns the renames
    (old name -> new name) to apply to in-flight events. ``route`` is a
    :class:`cdclab.cdc.pipeline.TableRoute` with ``attnums``."""
    one_of("schema_policy", policy, ("fail", "evolve"))
    target_cols = _target_columns(cur, route.target)
    for name, (_type, num) in target_cols.items():  # targets made before columns were numbered
        if num is None and name in route.attnums:
            _remember(cur, route.target, name, route.attnums[name])
            target_cols[name] = (_type, route.attnums[name])
    renames, dropped, retyped = plan(target_cols, route.types, route.attnums)
    if not (renames or dropped or retyped):
        return {}
    what = "; ".join(
        [f"column {o} renamed to {n}" for o, n in renames.items()]
        + [f"column {c} dropped" for c in dropped]
        + [f"column {c} changed type from {a} to {b}" for c, (a, b) in retyped.items()]
    )
    touched_key = sorted((set(renames) | set(dropped) | set(retyped)) & set(route.key))
    if policy == "fail" or touched_key:
        raise SchemaDrift(
            f"{route.target}: the source table {route.source} changed: {what}. "
            + (
                f"Primary-key column(s) {touched_key} changed: reload the target from a snapshot."
                if touched_key
                else "Alter the target the same way, or run with schema_policy='evolve'."
            )
        )
    target_catalog = {c.name: c for c in coltypes.table_columns(cur, route.target)}
    for old, new in renames.items():
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                ident(route.target), sql.Identifier(old), sql.Identifier(new)
            )
        )
    for col in dropped:
        cur.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(ident(route.target), sql.Identifier(col)))
    for col, (old_type, new_type) in retyped.items():
        before = target_catalog[next((o for o, n in renames.items() if n == col), col)]
        old_codec = coltypes.plan_column(route.target, before).codec
        new_codec = route.codecs.get(col, "identity")
        if old_codec != new_codec:
            raise SchemaDrift(
                f"{route.target}: column {col} changed type from {old_type} to {new_type}, which changes how "
                "Debezium encodes its values; in-flight events cannot be read both ways. Reload the target "
                "from a snapshot."
            )
        cur.execute(
            sql.SQL("ALTER TABLE {t} ALTER COLUMN {c} TYPE {type} USING {c}::{type}").format(
                t=ident(route.target), c=sql.Identifier(col), type=sql.SQL(new_type)
            )
        )
    return renames


def rename_columns(change: Change, renames: dict[str, str]) -> Change:
    """Read an in-flight change written before a RENAME COLUMN under the new names."""

    def image(row: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if row is None else {renames.get(k, k): v for k, v in row.items()}

    return replace(
        change,
        key=image(change.key) or {},
        before=image(change.before),
        after=image(change.after),
        unavailable=frozenset(renames.get(c, c) for c in change.unavailable),
    )
