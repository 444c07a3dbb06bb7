"""Large-file chunking: split one object into byte ranges aligned to record boundaries, load the ranges
in parallel, track each chunk, assemble the result atomically.

Vocabulary:
- *data start*: the offset of the first record (after the CSV header line; 0 for JSON lines).
- *nominal boundary*: ``data_start + k * chunk_bytes``; it usually falls inside a record.
- *aligned boundary*: the first record start at or after a nominal boundary. An offset ``o`` starts a
  record when ``o == data_start`` or byte ``o - 1`` is ``\\n``; finding it costs one small Range GET
  (``probe`` bytes from ``o - 1``). Every record then belongs to exactly one chunk: the one its first
  byte falls in. Records must not contain raw newlines (JSON lines, CSV without quoted line breaks).
- *chunk*: ``[start, end)`` between two consecutive aligned boundaries, read with one Range GET
  (``bytes=start-(end-1)``) and parsed with ``base=start`` so each record keeps its file offset.
- *not splittable*: a gzip object cannot be entered in the middle; it becomes a single *whole* chunk.
- *chunk tracking*: ``state.file_chunks`` holds one row per chunk (range, status, rows, attempts, error).
- *result assembly*: chunks land in a chunk staging table; when every chunk is ``loaded`` and the ranges
  cover ``[data_start, size)`` without gap or overlap, one transaction moves the file's rows into the
  target and marks the file ``loaded``: readers never see half a file.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cdclab.common.ddl import ensure as ensure_ddl

RangeReader = Callable[[int, int], bytes]
"""``read(start, end)`` returns bytes ``[start, end)`` of the object (an S3 Range GET)."""

DEFAULT_PROBE = 64 * 1024


@dataclass(frozen=True)
class Chunk:
    chunk_no: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def nominal_boundaries(data_start: int, size: int, chunk_bytes: int) -> list[int]:
    if chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    return list(range(data_start, size, chunk_bytes))


def next_record_start(
    read: RangeReader, offset: int, size: int, data_start: int = 0, probe: int = DEFAULT_PROBE
) -> int:
    """The first offset ``>= offset`` at which a record starts (``size`` if none)."""
    if offset <= data_start:
        return data_start
    if offset >= size:
        return size
    pos = offset - 1
    while pos < size:
        buf = read(pos, min(pos + probe, size))
        if not buf:
            break
        i = buf.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(buf)
    return size


def data_start_of(read: RangeReader, size: int, has_header: bool, probe: int = DEFAULT_PROBE) -> int:
    """Offset of the first record: after the header line for CSV, else 0."""
    return next_record_start(read, 1, size, 0, probe) if has_header and size else 0


def plan_chunks(
    read: RangeReader, size: int, chunk_bytes: int, data_start: int = 0, probe: int = DEFAULT_PROBE
) -> list[Chunk]:
    """Chunks covering ``[data_start, size)``, each starting on a record boundary."""
    if size <= data_start:
        return []
    bounds = [
        next_record_start(read, b, size, data_start, probe)
        for b in nominal_boundaries(data_start, size, chunk_bytes)
    ]
    edges = sorted({*bounds, size})
    return [Chunk(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(edges)) if a < b]


def check_coverage(chunks: list[tuple[int, int]], data_start: int, size: int) -> None:
    """Raise ``ValueError`` unless the ranges tile ``[data_start, size)`` exactly."""
    pos = data_start
    for start, end in sorted(chunks):
        if start != pos:
            kind = "gap" if start > pos else "overlap"
            raise ValueError(f"chunk {kind} at byte {pos}..{start}")
        pos = end
    if pos != size:
        raise ValueError(f"chunks end at byte {pos}, file size is {size}")


# ---- chunk tracking and result assembly (warehouse) -------------------------------------------------
def plan_object(
    store: Any, obj: Any, chunk_bytes: int, probe: int = DEFAULT_PROBE
) -> tuple[int, list[Chunk]]:
    """``(data_start, chunks)`` for one object; a gzip object is one whole chunk (not splittable)."""
    from cdclab.files.records import file_format, is_compressed

    if is_compressed(obj.key):
        return 0, [Chunk(0, 0, obj.size)]

    def read(a: int, b: int) -> bytes:
        return bytes(store.get_range(obj.bucket, obj.key, a, b, etag=obj.etag))

    start = data_start_of(read, obj.size, file_format(obj.key) == "csv", probe)
    return start, plan_chunks(read, obj.size, chunk_bytes, start, probe)


def register_chunks(cur: Any, pipeline: str, obj: Any, chunks: list[Chunk]) -> None:
    """Insert chunk rows (``pending``); a re-plan of the same (key, etag) keeps existing rows."""
    for c in chunks:
        cur.execute(
            "INSERT INTO state.file_chunks (pipeline, bucket, key, etag, chunk_no, start_byte, end_byte)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (pipeline, obj.bucket, obj.key, obj.etag, c.chunk_no, c.start, c.end),
        )


def chunk_rows(cur: Any, pipeline: str, obj: Any) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT chunk_no, start_byte, end_byte, status, row_count, attempts, error FROM state.file_chunks"
        " WHERE pipeline = %s AND bucket = %s AND key = %s AND etag = %s ORDER BY chunk_no",
        (pipeline, obj.bucket, obj.key, obj.etag),
    )
    cols = ("chunk_no", "start", "end", "status", "rows", "attempts", "error")
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def ensure_chunk_table(cur: Any, chunk_table: str) -> None:
    from psycopg2 import sql

    from cdclab.common.db import ident
    from cdclab.files.loading import TARGET_DDL

    ensure_ddl(cur, chunk_table, sql.SQL(TARGET_DDL).format(target=ident(chunk_table)))


def _delete_chunk_rows(cur: Any, obj: Any, chunk: Chunk, chunk_table: str) -> None:
    from psycopg2 import sql

    from cdclab.common.db import ident

    cur.execute(
        sql.SQL(
            "DELETE FROM {t} WHERE source_bucket = %s AND source_key = %s AND source_etag = %s"
            " AND source_offset >= %s AND source_offset < %s"
        ).format(t=ident(chunk_table)),
        (obj.bucket, obj.key, obj.etag, chunk.start, chunk.end),
    )


def _fast_chunk(
    cur: Any, store: Any, obj: Any, chunk: Chunk, chunk_table: str, header: list[str] | None
) -> int | None:
    """Rows of the chunk loaded by the COPY path (:mod:`cdclab.files.fastload`) in a savepoint, or ``None``
    when it declines (the caller then parses the chunk strictly and reports what the strict parser says)."""
    from cdclab.files import fastload

    cur.execute("SAVEPOINT fast_chunk")
    try:
        _delete_chunk_rows(cur, obj, chunk, chunk_table)
        res = fastload.load(cur, store, obj, chunk_table, byte_range=(chunk.start, chunk.end), header=header)
    except Exception:  # any doubt goes to the strict parser, which decides
        cur.execute("ROLLBACK TO SAVEPOINT fast_chunk")
        return None
    cur.execute("RELEASE SAVEPOINT fast_chunk")
    return res.rows


def load_chunk(
    store: Any,
    pipeline: str,
    obj: Any,
    chunk: Chunk,
    chunk_table: str,
    fail_before_commit: bool = False,
    conn_id: str = "warehouse",
) -> dict[str, Any]:
    """Read one chunk with a Range GET, parse it and replace its rows in the chunk table; the chunk row
    becomes ``loaded`` in the same transaction. A loaded chunk is skipped (a retry redoes only failed
    ones). An uncompressed CSV chunk goes through the COPY path (:mod:`cdclab.files.fastload`) unless it
    declines; then, and for other formats, the strict parser reads it. Corrupt content marks the chunk
    ``failed`` with a ``corrupt:`` error and does not raise, so the other chunks finish and assembly
    quarantines the file."""
    from cdclab.common.db import transaction
    from cdclab.files.errors import CorruptFile
    from cdclab.files.loading import insert_records
    from cdclab.files.records import decompress, file_format, header_of, is_compressed, parse

    with transaction(conn_id) as cur:  # count the attempt even if this one dies
        cur.execute(
            "UPDATE state.file_chunks SET attempts = attempts + 1, updated_at = clock_timestamp()"
            " WHERE pipeline = %s AND bucket = %s AND key = %s AND etag = %s AND chunk_no = %s"
            " AND status <> 'loaded' RETURNING attempts",
            (pipeline, obj.bucket, obj.key, obj.etag, chunk.chunk_no),
        )
        if cur.fetchone() is None:
            return {"chunk_no": chunk.chunk_no, "status": "skipped"}
    with transaction(conn_id) as cur:
        where = (pipeline, obj.bucket, obj.key, obj.etag, chunk.chunk_no)
        cur.execute(
            "SELECT status FROM state.file_chunks WHERE pipeline = %s AND bucket = %s AND key = %s"
            " AND etag = %s AND chunk_no = %s FOR UPDATE",
            where,
        )
        fmt = file_format(obj.key)
        records: list[Any] | None = None
        n: int | None = None
        try:
            if is_compressed(obj.key):
                data = decompress(obj.key, store.get(obj.bucket, obj.key, etag=obj.etag))
                records = parse(obj.key, data, fmt)
            else:
                header = (
                    header_of(
                        store.get_range(obj.bucket, obj.key, 0, min(obj.size, DEFAULT_PROBE), etag=obj.etag)
                    )[0]
                    if fmt == "csv"
                    else None
                )
                if fmt == "csv":
                    n = _fast_chunk(cur, store, obj, chunk, chunk_table, header)
                if n is None:
                    data = store.get_range(obj.bucket, obj.key, chunk.start, chunk.end, etag=obj.etag)
                    records = parse(obj.key, data, fmt, base=chunk.start, header=header)
        except CorruptFile as exc:
            cur.execute(
                "UPDATE state.file_chunks SET status = 'failed', error = %s WHERE pipeline = %s AND bucket = %s"
                " AND key = %s AND etag = %s AND chunk_no = %s",
                (f"corrupt:{exc.reason}:{exc.offset}: {exc}", *where),
            )
            return {"chunk_no": chunk.chunk_no, "status": "corrupt", "error": str(exc)}
        if records is not None:  # the strict parser's records (the COPY path has inserted its rows)
            _delete_chunk_rows(cur, obj, chunk, chunk_table)
            insert_records(cur, chunk_table, obj, records)
            n = len(records)
        if fail_before_commit:
            raise RuntimeError(f"simulated failure in chunk {chunk.chunk_no} after inserting, before commit")
        cur.execute(
            "UPDATE state.file_chunks SET status = 'loaded', row_count = %s, error = NULL,"
            " updated_at = clock_timestamp() WHERE pipeline = %s AND bucket = %s AND key = %s AND etag = %s"
            " AND chunk_no = %s",
            (n, *where),
        )
        return {"chunk_no": chunk.chunk_no, "status": "loaded", "rows": n}


def assemble(
    cur: Any,
    store: Any,
    pipeline: str,
    obj: Any,
    data_start: int,
    target: str,
    chunk_table: str,
    quarantine_bucket: str = "quarantine",
) -> dict[str, Any]:
    """Result assembly in ``cur``'s transaction: check every chunk is loaded and the ranges tile the file,
    replace the file's rows in ``target`` from the chunk table, clear the chunk table, mark the file
    ``loaded``. A corrupt chunk quarantines the file instead (caller deletes the source after commit)."""
    from psycopg2 import sql

    from cdclab.common.db import ident
    from cdclab.files import archive, state
    from cdclab.files.errors import BadRecord, ChunkIncomplete, CorruptFile, RowCountMismatch

    row = state.lock_pending(cur, pipeline, obj)
    if row is None:
        return {"key": obj.key, "status": "skipped"}
    chunks = chunk_rows(cur, pipeline, obj)
    corrupt = [c for c in chunks if c["status"] == "failed" and str(c["error"]).startswith("corrupt:")]
    if corrupt:
        _, reason, offset, detail = str(corrupt[0]["error"]).split(":", 3)
        exc: CorruptFile = BadRecord(
            detail.strip(), offset=int(offset) if offset not in ("", "None") else None
        )
        exc.reason = reason
        archive.quarantine(cur, store, pipeline, obj, exc, quarantine_bucket)
        return {"key": obj.key, "status": "quarantined", "reason": reason}
    not_loaded = [c["chunk_no"] for c in chunks if c["status"] != "loaded"]
    if not chunks or not_loaded:
        raise ChunkIncomplete(
            f"{obj.uri}: chunks {not_loaded or 'none'} not loaded; clear the failed "
            "load_chunk task instances to rerun only those chunks"
        )
    check_coverage([(c["start"], c["end"]) for c in chunks], data_start, obj.size)
    total = sum(int(c["rows"]) for c in chunks)
    if row.expected_rows is not None and row.expected_rows != total:
        exc = RowCountMismatch(f"{obj.uri}: chunks hold {total} rows, manifest says {row.expected_rows}")
        archive.quarantine(cur, store, pipeline, obj, exc, quarantine_bucket)
        return {"key": obj.key, "status": "quarantined", "reason": exc.reason}
    t, ct = ident(target), ident(chunk_table)
    cur.execute(
        sql.SQL("DELETE FROM {t} WHERE source_bucket = %s AND source_key = %s").format(t=t),
        (obj.bucket, obj.key),
    )
    cols = sql.SQL(
        "source_bucket, source_key, source_offset, source_etag, event_id, customer_id, sku, qty,"
        " amount, event_time"
    )
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} ({c}) SELECT {c} FROM {ct} WHERE source_bucket = %s AND source_key = %s"
            " AND source_etag = %s"
        ).format(t=t, c=cols, ct=ct),
        (obj.bucket, obj.key, obj.etag),
    )
    if cur.rowcount != total:
        raise ChunkIncomplete(
            f"{obj.uri}: chunk table holds {cur.rowcount} rows, chunk tracking says {total}"
        )
    cur.execute(
        sql.SQL("DELETE FROM {ct} WHERE source_bucket = %s AND source_key = %s").format(ct=ct),
        (obj.bucket, obj.key),
    )
    state.set_status(cur, pipeline, obj, "loaded", row_count=total)
    return {"key": obj.key, "status": "loaded", "rows": total, "chunks": len(chunks)}
