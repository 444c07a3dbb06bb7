"""71_04_04: a file loaded in record-aligned chunks equals the single-pass load row for row; chunks are
tracked, and a failed chunk is retried alone."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from cdclab.files import producer
from cdclab.files.store import ObjectStore
from tests.dagrun import run_dag

DAG = "71_04_04_chunking"
LOG_SERVICES = ["minio", "postgres"]


@pytest.fixture
def store(lab) -> ObjectStore:
    return ObjectStore()


@pytest.fixture
def conf(names, store, warehouse_db):
    c = {
        "pipeline": f"t_{names.suffix}",
        "prefix": f"{names.suffix}/",
        "pattern": "*",
        "target": f"staging.{names('chunked')}",
        "chunk_table": "",
        "chunk_bytes": 16 * 1024,
        "fail_chunk_once": -1,  # every run passes every knob (dag.test keeps conf values in Params)
    }
    yield c
    store.delete("landing", [o.key for o in store.list_objects("landing", c["prefix"])])
    with warehouse_db.cursor() as cur:
        for t in (names("chunked"), names("chunked") + "_chunks", names("single")):
            cur.execute(f'DROP TABLE IF EXISTS staging."{t}"')


def full_rows(db, target: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT source_key, source_offset, source_etag, event_id, customer_id, sku, qty, amount, event_time"
            f' FROM staging."{target.split(".")[1]}" ORDER BY source_key, source_offset'
        )
        return cur.fetchall()


def test_chunked_load_equals_single_pass_and_a_failed_chunk_is_retried_alone(
    conf, names, store, warehouse_db
):
    p = conf["prefix"]
    big = producer.make_rows(1500, 44, 1)  # ~90 KB of CSV -> 6 chunks of 16 KiB
    jsonl = producer.make_rows(400, 45, 5000)
    gz = producer.make_rows(300, 46, 9000)
    producer.drop(store, "landing", f"{p}big.csv", big)
    producer.drop(store, "landing", f"{p}big.jsonl", jsonl)
    producer.drop(store, "landing", f"{p}small.csv.gz", gz)  # not splittable: one whole chunk

    dr = run_dag(DAG, conf={**conf, "fail_chunk_once": 2})

    chunked = full_rows(warehouse_db, conf["target"])
    assert sorted(r[3:] for r in chunked) == producer.expected(big + jsonl + gz)
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT key, chunk_no, start_byte, end_byte, status, row_count, attempts FROM state.file_chunks"
            " WHERE pipeline = %s ORDER BY key, chunk_no",
            (conf["pipeline"],),
        )
        chunks = cur.fetchall()
        cur.execute(f'SELECT count(*) FROM staging."{names("chunked")}_chunks"')
        assert cur.fetchone() == (0,), "assembly must empty the chunk table"
    by_key: dict[str, list[tuple[Any, ...]]] = {}
    for key, *rest in chunks:
        by_key.setdefault(key, []).append(tuple(rest))
    assert len(by_key[f"{p}big.csv"]) >= 5
    assert len(by_key[f"{p}small.csv.gz"]) == 1
    for key, rows in by_key.items():
        assert {r[3] for r in rows} == {"loaded"}
        assert sum(r[4] for r in rows) == sum(1 for r in chunked if r[0] == key)
        for (_n, _s, end, *_), (_n2, start2, *_) in itertools.pairwise(rows):
            assert end == start2, f"{key}: chunks must tile the file"
    # the chunk that failed once ran twice, every other chunk once
    attempts = {(k, r[0]): r[5] for k, rows in by_key.items() for r in rows}
    assert {kc: a for kc, a in attempts.items() if a != 1} == {(f"{p}big.csv", 2): 2, (f"{p}big.jsonl", 2): 2}
    tries = sorted(ti.try_number for ti in dr.get_task_instances() if ti.task_id == "load_chunk")
    assert tries.count(2) == 2
    assert set(tries) == {1, 2}

    # the same objects loaded in one pass by 71_04_01 into another table
    single = {
        "pipeline": f"s_{names.suffix}",
        "prefix": p,
        "pattern": "*",
        "target": f"staging.{names('single')}",
        "crash_after_files": -1,
    }
    run_dag("71_04_01_file_detection", conf=single)
    assert full_rows(warehouse_db, single["target"]) == chunked
