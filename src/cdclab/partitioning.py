"""Declarative range partitions aligned to data intervals, replaced whole on every (re)run.

Vocabulary:
- *parent*: a table ``PARTITION BY RANGE (<time column>)``; it holds no rows itself.
- *partition table*: ``<parent>_<suffix>`` (``core.orders_by_day_p20260329``) holding exactly the rows whose
  time column lies in the partition's ``[start, end)`` bounds (:class:`cdclab.intervals.Partition`).
  Postgres range partitions are half-open too (``FROM (start) TO (end)``), so they line up with
  Airflow data intervals one to one.
- *partition replace*: ``TRUNCATE`` the partition and insert the interval's rows again, in one
  transaction. Because the partition equals the interval, a rerun of an interval replaces exactly
  its own rows: no duplicates, no touching neighbours, and deletes in the source disappear too.

Statements are returned as :class:`psycopg2.sql.Composed`; identifiers are quoted, values bound.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from psycopg2 import sql

from cdclab.db import ident
from cdclab.intervals import Partition

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class BadTableNameError(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"table name {name!r} is not [schema.]identifier (letters, digits, underscore); "
            f"pass e.g. 'core.orders_by_day'"
        )


def check_table_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadTableNameError(name)
    return name


def partition_table(parent: str, partition: Partition) -> str:
    """``schema.parent_p20260329``: the partition table's qualified name (max 63 characters per part)."""
    check_table_name(parent)
    schema, _, table = parent.rpartition(".")
    name = f"{table[: 63 - len(partition.suffix) - 1]}_{partition.suffix}"
    return f"{schema}.{name}" if schema else name


def create_parent_sql(
    parent: str, columns: Sequence[tuple[str, str]], time_column: str, primary_key: Sequence[str]
) -> sql.Composed:
    """``CREATE TABLE IF NOT EXISTS parent (...) PARTITION BY RANGE (time_column)``.

    The primary key of a partitioned table must include the partition column.
    """
    if time_column not in primary_key:
        raise ValueError(
            f"the primary key {list(primary_key)} must include the partition column {time_column!r}"
        )
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(_check_type(typ))) for name, typ in columns
    )
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {parent} ({cols}, PRIMARY KEY ({pk})) PARTITION BY RANGE ({tcol})"
    ).format(
        parent=ident(check_table_name(parent)),
        cols=cols,
        pk=sql.SQL(", ").join(map(sql.Identifier, primary_key)),
        tcol=sql.Identifier(time_column),
    )


def create_partition_sql(parent: str, partition: Partition) -> tuple[sql.Composed, dict[str, object]]:
    """``CREATE TABLE IF NOT EXISTS part PARTITION OF parent FOR VALUES FROM (start) TO (end)``.

    DDL takes no server-side parameters; psycopg2 binds them client-side, still correctly quoted.
    """
    text = sql.SQL(
        "CREATE TABLE IF NOT EXISTS {part} PARTITION OF {parent} FOR VALUES FROM (%(p_start)s) TO (%(p_end)s)"
    ).format(part=ident(partition_table(parent, partition)), parent=ident(check_table_name(parent)))
    return text, {"p_start": partition.bounds.start, "p_end": partition.bounds.end}


def partitions_sql(parent: str) -> sql.Composed:
    """The partitions of ``parent`` with their bound expressions, in order."""
    return sql.SQL(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = {regclass}::regclass ORDER BY 1"
    ).format(regclass=sql.Literal(".".join(f'"{p}"' for p in check_table_name(parent).split("."))))


_TYPE = re.compile(r"^[a-z][a-z0-9_ ]*(\(\d+(, ?\d+)?\))?( not null)?$")


def _check_type(typ: str) -> str:
    if not _TYPE.match(typ.lower()):
        raise ValueError(
            f"column type {typ!r} is not a plain SQL type such as 'numeric(12, 2)' or 'text not null'"
        )
    return typ
