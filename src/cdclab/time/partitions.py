"""Declarative range partitions aligned to data intervals, replaced whole on every (re)run.

Vocabulary:
- *parent*: a table ``PARTITION BY RANGE (<time column>)``; it holds no rows itself.
- *partition table*: ``<parent>_<suffix>`` (``core.orders_by_day_p20260329``) holding exactly the rows whose
  time column lies in the partition's ``[start, end)`` bounds (:class:`cdclab.time.intervals.Partition`).
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
from typing import Any

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.time.intervals import Partition, Window, partition_of, partitions_for

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


# ---------------------------------------------------------------------------------------------------
# orders by day (dags/71_02_01_execution_date.py): stage the interval, replace its partition

ORDERS_BY_DAY_COLUMNS: list[tuple[str, str]] = [
    ("id", "bigint"),
    ("customer_id", "bigint"),
    ("status", "text"),
    ("ordered_at", "timestamptz not null"),
    ("total", "numeric(12, 2)"),
    ("updated_at", "timestamptz"),
    ("loaded_by_run", "text"),
]
ORDERS_SOURCE_COLUMNS = [name for name, _ in ORDERS_BY_DAY_COLUMNS if name != "loaded_by_run"]

REPLACE_PARTITION_TEMPLATE = """
-- one transaction (the hook commits once, after the last statement):
-- empty the interval's partition, refill it from the staged interval
TRUNCATE {{ ident(partition_table(params.target, run_interval_of(dag, dag_run).start)) }};
INSERT INTO {{ ident(params.target) }} (id, customer_id, status, ordered_at, total, updated_at, loaded_by_run)
SELECT id, customer_id, status, ordered_at, total, updated_at, %(run_id)s
FROM {{ ident(params.staging) }}
WHERE ordered_at >= %(start)s AND ordered_at < %(end)s;
"""
"""A Jinja template for ``SQLExecuteQueryOperator``: needs the macros ``ident`` (:func:`quoted_name`),
``partition_table`` (:func:`partition_table_at`) and ``run_interval_of``
(:func:`cdclab.time.intervals.interval_for_run`), the params ``target`` and ``staging`` and the bound
parameters ``start``, ``end`` and ``run_id``."""


def quoted_name(name: str) -> str:
    """Jinja macro: a quoted ``"schema"."table"`` for a validated table name."""
    check_table_name(name)
    return ".".join(f'"{part}"' for part in name.split("."))


def partition_table_at(parent: str, instant: Any) -> str:
    """Jinja macro: the name of the daily partition of ``parent`` that holds ``instant``."""
    return partition_table(parent, partition_of(instant, "day"))


def prepare_day_partitions(target: str, window: Window) -> list[str]:
    """Create the partitioned parent ``target`` (orders by day) and the daily partition(s) ``window``
    fills (policy ``raise``: a window that is not whole days is :class:`cdclab.time.intervals.UnalignedIntervalError`).
    Returns the partition tables."""
    from cdclab.common.ddl import ensure as ensure_ddl

    parts = partitions_for(window, grain="day", policy="raise")
    with transaction(WAREHOUSE) as cur:
        parent = create_parent_sql(target, ORDERS_BY_DAY_COLUMNS, "ordered_at", ["id", "ordered_at"])
        ensure_ddl(cur, target, parent)
        for part in parts:
            ensure_ddl(cur, target, create_partition_sql(target, part))
    return [partition_table(target, part) for part in parts]


def stage_interval(source: str, staging: str, target: str, window: Window) -> int:
    """Copy the orders placed in ``window`` (half-open on ``ordered_at``) from ``source`` (shop) into
    ``staging`` (warehouse, ``LIKE target``, created if missing), replacing the window's staged rows.
    Returns the rows copied."""
    from psycopg2.extras import execute_values

    where, bounds = window.sql_predicate("ordered_at")
    cols = sql.SQL(", ").join(map(sql.Identifier, ORDERS_SOURCE_COLUMNS))
    with transaction(SHOP) as src:
        src.execute(
            sql.SQL("SELECT {cols} FROM {src} WHERE {where} ORDER BY id").format(
                cols=cols, src=ident(source), where=where
            ),
            bounds,
        )
        rows = src.fetchall()
    with transaction(WAREHOUSE) as cur:
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {})").format(ident(staging), ident(target)))
        cur.execute(sql.SQL("DELETE FROM {} WHERE {}").format(ident(staging), where), bounds)
        execute_values(
            cur,
            sql.SQL("INSERT INTO {} ({}) VALUES %s").format(ident(staging), cols).as_string(cur),
            rows,
        )
    return len(rows)
