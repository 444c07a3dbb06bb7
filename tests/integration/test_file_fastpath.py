"""The COPY fast path of a file load ends in the same state as the strict row-by-row path: the same target
rows, the same manifest ledger row, the same quarantine (dead-letter) row and object; reruns are
idempotent and a failure inside the load leaves neither rows nor a ``loaded`` status behind."""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import pytest

from cdclab.files import loading, producer, state
from cdclab.files.records import render
from cdclab.files.store import ObjectStore

LOG_SERVICES = ["minio", "postgres"]
H = b"event_id,customer_id,sku,qty,amount,event_time\n"


def csv_of(n: int, seed: int, first: int = 1) -> bytes:
    return render(producer.make_rows(n, seed, first), "csv")


def with_line(line: bytes, n: int = 30) -> bytes:
    """A clean file with ``line`` inserted in the middle."""
    data = csv_of(n, 7)
    cut = data.index(b"\n", len(data) // 2) + 1
    return data[:cut] + line + data[cut:]


GOOD = csv_of(3000, 1)
FILES: dict[str, tuple[bytes, str]] = {
    # key: (bytes, path the auto mode must take)
    "clean.csv": (GOOD, "fast"),
    "clean.csv.gz": (gzip.compress(csv_of(500, 2), mtime=0), "fast"),
    "crlf_quotes_permuted.csv": (
        b"sku,amount,event_id,customer_id,qty,event_time\r\n"
        b'"SKU,""A""",1.005,1,2,3,2026-03-29T01:00:00+02:00\r\n\r\n'
        b"B,-0,2,3,4,2026-03-29 01:00:00.5Z\r\n",
        "fast",
    ),
    "blank_lines_no_final_newline.csv": (
        H + b"1,2,A,3,4.5,2026-01-01T00:00:00+00:00\n\n\n" + b"2,2,B,3,1e2,2026-01-01T00:00:00Z",
        "fast",
    ),
    "time_first.csv": (  # event_time not last: the insert checks its shape in SQL
        b"event_time,event_id,customer_id,sku,qty,amount\n2026-01-01T00:00:00+01:00,1,2,A,3,4.50\n"
        b"2026-01-01 00:00:00.25-05:30,2,2,A,3,4.50\n",
        "fast",
    ),
    "time_first_naive.csv": (
        b"event_time,event_id,customer_id,sku,qty,amount\n2026-01-01T00:00:00,1,2,A,3,4.50\n",
        "strict",
    ),
    "whitespace_int.csv": (with_line(b" 99 ,1,S,+2,  3.5 ,2026-01-01T00:00:00+00:00\n"), "fast"),
    "nan_amount.csv": (with_line(b"99,1,S,2,NaN,2026-01-01T00:00:00+00:00\n"), "fast"),
    # declined by the fast path; the strict path loads them
    "seven_digit_fraction.csv": (with_line(b"99,1,S,2,3.50,2026-01-01T00:00:00.1234567+00:00\n"), "strict"),
    "no_seconds.csv": (with_line(b"99,1,S,2,3.50,2026-01-01T00:00+00:00\n"), "strict"),
    "underscore_int.csv": (with_line(b"9_9,1,S,2,3.50,2026-01-01T00:00:00+00:00\n"), "strict"),
    "odd_quotes.csv": (
        with_line(b'99,1,S"x"y,2,3.50,2026-01-01T00:00:00+00:00\n'),
        "strict",
    ),  # Python reads S"x"y, PostgreSQL Sxy
    "whitespace_line.csv": (with_line(b"   \n"), "strict"),
    "events.jsonl": (render(producer.make_rows(50, 3), "jsonl"), "strict"),
    # bad input: quarantined by the strict path with its reason
    "naive_time.csv": (with_line(b"99,1,S,2,3.50,2026-01-01T00:00:00\n"), "strict"),
    "leap_second.csv": (with_line(b"99,1,S,2,3.50,2026-12-31T23:59:60+00:00\n"), "strict"),
    "bad_id.csv": (with_line(b"x9,1,S,2,3.50,2026-01-01T00:00:00+00:00\n"), "strict"),
    "empty_sku.csv": (with_line(b'99,1,"",2,3.50,2026-01-01T00:00:00+00:00\n'), "strict"),
    "extra_column.csv": (with_line(b"99,1,S,2,3.50,2026-01-01T00:00:00+00:00,x\n"), "strict"),
    "wrong_header.csv": (
        b"id,customer_id,sku,qty,amount,event_time\n1,2,A,3,4.5,2026-01-01T00:00:00Z\n",
        "strict",
    ),
    "truncated.csv.gz": (gzip.compress(GOOD, mtime=0)[:-40], "strict"),
    "empty.csv": (b"", "strict"),
    "not_utf8.csv": (with_line(b"99,1,S\xff,2,3.50,2026-01-01T00:00:00+00:00\n"), "strict"),
    "bad_date.csv": (with_line(b"99,1,S,2,3.50,2026-02-30T00:00:00+00:00\n"), "strict"),
    "overflow_amount.csv": (
        with_line(b"99,1,S,2,12345678901234,2026-01-01T00:00:00+00:00\n"),
        "",
    ),  # failed: no path loaded it
}
# manifest expectations that disagree with the file: quarantined (checksum / row count)
EXPECT = {
    "wrong_rows.csv": (GOOD, (2999, None)),
    "wrong_sha.csv": (GOOD, (None, "0" * 64)),
    "right_expectations.csv": (GOOD, (3000, hashlib.sha256(GOOD).hexdigest())),
}


@pytest.fixture
def store(lab) -> ObjectStore:
    return ObjectStore()


@pytest.fixture
def setup(names, s3_bucket, make_s3_bucket, warehouse_db):
    side = {
        "strict": {
            "bucket": s3_bucket,
            "pipeline": f"fp_s_{names.suffix}",
            "target": f"staging.{names('fps')}",
        },
        "auto": {
            "bucket": make_s3_bucket(),
            "pipeline": f"fp_a_{names.suffix}",
            "target": f"staging.{names('fpa')}",
        },
    }
    yield side
    with warehouse_db.cursor() as cur:
        for s in side.values():
            cur.execute(f'DROP TABLE IF EXISTS staging."{s["target"].split(".")[1]}"')
            for t in ("state.file_manifest", "state.file_audit", "dlq.file_quarantine"):
                cur.execute(f"DELETE FROM {t} WHERE pipeline = %s", (s["pipeline"],))


def register(db: Any, store: ObjectStore, s: dict[str, str], files: dict[str, bytes], expect: dict) -> list:
    for key, data in files.items():
        store.put(s["bucket"], f"in/{key}", data)
    objs = [store.head(s["bucket"], f"in/{k}") for k in files]
    with db.cursor() as cur:
        loading.ensure_target(cur, s["target"])
        for o in objs:
            rows, sha = expect.get(o.key.removeprefix("in/"), (None, None))
            state.register(
                cur, s["pipeline"], [o], expectations={o.key: (rows, sha)} if rows or sha else None
            )
    return objs


def end_state(db: Any, s: dict[str, str]) -> dict[str, Any]:
    """Everything a load leaves behind, with this side's bucket written as ``B``."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT source_key, source_offset, source_etag, event_id, customer_id, sku, qty, amount::text,"
            f' event_time FROM staging."{s["target"].split(".")[1]}" ORDER BY 1, 2'
        )
        rows = cur.fetchall()
        cur.execute(
            "SELECT key, etag, status, sha256, row_count, attempts, replace(error, %s, 'B')"
            " FROM state.file_manifest WHERE pipeline = %s ORDER BY key",
            (s["bucket"], s["pipeline"]),
        )
        ledger = cur.fetchall()
        cur.execute(
            "SELECT key, etag, quarantine_key, reason, replace(detail, %s, 'B'), byte_offset"
            " FROM dlq.file_quarantine WHERE pipeline = %s ORDER BY key",
            (s["bucket"], s["pipeline"]),
        )
        dead = [(k, e, q.split("/", 1)[1], *rest) for k, e, q, *rest in cur.fetchall()]
        cur.execute(
            "SELECT action, src_key, split_part(dst_key, '/', 2) || '/' || split_part(dst_key, '/', 3), reason"
            " FROM state.file_audit WHERE pipeline = %s ORDER BY src_key, action",
            (s["pipeline"],),
        )
        audit = cur.fetchall()
    return {"rows": rows, "ledger": ledger, "dead": dead, "audit": audit}


def test_fast_and_strict_paths_end_in_the_same_rows_ledger_and_dead_letters(
    setup, store, warehouse_db, s3
) -> None:
    files = {k: v[0] for k, v in FILES.items()} | {k: v[0] for k, v in EXPECT.items()}
    expect = {k: v[1] for k, v in EXPECT.items()}
    outcomes = {}
    for mode, s in setup.items():
        objs = register(warehouse_db, store, s, files, expect)
        outcomes[mode] = {
            o.obj.key.removeprefix("in/"): o
            for o in (
                loading.load_file(store, s["pipeline"], obj, s["target"], s["bucket"], mode=mode)
                for obj in objs
            )
        }

    strict, auto = (end_state(warehouse_db, setup[m]) for m in ("strict", "auto"))
    assert auto["rows"] == strict["rows"]
    assert auto["ledger"] == strict["ledger"]
    assert auto["dead"] == strict["dead"]
    assert auto["audit"] == strict["audit"]

    # the comparison is not vacuous: both paths were taken, rows were loaded and files were quarantined
    for key, (_, path) in FILES.items():
        assert outcomes["auto"][key].path == path, (key, outcomes["auto"][key])
        assert outcomes["strict"][key].status == outcomes["auto"][key].status, key
    assert {k for k, o in outcomes["auto"].items() if o.status == "quarantined"} == {
        "naive_time.csv", "leap_second.csv", "bad_id.csv", "empty_sku.csv", "extra_column.csv",
        "wrong_header.csv", "truncated.csv.gz", "empty.csv", "wrong_rows.csv",
        "wrong_sha.csv", "not_utf8.csv", "bad_date.csv", "time_first_naive.csv",
    }  # fmt: skip
    # a value the database refuses is an operational failure on both paths, retried by the next run
    assert {k for k, o in outcomes["auto"].items() if o.status == "failed"} == {"overflow_amount.csv"}
    assert outcomes["auto"]["right_expectations.csv"].path == "fast"
    assert len([r for r in auto["rows"] if r[0] == "in/clean.csv"]) == 3000
    reasons = {d[0]: d[3] for d in auto["dead"]}
    assert reasons["in/naive_time.csv"] == "bad_record"
    assert reasons["in/truncated.csv.gz"] == "truncated_gzip"
    assert reasons["in/wrong_sha.csv"] == "checksum_mismatch"
    assert reasons["in/wrong_rows.csv"] == "row_count_mismatch"
    # quarantine objects exist on both sides, with the same reason document
    for mode, s in setup.items():
        keys = {o.key for o in store.list_objects(s["bucket"], s["pipeline"] + "/")}
        assert f"{s['pipeline']}/in/naive_time.csv.reason.json" in keys, mode


def test_a_rerun_skips_a_reprocess_replaces_and_a_failed_load_leaves_nothing(
    setup, store, warehouse_db
) -> None:
    s = setup["auto"]
    t = f'staging."{s["target"].split(".")[1]}"'
    (obj,) = register(warehouse_db, store, s, {"f.csv": GOOD}, {})
    with (
        warehouse_db.cursor() as cur
    ):  # a constraint the file violates: the load fails inside its transaction
        cur.execute(f"ALTER TABLE {t} ADD CONSTRAINT small_qty CHECK (qty < 5)")
    failed = loading.load_file(store, s["pipeline"], obj, s["target"], s["bucket"])
    assert failed.status == "failed"
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {t}")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT status, attempts FROM state.file_manifest WHERE pipeline = %s", (s["pipeline"],))
        assert cur.fetchone() == ("failed", 1)
        cur.execute(f"ALTER TABLE {t} DROP CONSTRAINT small_qty")

    first = loading.load_file(store, s["pipeline"], obj, s["target"], s["bucket"])
    assert (first.status, first.path, first.rows) == ("loaded", "fast", 3000)
    assert loading.load_file(store, s["pipeline"], obj, s["target"], s["bucket"]).status == "skipped"
    before = end_state(warehouse_db, s)["rows"]
    with warehouse_db.cursor() as cur:
        state.reset_for_reprocess(cur, s["pipeline"], keys=[obj.key])
    again = loading.load_file(store, s["pipeline"], obj, s["target"], s["bucket"])
    assert (again.status, again.path) == ("loaded", "fast")
    after = end_state(warehouse_db, s)
    assert after["rows"] == before and len(after["rows"]) == 3000
    assert [r[2:6] for r in after["ledger"]] == [("loaded", hashlib.sha256(GOOD).hexdigest(), 3000, 3)]
