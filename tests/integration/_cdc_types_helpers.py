"""Shared machinery of tests/integration/test_cdc_types.py: one source table per type group, edge values
changed by a fixed script of inserts, updates and deletes, replicated in two intervals through the lab's
connector and topics by ``cdclab.cdc.pipeline.replicate``, then compared as ``col::text`` per row and
column. The module creates every group's table at once and replicates them in one run (one wait for the
connector, not one per group); each test asserts its own group's table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from cdclab.cdc.coltypes import TYPE_SETTINGS, type_settings
from cdclab.cdc.connect import ConnectClient

CONNECTOR = "shop-postgres-source"


def require_lab_connector_settings(lab) -> None:
    """The running connector must have the type settings the codecs assume (cdclab.cdc.coltypes)."""
    running = ConnectClient(lab.connect_url).config(CONNECTOR)
    assert running is not None, f"connector {CONNECTOR} is not registered in {lab.connect_url}"
    differ = {k: (v, TYPE_SETTINGS[k]) for k, v in type_settings(running).items() if v != TYPE_SETTINGS[k]}
    assert not differ, (
        f"the running connector's type settings {differ} (running, expected) differ: `make up` "
        "re-registers it from connectors/shop-postgres-source.json"
    )


def ident(name: str) -> sql.Composable:
    return sql.SQL(".").join(map(sql.Identifier, name.split(".")))


@dataclass(frozen=True)
class Group:
    """A type group: its columns (name -> SQL type; ``{mood}``-style placeholders name the module's enum
    and domains) and its rows at the edges (SQL value lists, without the id)."""

    name: str
    columns: dict[str, str]
    rows: list[str]


@dataclass
class GroupTable:
    """One group's source table, counting the Debezium records its statements produce."""

    group: Group
    table: str  # unqualified, in shop.public
    records: int = 0
    diffs: list[list[str]] = field(default_factory=list)  # per replication interval
    ids: list[list[str]] = field(default_factory=list)

    @property
    def topic(self) -> str:
        return f"shop.public.{self.table}"

    @property
    def cols(self) -> sql.Composable:
        return sql.SQL(", ").join(map(sql.Identifier, self.group.columns))

    def run(self, conn, statement: str, **parts: Any) -> None:
        """Execute one statement (``{t}`` is the table, ``{cols}`` its value columns); a DELETE makes two
        records (the delete and its tombstone), any other change one per row."""
        with conn.cursor() as cur:
            cur.execute(sql.SQL(statement).format(t=ident(f"public.{self.table}"), cols=self.cols, **parts))
            self.records += max(cur.rowcount, 0) * (
                2 if statement.lstrip().upper().startswith("DELETE") else 1
            )

    def insert(self, conn, row_id: int, values: str) -> None:
        # the values are literals with JSON braces: they must not go through sql.SQL.format
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("INSERT INTO {t} (id, {cols}) VALUES ")
                .format(t=ident(f"public.{self.table}"), cols=self.cols)
                .as_string(cur)
                + f"({row_id}, {values})"
            )
            self.records += cur.rowcount

    def copy_row(self, conn, to_id: int, from_id: int) -> None:
        """Set every value column of row ``to_id`` to those of row ``from_id``."""
        self.run(
            conn,
            "UPDATE {t} SET ({cols}) = (SELECT {cols} FROM {t} WHERE id = {src}) WHERE id = {dst}",
            src=sql.Literal(from_id),
            dst=sql.Literal(to_id),
        )

    # the script: phase 1 before the first replication, phase 2 before the second
    def phase1(self, conn) -> None:
        n = len(self.group.rows)
        for i, values in enumerate(self.group.rows, start=1):
            self.insert(conn, i, values)
        self.run(conn, "INSERT INTO {t} (id) VALUES ({i})", i=sql.Literal(n + 1))  # NULL in every column
        # a delete whose before image carries edge values (REPLICA IDENTITY FULL)
        self.insert(conn, n + 2, self.group.rows[0])
        self.run(conn, "DELETE FROM {t} WHERE id = {i}", i=sql.Literal(n + 2))
        # updates from one edge to the other: rows 1 and 2 swap their values
        self.run(
            conn,
            "UPDATE {t} AS t SET ({cols}) = (SELECT {cols} FROM {t} AS s WHERE s.id = 3 - t.id) "
            "WHERE id IN (1, 2)",
        )
        self.run(conn, "INSERT INTO {t} (id) VALUES ({i})", i=sql.Literal(n + 3))
        self.copy_row(conn, n + 3, n)  # NULL -> values

    def phase2(self, conn) -> None:
        n = len(self.group.rows)
        self.copy_row(conn, n, n + 1)  # values -> NULL
        self.run(conn, "DELETE FROM {t} WHERE id = 1")


def source_columns(conn, table: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        return [r[0] for r in cur.fetchall()]


def columns_as_text(conn, table: str, columns: list[str]) -> list[tuple]:
    """Rows of ``col::text`` for ``columns`` (the first is the key ``id``), in UTC, ordered by id."""
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        as_text = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
        cur.execute(sql.SQL("SELECT {} FROM {}").format(as_text, ident(table)))
        return sorted(cur.fetchall(), key=lambda r: int(r[0]))


def text_differences(shop_db, warehouse_db, source: str, target: str) -> tuple[list[str], list[str]]:
    """(source ids, readable differences) between a source and its target, every source column as text
    (the target's own bookkeeping columns, ``_source_position`` and the like, are not compared)."""
    columns = source_columns(shop_db, source)
    missing = sorted(set(columns) - set(source_columns(warehouse_db, target)))
    if missing:
        return [], [f"the target {target} lacks the columns {missing}"]
    source_rows = columns_as_text(shop_db, source, columns)
    target_rows = columns_as_text(warehouse_db, target, columns)
    diffs = []
    source_by_id = {r[0]: r for r in source_rows}
    target_by_id = {r[0]: r for r in target_rows}
    for row_id in sorted(source_by_id.keys() | target_by_id.keys(), key=int):
        s, t = source_by_id.get(row_id), target_by_id.get(row_id)
        if s is None or t is None:
            diffs.append(f"id={row_id}: only in the {'target' if s is None else 'source'}")
            continue
        diffs.extend(
            f"id={row_id} {c}: source {sv!r:.160} != target {tv!r:.160}"
            for c, sv, tv in zip(columns, s, t, strict=True)
            if sv != tv
        )
    return [r[0] for r in source_rows], diffs


def dead_letters(warehouse_db, group: str, topic: str) -> list[str]:
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT record_key, reason FROM dlq.kafka_records WHERE consumer_group = %s AND topic = %s "
            "ORDER BY kafka_offset",
            (group, topic),
        )
        return [f"dead letter {key}: {reason}" for key, reason in cur.fetchall()]
