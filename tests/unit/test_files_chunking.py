"""Record-boundary chunk alignment: chunks tile the file, start on records, and parse to the same
records as a single pass."""

from __future__ import annotations

import random

import pytest

from cdclab.files import chunking, producer
from cdclab.files.records import header_of, parse


def reader(data: bytes, calls: list[tuple[int, int]] | None = None) -> chunking.RangeReader:
    def read(start: int, end: int) -> bytes:
        if calls is not None:
            calls.append((start, end))
        return data[start:end]

    return read


def chunked_parse(key: str, data: bytes, chunk_bytes: int, probe: int) -> list:
    fmt = "csv" if key.endswith(".csv") else "jsonl"
    read = reader(data)
    start = chunking.data_start_of(read, len(data), fmt == "csv", probe)
    header = header_of(data)[0] if fmt == "csv" else None
    chunks = chunking.plan_chunks(read, len(data), chunk_bytes, start, probe)
    chunking.check_coverage([(c.start, c.end) for c in chunks], start, len(data))
    out = []
    for c in chunks:
        assert c.start == start or data[c.start - 1 : c.start] == b"\n", f"{c} does not start on a record"
        out.extend(parse(key, read(c.start, c.end), fmt, base=c.start, header=header))
    return out


@pytest.mark.parametrize("key", ["big.csv", "big.jsonl"])
@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 333, 4096, 10**9])
@pytest.mark.parametrize("probe", [1, 5, 4096])
def test_chunked_parse_equals_single_pass_for_any_chunk_size(key: str, chunk_bytes: int, probe: int) -> None:
    data = producer.file_bytes(producer.make_rows(60, 7), key)
    single = parse(key, data, "csv" if key.endswith(".csv") else "jsonl")
    assert chunked_parse(key, data, chunk_bytes, probe) == single
    assert len(single) == 60


def test_a_boundary_inside_a_record_moves_to_the_next_record_start() -> None:
    data = b"aaaa\nbbbbbbbb\ncc\n"
    read = reader(data)
    assert chunking.next_record_start(read, 0, len(data)) == 0
    assert chunking.next_record_start(read, 5, len(data)) == 5  # byte 4 is \n: 5 starts a record
    assert chunking.next_record_start(read, 6, len(data)) == 14
    assert chunking.next_record_start(read, 16, len(data)) == 17 == len(data)


def test_long_records_collapse_boundaries_instead_of_making_empty_chunks() -> None:
    data = b"x" * 100 + b"\n" + b"y\n"
    chunks = chunking.plan_chunks(reader(data), len(data), 10)
    assert [(c.chunk_no, c.start, c.end) for c in chunks] == [(0, 0, 101), (1, 101, 103)]


def test_probing_reads_small_ranges_not_the_whole_file() -> None:
    data = producer.file_bytes(producer.make_rows(2000, 1), "x.jsonl")
    calls: list[tuple[int, int]] = []
    chunks = chunking.plan_chunks(reader(data, calls), len(data), len(data) // 8, 0, probe=512)
    assert len(chunks) in (8, 9)
    assert sum(e - s for s, e in calls) < 16 * 512


def test_coverage_check_names_gaps_and_overlaps() -> None:
    chunking.check_coverage([(5, 10), (10, 20)], 5, 20)
    with pytest.raises(ValueError, match=r"gap at byte 10\.\.12"):
        chunking.check_coverage([(5, 10), (12, 20)], 5, 20)
    with pytest.raises(ValueError, match="overlap"):
        chunking.check_coverage([(5, 10), (9, 20)], 5, 20)
    with pytest.raises(ValueError, match="file size is 21"):
        chunking.check_coverage([(5, 20)], 5, 21)


def test_random_files_and_chunk_sizes_keep_every_record_once() -> None:
    rnd = random.Random(71)
    for _ in range(30):
        rows = producer.make_rows(rnd.randint(1, 80), rnd.randint(0, 10**6))
        key = rnd.choice(["r.csv", "r.jsonl"])
        data = producer.file_bytes(rows, key)
        got = chunked_parse(key, data, rnd.randint(1, len(data)), rnd.randint(1, 100))
        assert [r.event_id for r in got] == [r["event_id"] for r in rows]
