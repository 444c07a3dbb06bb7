"""Partner event records: the lab's file format, parsed and validated line by line.

Vocabulary:
- *partner event*: ``event_id, customer_id, sku, qty, amount, event_time`` — what a partner drops into
  ``landing/`` as CSV (with a header line) or JSON lines, optionally gzip-compressed (``.gz``).
- *record*: one newline-terminated line; :class:`Record` keeps its *source offset* (byte offset of the
  line in the decompressed file), which is the same whether the file is read in one pass or in chunks.
- *format*: ``csv`` or ``jsonl``, derived from the key (``.csv``, ``.csv.gz``, ``.jsonl``, ``.json``...).

Validation is strict: an unknown column, a missing field, a non-integer id, a naive timestamp: the
whole file is refused with :class:`~cdclab.files.errors.BadRecord` naming the byte offset and the field,
so it goes to quarantine instead of loading half a file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from cdclab.files.errors import BadRecord, EmptyFile, TruncatedGzip

FIELDS = ("event_id", "customer_id", "sku", "qty", "amount", "event_time")
Format = Literal["csv", "jsonl"]


@dataclass(frozen=True)
class Record:
    offset: int
    event_id: int
    customer_id: int
    sku: str
    qty: int
    amount: Decimal
    event_time: datetime

    def values(self) -> tuple[Any, ...]:
        return (self.event_id, self.customer_id, self.sku, self.qty, self.amount, self.event_time)


def file_format(key: str) -> Format:
    name = key.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    raise BadRecord(f"{key}: unknown format; name files *.csv, *.jsonl (optionally .gz)")


def is_compressed(key: str) -> bool:
    return key.lower().endswith(".gz")


def decompress(key: str, data: bytes) -> bytes:
    """The file's bytes, gunzipped when the key ends in ``.gz``; empty or truncated input is refused."""
    if not data.strip():
        raise EmptyFile(f"{key}: the object is empty ({len(data)} bytes); the producer must re-send it")
    if not is_compressed(key):
        return data
    try:
        out = gzip.decompress(data)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise TruncatedGzip(
            f"{key}: gzip stream is truncated or corrupt ({exc}); re-upload the file"
        ) from exc
    if not out.strip():
        raise EmptyFile(f"{key}: the gzip member holds no data; the producer must re-send it")
    return out


def _as_int(value: Any, field: str, where: str) -> int:
    if isinstance(value, bool):
        raise BadRecord(f"{where}: {field}={value!r} is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadRecord(f"{where}: {field}={value!r} is not an integer") from None


def to_record(row: dict[str, Any], offset: int, where: str) -> Record:
    missing = [f for f in FIELDS if row.get(f) in (None, "")]
    if missing:
        raise BadRecord(f"{where}: missing field(s) {missing}", offset=offset)
    extra = sorted(set(row) - set(FIELDS))
    if extra:
        raise BadRecord(f"{where}: unknown field(s) {extra}; expected {list(FIELDS)}", offset=offset)
    try:
        amount = Decimal(str(row["amount"]))
    except InvalidOperation:
        raise BadRecord(f"{where}: amount={row['amount']!r} is not a number", offset=offset) from None
    try:
        ts = datetime.fromisoformat(str(row["event_time"]))
    except ValueError:
        raise BadRecord(f"{where}: event_time={row['event_time']!r} is not ISO 8601", offset=offset) from None
    if ts.tzinfo is None:
        raise BadRecord(f"{where}: event_time={row['event_time']!r} has no UTC offset", offset=offset)
    try:
        return Record(
            offset=offset,
            event_id=_as_int(row["event_id"], "event_id", where),
            customer_id=_as_int(row["customer_id"], "customer_id", where),
            sku=str(row["sku"]),
            qty=_as_int(row["qty"], "qty", where),
            amount=amount,
            event_time=ts,
        )
    except BadRecord as exc:
        exc.offset = offset
        raise


def iter_lines(data: bytes, base: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every non-blank line of ``data``; ``base`` is the offset of ``data[0]``."""
    pos = 0
    n = len(data)
    while pos < n:
        nl = data.find(b"\n", pos)
        end = n if nl < 0 else nl
        line = data[pos:end].rstrip(b"\r")
        if line.strip():
            yield base + pos, line
        pos = end + 1


def header_of(data: bytes) -> tuple[list[str], int]:
    """The CSV header's column names and the offset of the first data line."""
    nl = data.find(b"\n")
    line = data if nl < 0 else data[:nl]
    cols = next(csv.reader([line.decode("utf-8").rstrip("\r")]))
    return [c.strip() for c in cols], (len(data) if nl < 0 else nl + 1)


def parse(
    key: str, data: bytes, fmt: Format, *, base: int = 0, header: list[str] | None = None
) -> list[Record]:
    """Records of decompressed ``data``. For CSV, ``header=None`` means ``data`` starts with the header
    line; chunks pass the header read once from the file's first bytes."""
    if fmt == "csv" and header is None:
        header, start = header_of(data)
        if sorted(header) != sorted(FIELDS):
            raise BadRecord(f"{key}: CSV header {header} != expected columns {list(FIELDS)}", offset=0)
        data, base = data[start:], base + start
    out: list[Record] = []
    for offset, line in iter_lines(data, base):
        where = f"{key} @ byte {offset}"
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRecord(f"{where}: not UTF-8", offset=offset) from None
        row: Any
        if fmt == "csv":
            assert header is not None
            values = next(csv.reader([text]))
            if len(values) != len(header):
                raise BadRecord(f"{where}: {len(values)} values for {len(header)} columns", offset=offset)
            row = dict(zip(header, values, strict=True))
        else:
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadRecord(f"{where}: invalid JSON ({exc.msg})", offset=offset) from None
            if not isinstance(row, dict):
                raise BadRecord(f"{where}: a JSON line must be an object", offset=offset)
        out.append(to_record(row, offset, where))
    return out


def parse_object(key: str, raw: bytes) -> list[Record]:
    """Records of a whole object as stored (decompress, detect format, parse)."""
    return parse(key, decompress(key, raw), file_format(key))


# ---- producing files (tests, the benchmark, the lab's partner simulator) --------------------------
def render(rows: list[dict[str, Any]], fmt: Format, compress: bool = False) -> bytes:
    """Bytes of a partner file holding ``rows`` (dicts with :data:`FIELDS`)."""
    buf = io.StringIO()
    if fmt == "csv":
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(FIELDS)
        for r in rows:
            w.writerow([r[f] for f in FIELDS])
    else:
        for r in rows:
            buf.write(json.dumps({f: r[f] for f in FIELDS}) + "\n")
    data = buf.getvalue().encode()
    return gzip.compress(data, mtime=0) if compress else data
