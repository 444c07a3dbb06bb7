"""The steps of the file-pipeline DAGs (71_04_01, 71_04_02, 71_04_04, 71_04_05, 71_09_02): each step is one
task body, opens its own warehouse transactions (:func:`cdclab.common.db.transaction`) and returns what the task
prints or pushes to XCom. The DAG files keep only the lesson, the schedule, the params and the wiring.

Transaction boundaries are part of the lesson (exactly-once bookkeeping), so they are spelled out per
step:

- a *ledger transaction* reads or writes ``state.file_manifest`` (register, pending, reset) and commits
  before any file is loaded;
- a *per-file transaction* (one manifest, one archived object, one assembled file) commits that file's
  bookkeeping alone, so a failure on the next file leaves the earlier ones done; an object is deleted
  from its bucket only after the transaction that recorded it has committed;
- :func:`cdclab.files.loading.load_all` and :func:`cdclab.files.chunking.load_chunk` open their own
  per-file / per-chunk transactions.

Vocabulary: see :mod:`cdclab.files`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cdclab.common.db import WAREHOUSE, transaction
from cdclab.files import archive, chunking, detection, loading, logs, manifest, state
from cdclab.files.store import ObjectInfo, ObjectStore

DEFAULT_LAG = timedelta(minutes=5)


# ---- sensors (S3KeySensor check_fn) ------------------------------------------------------------------
def has_new_files(pipeline: str, bucket: str, files: list[dict[str, Any]]) -> bool:
    """True when a listed (key, ETag) is unknown to the ledger or not finished (one ledger transaction)."""
    with transaction(WAREHOUSE) as cur:
        state.ensure_tables(cur)
        return detection.needs_processing(cur, pipeline, files, bucket)


def has_pending_work(pipeline: str, bucket: str, files: list[dict[str, Any]], max_attempts: int) -> bool:
    """:func:`has_new_files`, or the ledger still has pending rows (a manifest waiting for its files, a
    failed file to retry)."""
    with transaction(WAREHOUSE) as cur:
        state.ensure_tables(cur)
        return detection.needs_processing(cur, pipeline, files, bucket) or bool(
            state.pending(cur, pipeline, max_attempts=max_attempts)
        )


# ---- detection and loading (71_04_01, 71_04_05) --------------------------------------------------------
def prepare_target(target: str) -> None:
    """Create the staging target if it is missing (its own transaction)."""
    with transaction(WAREHOUSE) as cur:
        loading.ensure_target(cur, target)


def detect_pending(
    store: ObjectStore,
    pipeline: str,
    bucket: str,
    prefix: str,
    pattern: str,
    lag: timedelta = DEFAULT_LAG,
    max_attempts: int = 3,
) -> tuple[detection.Detection, list[state.ManifestRow]]:
    """List, register the new objects and read what is pending, in one ledger transaction."""
    with transaction(WAREHOUSE) as cur:
        found = detection.detect(cur, store, pipeline, bucket, prefix, pattern, lag)
        todo = state.pending(cur, pipeline, max_attempts=max_attempts)
    return found, todo


def detect_new_files(
    pipeline: str,
    bucket: str,
    prefix: str,
    pattern: str,
    target: str,
    lag: timedelta,
    max_attempts: int,
) -> tuple[detection.Detection, list[state.ManifestRow]]:
    """71_04_01's detection: the target exists, then :func:`detect_pending` (two transactions)."""
    prepare_target(target)
    return detect_pending(ObjectStore(), pipeline, bucket, prefix, pattern, lag, max_attempts)


def load_listed(
    pipeline: str,
    files: list[dict[str, Any]],
    target: str,
    quarantine_bucket: str,
    max_attempts: int,
    crash_after_files: int = -1,
) -> dict[str, Any]:
    """Load the files a detection step returned (:meth:`ObjectInfo.as_dict` each) with
    :func:`cdclab.files.loading.load_all`. ``crash_after_files >= 0`` simulates a worker dying after that
    many files: those stay loaded (committed one by one), then ``RuntimeError``."""
    store, objs = ObjectStore(), [ObjectInfo.from_dict(f) for f in files]
    if crash_after_files >= 0:
        loading.load_all(store, pipeline, objs[:crash_after_files], target, quarantine_bucket, max_attempts)
        raise RuntimeError(f"simulated crash after {crash_after_files} file(s)")
    return loading.load_all(store, pipeline, objs, target, quarantine_bucket, max_attempts)


