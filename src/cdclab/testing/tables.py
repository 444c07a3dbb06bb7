"""Compare two tables row by row, and say readably how they differ.

Vocabulary:
- *table reference*: where rows come from: ``"shop:public.customers"`` / ``"warehouse:core.x"`` (a lab
  database and a table), ``(connection, "schema.table")`` (any open psycopg2 connection), or rows
  already read: a list of dicts (``{"id": 1, ...}``).
- *key*: the column(s) that identify a row on both sides (``"id"`` or ``("order_id", "line")``).
- *columns*: the columns compared; by default every column of the source (the target must have them).
- *missing*: a key in the source but not in the target; *extra*: a key in the target only; *changed*:
  a key on both sides whose compared columns differ.
- *filter* (``where=``, ``source_where=``, ``target_where=``): a SQL predicate that limits the rows read
  from a table: ``"id <> 5"``, a ``psycopg2.sql.Composable``, or ``("id BETWEEN %s AND %s", [lo, hi])``
  with bound parameters. ``where`` applies to both sides, ``source_where``/``target_where`` to one side
  only (both given: joined with AND). A one-sided filter keeps the other side whole, so a target row the
  source filter leaves out still counts as *extra*. A filtered side is named with its filter in the
  failure message: ``shop:public.c (WHERE id <> 5)``.

:func:`diff_rows` and :func:`format_diff` are pure (unit-tested); :func:`read_table` reads Postgres and
fails with :class:`TableNotFoundError` (the table's name and database) when the table does not exist.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from psycopg2 import sql

from cdclab.common.db import ident

Key = tuple[Any, ...]
Row = dict[str, Any]
TableRef = str | tuple[Any, str] | Sequence[Mapping[str, Any]]
Predicate: TypeAlias = str | sql.Composable | tuple[str | sql.Composable, Sequence[Any]]
"""A filter: SQL text, a composed statement part, or ``(SQL with %s placeholders, parameters)``."""

SHOW_KEYS = 10
"""How many differing keys a failure message lists per kind."""


class TableNotFoundError(AssertionError):
    """A compared table does not exist; the message names the table and the database."""


class FilterError(AssertionError):
    """A filter (``where=``) does not apply: it names a column the table lacks, is not valid SQL, or is
    given for rows that were not read from a table. The message names the filter, the table and the
    database."""


class DuplicateKeyError(AssertionError):
    """A key occurs twice on one side: the comparison would be meaningless."""


class TablesDiffer(AssertionError):
    """The two tables differ; ``diff`` holds the details, the message is :func:`format_diff`."""

    def __init__(self, message: str, diff: TableDiff) -> None:
        super().__init__(message)
        self.diff = diff


@dataclass
class TableDiff:
    key: tuple[str, ...]
    columns: tuple[str, ...]
    source_count: int
    target_count: int
    missing: list[Key] = field(default_factory=list)
    extra: list[Key] = field(default_factory=list)
    changed: list[tuple[Key, dict[str, tuple[Any, Any]]]] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.changed)


def _keyed(
    rows: Sequence[Mapping[str, Any]], key: tuple[str, ...], side: str
) -> dict[Key, Mapping[str, Any]]:
    out: dict[Key, Mapping[str, Any]] = {}
    for row in rows:
        absent = [k for k in key if k not in row]
        if absent:
            raise KeyError(f"{side} rows have no key column(s) {absent}; columns: {sorted(row)}")
        k = tuple(row[c] for c in key)
        if k in out:
            raise DuplicateKeyError(f"{side}: key {_fmt_key(key, k)} occurs more than once")
        out[k] = row
    return out


def _sort_key(k: Key) -> tuple[Any, ...]:
    # None sorts first; values of one type compare among themselves
    return tuple((v is not None, type(v).__name__, 0 if v is None else v) for v in k)


def _sorted(keys: list[Key]) -> list[Key]:
    try:
        return sorted(keys, key=_sort_key)
    except TypeError:
        return sorted(keys, key=repr)


def diff_rows(
    source: Sequence[Mapping[str, Any]],
    target: Sequence[Mapping[str, Any]],
    key: str | Sequence[str],
    columns: Sequence[str] | None = None,
) -> TableDiff:
    """Compare ``source`` and ``target`` rows by ``key`` on ``columns`` (default: the source rows'
    columns, in their order). Keys in the result are sorted."""
    key_t = (key,) if isinstance(key, str) else tuple(key)
    if columns is None:
        columns = list(source[0]) if source else (list(target[0]) if target else list(key_t))
    cols = tuple(c for c in columns if c not in key_t)
    src, tgt = _keyed(source, key_t, "source"), _keyed(target, key_t, "target")
    diff = TableDiff(key=key_t, columns=cols, source_count=len(src), target_count=len(tgt))
    diff.missing = _sorted([k for k in src if k not in tgt])
    diff.extra = _sorted([k for k in tgt if k not in src])
    for k in _sorted([k for k in src if k in tgt]):
        s, t = src[k], tgt[k]
        for side, row in (("source", s), ("target", t)):
            absent = [c for c in cols if c not in row]
            if absent:
                raise KeyError(f"{side} rows have no column(s) {absent}; columns: {sorted(row)}")
        changes = {c: (s[c], t[c]) for c in cols if s[c] != t[c]}
        if changes:
            diff.changed.append((k, changes))
    return diff


def _fmt_key(key: tuple[str, ...], k: Key) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in zip(key, k, strict=True))


def format_diff(diff: TableDiff, source_name: str = "source", target_name: str = "target") -> str:
    """A failure message: counts first, then the first differing keys, column by column."""
    lines = [
        f"{source_name} and {target_name} differ "
        f"(key {', '.join(diff.key)}; compared {len(diff.columns)} column(s): {', '.join(diff.columns)})",
        f"  {diff.source_count} source row(s), {diff.target_count} target row(s): "
        f"{len(diff.missing)} missing, {len(diff.extra)} extra, {len(diff.changed)} changed",
    ]
    for label, keys in (("missing in the target", diff.missing), ("extra in the target", diff.extra)):
        if keys:
            shown = "; ".join(_fmt_key(diff.key, k) for k in keys[:SHOW_KEYS])
            more = f" (and {len(keys) - SHOW_KEYS} more)" if len(keys) > SHOW_KEYS else ""
            lines.append(f"  {label}: {shown}{more}")
    if diff.changed:
        lines.append("  changed (source -> target):")
        for k, changes in diff.changed[:SHOW_KEYS]:
            lines.append(f"    {_fmt_key(diff.key, k)}:")
            width = max(len(c) for c in changes)
            for col, (s, t) in changes.items():
                lines.append(f"      {col:<{width}}  {s!r} -> {t!r}")
        if len(diff.changed) > SHOW_KEYS:
            lines.append(f"    (and {len(diff.changed) - SHOW_KEYS} more changed rows)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# reading tables


def table_exists(conn: Any, table: str) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return bool(cur.fetchone()[0])


def database_of(conn: Any) -> str:
    return str(conn.get_dsn_parameters().get("dbname", "?"))


def combine(*predicates: Predicate | None) -> tuple[sql.Composable, list[Any]] | None:
    """The given filters joined with AND (each in parentheses when there are several), with their
    parameters in order; ``None`` when no filter is given."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for predicate in predicates:
        if predicate is None:
            continue
        text, values = predicate if isinstance(predicate, tuple) else (predicate, ())
        parts.append(sql.SQL(text) if isinstance(text, str) else text)
        params.extend(values)
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0], params
    return sql.SQL(" AND ").join(sql.SQL("({})").format(p) for p in parts), params


