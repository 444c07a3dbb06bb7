"""Moving objects out of the landing zone: archive after processing, quarantine on corrupt input, expiry
of old archives; every move is recorded in the audit trail.

Vocabulary:
- *move*: S3 has no rename; a move is **copy, verify, then delete** the source. A crash between copy and
  delete leaves two copies, never zero; rerunning the move is idempotent (same destination key).
- *archive layout*: ``<archive bucket>/<pipeline>/<yyyy>/<mm>/<dd>/<original key>`` with the date of
  the run's logical date (scheduler window, not the wall clock), so archives are partitioned by the
  processing day and a whole day can be expired or restored at once.
- *quarantine layout*: ``<quarantine bucket>/<pipeline>/<original key>`` plus ``<...>.reason.json``
  (reason, detail, byte offset, etag) next to it.
- *archive day*: the ``<yyyy>/<mm>/<dd>`` of the archive key: the logical date of the run that archived
  the file, i.e. the processing day the file belongs to. It is the one date both sides of retention agree
  on: the run that archives writes it, the run that expires compares its own logical date with it.
- *retention* (cleanup policy): archived objects whose archive day is more than ``retention`` before the
  expiring run's logical day are deleted (``expire`` audit rows), once each. Never the audit row's
  wall-clock ``at``: a backfill archives March's files today, and a rerun of an old day runs long after
  it; comparing wall-clock times with a logical date would keep files forever in the first case and
  expire another day's files in the second. The same policy could be an S3 lifecycle rule on the archive
  bucket (``Expiration.Days`` per prefix, which counts from the object's wall-clock creation, with the
  same backfill problem); doing it in the DAG keeps the audit trail complete.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from typing import Any

from cdclab.files import state
from cdclab.files.errors import CorruptFile, FileProcessingError
from cdclab.files.store import ObjectInfo, ObjectStore


class ArchiveCopyMismatch(FileProcessingError):
    """The archived copy's size differs from the source; the source is kept. Check the archive bucket."""


def archive_key(pipeline: str, key: str, day: datetime) -> str:
    return f"{pipeline}/{day:%Y/%m/%d}/{key}"


def quarantine_key(pipeline: str, key: str) -> str:
    return f"{pipeline}/{key}"


def quarantine(
    cur: Any,
    store: ObjectStore,
    pipeline: str,
    obj: ObjectInfo,
    error: CorruptFile,
    quarantine_bucket: str = "quarantine",
) -> str:
    """Copy the object and its reason to quarantine and record it (manifest, dlq, audit) in ``cur``'s
    transaction. The caller deletes the source after commit (:func:`delete_source`)."""
    qkey = quarantine_key(pipeline, obj.key)
    store.copy(obj.bucket, obj.key, quarantine_bucket, qkey)
    reason = {
        "reason": error.reason,
        "detail": str(error),
        "byte_offset": error.offset,
        "source": obj.uri,
        "etag": obj.etag,
        "size": obj.size,
    }
    store.put(quarantine_bucket, qkey + ".reason.json", json.dumps(reason, indent=2).encode())
    state.set_status(cur, pipeline, obj, "quarantined", error=f"{error.reason}: {error}")
    cur.execute(
        "INSERT INTO dlq.file_quarantine (pipeline, bucket, key, etag, quarantine_bucket, quarantine_key,"
        " reason, detail, byte_offset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            pipeline,
            obj.bucket,
            obj.key,
            obj.etag,
            quarantine_bucket,
            qkey,
            error.reason,
            str(error),
            error.offset,
        ),
    )
    state.audit(
        cur, pipeline, "quarantine", obj, dst_bucket=quarantine_bucket, dst_key=qkey, reason=error.reason
    )
    return qkey


def delete_source(store: ObjectStore, obj: ObjectInfo) -> None:
    """Delete the landing object only if it is still the version we processed (same ETag)."""
    current = store.head(obj.bucket, obj.key)
    if current is not None and current.etag == obj.etag:
        store.delete(obj.bucket, [obj.key])


def archive(
    cur: Any,
    store: ObjectStore,
    pipeline: str,
    obj: ObjectInfo,
    day: datetime,
    archive_bucket: str = "archive",
) -> str:
    """Copy a loaded object to the archive, verify the copy, audit it and mark it ``archived``.
    Commit, then :func:`delete_source`."""
    akey = archive_key(pipeline, obj.key, day)
    store.copy(obj.bucket, obj.key, archive_bucket, akey)
    copied = store.head(archive_bucket, akey)
    if copied is None or copied.size != obj.size:
        raise ArchiveCopyMismatch(
            f"{obj.uri} -> s3://{archive_bucket}/{akey}: copy has size "
            f"{copied and copied.size}, source {obj.size}"
        )
    state.set_status(cur, pipeline, obj, "archived", count_attempt=False)
    state.audit(cur, pipeline, "archive", obj, dst_bucket=archive_bucket, dst_key=akey, reason="loaded")
    return akey


def archive_day(pipeline: str, key: str) -> date:
    """The archive day of an archive key written by :func:`archive_key` for ``pipeline``."""
    head = f"{pipeline}/"
    if not key.startswith(head):
        raise ValueError(f"archive key {key!r} is not under {head!r}")
    y, m, d = key[len(head) : len(head) + 10].split("/")
    return date(int(y), int(m), int(d))


def expire_archives(
    cur: Any, store: ObjectStore, pipeline: str, logical_date: datetime, retention: timedelta
) -> list[str]:
    """Delete the archived copies whose archive day is before ``logical_date``'s day minus ``retention``
    (once each) and audit ``expire``. Both dates are logical dates, so backfills and reruns agree."""
    cutoff = (logical_date - retention).date()
    cur.execute(
        "SELECT a.src_bucket, a.src_key, a.etag, a.size, a.dst_bucket, a.dst_key FROM state.file_audit a"
        " WHERE a.pipeline = %s AND a.action = 'archive' AND NOT EXISTS ("
        "   SELECT 1 FROM state.file_audit e WHERE e.pipeline = a.pipeline AND e.action = 'expire'"
        "   AND e.src_bucket = a.dst_bucket AND e.src_key = a.dst_key) ORDER BY a.id",
        (pipeline,),
    )
    expired: list[str] = []
    for src_bucket, src_key, etag, size, dst_bucket, dst_key in cur.fetchall():
        day = archive_day(pipeline, dst_key)
        if day >= cutoff or dst_key in expired:
            continue
        store.delete(dst_bucket, [dst_key])
        state.audit(
            cur,
            pipeline,
            "expire",
            ObjectInfo(dst_bucket, dst_key, size or 0, etag, logical_date),
            reason=f"archive day {day} is before {cutoff} (retention {retention} before the logical date "
            f"{logical_date.date()}; source s3://{src_bucket}/{src_key})",
        )
        expired.append(dst_key)
    return expired
