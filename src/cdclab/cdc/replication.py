"""Database replication around Debezium: connector checks, incremental snapshots, checksums.

Vocabulary:
- *incremental snapshot*: Debezium re-reads a table in primary-key chunks while streaming goes on
  (the DBLog watermark algorithm), emitting ``op = r`` events into the table's topic. It is started
  by inserting an ``execute-snapshot`` row into the signal table ``public.debezium_signal``. This is
  the initial load of a table whose history is not (or no longer) in Kafka, and the way to repair a
  target without stopping writes.
- *snapshot request*: ``state.replication_snapshots`` remembers which table was asked for when and with
  which signal id, so a DAG asks once, not on every run.
- *checksum*: ``md5`` over the rows' text (a fixed column list, ordered by key), computed the same way
  in the source and the target; equal checksums mean equal tables.

Why not copy the table and stream from the copy's LSN: a transaction that was open during the copy
has change records *before* the copy's LSN but commits after it; an LSN guard would then discard its
changes as "older than the copy" and lose them. Debezium's incremental snapshot does not have that gap.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from cdclab.cdc.connect import ConnectClient
from cdclab.cdc.connect import ConnectorNotRunning as ConnectorNotRunning  # raised here; DAGs catch it
from cdclab.common.db import ident


def connector_status(connect_url: str, name: str) -> dict[str, Any]:
    status = ConnectClient(connect_url).status(name)
    if status is None:
        raise ConnectorNotRunning(f"connector {name} is not registered in {connect_url}")
    return status


def require_running(connect_url: str, name: str) -> dict[str, Any]:
    """The connector's status if it and its tasks are RUNNING (see :meth:`ConnectClient.require_running`)."""
    return ConnectClient(connect_url).require_running(name)


def request_incremental_snapshot(shop_cur: Any, table: str) -> str:
    """Insert Debezium's ``execute-snapshot`` signal for ``schema.table``; returns the signal id."""
    signal_id = f"cdclab-{uuid.uuid4()}"
    shop_cur.execute(
        "INSERT INTO public.debezium_signal (id, type, data) VALUES (%s, 'execute-snapshot', %s)",
        (signal_id, json.dumps({"data-collections": [table], "type": "incremental"})),
    )
    return signal_id


def checksum(
    cur: Any, table: str, columns: Sequence[str], key: Sequence[str], where: sql.Composable | None = None
) -> tuple[int, str | None]:
    """(row count, md5 of the ordered rows' text) over ``columns``; comparable across databases."""
    row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    order = sql.SQL(", ").join(map(sql.Identifier, key))
    cur.execute(
        sql.SQL("SELECT count(*), md5(string_agg({row}, E'\\n' ORDER BY {order})) FROM {t} {where}").format(
            row=row, order=order, t=ident(table), where=where or sql.SQL("")
        )
    )
    count, digest = cur.fetchone()
    return int(count), digest
