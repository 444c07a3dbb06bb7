"""Producer manifests: the file a producer writes *after* its data files to say "this batch is complete".

Vocabulary:
- *batch*: the data files a producer delivers together, in one folder (``<prefix>/<batch_id>/``).
- *producer manifest*: ``<prefix>/<batch_id>/_manifest.json``, written last (the commit marker)::

      {"version": 1, "batch_id": "2026-11-25-001", "producer": "partner-a",
       "created_at": "2026-11-25T10:00:00+00:00",
       "files": [{"key": "part-000.csv", "size": 1234, "sha256": "<64 hex>", "rows": 20}]}

  ``key`` is relative to the manifest's folder. A data file is loaded only once a manifest names it;
  its size, sha256 and row count become the file's *expectations*, checked at load time (a mismatch
  quarantines the file: the upload was partial or the manifest is stale).
- *receipt*: what the consumer writes back to the ``manifests`` bucket once every file of a batch is
  finished (``<pipeline>/<batch_id>.receipt.json``: status and rows per file), so the producer can
  see what was loaded without database access.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdclab.files.errors import ManifestInvalid

MANIFEST_NAME = "_manifest.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class ManifestEntry:
    key: str  # absolute key in the bucket
    size: int
    sha256: str
    rows: int


@dataclass(frozen=True)
class ProducerManifest:
    manifest_key: str
    batch_id: str
    producer: str
    created_at: datetime
    files: tuple[ManifestEntry, ...]

    @property
    def expectations(self) -> dict[str, tuple[int, str]]:
        return {f.key: (f.rows, f.sha256) for f in self.files}


def _fail(where: str, msg: str) -> ManifestInvalid:
    return ManifestInvalid(
        f"{where}: {msg}; the producer must rewrite the manifest (see cdclab.files.manifest)"
    )


def parse_manifest(manifest_key: str, data: bytes) -> ProducerManifest:
    """Validate and parse a producer manifest; every problem raises :class:`ManifestInvalid`."""
    try:
        doc: Any = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(manifest_key, f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise _fail(manifest_key, "the manifest must be a JSON object")
    if doc.get("version") != 1:
        raise _fail(manifest_key, f"version {doc.get('version')!r} is not supported (expected 1)")
    batch_id, producer = doc.get("batch_id"), doc.get("producer", "")
    if not isinstance(batch_id, str) or not batch_id.strip():
        raise _fail(manifest_key, "batch_id must be a non-empty string")
    try:
        created_at = datetime.fromisoformat(str(doc.get("created_at")))
    except ValueError:
        raise _fail(manifest_key, f"created_at={doc.get('created_at')!r} is not ISO 8601") from None
    if created_at.tzinfo is None:
        raise _fail(manifest_key, "created_at needs a UTC offset")
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        raise _fail(manifest_key, "files must be a non-empty list")
    folder = posixpath.dirname(manifest_key)
    entries: list[ManifestEntry] = []
    for i, f in enumerate(files):
        where = f"{manifest_key} files[{i}]"
        if not isinstance(f, dict):
            raise _fail(where, "each file must be an object")
        rel = f.get("key")
        if not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise _fail(where, f"key={rel!r} must be a relative path inside the batch folder")
        for name in ("size", "rows"):
            if not isinstance(f.get(name), int) or isinstance(f.get(name), bool) or f[name] < 0:
                raise _fail(where, f"{name}={f.get(name)!r} must be a non-negative integer")
        if not isinstance(f.get("sha256"), str) or not _SHA256.match(f["sha256"]):
            raise _fail(where, f"sha256={f.get('sha256')!r} must be 64 lowercase hex digits")
        entries.append(ManifestEntry(posixpath.join(folder, rel), f["size"], f["sha256"], f["rows"]))
    keys = [e.key for e in entries]
    if len(set(keys)) != len(keys):
        raise _fail(manifest_key, "a file is listed twice")
    return ProducerManifest(manifest_key, batch_id, str(producer), created_at, tuple(entries))


def render_manifest(batch_id: str, producer: str, created_at: datetime, files: list[dict[str, Any]]) -> bytes:
    """Manifest bytes; ``files`` are dicts with key (relative), size, sha256, rows."""
    doc = {
        "version": 1,
        "batch_id": batch_id,
        "producer": producer,
        "created_at": created_at.isoformat(),
        "files": files,
    }
    return json.dumps(doc, indent=2).encode()


def receipt(pipeline: str, batch_id: str, files: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"pipeline": pipeline, "batch_id": batch_id, "files": files}, indent=2, default=str
    ).encode()


# ---- consuming manifests ---------------------------------------------------------------------------
def register_batch(cur: Any, store: Any, pipeline: str, manifest_obj: Any, quarantine_bucket: str) -> str:
    """Read one pending manifest object and register the files it names with their expectations.

    Returns ``registered``, ``waiting`` (a named file is not in the bucket yet: the manifest stays
    pending and is retried next run) or ``quarantined`` (the manifest is invalid)."""
    from cdclab.files import archive, state
    from cdclab.files.errors import ManifestFileMissing
    from cdclab.files.store import ObjectInfo

    row = state.lock_pending(cur, pipeline, manifest_obj)
    if row is None:
        return "skipped"
    try:
        m = parse_manifest(
            manifest_obj.key, store.get(manifest_obj.bucket, manifest_obj.key, etag=manifest_obj.etag)
        )
    except ManifestInvalid as exc:
        archive.quarantine(cur, store, pipeline, manifest_obj, exc, quarantine_bucket)
        return "quarantined"
    objs: list[ObjectInfo] = []
    for entry in m.files:
        head = store.head(manifest_obj.bucket, entry.key)
        if head is None:
            err = ManifestFileMissing(f"{manifest_obj.uri} names {entry.key}, which is not in the bucket yet")
            state.set_status(cur, pipeline, manifest_obj, "discovered", error=str(err), count_attempt=False)
            return "waiting"
        objs.append(head)
    state.register(cur, pipeline, objs, batch_id=m.batch_id, expectations=m.expectations)
    cur.execute(
        "UPDATE state.file_manifest SET batch_id = %s WHERE pipeline = %s AND bucket = %s AND key = %s"
        " AND etag = %s",
        (m.batch_id, pipeline, manifest_obj.bucket, manifest_obj.key, manifest_obj.etag),
    )
    state.set_status(cur, pipeline, manifest_obj, "loaded", row_count=len(m.files))
    return "registered"


def complete_batches(cur: Any, store: Any, pipeline: str, receipts_bucket: str = "manifests") -> list[str]:
    """Write a receipt for each batch whose data files are all finished and have changed since the last
    receipt (first completion, or a reprocess)."""
    from cdclab.files import state
    from cdclab.files.store import ObjectInfo

    cur.execute(
        "SELECT m.batch_id FROM state.file_manifest m WHERE m.pipeline = %s AND m.kind = 'data'"
        " AND m.batch_id IS NOT NULL GROUP BY m.batch_id"
        " HAVING bool_and(m.status IN ('loaded', 'quarantined', 'archived'))"
        " AND max(m.updated_at) > COALESCE((SELECT max(a.at) FROM state.file_audit a WHERE a.pipeline = %s"
        "   AND a.action = 'receipt' AND a.src_key = %s || '/' || m.batch_id || '.receipt.json'), '-infinity')",
        (pipeline, pipeline, pipeline),
    )
    done = [b for (b,) in cur.fetchall()]
    for batch_id in done:
        cur.execute(
            "SELECT key, status, row_count, sha256, attempts, error FROM state.file_manifest"
            " WHERE pipeline = %s AND kind = 'data' AND batch_id = %s ORDER BY key",
            (pipeline, batch_id),
        )
        files = [
            dict(zip(("key", "status", "rows", "sha256", "attempts", "error"), r, strict=True))
            for r in cur.fetchall()
        ]
        rkey = f"{pipeline}/{batch_id}.receipt.json"
        data = receipt(pipeline, batch_id, files)
        store.put(receipts_bucket, rkey, data)
        head = store.head(receipts_bucket, rkey)
        state.audit(
            cur,
            pipeline,
            "receipt",
            head or ObjectInfo(receipts_bucket, rkey, len(data), "", None),  # type: ignore[arg-type]
            reason=f"batch {batch_id}: {len(files)} file(s)",
        )
    return done
