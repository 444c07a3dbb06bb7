"""Back up and restore pipeline state (watermarks, Kafka offsets) as versioned JSON snapshots in MinIO.

Vocabulary:
- *state*: the rows that say where pipelines are: ``state.watermarks`` (by key prefix) and
  ``state.kafka_offsets`` (by consumer group). Persisted in the warehouse, next to the data, so a load and
  its state can commit together; the backup protects against losing the rows themselves (a dropped
  schema, a restore of the warehouse from an older dump, a mistaken ``DELETE``).
- *snapshot*: one JSON document with every state row in scope, its ``sha256`` (over the canonical JSON of
  the rows) and a *version* (1, 2, ...) numbered per scope. Stored at ``<prefix>/v000001.json`` in a bucket
  and catalogued in ``state.state_backups`` (version, object key, checksum, row counts).
- *restore*: read a snapshot (the latest, or a given version), verify its checksum, write its rows back
  in one transaction. ``missing`` restores only rows that are gone (state loss), never moves a live
  watermark backwards; ``overwrite`` replaces the rows in scope. Restored watermarks get a
  ``restore`` entry in ``state.watermark_history``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from cdclab.common.ddl import require
from cdclab.common.options import one_of
from cdclab.files.store import ObjectStore

RestoreMode = Literal["missing", "overwrite"]
FORMAT = 1


class BackupError(Exception):
    """Base class of this module's errors."""


class NoBackupError(BackupError, LookupError):
    """No snapshot exists for the scope; run a backup first or restore state by hand (``state.watermarks``)."""


class CorruptBackupError(BackupError, ValueError):
    """The snapshot's checksum does not match its rows; restore an older version (``restore_version``)."""


def ensure_schema(conn: Any) -> None:
    """Check ``state.state_backups`` (declared by infra/postgres/warehouse/V001__state.sql); creates nothing."""
    require(conn, "state.state_backups")
    conn.commit()  # as when it created them: callers may rely on it


def _digest(rows: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def read_state(conn: Any, watermark_prefix: str, groups: list[str]) -> dict[str, list[dict[str, Any]]]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT key, value, value_type, updated_by_dag_id, updated_by_run_id FROM state.watermarks "
            "WHERE starts_with(key, %s) ORDER BY key",
            (watermark_prefix,),
        )
        wms = [
            dict(
                zip(("key", "value", "value_type", "updated_by_dag_id", "updated_by_run_id"), r, strict=True)
            )
            for r in cur.fetchall()
        ]
        cur.execute(
            "SELECT consumer_group, topic, kafka_partition, next_offset FROM state.kafka_offsets "
            "WHERE consumer_group = ANY(%s) ORDER BY 1, 2, 3",
            (groups,),
        )
        offs = [
            dict(zip(("consumer_group", "topic", "kafka_partition", "next_offset"), r, strict=True))
            for r in cur.fetchall()
        ]
    conn.rollback()
    return {"watermarks": wms, "kafka_offsets": offs}


@dataclass(frozen=True)
class BackupInfo:
    version: int
    object_key: str
    sha256: str
    watermarks: int
    offsets: int


def backup(
    conn: Any,
    store: ObjectStore,
    *,
    scope: str,
    bucket: str,
    prefix: str,
    watermark_prefix: str,
    groups: list[str],
    run_id: str | None = None,
) -> BackupInfo:
    """Write the next snapshot version to ``bucket/prefix`` and catalogue it (commits)."""
    rows = read_state(conn, watermark_prefix, groups)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"statebackup:{scope}",))
        cur.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM state.state_backups WHERE scope = %s", (scope,)
        )
        version = int(cur.fetchone()[0])
        key = f"{prefix.rstrip('/')}/v{version:06d}.json"
        digest = _digest(rows)
        doc = {
            "format": FORMAT,
            "scope": scope,
            "version": version,
            "run_id": run_id,
            "watermark_prefix": watermark_prefix,
            "consumer_groups": groups,
            "sha256": digest,
            **rows,
        }
        store.put(bucket, key, json.dumps(doc, indent=2, default=str).encode())
        cur.execute(
            "INSERT INTO state.state_backups (scope, version, bucket, object_key, sha256, watermarks, offsets, "
            "run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                scope,
                version,
                bucket,
                key,
                digest,
                len(rows["watermarks"]),
                len(rows["kafka_offsets"]),
                run_id,
            ),
        )
    return BackupInfo(version, key, digest, len(rows["watermarks"]), len(rows["kafka_offsets"]))


def latest_taken_at(conn: Any, scope: str) -> Any:
    """When the newest snapshot of ``scope`` was taken (None before the first backup); ends the read."""
    with conn.cursor() as cur:
        cur.execute("SELECT max(taken_at) FROM state.state_backups WHERE scope = %s", (scope,))
        taken = cur.fetchone()[0]
    conn.rollback()
    return taken


@dataclass(frozen=True)
class RestoreResult:
    version: int
    watermarks_restored: list[str]
    offsets_restored: int


def restore(
    conn: Any,
    store: ObjectStore,
    *,
    scope: str,
    version: int | None = None,
    mode: RestoreMode = "missing",
    dag_id: str | None = None,
    run_id: str | None = None,
) -> RestoreResult:
    """Restore a snapshot (latest when ``version`` is None) in one transaction (commits)."""
    one_of("mode", mode, RestoreMode)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT version, bucket, object_key, sha256 FROM state.state_backups WHERE scope = %s "
            "AND (%s::int IS NULL OR version = %s) ORDER BY version DESC LIMIT 1",
            (scope, version, version),
        )
        found = cur.fetchone()
    conn.rollback()
    if found is None:
        raise NoBackupError(f"no state backup for scope {scope!r} (version {version}); run a backup first")
    v, bucket, key, digest = found
    doc = json.loads(store.get(bucket, key))
    rows = {"watermarks": doc["watermarks"], "kafka_offsets": doc["kafka_offsets"]}
    if _digest(rows) != digest or doc["sha256"] != digest:
        raise CorruptBackupError(f"{bucket}/{key}: checksum mismatch; restore an older version")
    restored: list[str] = []
    offsets = 0
    conflict = (
        "DO NOTHING" if mode == "missing" else "DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
    )
    with conn, conn.cursor() as cur:
        for w in rows["watermarks"]:
            cur.execute(
                "INSERT INTO state.watermarks (key, value, value_type, updated_by_dag_id, updated_by_run_id) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) " + conflict + " RETURNING key",
                (w["key"], w["value"], w["value_type"], dag_id, run_id),
            )
            if cur.fetchone() is not None:
                restored.append(w["key"])
                cur.execute(
                    "INSERT INTO state.watermark_history (key, old_value, new_value, value_type, dag_id, run_id, "
                    "reason) VALUES (%s, NULL, %s, %s, %s, %s, 'restore')",
                    (w["key"], w["value"], w["value_type"], dag_id, run_id),
                )
        off_conflict = (
            "DO NOTHING" if mode == "missing" else "DO UPDATE SET next_offset = EXCLUDED.next_offset"
        )
        for o in rows["kafka_offsets"]:
            cur.execute(
                "INSERT INTO state.kafka_offsets (consumer_group, topic, kafka_partition, next_offset, updated_by) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (consumer_group, topic, kafka_partition) "
                + off_conflict,
                (o["consumer_group"], o["topic"], o["kafka_partition"], o["next_offset"], f"restore v{v}"),
            )
            offsets += cur.rowcount
    return RestoreResult(v, restored, offsets)
