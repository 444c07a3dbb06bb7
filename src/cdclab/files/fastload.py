"""The COPY fast path of a file load: stream the object into ``COPY ... FROM STDIN``, validate and cast in
one ``INSERT ... SELECT``; whenever it cannot prove the result equals the strict parser's, it declines and
the caller runs the strict path (:mod:`cdclab.files.records`) for that file.

Vocabulary:
- *staging table*: ``pg_temp.cdclab_file_stage`` (``source_offset bigint`` + six ``text`` columns in the
  file's column order), created per load, dropped at commit; temp tables write no WAL.
- *prefixing*: Python splits the decompressed stream into lines (C-level ``split``/``accumulate``, no
  per-line Python code) and sends ``<offset>,<line>`` to COPY, so every row keeps the byte offset of its
  line, the same natural key the strict and the chunked paths compute. Empty lines are skipped like the
  strict parser skips them; a trailing ``\\r`` is dropped (CRLF files).
- *validating insert*: each text value is cast only when it has a shape both parsers read identically
  (:data:`TS_RE`; integer and decimal shapes on PostgreSQL 16+, whose input functions also take hex and
  ``_``); anything else becomes NULL and the NOT NULL target rejects the statement.
- *declining* (:class:`Declined`): not CSV, a header the strict parser would refuse, a quoted field that
  PostgreSQL's CSV parser could read differently from Python's ``csv`` (:data:`LINE_RE`), a COPY error
  (wrong column count, bad UTF-8, NUL bytes, whitespace-only lines), a value outside the accepted shapes,
  a row-count or sha256 mismatch with the producer manifest, a truncated gzip stream. The caller rolls back
  to its savepoint and the strict path decides: load, quarantine with the strict reason, or fail. So the
  fast path only ever produces end states the strict path would produce; it never quarantines by itself.

The fast path accepts a subset of what the strict path accepts and yields the same rows for it; a file
outside that subset costs one aborted COPY before the strict load.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.files.records import FIELDS, file_format, header_of, is_compressed
from cdclab.files.store import ObjectInfo

STAGE = "cdclab_file_stage"
READ_BYTES = 1 << 20

_FIELD = rb'(?:[^",\r]*|"(?:[^"\r]|"")*")'
LINE_RE = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*")
"""A CSV line on which PostgreSQL's and Python's CSV readers agree: every field unquoted without quotes,
or fully quoted with doubled inner quotes. Only lines that contain a ``"`` are checked."""