def select_statement(
    table: str, columns: Sequence[str] | None = None, where: Predicate | None = None
) -> tuple[sql.Composable, list[Any]]:
    """``SELECT <columns> FROM <table> [WHERE <filter>]`` and its parameters."""
    cols = sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))
    query: sql.Composable = sql.SQL("SELECT {} FROM {}").format(cols, ident(table))
    combined = combine(where)
    if combined is None:
        return query, []
    return query + sql.SQL(" WHERE ") + combined[0], combined[1]


def filter_text(conn: Any, where: Predicate) -> str:
    """The filter as Postgres sees it, parameters filled in: ``id BETWEEN 1 AND 9``."""
    combined = combine(where)
    assert combined is not None
    with conn.cursor() as cur:
        text = cur.mogrify(combined[0], combined[1] or None)
    return text.decode() if isinstance(text, bytes) else str(text)


def filtered_name(name: str, where_text: str | None) -> str:
    """How a side is named in a failure message: ``shop:public.c (WHERE id <> 5)``."""
    return name if not where_text else f"{name} (WHERE {where_text})"


def read_table(
    conn: Any, table: str, columns: Sequence[str] | None = None, where: Predicate | None = None
) -> list[Row]:
    """The rows of ``table`` (``schema.table`` or ``table``) as dicts; ``columns`` default: all;
    ``where``: a filter (see the module docstring), default: every row.

    Fails with :class:`TableNotFoundError` naming the table and the database when it does not exist,
    and with :class:`FilterError` when the filter does not apply to the table. The read runs in its own
    transaction when the connection is not in autocommit mode (then rolled back)."""
    __tracebackhide__ = True
    import psycopg2

    if not table_exists(conn, table):
        raise TableNotFoundError(f"table {table} does not exist in database {database_of(conn)!r}")
    query, params = select_statement(table, columns, where)
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(query, params or None)
            except psycopg2.Error as exc:
                if where is None:
                    raise
                if conn.autocommit is False:
                    conn.rollback()
                raise FilterError(
                    f"the filter WHERE {filter_text(conn, where)} does not apply to table {table} in database "
                    f"{database_of(conn)!r}: {str(exc).strip().splitlines()[0]}"
                ) from exc
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    finally:
        if not conn.autocommit:
            conn.rollback()


