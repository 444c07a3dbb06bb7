"""
# 71.1.4 Delta detection — timestamp, version and hash based, checked by a full comparison

One source table (``shop.public.customers``), three detectors, three warehouse targets, and a
reconciliation that compares each target with the source every run (``cdclab.delta``).

**Timestamp-based.** ``updated_at >= watermark - lookback`` and ``< `` the start of the oldest open
transaction writing the table, keyset-paginated on ``(updated_at, id)`` so equal timestamps across a
page boundary are neither missed nor repeated. Re-read rows are skipped by the ``version``-guarded
upsert. Cheap with an index on ``updated_at``; blind to hard deletes; needs a trustworthy column.

**Version-based.** Postgres' ``xmin`` (the writing transaction, widened to 64 bits) against the
snapshot ``xmin`` stored as a ``bigint`` watermark: no application column needed, late-committing
transactions are caught by construction (the watermark is the oldest transaction still running), but
every read is a sequential scan and deletes stay invisible. A per-row ``version`` column is used as the
upsert guard so an older read can never overwrite a newer row.

**Hash-based.** A ``{id: md5(columns)}`` map of the source against the last snapshot stored in
``state.row_hashes``: finds inserts, updates **and deletes**, needs no change column at all, but reads
the whole source every run (cost grows with the table, not with the changes).

**Comparison patterns.** ``reconcile`` hashes source and each target and records the keys *missing*
from the target, *extra* in it and *different* (``state.delta_reconciliation``). After a hard delete
the timestamp and version targets show the deleted key as *extra*; the hash target stays equal.

Observe: the targets ``core.customers_71_01_04_{timestamp,version,hash}``, watermarks
``state.watermarks WHERE key LIKE '71_01_04/%'``, snapshots ``state.row_hashes``, and
``SELECT * FROM state.delta_reconciliation ORDER BY id DESC``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_01_04_delta_detection"
KEY_COLUMNS = ["id"]
METHODS = ("timestamp", "version", "hash")


def _key(params: dict[str, Any], method: str) -> str:
    return f"{params['state_prefix'] or '71_01_04/' + params['source_table']}/{method}"


def _target(params: dict[str, Any], method: str) -> str:
    return f"{params['target_prefix']}_{method}"


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.1", "delta-detection", "reference", "core", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source_table": Param("public.customers", type="string"),
        "target_prefix": Param(
            "core.customers_71_01_04",
            type="string",
            description="targets are <prefix>_timestamp, _version, _hash",
        ),
        "state_prefix": Param(
            "", type="string", description="watermark/snapshot keys; default 71_01_04/<source>"
        ),
        "lookback_seconds": Param(60, type="integer", minimum=0),
        "null_policy": Param("raise", enum=["raise", "include", "exclude"]),
        "reconciliation_table": Param("state.delta_reconciliation", type="string"),
    },
)
def delta_detection() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from psycopg2 import sql

        from cdclab import delta, state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            state.ensure_schema(wh)
            delta.ensure_snapshot_table(wh)
            for method in METHODS:
                upsert.ensure_mirror_table(
                    shop, params["source_table"], wh, _target(params, method), KEY_COLUMNS
                )
            with wh, wh.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, run_id text NOT NULL, "
                        "method text NOT NULL, target text NOT NULL, missing jsonb NOT NULL, extra jsonb NOT NULL, "
                        "different jsonb NOT NULL, checked_at timestamptz NOT NULL DEFAULT now())"
                    ).format(ident(params["reconciliation_table"]))
                )
        finally:
            shop.close()
            wh.close()

    @task
    def timestamp_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from datetime import timedelta

        from cdclab import delta, state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect

        key, source = _key(params, "timestamp"), params["source_table"]
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            store = state.TableWatermarkStore(wh)
            old = store.read(key, "timestamptz")
            with shop.cursor() as cur:
                cur.execute("SELECT now()")
                upper = cur.fetchone()[0]
            oldest_open = delta.oldest_open_transaction_start(shop, source)
            upper = min(upper, oldest_open) if oldest_open else upper
            result = delta.read_timestamp_delta(
                shop,
                source,
                cursor_column="updated_at",
                key_columns=KEY_COLUMNS,
                since=old,
                until=upper,
                lookback=timedelta(seconds=params["lookback_seconds"]),
                null_policy=params["null_policy"],
            )
            shop.rollback()
            with wh:
                written = upsert.upsert_rows(
                    wh, _target(params, "timestamp"), result.rows, KEY_COLUMNS, "version"
                )
                new = delta.next_watermark(old, result)
                if new is not None and new != old:
                    store.advance(
                        key, old, new, value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id
                    )
        finally:
            shop.close()
            wh.close()
        counts = {
            "read": len(result.rows),
            "inserted": written.inserted,
            "updated": written.updated,
            "skipped": written.skipped,
            "null_cursor_rows": result.null_cursor_rows,
        }
        print(f"timestamp-based since {old} (lookback {params['lookback_seconds']} s): {counts}")
        return counts

    @task
    def version_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab import delta, state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect

        key = _key(params, "version")
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            store = state.TableWatermarkStore(wh)
            old = store.read(key, "bigint")
            result = delta.read_xmin_delta(shop, params["source_table"], key_columns=KEY_COLUMNS, since=old)
            shop.rollback()
            with wh:
                written = upsert.upsert_rows(
                    wh, _target(params, "version"), result.rows, KEY_COLUMNS, "version"
                )
                if result.max_cursor != old:
                    store.advance(
                        key, old, result.max_cursor, value_type="bigint", dag_id=DAG_ID, run_id=dag_run.run_id
                    )
        finally:
            shop.close()
            wh.close()
        counts = {
            "read": len(result.rows),
            "inserted": written.inserted,
            "updated": written.updated,
            "skipped": written.skipped,
        }
        print(f"version-based (xmin) since xid {old} -> {result.max_cursor}: {counts}")
        return counts

    @task
    def hash_based(params: dict[str, Any]) -> dict[str, int]:
        from cdclab import delta, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect

        source, target, snapshot = params["source_table"], _target(params, "hash"), _key(params, "hash")
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            columns = [c for c, _ in upsert.source_columns(shop, source) if c not in KEY_COLUMNS]
            hashes = delta.table_hashes(shop, source, key_columns=KEY_COLUMNS, columns=columns)
            changes = delta.diff_hashes(delta.load_snapshot(wh, snapshot), hashes)
            changed_rows = delta.fetch_rows_by_keys(
                shop, source, KEY_COLUMNS, changes.inserted + changes.updated
            )
            shop.rollback()
            with wh:  # target and snapshot move together
                written = upsert.upsert_rows(wh, target, changed_rows, KEY_COLUMNS)
                deleted = upsert.delete_keys(wh, target, KEY_COLUMNS, changes.deleted)
                delta.save_snapshot(wh, snapshot, hashes, changes)
        finally:
            shop.close()
            wh.close()
        counts = {
            "inserted": len(changes.inserted),
            "updated": len(changes.updated),
            "deleted": len(changes.deleted),
            "written": written.written,
            "target_deleted": deleted,
        }
        print(f"hash-based against snapshot {snapshot!r}: {counts}")
        return counts

    @task
    def reconcile(params: dict[str, Any], dag_run: Any = None) -> dict[str, dict[str, list[Any]]]:
        from psycopg2 import sql
        from psycopg2.extras import Json

        from cdclab import delta, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        source = params["source_table"]
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        report: dict[str, dict[str, list[Any]]] = {}
        try:
            columns = [c for c, _ in upsert.source_columns(shop, source) if c not in KEY_COLUMNS]
            for method in METHODS:
                result = delta.compare_tables(
                    shop, source, wh, _target(params, method), key_columns=KEY_COLUMNS, columns=columns
                )
                report[method] = {
                    name: [list(k) for k in keys]
                    for name, keys in (
                        ("missing", result.missing),
                        ("extra", result.extra),
                        ("different", result.different),
                    )
                }
                with wh, wh.cursor() as cur:
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (run_id, method, target, missing, extra, different) "
                            "VALUES (%s, %s, %s, %s, %s, %s)"
                        ).format(ident(params["reconciliation_table"])),
                        (
                            dag_run.run_id,
                            method,
                            _target(params, method),
                            Json(result.missing),
                            Json(result.extra),
                            Json(result.different),
                        ),
                    )
                print(
                    f"{method:<9} missing {result.missing} extra {result.extra} different {result.different}"
                )
        finally:
            shop.close()
            wh.close()
        return report

    prepared = prepare()
    loads = [timestamp_based(), version_based(), hash_based()]
    prepared >> loads
    loads >> reconcile()


delta_detection()