TS_RE = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-[0-3][0-9][T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""ISO 8601 with seconds and an explicit offset: read alike by ``datetime.fromisoformat`` and
``timestamptz`` (no leap second, no 24:00, at most microseconds; year 0 and impossible days make the cast
raise, which declines)."""
TS_LAST_RE = re.compile(rb"," + TS_RE[1:-1].encode() + rb"\r?$", re.M)
"""A line whose last field has the :data:`TS_RE` shape; counted per block in Python while PostgreSQL runs the
COPY, so the insert can skip its per-row regex when ``event_time`` is the last column and every line has
it."""
INT_RE = r"^\s*[+-]?[0-9]+\s*$"
NUM_RE = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"


class Declined(Exception):
    """The fast path cannot prove its result equals the strict path's; the message says why."""


@dataclass(frozen=True)
class FastResult:
    rows: int
    sha256: str


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Decompress gzip members one after another; a truncated or corrupt stream declines."""
    d = zlib.decompressobj(wbits=31)
    fed = False
    try:
        for chunk in chunks:
            while chunk:
                fed = True
                out = d.decompress(chunk)
                if out:
                    yield out
                if d.eof:
                    chunk, d, fed = d.unused_data, zlib.decompressobj(wbits=31), False
                else:
                    chunk = b""
    except zlib.error as exc:
        raise Declined(f"gzip stream is corrupt ({exc})") from None
    if fed and not d.eof:
        raise Declined("gzip stream is truncated")


class CopySource:
    """A file-like ``read()`` for ``copy_expert``: the object's records as ``offset,line`` CSV lines.

    Hashes the raw (stored) bytes as they pass; ``header`` and ``lines`` are known once drained."""

    def __init__(
        self, key: str, raw: Iterable[bytes], *, base: int = 0, header: list[str] | None = None
    ) -> None:
        """``raw`` yields the stored bytes; for a chunk (a byte range of an uncompressed file) ``base`` is
        its first byte's offset and ``header`` the file's header, read once."""
        self.key = key
        self.sha = hashlib.sha256()
        self.header = header
        self.base = base
        self.lines = 0
        self.ts_checked = 0
        """Lines whose last field has the timestamp shape (counted when ``event_time`` is the last column)."""
        self._raw = iter(raw)

        def hashed() -> Iterator[bytes]:
            for c in self._raw:
                self.sha.update(c)
                yield c

        stream = hashed()
        self._data = _gunzip(stream) if is_compressed(key) else stream
        self._out = self._generate()

    def _generate(self) -> Iterator[bytes]:
        pending = b""
        base = self.base
        for data in self._data:
            pending += data
            if self.header is None:
                nl = pending.find(b"\n")
                if nl < 0:
                    continue
                self._read_header(pending)
                pending, base = pending[nl + 1 :], nl + 1
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue
            block, pending = pending[:cut], pending[cut + 1 :]
            yield self._lines(block, base)
            base += cut + 1
        if self.header is None:
            if not pending.strip():
                raise Declined("empty object")
            self._read_header(pending)
            return
        if pending:
            yield self._lines(pending, base)

    def _read_header(self, data: bytes) -> None:
        try:
            header, _ = header_of(data)
        except UnicodeDecodeError as exc:
            raise Declined(f"header is not UTF-8 ({exc})") from None
        if sorted(header) != sorted(FIELDS):
            raise Declined(f"CSV header {header}")
        self.header = header

    def _lines(self, block: bytes, base: int) -> bytes:
        lines = block.split(b"\n")
        offsets = itertools.accumulate(map((1).__add__, map(len, lines)), initial=base)
        if b"\r" in block:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if b'"' in block:
            for line in lines:
                if b'"' in line and LINE_RE.fullmatch(line) is None:
                    raise Declined(f"quoting at byte {base}.. may parse differently")
        out = list(map(b"%d,%s".__mod__, itertools.compress(zip(offsets, lines, strict=False), lines)))
        if self.header is not None and self.header[-1] == "event_time":
            self.ts_checked += len(TS_LAST_RE.findall(block))
        self.lines += len(out)
        return b"\n".join(out) + b"\n" if out else b""

    def read(self, size: int = -1) -> bytes:
        for piece in self._out:
            if piece:
                return piece
        return b""

    def readline(self, size: int = -1) -> bytes:  # psycopg2 checks for it on file objects
        return self.read(size)

    def drained(self) -> bool:
        return next(self._out, None) is None


def _cast(field: str, col: sql.Composable, guard_numbers: bool, ts_checked: bool = False) -> sql.Composable:
    """The validating expression for one field read from staging column ``col``: NULL when the text has
    a shape the two parsers might read differently (the NOT NULL target then rejects the statement)."""
    cast, regex = {
        "event_id": ("bigint", INT_RE),
        "customer_id": ("bigint", INT_RE),
        "qty": ("integer", INT_RE),
        "amount": ("numeric(12,2)", NUM_RE),
        "event_time": ("timestamptz", TS_RE),
    }.get(field, ("text", ""))
    if field == "sku":
        return sql.SQL("NULLIF({c}, '')").format(c=col)
    if field == "event_time" and ts_checked:
        return sql.SQL("{c}::timestamptz").format(c=col)
    if field == "event_time" or guard_numbers:
        return sql.SQL("CASE WHEN {c} ~ {r} THEN {c}::{t} END").format(
            c=col, r=sql.Literal(regex), t=sql.SQL(cast)
        )
    return sql.SQL("{c}::{t}").format(c=col, t=sql.SQL(cast))


def load(
    cur: Any,
    store: Any,
    obj: ObjectInfo,
    target: str,
    *,
    byte_range: tuple[int, int] | None = None,
    header: list[str] | None = None,
) -> FastResult:
    """Stream ``obj`` (or the chunk ``byte_range`` of it, whose file ``header`` the caller read) into the
    staging table and insert its rows into ``target`` (whose rows of this file or chunk the caller has
    deleted) in ``cur``'s transaction; raises :class:`Declined` or a database error when the strict path
    must decide. Run it inside a savepoint."""
    if file_format(obj.key) != "csv":
        raise Declined("only CSV takes the COPY path")
    if byte_range is None:
        src = CopySource(obj.key, store.stream(obj.bucket, obj.key, READ_BYTES, etag=obj.etag))
    else:
        if is_compressed(obj.key) or header is None:
            raise Declined("a byte range needs an uncompressed CSV and its header")
        start, end = byte_range
        src = CopySource(
            obj.key,
            [store.get_range(obj.bucket, obj.key, start, end, etag=obj.etag)],
            base=start,
            header=header,
        )
    cols = [sql.Identifier(f"f{i}") for i in range(len(FIELDS))]
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {s} (source_offset bigint, {c}) ON COMMIT DROP").format(
            s=sql.Identifier(STAGE), c=sql.SQL(", ").join(sql.SQL("{} text").format(c) for c in cols)
        )
    )
    cur.copy_expert(
        sql.SQL("COPY {s} FROM STDIN WITH (FORMAT csv)").format(s=sql.Identifier(STAGE)).as_string(cur),
        src,
        size=READ_BYTES,
    )
    if not src.drained() or src.header is None:
        raise Declined("COPY ended before the stream did")
    position = {name: sql.Identifier(f"f{i}") for i, name in enumerate(src.header)}
    cur.execute("SHOW server_version_num")
    guard = int(cur.fetchone()[0]) >= 160000  # 16+ also reads 0x1F and 1_000, Python's int() does not
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} (source_bucket, source_key, source_offset, source_etag, {fields})"
            " SELECT %s, %s, source_offset, %s, {values} FROM {s}"
        ).format(
            t=ident(target),
            fields=sql.SQL(", ").join(sql.Identifier(f) for f in FIELDS),
            values=sql.SQL(", ").join(
                _cast(f, position[f], guard, src.ts_checked == src.lines) for f in FIELDS
            ),
            s=sql.Identifier(STAGE),
        ),
        (obj.bucket, obj.key, obj.etag),
    )
    if cur.rowcount != src.lines:
        raise Declined(f"{cur.rowcount} rows inserted from {src.lines} lines")
    cur.execute(sql.SQL("DROP TABLE {s}").format(s=sql.Identifier(STAGE)))
    return FastResult(rows=src.lines, sha256=src.sha.hexdigest())
