"""71.10.2 State management best practices: recover lost state from a backup, load with the watermark
next to the data, back the state up, monitor its age, for ``dags/71_10_02_state_management.py``.

Vocabulary:
- *scope*: the pipeline name; its watermarks are the keys starting with ``<scope>/`` and its snapshots
  are numbered per scope (:mod:`cdclab.state.backup`).
- *restore policy*: ``auto`` (restore the missing rows only when the watermark is gone), ``force``
  (overwrite from the snapshot; no snapshot is an error), ``never``.
- *change log target*: ``(id, version, tier, updated_at, loaded_by)`` with ``PRIMARY KEY (id, version)``:
  every version of a row appended once, whichever run reads it again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc.consumer import ensure_schema as ensure_offsets
from cdclab.common.db import SHOP, WAREHOUSE, connect, ident
from cdclab.delta import detection as delta
from cdclab.files.store import ObjectStore
from cdclab.ops import health
from cdclab.state import backup as statebackup
from cdclab.state import watermarks as state

log = logging.getLogger(__name__)


def recover(
    key: str, scope: str, restore: str, version: int | None, *, dag_id: str, run_id: str
) -> dict[str, Any] | None:
    """Create the state, offsets and backup catalogue tables; restore the snapshot ``version`` (latest when
    None) of ``scope`` per the restore policy. Returns the restore result, or None when nothing was
    restored (policy, watermark present, or ``auto`` before the first backup)."""
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        with wh.cursor() as cur:
            ensure_offsets(cur)
        wh.commit()
        statebackup.ensure_schema(wh)
        lost = state.TableWatermarkStore(wh).get(key) is None
        wh.rollback()
        if restore == "never" or (restore == "auto" and not lost):
            log.info("no restore (restore=%s, watermark present=%s)", restore, not lost)
            return None
        try:
            result = statebackup.restore(
                wh,
                ObjectStore(),
                scope=scope,
                version=version,
                mode="missing" if restore == "auto" else "overwrite",
                dag_id=dag_id,
                run_id=run_id,
            )
        except statebackup.NoBackupError:
            if restore == "force":
                raise
            log.info("watermark missing and no backup yet: first run, loading from the beginning")
            return None
    log.info("restored %s", result)
    return asdict(result)


def load_changes(source: str, target: str, key: str, *, dag_id: str, run_id: str) -> dict[str, Any]:
    """Append the versions of ``source`` changed since the watermark ``key`` to the change log ``target``
    (created when missing) and advance the watermark, in one warehouse transaction. The read's upper
    bound is :func:`cdclab.delta.detection.read_upper_bound`. Returns ``{"old", "new", "read", "appended"}``."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        with wh, wh.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id bigint, version integer, tier text, "
                    "updated_at timestamptz, loaded_by text, PRIMARY KEY (id, version))"
                ).format(ident(target))
            )
        store = state.TableWatermarkStore(wh)
        old = store.read(key, "timestamptz")
        # now, held back to the start of the oldest transaction still open in the shop (it commits
        # rows stamped with that start later): the watermark never passes a row not committed yet
        _, result = delta.read_committed_delta(shop, source, key_columns=["id"], since=old)
        shop.rollback()
        new = delta.next_watermark(old, result)
        with wh, wh.cursor() as cur:
            inserted = execute_values(
                cur,
                sql.SQL(
                    "INSERT INTO {} (id, version, tier, updated_at, loaded_by) VALUES %s "
                    "ON CONFLICT (id, version) DO NOTHING RETURNING id"
                ).format(ident(target)),
                [(r["id"], r["version"], r["tier"], r["updated_at"], run_id) for r in result.rows],
                fetch=True,
            )
            if new is not None and new != old:
                store.advance(key, old, new, value_type="timestamptz", dag_id=dag_id, run_id=run_id)
    return {"old": old, "new": new, "read": len(result.rows), "appended": len(inserted)}


def backup(scope: str, bucket: str, prefix: str, groups: list[str], *, run_id: str) -> dict[str, Any]:
    """The next snapshot of ``scope`` (watermarks ``<scope>/*``, the offsets of ``groups``) to
    ``bucket/prefix`` (:func:`cdclab.state.backup.backup`). Returns the backup info."""
    with closing(connect(WAREHOUSE)) as wh:
        info = statebackup.backup(
            wh,
            ObjectStore(),
            scope=scope,
            bucket=bucket,
            prefix=prefix,
            watermark_prefix=f"{scope}/",
            groups=groups,
            run_id=run_id,
        )
    return asdict(info)


def monitor(
    scope: str,
    keys: Sequence[str],
    at: datetime,
    *,
    watermark_age: tuple[float, float],
    future_tolerance: float,
    backup_age: tuple[float, float],
    run_id: str,
) -> dict[str, str]:
    """Grade the age of the watermarks ``keys`` and of the newest backup of ``scope`` at ``at``
    (``(warn, alert)`` seconds each), record them in ``marts.pipeline_health``. Returns metric -> status."""
    with closing(connect(WAREHOUSE)) as wh:
        health.ensure_schema(wh)
        checks = health.watermark_ages(wh, keys, at, *watermark_age, future_tolerance=future_tolerance)
        checks.append(health.backup_age(wh, scope, at, *backup_age))
        health.record(wh, scope, run_id, at, checks)
    return {c.metric: c.status for c in checks}
