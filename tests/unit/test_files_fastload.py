"""The COPY fast path's stream: the lines it sends carry the strict parser's byte offsets, whatever the
read size; anything the two parsers could read differently declines instead of loading."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re

import pytest

from cdclab.files import producer
from cdclab.files.fastload import TS_RE, CopySource, Declined
from cdclab.files.records import parse_object


def pieces(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def drain(key: str, data: bytes, n: int = 7) -> tuple[CopySource, list[list[str]]]:
    src = CopySource(key, pieces(data, n))
    out = b""
    while piece := src.read(1 << 16):
        out += piece
    rows = list(csv.reader(io.StringIO(out.decode())))
    return src, rows


def strict_rows(key: str, data: bytes) -> list[tuple[int, list[str]]]:
    return [(r.offset, [str(v) for v in r.values()]) for r in parse_object(key, data)]


@pytest.mark.parametrize("n", [1, 7, 64, 1 << 20])
@pytest.mark.parametrize("key", ["a.csv", "a.csv.gz"])
def test_sent_lines_carry_the_strict_offsets_for_any_read_size(key: str, n: int) -> None:
    data = producer.file_bytes(producer.make_rows(40, 5), key)
    src, rows = drain(key, data, n)
    expected = [off for off, _ in strict_rows(key, data)]
    assert [int(r[0]) for r in rows] == expected
    assert src.lines == 40
    assert src.header == ["event_id", "customer_id", "sku", "qty", "amount", "event_time"]
    assert src.sha.hexdigest() == hashlib.sha256(data).hexdigest()


def test_crlf_blank_lines_a_permuted_header_and_no_final_newline() -> None:
    data = (
        b"sku,event_id,customer_id,qty,amount,event_time\r\n"
        b"A,1,2,3,4.50,2026-01-01T00:00:00+00:00\r\n\r\n\n"
        b'"B,""x""",5,6,7,8.00,2026-01-01T00:00:01Z'
    )
    src, rows = drain("p.csv", data, 5)
    assert rows == [
        ["48", "A", "1", "2", "3", "4.50", "2026-01-01T00:00:00+00:00"],
        ["91", 'B,"x"', "5", "6", "7", "8.00", "2026-01-01T00:00:01Z"],
    ]
    assert [off for off, _ in strict_rows("p.csv", data)] == [48, 91]
    assert src.header == ["sku", "event_id", "customer_id", "qty", "amount", "event_time"]


def test_two_gzip_members_are_one_file() -> None:
    rows = producer.make_rows(6, 2)
    plain = producer.file_bytes(rows, "a.csv")
    cut = plain.index(b"\n", len(plain) // 2) + 1
    data = gzip.compress(plain[:cut]) + gzip.compress(plain[cut:])
    _, sent = drain("a.csv.gz", data, 11)
    assert [int(r[0]) for r in sent] == [off for off, _ in strict_rows("a.csv.gz", data)]


@pytest.mark.parametrize(
    ("key", "data"),
    [
        ("t.csv.gz", producer.file_bytes(producer.make_rows(50, 1), "t.csv.gz")[:-30]),  # truncated
        ("h.csv", b"event_id,customer_id,sku,qty,amount\n1,2,A,3,4.0\n"),  # header the strict path refuses
        ("q.csv", producer.file_bytes(producer.make_rows(3, 1), "q.csv") + b'9,1,a"b"c,1,1.00,x\n'),
        ("q2.csv", producer.file_bytes(producer.make_rows(3, 1), "q2.csv") + b'9,1,"ab" ,1,1.00,x\n'),
        ("e.csv", b"  \n\t\n"),
    ],
)
def test_what_the_parsers_could_read_differently_declines(key: str, data: bytes) -> None:
    with pytest.raises(Declined):
        drain(key, data)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-03-29T01:30:00+00:00", True),
        ("2026-03-29 01:30:00.123456Z", True),
        ("2026-03-29T01:30:00.1234567+00:00", False),  # Python truncates, PostgreSQL rounds
        ("2026-03-29T23:59:60+00:00", False),  # PostgreSQL rolls a leap second over, Python refuses
        ("2026-03-29T24:00:00+00:00", False),
        ("2026-03-29T01:30:00", False),  # naive
        ("2026-03-29T01:30+00:00", False),  # no seconds: the strict path decides
        (" 2026-03-29T01:30:00+00:00", False),
    ],
)
def test_timestamp_shape_accepted_by_the_fast_path(value: str, ok: bool) -> None:
    assert bool(re.match(TS_RE, value)) is ok


@pytest.mark.parametrize(
    "value",
    [
        "2026-03-29T01:30:00+00:00",
        "2026-03-29 01:30:00.123456Z",
        "2026-03-29T01:30:00.1234567+00:00",
        "2026-03-29T23:59:60+00:00",
        "2026-03-29T01:30:00",
        '"2026-03-29T01:30:00+00:00"',
        "x2026-03-29T01:30:00+00:00",
    ],
)
def test_the_per_block_timestamp_check_agrees_with_the_shape(value: str) -> None:
    """A block's lines are counted as checked exactly when their last field has the :data:`TS_RE` shape."""
    from cdclab.files.fastload import TS_LAST_RE

    ok = bool(re.match(TS_RE, value))
    block = f"1,2,A,3,4.50,{value}\r\n1,2,A,3,4.50,{value}".encode()
    assert len(TS_LAST_RE.findall(block)) == (2 if ok else 0)


def test_a_file_with_event_time_last_is_fully_checked_while_streaming() -> None:
    data = producer.file_bytes(producer.make_rows(30, 4), "a.csv")
    src, _ = drain("a.csv", data, 13)
    assert src.ts_checked == src.lines == 30
    bad = data + b"31,1,S,2,3.50,2026-01-01T00:00:00\n"
    src, _ = drain("a.csv", bad, 13)
    assert (src.ts_checked, src.lines) == (30, 31)