def detect_and_load(
    pipeline: str, bucket: str, prefix: str, pattern: str, target: str, quarantine_bucket: str
) -> dict[str, Any]:
    """71_04_05's load: target, detection (default lag and attempts), then every pending file."""
    store = ObjectStore()
    prepare_target(target)
    _, todo = detect_pending(store, pipeline, bucket, prefix, pattern)
    return loading.load_all(store, pipeline, [r.obj for r in todo], target, quarantine_bucket)


def load_pending(pipeline: str, target: str, quarantine_bucket: str, max_attempts: int) -> dict[str, Any]:
    """Read the pending data files (one ledger transaction), then load them."""
    with transaction(WAREHOUSE) as cur:
        todo = [r.obj for r in state.pending(cur, pipeline, max_attempts=max_attempts)]
    return loading.load_all(ObjectStore(), pipeline, todo, target, quarantine_bucket, max_attempts)


# ---- producer manifests (71_04_02) ---------------------------------------------------------------------
def register_batches(
    pipeline: str, bucket: str, prefix: str, target: str, quarantine_bucket: str
) -> dict[str, list[str]]:
    """New ``_manifest.json`` objects -> ledger (kind ``manifest``, one transaction); then each pending
    manifest registers its files in its own transaction (an invalid one is quarantined and its landing
    object deleted after the commit). Returns the manifest keys by outcome (``registered``, ``waiting``,
    ``quarantined``)."""
    store = ObjectStore()
    prepare_target(target)
    listed = store.list_objects(bucket, prefix, f"*/{manifest.MANIFEST_NAME}")
    with transaction(WAREHOUSE) as cur:
        state.register(cur, pipeline, listed, kind="manifest")
        todo = state.pending(cur, pipeline, kind="manifest")
    result: dict[str, list[str]] = {}
    for row in todo:
        with transaction(WAREHOUSE) as cur:
            outcome = manifest.register_batch(cur, store, pipeline, row.obj, quarantine_bucket)
        if outcome == "quarantined":
            archive.delete_source(store, row.obj)
        result.setdefault(outcome, []).append(row.key)
    return result


def request_reprocess(pipeline: str, keys: list[str] | None, batch_id: str | None) -> list[str]:
    """Put the named files (or the batch's) back to ``discovered`` (one transaction); their keys."""
    with transaction(WAREHOUSE) as cur:
        reset = state.reset_for_reprocess(cur, pipeline, keys=keys, batch_id=batch_id)
    return [r.key for r in reset]


def write_receipts(pipeline: str, receipts_bucket: str) -> list[str]:
    """A receipt for each batch that just became complete (one transaction)."""
    with transaction(WAREHOUSE) as cur:
        return manifest.complete_batches(cur, ObjectStore(), pipeline, receipts_bucket)


# ---- chunking (71_04_04) -------------------------------------------------------------------------------
def chunk_table_of(target: str, chunk_table: str = "") -> str:
    """The chunk staging table: ``chunk_table`` when given, else ``<target>_chunks``."""
    return chunk_table or target + "_chunks"


@dataclass(frozen=True)
class FilePlan:
    """One pending file cut into record-aligned chunks (registered in ``state.file_chunks``)."""

    obj: ObjectInfo
    data_start: int
    chunks: list[chunking.Chunk]

    @property
    def summary(self) -> str:
        return f"{self.obj.uri}: {self.obj.size} bytes -> {len(self.chunks)} chunk(s) from byte {self.data_start}"

    def items(self) -> list[dict[str, Any]]:
        """One JSON-safe item per chunk for ``load_chunk.expand(item=...)``; each carries its file."""
        return [
            {"obj": self.obj.as_dict(), "data_start": self.data_start, **c.as_dict()} for c in self.chunks
        ]


