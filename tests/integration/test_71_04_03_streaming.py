"""71_04_03: files landing while the ingestion run is active are loaded in mini-batches within seconds,
exactly once, and what lands after the run is taken by the next run."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from cdclab.files import producer
from cdclab.files.store import ObjectStore
from tests.dagrun import run_dag

DAG = "71_04_03_streaming"
LOG_SERVICES = ["minio", "postgres"]


@pytest.fixture
def conf(lab, names, warehouse_db):
    c = {
        "pipeline": f"t_{names.suffix}",
        "prefix": f"{names.suffix}/",
        "pattern": "*",
        "target": f"staging.{names('pe')}",
        "run_seconds": 6,
        "poll_seconds": 0.3,
        "max_files": 20,
    }
    yield c
    store = ObjectStore()
    store.delete("landing", [o.key for o in store.list_objects("landing", c["prefix"])])
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{names("pe")}"')


def test_files_landing_during_a_run_are_loaded_within_seconds_and_exactly_once(conf, warehouse_db):
    landed: dict[str, list[dict[str, Any]]] = {}
    stop = threading.Event()

    def producer_loop() -> None:  # a partner dropping a small file every 0.4 s until told to stop
        store = ObjectStore()
        for i in range(60):
            if stop.is_set():
                break
            key, rows = f"{conf['prefix']}ev-{i:03d}.jsonl", producer.make_rows(4, i, 100 * i)
            producer.drop(store, "landing", key, rows)
            landed[key] = rows
            time.sleep(0.4)

    t = threading.Thread(target=producer_loop)
    t.start()
    try:
        run_dag(DAG, conf=conf)
    finally:
        stop.set()
        t.join()
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT key, extract(epoch FROM loaded_at - last_modified) FROM state.file_manifest"
            " WHERE pipeline = %s AND status = 'loaded' AND last_modified > (SELECT min(loaded_at)"
            " FROM state.file_manifest WHERE pipeline = %s)",  # landed once the run was polling
            (conf["pipeline"], conf["pipeline"]),
        )
        while_polling = {k: float(v) for k, v in cur.fetchall()}
    assert len(while_polling) >= 5, "files landing while the run polls must be loaded by that run"
    assert max(while_polling.values()) < 2.0, f"latencies {while_polling}"

    run_dag(DAG, conf={**conf, "run_seconds": 0})  # the next run takes whatever landed after
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT key, status, attempts FROM state.file_manifest WHERE pipeline = %s", (conf["pipeline"],)
        )
        assert {k: (s, a) for k, s, a in cur.fetchall()} == {k: ("loaded", 1) for k in landed}
        cur.execute(
            f'SELECT event_id, customer_id, sku, qty, amount, event_time FROM staging."{conf["target"][8:]}"'
            " ORDER BY event_id"
        )
        assert cur.fetchall() == producer.expected([r for v in landed.values() for r in v])
