"""71_04_01: every landed file is loaded exactly once across runs, crashes and concurrent landings;
corrupt files go to quarantine with their reason while the others load."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from cdclab.files import producer
from cdclab.files.store import ObjectStore
from tests.dagrun import run_dag

DAG = "71_04_01_file_detection"
LOG_SERVICES = ["minio", "postgres"]


@pytest.fixture
def store(lab) -> ObjectStore:
    return ObjectStore()


@pytest.fixture
def conf(names, store, warehouse_db):
    suffix = names.suffix
    c = {
        "pipeline": f"t_{suffix}",
        "prefix": f"{suffix}/",
        "target": f"staging.{names('pe')}",
        "pattern": "part-*",
        # dag.test() in one process keeps a conf value in the DAG's Param objects (Param.resolve stores
        # it), so every run passes every knob it relies on.
        "crash_after_files": -1,
    }
    yield c
    for bucket in ("landing", "quarantine"):
        keys = [
            o.key
            for o in store.list_objects(bucket, "" if bucket == "landing" else c["pipeline"] + "/")
            if o.key.startswith((c["prefix"], c["pipeline"] + "/"))
        ]
        store.delete(bucket, keys)
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{c["target"].split(".")[1]}"')


def target_rows(db, target: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute(
            f'SELECT event_id, customer_id, sku, qty, amount, event_time FROM staging."{target.split(".")[1]}"'
            " ORDER BY event_id"
        )
        return cur.fetchall()


def manifest(db, pipeline: str) -> dict[str, tuple[str, int, Any]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT key, status, attempts, loaded_at FROM state.file_manifest WHERE pipeline = %s",
            (pipeline,),
        )
        return {k: (s, a, t) for k, s, a, t in cur.fetchall()}


def test_every_file_is_loaded_once_across_runs_and_landings_during_a_run(conf, store, warehouse_db):
    p = conf["prefix"]
    first = {
        f"{p}part-001.csv": producer.make_rows(20, 1, 1),
        f"{p}part-002.jsonl": producer.make_rows(15, 2, 101),
        f"{p}part-003.csv.gz": producer.make_rows(10, 3, 201),
    }
    for key, rows in first.items():
        producer.drop(store, "landing", key, rows)
    run_dag(DAG, conf=conf)
    assert target_rows(warehouse_db, conf["target"]) == producer.expected(
        [r for v in first.values() for r in v]
    )
    loaded_once = manifest(warehouse_db, conf["pipeline"])

    landed: dict[str, list[dict[str, Any]]] = {}
    stop = threading.Event()

    def land_while_running() -> None:  # a producer that keeps dropping files during run 2
        i = 0
        while not stop.is_set() and i < 12:
            key, rows = f"{p}part-1{i:02d}.jsonl", producer.make_rows(5, 100 + i, 1000 + 10 * i)
            producer.drop(ObjectStore(), "landing", key, rows)
            landed[key] = rows
            i += 1
            time.sleep(0.4)

    t = threading.Thread(target=land_while_running)
    t.start()
    try:
        run_dag(DAG, conf=conf)
    finally:
        stop.set()
        t.join()
    run_dag(DAG, conf=conf)  # picks up whatever landed after run 2 listed

    every = {**first, **landed}
    assert target_rows(warehouse_db, conf["target"]) == producer.expected(
        [r for v in every.values() for r in v]
    )
    after = manifest(warehouse_db, conf["pipeline"])
    assert set(after) == set(every)
    assert {k: (s, a) for k, (s, a, _) in after.items()} == {k: ("loaded", 1) for k in every}
    assert {k: after[k][2] for k in first} == {k: loaded_once[k][2] for k in first}, "a file was reloaded"


def test_a_crash_mid_load_is_resumed_without_reloading_or_missing_files(conf, store, warehouse_db):
    p = conf["prefix"]
    files = {f"{p}part-{i:03d}.csv": producer.make_rows(8, i, 100 * i) for i in range(1, 5)}
    for key, rows in files.items():
        producer.drop(store, "landing", key, rows)
    run_dag(DAG, conf={**conf, "crash_after_files": 2}, expect="failed")
    m = manifest(warehouse_db, conf["pipeline"])
    assert sorted(s for s, _, _ in m.values()) == ["discovered", "discovered", "loaded", "loaded"]
    before = {k: v for k, v in m.items() if v[0] == "loaded"}

    run_dag(DAG, conf=conf)  # the restart
    after = manifest(warehouse_db, conf["pipeline"])
    assert {k: (s, a) for k, (s, a, _) in after.items()} == {k: ("loaded", 1) for k in files}
    assert {k: after[k][2] for k in before} == {k: v[2] for k, v in before.items()}
    assert target_rows(warehouse_db, conf["target"]) == producer.expected(
        [r for v in files.values() for r in v]
    )


def test_corrupt_files_are_quarantined_with_their_reason_and_the_others_load(conf, store, warehouse_db):
    p, q = conf["prefix"], conf["pipeline"]
    good = {
        f"{p}part-good-1.csv": producer.make_rows(12, 1, 1),
        f"{p}part-good-2.jsonl": producer.make_rows(9, 2, 50),
    }
    for key, rows in good.items():
        producer.drop(store, "landing", key, rows)
    bad = {
        f"{p}part-bad-row.csv": "bad_row",
        f"{p}part-bad-row.jsonl": "bad_row",
        f"{p}part-truncated.csv.gz": "truncated_gzip",
        f"{p}part-empty.jsonl": "empty",
    }
    for key, kind in bad.items():
        store.put("landing", key, producer.corrupt(kind, key, producer.make_rows(6, 9, 900)))  # type: ignore[arg-type]

    run_dag(DAG, conf=conf)

    assert target_rows(warehouse_db, conf["target"]) == producer.expected(
        [r for v in good.values() for r in v]
    )
    status = {k: s for k, (s, _, _) in manifest(warehouse_db, q).items()}
    assert status == {**{k: "loaded" for k in good}, **{k: "quarantined" for k in bad}}
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT key, reason, quarantine_key FROM dlq.file_quarantine WHERE pipeline = %s", (q,))
        dlq = {k: (r, qk) for k, r, qk in cur.fetchall()}
    assert {k: r for k, (r, _) in dlq.items()} == {
        f"{p}part-bad-row.csv": "bad_record",
        f"{p}part-bad-row.jsonl": "bad_record",
        f"{p}part-truncated.csv.gz": "truncated_gzip",
        f"{p}part-empty.jsonl": "empty_file",
    }
    for key, (reason, qkey) in dlq.items():
        sidecar = json.loads(store.get("quarantine", qkey + ".reason.json"))
        assert sidecar["reason"] == reason
        assert store.head("quarantine", qkey) is not None
        assert store.head("landing", key) is None, "a quarantined file must leave the landing prefix"
