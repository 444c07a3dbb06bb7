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