def table_columns(conn: Any, table: str) -> list[str]:
    """The columns of an existing ``table`` in their order."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            [table],
        )
        return [r[0] for r in cur.fetchall()]


Connect = Callable[[str], Any]


def resolve(
    ref: TableRef,
    connect: Connect | None,
    columns: Sequence[str] | None,
    side: str = "given",
    where: Predicate | None = None,
) -> tuple[str, list[Row]]:
    """``(display name, rows)`` of a table reference (see the module docstring), limited to the rows
    ``where`` selects; the display name shows the filter."""
    __tracebackhide__ = True
    if isinstance(ref, str):
        if ":" not in ref:
            raise ValueError(
                f"table reference {ref!r}: write 'database:schema.table', e.g. 'warehouse:core.customers'"
            )
        database, table = ref.split(":", 1)
        if connect is None:
            raise ValueError(f"{ref!r} names a database; pass connect= (the plugin's fixture does)")
        conn = connect(database)
        try:
            return _read_checked(conn, table, columns, database, where, ref)
        finally:
            conn.close()
    if isinstance(ref, tuple) and len(ref) == 2 and isinstance(ref[1], str) and hasattr(ref[0], "cursor"):
        conn, table = ref
        database = database_of(conn)
        return _read_checked(conn, table, columns, database, where, f"{database}:{table}")
    if where is not None:
        raise FilterError(
            f"a filter (where=/{side}_where=) applies to a table read from Postgres; the {side} is a list of "
            "rows: leave the rows out in Python instead"
        )
    return f"the {side} rows", [dict(r) for r in ref]


def _read_checked(
    conn: Any,
    table: str,
    columns: Sequence[str] | None,
    database: str,
    where: Predicate | None,
    name: str,
) -> tuple[str, list[Row]]:
    __tracebackhide__ = True
    if columns is not None and table_exists(conn, table):
        absent = [c for c in columns if c not in table_columns(conn, table)]
        if absent:
            raise AssertionError(f"table {table} in database {database!r} has no column(s) {absent}")
    rows = read_table(conn, table, columns, where)
    return filtered_name(name, None if where is None else filter_text(conn, where)), rows


def assert_tables_equal(
    source: TableRef,
    target: TableRef,
    key: str | Sequence[str] = "id",
    columns: Sequence[str] | None = None,
    *,
    where: Predicate | None = None,
    source_where: Predicate | None = None,
    target_where: Predicate | None = None,
    connect: Connect | None = None,
) -> TableDiff:
    """Fail with a readable diff (:func:`format_diff`) unless ``source`` and ``target`` hold the same rows.

    ``columns`` default: the source's columns; the target must have each of them. ``where`` limits both
    sides to the rows it selects, ``source_where``/``target_where`` one side (see the module docstring).
    Returns the (empty) diff, whose counts a test may assert on too."""
    __tracebackhide__ = True
    key_t = (key,) if isinstance(key, str) else tuple(key)
    wanted = None if columns is None else list(dict.fromkeys([*key_t, *columns]))
    source_filter, target_filter = _side_filter(where, source_where), _side_filter(where, target_where)
    source_name, source_rows = resolve(source, connect, wanted, "source", source_filter)
    if wanted is None and source_rows:
        wanted = list(source_rows[0])
    elif wanted is None and isinstance(source, str) and connect is not None:
        database, table = source.split(":", 1)
        conn = connect(database)
        try:
            wanted = table_columns(conn, table)
        finally:
            conn.close()
    target_name, target_rows = resolve(target, connect, wanted, "target", target_filter)
    diff = diff_rows(source_rows, target_rows, key_t, wanted)
    if not diff.equal:
        raise TablesDiffer(format_diff(diff, source_name, target_name), diff)
    return diff


def _side_filter(both: Predicate | None, side: Predicate | None) -> Predicate | None:
    """One side's filter: ``where`` AND the side's own (either may be absent)."""
    if both is None or side is None:
        return side if both is None else both
    combined = combine(both, side)
    assert combined is not None
    return combined[0], combined[1]
