"""File-processing state in the ``warehouse`` database: the file manifest, the listing watermark and the
audit trail.

Vocabulary:
- ``state.file_manifest``: the *ledger*, one row per (pipeline, bucket, key, etag) with size, ETag,
  sha256, row count, producer expectations (``expected_rows``, ``expected_sha256``, ``batch_id``),
  ``status`` (:data:`STATUSES`), ``attempts`` and the last ``error``.
- *pending*: ``discovered`` rows, and ``failed`` rows with ``attempts < max_attempts``.
- *exhausted*: a file whose last attempt failed with ``attempts >= max_attempts`` (or whose object was
  replaced after it was planned, :class:`~cdclab.files.errors.ObjectChanged`): it is not retried any more,
  and it is said so — status ``exhausted`` with the last ``error`` (warehouse V006), ``load_all`` raising
  :class:`~cdclab.files.errors.FilesExhausted` and the health check ``files_exhausted`` — never parked
  silently as ``failed``. Fix the cause, then :func:`reset_for_reprocess` puts it back (attempts from 0).
- *finished*: ``loaded``, ``quarantined`` or ``archived``; a finished (key, etag) is never loaded again
  unless someone asks for a *reprocess* (:func:`reset_for_reprocess`).
- ``state.file_watermark``: the highest ``LastModified`` registered per pipeline.
- ``state.file_audit``: one row per action on an object (archive, quarantine, delete, expire, reprocess,
  receipt) with source, destination and reason.
- ``dlq.file_quarantine``: one row per quarantined file with its reason.

Claiming works without a separate ``processing`` status: a loader locks the manifest row
(``FOR UPDATE SKIP LOCKED``) in the same transaction that writes the target rows and the new status, so
a crash rolls everything back and the file stays pending; two concurrent loaders never load one file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg2.extras import execute_values

from cdclab.common.ddl import require
from cdclab.files.store import ObjectInfo

Status = Literal["discovered", "loaded", "quarantined", "failed", "exhausted", "archived"]
STATUSES: tuple[Status, ...] = ("discovered", "loaded", "quarantined", "failed", "exhausted", "archived")
FINISHED: tuple[Status, ...] = ("loaded", "quarantined", "archived")
Kind = Literal["data", "manifest"]

# Declared by infra/postgres/warehouse (V002__dlq.sql, V006__files_exhausted.sql), applied at lab start.
TABLES = (
    "state.file_manifest",
    "state.file_watermark",
    "state.file_audit",
    "state.file_chunks",
    "dlq.file_quarantine",
)


def ensure_tables(cur: Any) -> None:
    """Check that the state tables (:data:`TABLES`) exist: the versioned warehouse files declare them.

    Runs no DDL (raises :class:`cdclab.common.ddl.NotMigratedError` on a warehouse that was not migrated),
    so it never queues for a table lock behind running loaders."""
    require(cur, "state.file_manifest")


@dataclass(frozen=True)
class ManifestRow:
    pipeline: str
    bucket: str
    key: str
    etag: str
    kind: str
    batch_id: str | None
    size: int
    last_modified: datetime
    sha256: str | None
    row_count: int | None
    expected_rows: int | None
    expected_sha256: str | None
    status: str
    attempts: int
    error: str | None

    @property
    def obj(self) -> ObjectInfo:
        return ObjectInfo(self.bucket, self.key, self.size, self.etag, self.last_modified)


_COLS = (
    "pipeline, bucket, key, etag, kind, batch_id, size, last_modified, sha256, row_count, "
    "expected_rows, expected_sha256, status, attempts, error"
)


def register(
    cur: Any,
    pipeline: str,
    objects: Iterable[ObjectInfo],
    kind: Kind = "data",
    batch_id: str | None = None,
    expectations: dict[str, tuple[int, str]] | None = None,
) -> list[ObjectInfo]:
    """Insert objects not yet in the ledger (status ``discovered``); returns the newly registered ones.
    ``expectations`` maps key -> (expected rows, expected sha256) from a producer manifest."""
    objs = list(objects)
    if not objs:
        return []
    exp = expectations or {}
    rows = [
        (
            pipeline,
            o.bucket,
            o.key,
            o.etag,
            kind,
            batch_id,
            o.size,
            o.last_modified,
            exp.get(o.key, (None, None))[0],
            exp.get(o.key, (None, None))[1],
        )
        for o in objs
    ]
    inserted = execute_values(
        cur,
        "INSERT INTO state.file_manifest (pipeline, bucket, key, etag, kind, batch_id, size, last_modified,"
        " expected_rows, expected_sha256) VALUES %s ON CONFLICT DO NOTHING RETURNING key, etag",
        rows,
        fetch=True,
    )
    new = {(k, e) for k, e in inserted}
    return [o for o in objs if (o.key, o.etag) in new]


def known(cur: Any, pipeline: str, bucket: str, keys: list[str]) -> dict[tuple[str, str], str]:
    """``{(key, etag): status}`` for the given keys."""
    if not keys:
        return {}
    cur.execute(
        "SELECT key, etag, status FROM state.file_manifest WHERE pipeline = %s AND bucket = %s"
        " AND key = ANY(%s)",
        (pipeline, bucket, keys),
    )
    return {(k, e): s for k, e, s in cur.fetchall()}


def pending(
    cur: Any, pipeline: str, kind: Kind = "data", max_attempts: int = 3, batch_id: str | None = None
) -> list[ManifestRow]:
    """Rows that still need loading, oldest first."""
    cur.execute(
        f"SELECT {_COLS} FROM state.file_manifest WHERE pipeline = %s AND kind = %s"  # noqa: S608
        " AND (status = 'discovered' OR (status = 'failed' AND attempts < %s))"
        " AND (%s::text IS NULL OR batch_id = %s) ORDER BY last_modified, key",
        (pipeline, kind, max_attempts, batch_id, batch_id),
    )
    return [ManifestRow(*r) for r in cur.fetchall()]


def rows(cur: Any, pipeline: str, status: str | None = None, kind: Kind = "data") -> list[ManifestRow]:
    cur.execute(
        f"SELECT {_COLS} FROM state.file_manifest WHERE pipeline = %s AND kind = %s"  # noqa: S608
        " AND (%s::text IS NULL OR status = %s) ORDER BY last_modified, key",
        (pipeline, kind, status, status),
    )
    return [ManifestRow(*r) for r in cur.fetchall()]


def lock_pending(cur: Any, pipeline: str, obj: ObjectInfo, max_attempts: int = 3) -> ManifestRow | None:
    """Lock one pending manifest row for this transaction; ``None`` if finished or held by another loader."""
    cur.execute(
        f"SELECT {_COLS} FROM state.file_manifest WHERE pipeline = %s AND bucket = %s"  # noqa: S608
        " AND key = %s AND etag = %s"
        " AND (status = 'discovered' OR (status = 'failed' AND attempts < %s)) FOR UPDATE SKIP LOCKED",
        (pipeline, obj.bucket, obj.key, obj.etag, max_attempts),
    )
    row = cur.fetchone()
    return ManifestRow(*row) if row else None


def set_status(
    cur: Any,
    pipeline: str,
    obj: ObjectInfo,
    status: Status,
    *,
    error: str | None = None,
    sha256: str | None = None,
    row_count: int | None = None,
    count_attempt: bool = True,
) -> None:
    cur.execute(
        "UPDATE state.file_manifest SET status = %s, error = %s,"
        " sha256 = COALESCE(%s, sha256), row_count = COALESCE(%s, row_count),"
        " attempts = attempts + %s, updated_at = clock_timestamp(),"
        " loaded_at = CASE WHEN %s = 'loaded' THEN clock_timestamp() ELSE loaded_at END"
        " WHERE pipeline = %s AND bucket = %s AND key = %s AND etag = %s",
        (
            status,
            error,
            sha256,
            row_count,
            1 if count_attempt else 0,
            status,
            pipeline,
            obj.bucket,
            obj.key,
            obj.etag,
        ),
    )


def record_failure(cur: Any, pipeline: str, obj: ObjectInfo, error: str, max_attempts: int) -> Status:
    """Count a failed attempt; the row becomes ``exhausted`` when it reached ``max_attempts``, else
    ``failed`` (retried by the next run). Returns the new status."""
    cur.execute(
        "UPDATE state.file_manifest SET attempts = attempts + 1, error = %s, updated_at = clock_timestamp(),"
        " status = CASE WHEN attempts + 1 >= %s THEN 'exhausted' ELSE 'failed' END"
        " WHERE pipeline = %s AND bucket = %s AND key = %s AND etag = %s RETURNING status",
        (error, max_attempts, pipeline, obj.bucket, obj.key, obj.etag),
    )
    row = cur.fetchone()
    return row[0] if row else "failed"


def sweep_exhausted(cur: Any, pipeline: str, max_attempts: int) -> list[ManifestRow]:
    """``failed`` rows that already used ``max_attempts`` (parked by an older version, or a lowered
    ``max_attempts``) become ``exhausted``; returns them."""
    cur.execute(
        f"UPDATE state.file_manifest SET status = 'exhausted', updated_at = clock_timestamp()"  # noqa: S608
        " WHERE pipeline = %s AND status = 'failed' AND attempts >= %s"
        f" RETURNING {_COLS}",
        (pipeline, max_attempts),
    )
    return [ManifestRow(*r) for r in cur.fetchall()]


def exhausted(cur: Any, pipeline: str) -> list[ManifestRow]:
    """The pipeline's exhausted files (every kind), oldest first."""
    cur.execute(
        f"SELECT {_COLS} FROM state.file_manifest WHERE pipeline = %s AND status = 'exhausted'"  # noqa: S608
        " ORDER BY last_modified, key",
        (pipeline,),
    )
    return [ManifestRow(*r) for r in cur.fetchall()]