def plan_chunked_files(
    pipeline: str,
    bucket: str,
    prefix: str,
    pattern: str,
    target: str,
    chunk_table: str,
    chunk_bytes: int,
) -> list[FilePlan]:
    """Target and chunk table (one transaction), detection (one ledger transaction), then each pending
    file is planned with Range GET probes and its chunks registered in its own transaction."""
    store = ObjectStore()
    with transaction(WAREHOUSE) as cur:
        loading.ensure_target(cur, target)
        chunking.ensure_chunk_table(cur, chunk_table)
    _, todo = detect_pending(store, pipeline, bucket, prefix, pattern)
    plans: list[FilePlan] = []
    for obj in (r.obj for r in todo):
        data_start, planned = chunking.plan_object(store, obj, chunk_bytes)
        with transaction(WAREHOUSE) as cur:
            chunking.register_chunks(cur, pipeline, obj, planned)
        plans.append(FilePlan(obj, data_start, planned))
    return plans


def load_chunk_item(
    pipeline: str, item: dict[str, Any], chunk_table: str, fail_before_commit: bool = False
) -> dict[str, Any]:
    """Load one mapped chunk item (:meth:`FilePlan.items`) with :func:`cdclab.files.chunking.load_chunk`."""
    chunk = chunking.Chunk(item["chunk_no"], item["start"], item["end"])
    return chunking.load_chunk(
        ObjectStore(),
        pipeline,
        ObjectInfo.from_dict(item["obj"]),
        chunk,
        chunk_table,
        fail_before_commit=fail_before_commit,
    )


def files_of(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One chunk item per file (the last one planned for its key), in plan order."""
    return list({c["obj"]["key"]: c for c in items}.values())


def assemble_files(
    pipeline: str, items: list[dict[str, Any]], target: str, chunk_table: str, quarantine_bucket: str
) -> list[dict[str, Any]]:
    """Assemble each planned file in its own transaction; a quarantined file's landing object is
    deleted after that commit. Returns :func:`cdclab.files.chunking.assemble`'s result per file."""
    store, out = ObjectStore(), []
    for f in files_of(items):
        obj = ObjectInfo.from_dict(f["obj"])
        with transaction(WAREHOUSE) as cur:
            result = chunking.assemble(
                cur, store, pipeline, obj, f["data_start"], target, chunk_table, quarantine_bucket
            )
        if result["status"] == "quarantined":
            archive.delete_source(store, obj)
        out.append(result)
    return out


# ---- archiving (71_04_05) ------------------------------------------------------------------------------
def archive_loaded(pipeline: str, day: datetime, archive_bucket: str) -> list[str]:
    """Archive every ``loaded`` file under ``day`` (the run's logical date): one transaction per file
    (copy, verify, audit, mark ``archived``), and the landing object deleted only after it committed."""
    store, moved = ObjectStore(), []
    with transaction(WAREHOUSE) as cur:
        loaded = state.rows(cur, pipeline, status="loaded")
    for row in loaded:
        with transaction(WAREHOUSE) as cur:
            moved.append(archive.archive(cur, store, pipeline, row.obj, day, archive_bucket))
        archive.delete_source(store, row.obj)  # only after the archive row is committed
    return moved


def expire_archives(pipeline: str, logical_date: datetime, retention: timedelta) -> list[str]:
    """:func:`cdclab.files.archive.expire_archives` in one transaction; the expired archive keys."""
    with transaction(WAREHOUSE) as cur:
        return archive.expire_archives(cur, ObjectStore(), pipeline, logical_date, retention)


# ---- rotating logs (71_09_02) --------------------------------------------------------------------------
def ingest_log(pipeline: str, log: Path, target: str) -> dict[str, Any]:
    """Tables (one transaction), then the new complete lines and the cursor (one transaction)."""
    with transaction(WAREHOUSE) as cur:
        logs.ensure_tables(cur, target)
    with transaction(WAREHOUSE) as cur:
        return logs.ingest(cur, pipeline, log, target)
