"""71_04_02: producer manifests drive the loads, each file's status is tracked, a file that disagrees with
its manifest is quarantined, and reprocessing on request is idempotent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cdclab.files import producer
from cdclab.files.store import ObjectStore
from tests.dagrun import run_dag

DAG = "71_04_02_manifest"
LOG_SERVICES = ["minio", "postgres"]


@pytest.fixture
def store(lab) -> ObjectStore:
    return ObjectStore()


@pytest.fixture
def conf(names, store, warehouse_db):
    c = {
        "pipeline": f"t_{names.suffix}",
        "prefix": f"{names.suffix}/",
        "target": f"staging.{names('pe')}",
        "reprocess_keys": [],  # every run passes every knob (dag.test keeps conf values in Params)
        "reprocess_batch": "",
    }
    yield c
    for bucket, prefix in (
        ("landing", c["prefix"]),
        ("quarantine", c["pipeline"] + "/"),
        ("manifests", c["pipeline"] + "/"),
    ):
        store.delete(bucket, [o.key for o in store.list_objects(bucket, prefix)])
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{c["target"].split(".")[1]}"')


def target_rows(db, target: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT event_id, customer_id, sku, qty, amount, event_time FROM staging."
            f'"{target.split(".")[1]}" ORDER BY event_id'
        )
        return cur.fetchall()


def ledger(db, pipeline: str) -> dict[str, tuple[str, str, str | None, int]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT key, kind, status, batch_id, attempts FROM state.file_manifest WHERE pipeline = %s",
            (pipeline,),
        )
        return {k: (kind, s, b, a) for k, kind, s, b, a in cur.fetchall()}


def test_only_files_named_by_a_manifest_are_loaded_and_receipts_follow(conf, store, warehouse_db):
    p = conf["prefix"]
    b1 = {"part-0.csv": producer.make_rows(10, 1, 1), "part-1.jsonl": producer.make_rows(7, 2, 100)}
    b2 = {"part-0.csv": producer.make_rows(5, 3, 200), "part-1.csv.gz": producer.make_rows(6, 4, 300)}
    producer.drop_batch(store, "landing", f"{p}b1/", "b1", b1)
    producer.drop_batch(store, "landing", f"{p}b2/", "b2", b2, write_manifest=False)  # still in flight
    producer.drop(store, "landing", f"{p}stray/part-9.csv", producer.make_rows(3, 5, 900))

    run_dag(DAG, conf=conf)
    assert target_rows(warehouse_db, conf["target"]) == producer.expected([r for v in b1.values() for r in v])
    receipt = json.loads(store.get("manifests", f"{conf['pipeline']}/b1.receipt.json"))
    assert {(f["key"], f["status"], f["rows"]) for f in receipt["files"]} == {
        (f"{p}b1/part-0.csv", "loaded", 10),
        (f"{p}b1/part-1.jsonl", "loaded", 7),
    }

    producer.drop_batch(store, "landing", f"{p}b2/", "b2", b2)  # the producer commits batch 2
    run_dag(DAG, conf=conf)
    every = [r for v in (*b1.values(), *b2.values()) for r in v]
    assert target_rows(warehouse_db, conf["target"]) == producer.expected(every)
    assert ledger(warehouse_db, conf["pipeline"]) == {
        f"{p}b1/_manifest.json": ("manifest", "loaded", "b1", 1),
        f"{p}b2/_manifest.json": ("manifest", "loaded", "b2", 1),
        f"{p}b1/part-0.csv": ("data", "loaded", "b1", 1),
        f"{p}b1/part-1.jsonl": ("data", "loaded", "b1", 1),
        f"{p}b2/part-0.csv": ("data", "loaded", "b2", 1),
        f"{p}b2/part-1.csv.gz": ("data", "loaded", "b2", 1),
    }
    assert store.head("manifests", f"{conf['pipeline']}/b2.receipt.json") is not None


def test_files_disagreeing_with_their_manifest_and_invalid_manifests_are_quarantined(
    conf, store, warehouse_db
):
    p = conf["prefix"]
    good = {"part-0.csv": producer.make_rows(8, 1, 1)}
    liar = {"part-0.csv": producer.make_rows(8, 2, 100), "part-1.csv": producer.make_rows(4, 3, 200)}
    producer.drop_batch(store, "landing", f"{p}good/", "good", good)
    producer.drop_batch(
        store,
        "landing",
        f"{p}liar/",
        "liar",
        liar,
        lie_about={"part-0.csv": {"rows": 9}, "part-1.csv": {"sha256": "0" * 64}},
    )
    store.put("landing", f"{p}broken/_manifest.json", b'{"version": 1, "batch_id": "broken", "files": [')

    run_dag(DAG, conf=conf)

    assert target_rows(warehouse_db, conf["target"]) == producer.expected(good["part-0.csv"])
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT key, reason FROM dlq.file_quarantine WHERE pipeline = %s", (conf["pipeline"],))
        assert dict(cur.fetchall()) == {
            f"{p}liar/part-0.csv": "row_count_mismatch",
            f"{p}liar/part-1.csv": "checksum_mismatch",
            f"{p}broken/_manifest.json": "manifest_invalid",
        }
    receipt = json.loads(store.get("manifests", f"{conf['pipeline']}/liar.receipt.json"))
    assert {f["status"] for f in receipt["files"]} == {"quarantined"}


def test_reprocessing_a_file_or_a_batch_on_request_is_idempotent(conf, store, warehouse_db):
    p = conf["prefix"]
    b1 = {"part-0.csv": producer.make_rows(10, 1, 1), "part-1.jsonl": producer.make_rows(7, 2, 100)}
    producer.drop_batch(store, "landing", f"{p}b1/", "b1", b1)
    run_dag(DAG, conf=conf)
    expected = producer.expected([r for v in b1.values() for r in v])
    assert target_rows(warehouse_db, conf["target"]) == expected

    run_dag(DAG, conf={**conf, "reprocess_keys": [f"{p}b1/part-0.csv"]})
    assert target_rows(warehouse_db, conf["target"]) == expected
    attempts = {
        k: a for k, (kind, _s, _b, a) in ledger(warehouse_db, conf["pipeline"]).items() if kind == "data"
    }
    assert attempts == {f"{p}b1/part-0.csv": 2, f"{p}b1/part-1.jsonl": 1}

    run_dag(DAG, conf={**conf, "reprocess_batch": "b1"})
    assert target_rows(warehouse_db, conf["target"]) == expected
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT src_key, count(*) FROM state.file_audit WHERE pipeline = %s AND action = 'reprocess'"
            " GROUP BY src_key",
            (conf["pipeline"],),
        )
        assert dict(cur.fetchall()) == {f"{p}b1/part-0.csv": 2, f"{p}b1/part-1.jsonl": 1}
    assert {s for _k, (_kind, s, _b, _a) in ledger(warehouse_db, conf["pipeline"]).items()} == {"loaded"}