def reset_for_reprocess(
    cur: Any, pipeline: str, keys: list[str] | None = None, batch_id: str | None = None
) -> list[ManifestRow]:
    """Put finished, failed or exhausted files back to ``discovered`` on request (by keys or batch); a
    failed or exhausted one starts again from 0 attempts. Audited as ``reprocess``."""
    cur.execute(
        f"UPDATE state.file_manifest SET status = 'discovered', error = NULL, updated_at = clock_timestamp(),"  # noqa: S608
        " attempts = CASE WHEN status IN ('failed', 'exhausted') THEN 0 ELSE attempts END"
        " WHERE pipeline = %s AND kind = 'data' AND status IN ('loaded', 'failed', 'exhausted')"
        " AND ((%s::text[] IS NOT NULL AND key = ANY(%s)) OR (%s::text IS NOT NULL AND batch_id = %s))"
        f" RETURNING {_COLS}",
        (pipeline, keys, keys, batch_id, batch_id),
    )
    out = [ManifestRow(*r) for r in cur.fetchall()]
    for r in out:
        audit(cur, pipeline, "reprocess", r.obj, reason="reprocess requested")
    return out


def get_watermark(cur: Any, pipeline: str) -> datetime | None:
    cur.execute("SELECT last_modified FROM state.file_watermark WHERE pipeline = %s", (pipeline,))
    row = cur.fetchone()
    return row[0] if row else None


def advance_watermark(cur: Any, pipeline: str, value: datetime) -> None:
    """Move the watermark forward only (never back)."""
    cur.execute(
        "INSERT INTO state.file_watermark (pipeline, last_modified) VALUES (%s, %s)"
        " ON CONFLICT (pipeline) DO UPDATE SET last_modified = GREATEST(file_watermark.last_modified,"
        " EXCLUDED.last_modified), updated_at = clock_timestamp()",
        (pipeline, value),
    )


def audit(
    cur: Any,
    pipeline: str,
    action: str,
    obj: ObjectInfo,
    *,
    dst_bucket: str | None = None,
    dst_key: str | None = None,
    reason: str | None = None,
) -> None:
    cur.execute(
        "INSERT INTO state.file_audit (pipeline, action, src_bucket, src_key, dst_bucket, dst_key, etag,"
        " size, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (pipeline, action, obj.bucket, obj.key, dst_bucket, dst_key, obj.etag, obj.size, reason),
    )
