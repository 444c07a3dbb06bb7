"""New-file detection: listing by prefix and pattern, filtered by modification time, checked against the
ledger.

Vocabulary:
- *listing*: every object under the landing prefix that matches the pattern (one snapshot per run).
- *watermark* and *lag*: objects with ``LastModified <= watermark - lag`` are taken as seen without a
  ledger lookup; everything younger is compared to ``state.file_manifest`` by (key, etag).
- *new file*: a (key, etag) the ledger does not hold; registering it (``discovered``) and advancing the
  watermark happen in one transaction.

Why not only ``LastModified > watermark``: S3 LastModified is not a commit order. A multipart upload
carries its *start* time and becomes visible at its end, a clock can skew, and a file landing while the
listing runs can carry a timestamp below the newest one listed. A pure high-watermark skips those files
forever; the ledger plus a lag window picks them up on the next run. A file that lands after this run's
listing simply is not in the snapshot and is new for the next run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cdclab.files import state
from cdclab.files.store import ObjectInfo, ObjectStore


@dataclass
class Detection:
    listed: list[ObjectInfo]
    candidates: list[ObjectInfo]
    new: list[ObjectInfo]
    watermark_before: datetime | None
    watermark_after: datetime | None
    skipped_by_time: int = field(default=0)


def filter_by_time(objects: list[ObjectInfo], watermark: datetime | None, lag: timedelta) -> list[ObjectInfo]:
    """Objects young enough to need a ledger check (pure; see the module docstring)."""
    if watermark is None:
        return list(objects)
    horizon = watermark - lag
    return [o for o in objects if o.last_modified > horizon]


def detect(
    cur: Any,
    store: ObjectStore,
    pipeline: str,
    bucket: str,
    prefix: str,
    pattern: str = "*",
    lag: timedelta = timedelta(minutes=5),
) -> Detection:
    """List, filter by time, register what the ledger lacks, advance the watermark (caller commits)."""
    listed = store.list_objects(bucket, prefix, pattern)
    wm = state.get_watermark(cur, pipeline)
    candidates = filter_by_time(listed, wm, lag)
    new = state.register(cur, pipeline, candidates)
    if listed:
        state.advance_watermark(cur, pipeline, max(o.last_modified for o in listed))
    return Detection(
        listed=listed,
        candidates=candidates,
        new=new,
        watermark_before=wm,
        watermark_after=state.get_watermark(cur, pipeline),
        skipped_by_time=len(listed) - len(candidates),
    )


def needs_processing(cur: Any, pipeline: str, files: list[dict[str, Any]], bucket: str) -> bool:
    """For ``S3KeySensor(check_fn=...)``: true when a listed (key, etag) is unknown or not finished."""
    if not files:
        return False
    seen = state.known(cur, pipeline, bucket, [f["Key"] for f in files])
    for f in files:
        etag = str(f.get("ETag", "")).strip('"')
        status = (
            seen.get((f["Key"], etag))
            if etag
            else next((s for (k, _e), s in seen.items() if k == f["Key"]), None)
        )
        if status not in state.FINISHED:
            return True
    return False
