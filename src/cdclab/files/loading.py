"""Loading one file into a target table exactly once: lock the manifest row, parse, verify, replace the
file's rows, mark it loaded — one warehouse transaction.

Vocabulary:
- *target*: a ``schema.table`` of partner events (:data:`TARGET_DDL`); its primary key is
  ``(source_bucket, source_key, source_offset)``, so a row is tied to the byte where its record starts.
- *replace by file*: loading deletes the file's previous rows and inserts the new ones, which makes a
  reprocess (or a retry after a crash) idempotent.
- :class:`Outcome`: ``loaded``, ``quarantined``, ``skipped`` (finished or locked by another loader),
  ``failed`` (operational error, retried by the next run) or ``exhausted`` (its last attempt failed, or the
  object changed after it was planned: not retried, see :mod:`cdclab.files.state`); ``path`` says which
  parser loaded it.
- *mode* (:data:`MODES`): ``auto`` tries the COPY fast path (:mod:`cdclab.files.fastload`) inside a
  savepoint and falls back to the strict row-by-row path for that file when the fast path declines;
  ``strict`` always parses in Python. Both end in the same rows, manifest row and quarantine.
- *pinned read*: the file is read with ``If-Match`` on the ETag registered in the manifest ledger (both
  paths); a newer upload under the same key raises :class:`~cdclab.files.errors.ObjectChanged` instead
  of being loaded under the old version's row (its rows would carry the wrong ETag and checksum).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import WAREHOUSE, ident, transaction
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.files import archive, fastload, state
from cdclab.files.errors import ChecksumMismatch, CorruptFile, FilesExhausted, ObjectChanged, RowCountMismatch
from cdclab.files.records import Record, parse_object
from cdclab.files.store import ObjectInfo, ObjectStore

log = logging.getLogger(__name__)

Mode = Literal["auto", "strict"]
MODES: tuple[Mode, ...] = ("auto", "strict")

TARGET_DDL = """
CREATE TABLE IF NOT EXISTS {target} (
    source_bucket text          NOT NULL,
    source_key    text          NOT NULL,
    source_offset bigint        NOT NULL,
    source_etag   text          NOT NULL,
    event_id      bigint        NOT NULL,
    customer_id   bigint        NOT NULL,
    sku           text          NOT NULL,
    qty           integer       NOT NULL,
    amount        numeric(12,2) NOT NULL,
    event_time    timestamptz   NOT NULL,
    loaded_at     timestamptz   NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source_bucket, source_key, source_offset)
)
"""


def ensure_target(cur: Any, target: str) -> None:
    state.ensure_tables(cur)
    ensure_ddl(cur, target, sql.SQL(TARGET_DDL).format(target=ident(target)))


def insert_records(cur: Any, target: str, obj: ObjectInfo, records: list[Record]) -> None:
    q = sql.SQL(
        "INSERT INTO {t} (source_bucket, source_key, source_offset, source_etag, event_id, customer_id,"
        " sku, qty, amount, event_time) VALUES %s"
    ).format(t=ident(target))
    execute_values(
        cur,
        q.as_string(cur),
        [(obj.bucket, obj.key, r.offset, obj.etag, *r.values()) for r in records],
        page_size=1000,
    )


def delete_file_rows(cur: Any, target: str, obj: ObjectInfo) -> None:
    cur.execute(
        sql.SQL("DELETE FROM {t} WHERE source_bucket = %s AND source_key = %s").format(t=ident(target)),
        (obj.bucket, obj.key),
    )


def verify(obj: ObjectInfo, raw: bytes, records: list[Record], row: state.ManifestRow) -> str:
    """sha256 of the raw object; raises when the producer's expectations disagree."""
    digest = hashlib.sha256(raw).hexdigest()
    if row.expected_sha256 and row.expected_sha256 != digest:
        raise ChecksumMismatch(
            f"{obj.uri}: sha256 {digest} != manifest {row.expected_sha256}; "
            "the upload is incomplete or the manifest is stale"
        )
    if row.expected_rows is not None and row.expected_rows != len(records):
        raise RowCountMismatch(
            f"{obj.uri}: {len(records)} rows != manifest {row.expected_rows}; "
            "the producer must re-send file and manifest"
        )
    return digest


@dataclass(frozen=True)
class Outcome:
    obj: ObjectInfo
    status: Literal["loaded", "quarantined", "skipped", "failed", "exhausted"]
    rows: int = 0
    reason: str | None = None
    path: Literal["fast", "strict", ""] = ""


def _try_fast(
    cur: Any, store: ObjectStore, obj: ObjectInfo, target: str, row: state.ManifestRow
) -> int | None:
    """Rows loaded by the COPY fast path in a savepoint, or ``None`` (rolled back) when it declines."""
    cur.execute("SAVEPOINT fast_load")
    try:
        delete_file_rows(cur, target, obj)
        res = fastload.load(cur, store, obj, target)
        if row.expected_sha256 and row.expected_sha256 != res.sha256:
            raise fastload.Declined("sha256 differs from the producer manifest")
        if row.expected_rows is not None and row.expected_rows != res.rows:
            raise fastload.Declined("row count differs from the producer manifest")
    except Exception as exc:  # any doubt goes to the strict path, which decides
        cur.execute("ROLLBACK TO SAVEPOINT fast_load")
        log.info("fast path declined %s (%s: %s); loading it strictly", obj.uri, type(exc).__name__, exc)
        return None
    cur.execute("RELEASE SAVEPOINT fast_load")
    state.set_status(
        cur, pipeline=row.pipeline, obj=obj, status="loaded", sha256=res.sha256, row_count=res.rows
    )
    return res.rows


