"""71.3.2 Kafka CDC processing and 71.9.1 database replication: the steps around
:func:`cdclab.cdc.pipeline.replicate` that the two DAGs add, for ``dags/71_03_02_kafka_cdc.py`` and
``dags/71_09_01_db_replication.py``. Both replicate Debezium topics into ``<target_schema>.<target_prefix>
<table>`` with the offsets stored in ``state.kafka_offsets``.

Vocabulary:
- *target table*: :func:`target_table`, the warehouse table a source table replicates into.
- *replay*: move a consumer group's stored offsets (``earliest``, ``latest`` or an offset) on every topic
  that has records, after checking the group is bound to these targets (:func:`replay`).
- *lag row*: one row per (group, topic, partition) per run in the DAG's own lag table (71_03_02 names it;
  created at task time, :func:`lag_ddl`): next offset, end offset, lag (:func:`record_lag`).
- *snapshot request*: a Debezium incremental snapshot asked for once per table, remembered in
  ``state.replication_snapshots`` (:func:`request_snapshots`, :mod:`cdclab.cdc.replication`).
- *check*: source and target compared by row count and checksum, one ``state.replication_checks`` row per
  table per run (:func:`compare`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psycopg2 import sql

from cdclab.cdc import consumer as kc
from cdclab.cdc import offsets
from cdclab.cdc.merge import primary_key, source_columns
from cdclab.cdc.pipeline import kafka_bootstrap
from cdclab.cdc.replication import checksum, request_incremental_snapshot
from cdclab.common.db import SHOP, WAREHOUSE, ident, insert_rows, transaction
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.common.ddl import require

KAFKA = "kafka_default"


def lag_ddl(table: str) -> sql.Composable:
    """The lag table: one row per measurement of a group's topic partition."""
    return sql.SQL(
        """CREATE TABLE IF NOT EXISTS {} (
    measured_at timestamptz NOT NULL DEFAULT now(), consumer_group text NOT NULL, topic text NOT NULL,
    kafka_partition integer NOT NULL, next_offset bigint NOT NULL, end_offset bigint, lag bigint,
    dag_run text, PRIMARY KEY (measured_at, consumer_group, topic, kafka_partition))"""
    ).format(ident(table))


def target_table(table: str, target_schema: str, target_prefix: str) -> str:
    """``public.customers`` -> ``<target_schema>.<target_prefix>customers``."""
    return f"{target_schema}.{target_prefix}{table.split('.')[-1]}"


def replay(
    tables: Sequence[str],
    topics: Mapping[str, Any],
    *,
    group: str,
    target_schema: str,
    target_prefix: str,
    replay_from: str | int,
    who: str,
    kafka_conn_id: str = KAFKA,
) -> dict[str, dict[int, int]]:
    """Move ``group`` to ``replay_from`` on every topic of ``topics`` that has partitions, in one warehouse
    transaction; refuses a group bound to other targets (the check a consuming run makes). Returns the
    new offsets per topic."""
    moved = {}
    with transaction(WAREHOUSE) as cur:
        kc.ensure_schema(cur)
        kc.bind_targets(
            cur, group, {f"shop.{t}": target_table(t, target_schema, target_prefix) for t in tables}
        )
        for topic in topics:
            if topics[topic]:
                moved[topic] = offsets.reset(
                    cur, kafka_bootstrap(kafka_conn_id), group, topic, replay_from, who=who
                )
    return moved


def record_lag(
    group: str, run_id: str, *, lag_table: str, kafka_conn_id: str = KAFKA
) -> list[dict[str, Any]]:
    """Append one row per stored offset of ``group`` (next offset, topic end offset, lag) to ``lag_table``,
    created if missing. Returns ``[{"topic", "partition", "lag"}]``."""
    with transaction(WAREHOUSE) as cur:
        rows = offsets.report(cur, kafka_bootstrap(kafka_conn_id), group)
        ensure_ddl(cur, lag_table, lag_ddl(lag_table))
        insert_rows(
            cur,
            lag_table,
            ("consumer_group", "topic", "kafka_partition", "next_offset", "end_offset", "lag", "dag_run"),
            [(r.group, r.topic, r.partition, r.next_offset, r.end_offset, r.lag, run_id) for r in rows],
        )
    return [{"topic": r.topic, "partition": r.partition, "lag": r.lag} for r in rows]


def request_snapshots(tables: Sequence[str], run_id: str) -> dict[str, str]:
    """Ask Debezium for an incremental snapshot of each table not asked for before (signal row in the
    shop, request remembered in ``state.replication_snapshots``). Returns ``{table: signal id}`` of the
    new requests."""
    requested = {}
    with transaction(WAREHOUSE) as wcur, transaction(SHOP) as scur:
        require(wcur, "state.replication_snapshots")
        for table in tables:
            wcur.execute(
                "SELECT signal_id FROM state.replication_snapshots WHERE source_table = %s", (table,)
            )
            if wcur.fetchone() is None:
                signal = request_incremental_snapshot(scur, table)
                wcur.execute(
                    "INSERT INTO state.replication_snapshots (source_table, signal_id, requested_by) "
                    "VALUES (%s, %s, %s)",
                    (table, signal, run_id),
                )
                requested[table] = signal
    return requested


def compare(
    tables: Sequence[str], *, target_schema: str, target_prefix: str, run_id: str
) -> list[dict[str, Any]]:
    """Checksum each source table and its target over the source's columns, ordered by its key; record
    each comparison in ``state.replication_checks``. Returns ``[{"table", "equal", "source_rows",
    "target_rows"}]``."""
    results = []
    with transaction(SHOP) as scur, transaction(WAREHOUSE) as wcur:
        require(wcur, "state.replication_checks")
        for table in tables:
            target = target_table(table, target_schema, target_prefix)
            columns = [c for c, _ in source_columns(scur, table)]
            key = primary_key(scur, table)
            s_count, s_md5 = checksum(scur, table, columns, key)
            t_count, t_md5 = checksum(wcur, target, columns, key)
            equal = (s_count, s_md5) == (t_count, t_md5)
            wcur.execute(
                "INSERT INTO state.replication_checks (source_table, target_table, source_rows, "
                "target_rows, source_md5, target_md5, equal, dag_run) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                (table, target, s_count, t_count, s_md5, t_md5, equal, run_id),
            )
            results.append({"table": table, "equal": equal, "source_rows": s_count, "target_rows": t_count})
    return results
