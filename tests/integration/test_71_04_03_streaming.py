"""71_04_03: files landing while the ingestion run is active are loaded in mini-batches by that run,
exactly once, and what lands after the run is taken by the next run. The landing-to-loaded latency
is printed, not asserted (no wall-clock pass marks)."""

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
        "run_seconds": 8,
        "poll_seconds": 0.3,
        "max_files": 20,
        "trigger_prefix": f"{names.suffix}_triggers/",
        "trigger_table": f"state.{names('trig')}",
        "trigger_tick_seconds": 0.05,
    }
    yield c
    store = ObjectStore()
    for prefix in (c["prefix"], c["trigger_prefix"]):
        store.delete("landing", [o.key for o in store.list_objects("landing", prefix)])
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{names("pe")}"')
        cur.execute(f"DROP TABLE IF EXISTS {c['trigger_table']}, {c['trigger_table']}_summary")


def test_files_landing_during_a_run_are_loaded_by_that_run_and_exactly_once(lab, conf, warehouse_db):
    landed: dict[str, list[dict[str, Any]]] = {}
    stop = threading.Event()

    def polling_started(timeout: float = 300) -> bool:
        """The run has loaded the first file: its polling loop is running from now on."""
        import psycopg2

        deadline = time.monotonic() + timeout
        with psycopg2.connect(lab.pg_dsn("warehouse")) as conn, conn.cursor() as cur:
            while time.monotonic() < deadline and not stop.is_set():
                cur.execute(
                    "SELECT 1 FROM state.file_manifest WHERE pipeline = %s AND status = 'loaded'",
                    (conf["pipeline"],),
                )
                if cur.fetchone():
                    return True
                conn.rollback()
                time.sleep(0.1)
        return False

    def drop(store: ObjectStore, i: int) -> None:
        key, rows = f"{conf['prefix']}ev-{i:03d}.jsonl", producer.make_rows(4, i, 100 * i)
        producer.drop(store, "landing", key, rows)
        landed[key] = rows

    def producer_loop() -> None:
        # A partner dropping a small file every 0.4 s, from the moment the run polls (the run's
        # start-up time varies with the machine's load; files dropped before it would all be taken
        # by its first poll and prove nothing about polling).
        store = ObjectStore()
        drop(store, 0)
        if not polling_started():
            return
        for i in range(1, 60):
            if stop.is_set():
                break
            drop(store, i)
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
    # Latency (loaded_at - last_modified) is a measurement, not a pass mark: wall-clock bounds fail on
    # a loaded 2-core machine (2.1 s seen while other suites ran). What must hold: every such file
    # was loaded after it landed, by the run that was polling, and the figures are printed.
    assert min(while_polling.values()) >= 0, f"loaded before it landed? {while_polling}"
    print(f"latency landing -> loaded (s): {sorted(round(v, 2) for v in while_polling.values())}")

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


def test_trigger_strategies_load_every_drop_exactly_once_with_the_checks_their_cadence_predicts(
    lab, conf, warehouse_db
):
    """The ``compare_triggers`` task: the same 7 drops under five strategies. Counts and ticks are
    asserted (deterministic); the seconds between MinIO's LastModified and the pick-up are only printed."""
    drops, ticks, every, poke = [1, 2, 7, 12, 13, 14, 22], 30, 8, 3
    dr = run_dag(DAG, conf={**conf, "run_seconds": 0})
    table = conf["trigger_table"]
    with warehouse_db.cursor() as cur:
        cur.execute(
            f"SELECT strategy, count(*), count(DISTINCT key), array_agg(drop_tick ORDER BY drop_tick),"
            f" array_agg(pick_tick ORDER BY drop_tick), bool_and(picked_at >= dropped_at)"
            f" FROM {table} WHERE run_id = %s GROUP BY strategy",
            (dr.run_id,),
        )
        picks = {r[0]: r[1:] for r in cur.fetchall()}
        cur.execute(
            f"SELECT strategy, checks, worker_ticks, files, max_delay_s FROM {table}_summary WHERE run_id = %s",
            (dr.run_id,),
        )
        summary = {r[0]: r[1:] for r in cur.fetchall()}

    def next_check(t, cadence):  # independent of the library: the first multiple of cadence at or after t
        return -(-t // cadence) * cadence

    expected_picks = {
        "schedule": [next_check(t, every) for t in drops],
        "in_run_polling": drops,
        "sensor": [next_check(t, poke) for t in drops],
        "deferrable": [next_check(t, poke) for t in drops],
        "event": drops,
    }
    # every file loaded exactly once per strategy, at the tick its cadence predicts, never before it landed
    assert picks == {s: (7, 7, drops, p, True) for s, p in expected_picks.items()}
    pokes = len(range(0, ticks, poke))
    assert {s: row[:3] for s, row in summary.items()} == {
        "schedule": (len(range(0, ticks, every)), len(range(0, ticks, every)), 7),  # one short run per check
        "in_run_polling": (ticks, ticks, 7),  # lists every tick, holds a worker throughout
        "sensor": (pokes, ticks, 7),  # poke mode: a worker slot while waiting
        "deferrable": (pokes, len(set(expected_picks["deferrable"])), 7),  # a worker only to load
        "event": (0, len(set(drops)), 7),  # no listing at all
    }
    print({s: round(row[3], 3) for s, row in summary.items()})  # max delay in seconds, lab clocks
    store = ObjectStore()
    assert store.list_objects("landing", conf["trigger_prefix"]) == []  # the demo removed its drops