def load_file(
    store: ObjectStore,
    pipeline: str,
    obj: ObjectInfo,
    target: str,
    quarantine_bucket: str = "quarantine",
    max_attempts: int = 3,
    conn_id: str = WAREHOUSE,
    mode: Mode = "auto",
) -> Outcome:
    """Load one registered object (see module docstring). Never raises for corrupt input."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {MODES}")
    quarantined = False
    try:
        with transaction(conn_id) as cur:
            row = state.lock_pending(cur, pipeline, obj, max_attempts)
            if row is None:
                return Outcome(obj, "skipped")
            if mode == "auto":
                n = _try_fast(cur, store, obj, target, row)
                if n is not None:
                    log.info("loaded %s: %d rows into %s (COPY path)", obj.uri, n, target)
                    return Outcome(obj, "loaded", rows=n, path="fast")
            raw = store.get(obj.bucket, obj.key, etag=obj.etag)  # the planned version, or ObjectChanged
            try:
                records = parse_object(obj.key, raw)
                digest = verify(obj, raw, records, row)
            except CorruptFile as exc:
                archive.quarantine(cur, store, pipeline, obj, exc, quarantine_bucket)
                quarantined = True
                log.warning("quarantined %s: %s", obj.uri, exc)
                return Outcome(obj, "quarantined", reason=f"{exc.reason}: {exc}", path="strict")
            delete_file_rows(cur, target, obj)
            insert_records(cur, target, obj, records)
            state.set_status(cur, pipeline, obj, "loaded", sha256=digest, row_count=len(records))
            log.info("loaded %s: %d rows into %s", obj.uri, len(records), target)
            return Outcome(obj, "loaded", rows=len(records), path="strict")
    except ObjectChanged as exc:
        log.error("%s", exc)
        with transaction(conn_id) as cur:  # no attempt can load the planned bytes any more
            state.record_failure(cur, pipeline, obj, f"ObjectChanged: {exc}", max_attempts=0)
        return Outcome(obj, "exhausted", reason=f"ObjectChanged: {exc}")
    except Exception as exc:
        log.exception("loading %s failed", obj.uri)
        with transaction(conn_id) as cur:
            status = state.record_failure(cur, pipeline, obj, f"{type(exc).__name__}: {exc}", max_attempts)
        return Outcome(obj, "exhausted" if status == "exhausted" else "failed", reason=str(exc))
    finally:
        if quarantined:
            archive.delete_source(store, obj)


class FilesFailed(Exception):
    """Some files failed with operational errors (not corrupt input); they stay ``failed`` in
    ``state.file_manifest`` with the error and are retried by the next run until ``max_attempts``."""


def exhausted_message(pipeline: str, rows: list[state.ManifestRow]) -> str:
    listed = "; ".join(
        f"s3://{r.bucket}/{r.key} (etag {r.etag}, {r.attempts} attempt(s)): {r.error}" for r in rows
    )
    return (
        f"{len(rows)} file(s) of pipeline {pipeline} are exhausted and no longer retried: {listed}. "
        "They are the rows of state.file_manifest with status 'exhausted' (error: the last failure). Fix the cause, then reprocess them (reset_for_reprocess in cdclab.files.state: "
        "attempts start from 0); a version replaced in the bucket (ObjectChanged) is superseded by the new "
        "version's own row: delete its ledger row once that one is loaded"
    )


def load_all(
    store: ObjectStore,
    pipeline: str,
    objects: list[ObjectInfo],
    target: str,
    quarantine_bucket: str = "quarantine",
    max_attempts: int = 3,
    conn_id: str = WAREHOUSE,
    mode: Mode = "auto",
) -> dict[str, Any]:
    """Load each object in turn; corrupt ones go to quarantine and the others continue. At the end it
    raises :class:`ObjectChanged` if an object changed after it was planned, else
    :class:`FilesExhausted` if the pipeline has exhausted files (this run's or earlier ones: they stay
    loud until someone acts), else :class:`FilesFailed` if any had an operational error."""
    with transaction(conn_id) as cur:
        state.sweep_exhausted(cur, pipeline, max_attempts)
    outcomes = [
        load_file(store, pipeline, o, target, quarantine_bucket, max_attempts, conn_id, mode=mode)
        for o in objects
    ]
    summary: dict[str, Any] = {
        s: [o.obj.key for o in outcomes if o.status == s]
        for s in ("loaded", "quarantined", "skipped", "failed", "exhausted")
    }
    summary["rows"] = sum(o.rows for o in outcomes)
    changed = [o for o in outcomes if str(o.reason or "").startswith("ObjectChanged")]
    if changed:
        raise ObjectChanged(
            f"{len(changed)} file(s) changed after they were planned, nothing of them was loaded: "
            + "; ".join(f"{o.obj.uri} (planned etag {o.obj.etag}): {o.reason}" for o in changed)
        )
    with transaction(conn_id) as cur:
        parked = state.exhausted(cur, pipeline)
    if parked:
        raise FilesExhausted(exhausted_message(pipeline, parked))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise FilesFailed(
            f"{len(failed)} file(s) failed: "
            + "; ".join(f"{o.obj.uri}: {o.reason}" for o in failed)
            + " — see state.file_manifest.error; the next run retries them"
        )
    return summary
