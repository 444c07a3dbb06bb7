"""71.1.4 Delta detection: one source loaded by three detectors (``updated_at`` timestamp, ``xmin``
version, row-hash snapshot) into three targets, then each target reconciled with the source, for
``dags/71_01_04_delta_detection.py``.

Vocabulary:
- *detector*: one of :data:`METHODS`; each keeps its own state under ``<state prefix>/<method>`` (a
  ``timestamptz`` watermark, a ``bigint`` xid watermark, a row-hash snapshot) and writes
  ``<target prefix>_<method>``.
- *reconciliation row*: ``(run_id, method, target, missing, extra, different)`` in the reconciliation
  table, the keys by which a target differs from the source after the loads
  (:func:`cdclab.delta.detection.compare_tables`).
"""

from __future__ import annotations

import logging
from contextlib import closing
from datetime import timedelta
from typing import Any

from psycopg2 import sql
from psycopg2.extras import Json

from cdclab.common.db import SHOP, WAREHOUSE, connect, ident
from cdclab.delta import detection as delta
from cdclab.delta import pull
from cdclab.merge import upsert
from cdclab.state import watermarks as state

KEY_COLUMNS = ["id"]
METHODS = ("timestamp", "version", "hash")

log = logging.getLogger(__name__)


def target_of(target_prefix: str, method: str) -> str:
    """The target table of ``method``: ``<target prefix>_<method>``."""
    return f"{target_prefix}_{method}"


def prepare(source: str, target_prefix: str, reconciliation_table: str) -> None:
    """The state schema, the snapshot table, a mirror of ``source`` per method and the reconciliation table."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        delta.ensure_snapshot_table(wh)
        for method in METHODS:
            upsert.ensure_mirror_table(shop, source, wh, target_of(target_prefix, method), KEY_COLUMNS)
        with wh, wh.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, run_id text NOT NULL, "
                    "method text NOT NULL, target text NOT NULL, missing jsonb NOT NULL, extra jsonb NOT NULL, "
                    "different jsonb NOT NULL, checked_at timestamptz NOT NULL DEFAULT now())"
                ).format(ident(reconciliation_table))
            )


def _counts(written: upsert.UpsertResult, read: int) -> dict[str, int]:
    return {
        "read": read,
        "inserted": written.inserted,
        "updated": written.updated,
        "skipped": written.skipped,
    }


def timestamp_load(
    source: str,
    target: str,
    key: str,
    *,
    lookback_seconds: int,
    null_policy: delta.NullPolicy,
    dag_id: str,
    run_id: str,
) -> tuple[dict[str, int], Any]:
    """Read ``[watermark - lookback, upper)`` on ``updated_at`` (:func:`cdclab.delta.pull.pull`), upsert guarded
    by ``version``, advance the watermark. Returns the counts (with ``null_cursor_rows``) and the old
    watermark."""
    p, written = pull.pull_upsert(
        source,
        target,
        key,
        key_columns=tuple(KEY_COLUMNS),
        lookback=timedelta(seconds=lookback_seconds),
        null_policy=null_policy,
        dag_id=dag_id,
        run_id=run_id,
    )
    return {**_counts(written, len(p.rows)), "null_cursor_rows": p.null_cursor_rows}, p.old


def version_load(
    source: str, target: str, key: str, *, dag_id: str, run_id: str
) -> tuple[dict[str, int], Any, Any]:
    """Read the rows whose ``xmin`` is newer than the stored xid (:func:`cdclab.delta.detection.read_xmin_delta`),
    upsert guarded by ``version``, store the newest xid. Returns the counts, the old and the new xid."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        store = state.TableWatermarkStore(wh)
        old = store.read(key, "bigint")
        result = delta.read_xmin_delta(shop, source, key_columns=KEY_COLUMNS, since=old)
        shop.rollback()
        with wh:
            written = upsert.upsert_rows(wh, target, result.rows, KEY_COLUMNS, "version")
            if result.max_cursor != old:
                store.advance(key, old, result.max_cursor, value_type="bigint", dag_id=dag_id, run_id=run_id)
    return _counts(written, len(result.rows)), old, result.max_cursor


def hash_load(source: str, target: str, snapshot: str) -> dict[str, int]:
    """Hash every source row, diff against the stored snapshot, upsert the inserted and updated rows,
    delete the deleted keys and save the new snapshot in one warehouse transaction. Returns the counts."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        columns = [c for c, _ in upsert.source_columns(shop, source) if c not in KEY_COLUMNS]
        hashes = delta.table_hashes(shop, source, key_columns=KEY_COLUMNS, columns=columns)
        changes = delta.diff_hashes(delta.load_snapshot(wh, snapshot), hashes)
        changed_rows = delta.fetch_rows_by_keys(shop, source, KEY_COLUMNS, changes.inserted + changes.updated)
        shop.rollback()
        with wh:  # target and snapshot move together
            written = upsert.upsert_rows(wh, target, changed_rows, KEY_COLUMNS)
            deleted = upsert.delete_keys(wh, target, KEY_COLUMNS, changes.deleted)
            delta.save_snapshot(wh, snapshot, hashes, changes)
    return {
        "inserted": len(changes.inserted),
        "updated": len(changes.updated),
        "deleted": len(changes.deleted),
        "written": written.written,
        "target_deleted": deleted,
    }


def reconcile(
    source: str, target_prefix: str, reconciliation_table: str, *, run_id: str
) -> dict[str, dict[str, list[Any]]]:
    """Compare each method's target with the source and record one reconciliation
    row per method. Returns method -> ``{"missing", "extra", "different"}`` key lists."""
    report: dict[str, dict[str, list[Any]]] = {}
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        columns = [c for c, _ in upsert.source_columns(shop, source) if c not in KEY_COLUMNS]
        for method in METHODS:
            target = target_of(target_prefix, method)
            result = delta.compare_tables(shop, source, wh, target, key_columns=KEY_COLUMNS, columns=columns)
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
                    ).format(ident(reconciliation_table)),
                    (
                        run_id,
                        method,
                        target,
                        Json(result.missing),
                        Json(result.extra),
                        Json(result.different),
                    ),
                )
            log.info(
                "%-9s missing %s extra %s different %s",
                method,
                result.missing,
                result.extra,
                result.different,
            )
    return report
