"""Append mode: a table without a primary key replicated as an insert-only ledger of its change events.

A key-less table (pgbench's ``pgbench_history``, an audit log) cannot be merged: two equal rows are
indistinguishable, so an update or delete cannot say which one it meant. Key mode refuses such a table
(:func:`cdclab.cdc.pipeline.routes_for`); append mode keeps its *history* instead.

Vocabulary:
- *ledger*: the target ``<target_schema>.<target_prefix><table>``: the source's columns (target types
  and value decoding from :mod:`cdclab.cdc.coltypes`, unsupported types refused before anything is
  written), plus ``_source_op`` (c, u, d, r, t), ``_source_position`` (LSN), ``_source_tx``,
  ``_source_ts`` and the event's Kafka coordinates ``_kafka_topic``, ``_kafka_partition``,
  ``_kafka_offset``, which are the ledger's primary key.
- *row image*: ``after`` for inserts, updates and snapshot reads, ``before`` for deletes (complete only
  with REPLICA IDENTITY FULL, which Postgres demands anyway before it lets a key-less table that is
  published for updates be updated). A TRUNCATE is a ledger row with op ``t`` and NULL columns.
- *exactly once*: the Kafka offsets are stored in the same transaction as the ledger rows
  (:mod:`cdclab.cdc.consumer`), and a replay after an offset reset inserts nothing twice because each
  event's position is the ledger's key (``ON CONFLICT DO NOTHING``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Unpack

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc import coltypes
from cdclab.cdc.events import UNAVAILABLE, MalformedEvent, Skipped, parse_debezium
from cdclab.cdc.merge import SchemaDrift, _ts, source_columns
from cdclab.cdc.pipeline import CatalogTable, ConsumeOptions, catalog_routes, consume_routes, decode_change
from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.common.ddl import ensure as ensure_ddl

log = logging.getLogger(__name__)

LEDGER_COLUMNS = (
    "_source_op",
    "_source_position",
    "_source_tx",
    "_source_ts",
    "_kafka_topic",
    "_kafka_partition",
    "_kafka_offset",
)


@dataclass(frozen=True)
class AppendRoute:
    source: str
    topic: str
    target: str
    types: dict[str, str]  # column -> target type
    codecs: dict[str, str]


def ledger_route(cur: Any, table: CatalogTable) -> AppendRoute:
    """The append route of ``table`` (:func:`cdclab.cdc.pipeline.catalog_routes`): no key needed."""
    return AppendRoute(
        source=table.source,
        topic=table.topic,
        target=table.target,
        types={p.name: p.target_type for p in table.plans},
        codecs=table.codecs,
    )


def ensure_ledger(cur: Any, target: str, types: dict[str, str]) -> None:
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in types.items()]
    cols += [
        sql.SQL(c)
        for c in (
            "_source_op char(1) NOT NULL",
            "_source_position bigint NOT NULL",
            "_source_tx text",
            "_source_ts timestamptz",
            "_kafka_topic text NOT NULL",
            "_kafka_partition integer NOT NULL",
            "_kafka_offset bigint NOT NULL",
            "_loaded_at timestamptz NOT NULL DEFAULT now()",
            "PRIMARY KEY (_kafka_topic, _kafka_partition, _kafka_offset)",
        )
    ]
    ensure_ddl(
        cur,
        target,
        sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident(target), sql.SQL(", ").join(cols)),
    )


def ledger_row(route: AppendRoute, msg: Any) -> tuple[Any, ...] | str | Skipped:
    """The ledger row of one Kafka record, a :class:`Skipped`, or the reason it is rejected."""
    try:
        event = parse_debezium(msg.key(), msg.value(), msg.topic(), require_key=False)
    except MalformedEvent as exc:
        return f"malformed: {exc}"
    if isinstance(event, Skipped):
        return event
    try:
        event = decode_change(event, route.codecs)
    except (ValueError, TypeError) as exc:
        return f"undecodable value: {exc}"
    row = event.row if event.op != "t" else {}
    for (
        col
    ) in event.unavailable:  # an unchanged TOASTed value: the before image has it (REPLICA IDENTITY FULL)
        if event.before and event.before.get(col) not in (None, UNAVAILABLE):
            row[col] = event.before[col]
        else:
            return f"column {col} is an unchanged TOASTed value and the before image lacks it (REPLICA IDENTITY FULL?)"
    extra = sorted(set(row) - set(route.types))
    if extra:
        raise SchemaDrift(
            f"{route.target}: events carry column(s) {extra} the ledger lacks; add them to the ledger "
            "(ALTER TABLE) and replicate again"
        )
    return (
        *(row.get(c) for c in route.types),
        event.op,
        event.position,
        event.tx_id,
        _ts(event.ts_ms),
        msg.topic(),
        msg.partition(),
        msg.offset(),
    )


def replicate_append(
    tables: Sequence[str],
    *,
    group: str,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "",
    source_conn_id: str = SHOP,
    target_conn_id: str = WAREHOUSE,
    **consume: Unpack[ConsumeOptions],
) -> dict[str, Any]:
    """Catch the ledgers of ``tables`` up from their Debezium topics; returns counts for logs and XCom.
    ``consume``: how to consume, as for :func:`cdclab.cdc.pipeline.replicate`."""
    routes = catalog_routes(
        tables,
        ledger_route,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        source_conn_id=source_conn_id,
    )
    by_topic = {r.topic: r for r in routes}
    with transaction(target_conn_id) as cur:
        for r in routes:
            coltypes.require_target_types(cur, r.target, r.types)
            ensure_ledger(cur, r.target, r.types)
    appended: dict[str, int] = defaultdict(int)
    skipped: dict[str, int] = defaultdict(int)

    def handle(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        rejects: list[tuple[Any, str]] = []
        rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for msg in batch:
            route = by_topic[msg.topic()]
            out = ledger_row(route, msg)
            if isinstance(out, Skipped):
                skipped[out.kind] += 1
            elif isinstance(out, str):
                rejects.append((msg, out))
            else:
                rows[msg.topic()].append(out)
        for topic, values in rows.items():
            route = by_topic[topic]
            types = dict(source_columns(cur, route.target))
            cols = [*route.types, *LEDGER_COLUMNS]
            stmt = sql.SQL("INSERT INTO {t} ({c}) VALUES %s ON CONFLICT DO NOTHING").format(
                t=ident(route.target), c=sql.SQL(", ").join(map(sql.Identifier, cols))
            )
            template = "(" + ", ".join(f"(%s)::{types[c]}" for c in cols) + ")"
            execute_values(cur, stmt.as_string(cur), values, template=template, page_size=len(values))
            appended[route.target] += max(cur.rowcount, 0)
        return rejects

    result = consume_routes(routes, handle, group=group, target_conn_id=target_conn_id, **consume)
    summary = result.summary(skipped, appended=dict(appended))
    log.info("appended %s", summary)
    return summary
