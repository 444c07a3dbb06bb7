"""Fault drills (issue 11, item 10), continued: MinIO during a file load, Postgres (the warehouse) during a
CDC merge, the Airflow scheduler during a DAG run — each SIGKILLed through the lab's service interface
(``cdclab.lab.backend``, so under both launchers), with the test asserting that the kill landed while
data was moving. After the kill the lab is brought back with ``up()`` (what ``make up`` does), the work
is rerun, and the end state must equal the source with no duplicate and the lab healthy.

Marked ``disruptive``: tests/conftest.py orders them after every other test."""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any

import psycopg2
import pytest
from psycopg2 import sql

from cdclab.cdc.inspect import wait_for_records
from cdclab.cdc.pipeline import replicate
from cdclab.common.db import WAREHOUSE, transaction
from cdclab.files import loading, producer, state
from cdclab.files.store import ObjectStore
from cdclab.lab.backend import all_healthy, backend, format_table
from cdclab.testing.dags import AirflowAPI
from tests.integration._71_01_helpers import create_customers_copy, drop, rows
from tests.integration._cdc_helpers import published
from tests.integration._drills import (
    Writer,
    count_rows,
    drop_tables,
    duplicates_by_key_and_lsn,
    ensure_connector_running,
    insert_batches,
    make_source_table,
    start_replicate,
)

pytestmark = pytest.mark.disruptive
LOG_SERVICES = ["minio", "postgres", "airflow-scheduler"]


def bring_back(lab: Any) -> None:
    """``make up`` through the interface, then every service (and the connector) healthy again."""
    lab_backend = backend(lab)
    # once: the launcher's kill returns only when every process of the service is gone (a Postgres
    # backend, its own session leader, included), so the start cannot meet a leftover postmaster.pid
    lab_backend.up()
    ensure_connector_running(lab)
    deadline = time.monotonic() + 180
    status = lab_backend.status()
    while not all_healthy(status) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = lab_backend.status()
    assert all_healthy(status), format_table(status)


def wait_until(what: str, check: Any, timeout: float, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


# --------------------------------------------------------------------------------------------------
# MinIO during a file load


def ledger(lab: Any, pipeline: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT key, status, attempts, row_count, sha256 FROM state.file_manifest "
                "WHERE pipeline = %s ORDER BY key, status",
                (pipeline,),
            )
            return cur.fetchall()
    finally:
        conn.close()


def test_minio_killed_during_a_file_load_every_file_lands_exactly_once_after_the_rerun(
    lab, names, s3_bucket, warehouse_db
):
    pipeline, target = f"drill_{names.suffix}", f"staging.{names('fdrill')}"
    n_files, per_file = 8, 25_000
    store = ObjectStore()
    produced: list[dict[str, Any]] = []
    for i in range(n_files):
        part = producer.make_rows(per_file, seed=100 + i, first_id=1 + i * per_file)
        producer.drop(store, s3_bucket, f"in/part-{i:02d}.csv", part)
        produced += part
    objs = store.list_objects(s3_bucket, "in/")
    assert len(objs) == n_files
    with transaction(WAREHOUSE) as cur:
        state.ensure_tables(cur)
        loading.ensure_target(cur, target)
        state.register(cur, pipeline, objs)

    first: dict[str, Any] = {}

    def load() -> None:
        try:
            first["summary"] = loading.load_all(store, pipeline, objs, target)
        except Exception as exc:  # the failures the kill causes; asserted below
            first["error"] = exc

    lab_backend = backend(lab)
    thread = threading.Thread(target=load)
    try:
        thread.start()
        # kill once the first file is committed: the others are still to be read from MinIO
        loaded_before = wait_until(
            "no file loaded",
            lambda: sum(1 for r in ledger(lab, pipeline) if r[1] == "loaded"),
            timeout=300,
        )
        lab_backend.kill("minio")  # SIGKILL
        thread.join(600)
        assert not thread.is_alive(), "the load did not end after MinIO went away"
        after_kill = ledger(lab, pipeline)
        loaded_then = sum(1 for r in after_kill if r[1] == "loaded")
        # the kill landed mid-load: some files loaded before it, not all of them
        assert 1 <= loaded_before <= loaded_then < n_files, after_kill
        assert isinstance(first.get("error"), loading.FilesFailed), first
        assert all(r[1] in ("loaded", "failed") for r in after_kill), after_kill
        print(
            f"drill: MinIO killed with {loaded_before} of {n_files} files loaded; {loaded_then} loaded at the end"
        )
    finally:
        bring_back(lab)

    # the rerun: the failed files (attempt 1 of 3) are pending and load now
    store = ObjectStore()
    with transaction(WAREHOUSE) as cur:
        todo = [r.obj for r in state.pending(cur, pipeline)]
    assert len(todo) == n_files - loaded_then
    summary = loading.load_all(store, pipeline, todo, target)
    assert len(summary["loaded"]) == len(todo) and not summary["failed"], summary
    again = loading.load_all(store, pipeline, objs, target)  # everything is done: all skipped
    assert again["loaded"] == [] and len(again["skipped"]) == n_files, again

    final = ledger(lab, pipeline)
    assert [(k, s, rc) for k, s, _a, rc, _sha in final] == [
        (f"in/part-{i:02d}.csv", "loaded", per_file) for i in range(n_files)
    ]
    assert all(sha for *_, sha in final)
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT count(*), count(DISTINCT event_id) FROM {target}")
        assert cur.fetchone() == (n_files * per_file, n_files * per_file)
        cur.execute(f"SELECT event_id, customer_id, sku, qty, amount, event_time FROM {target}")
        assert sorted(cur.fetchall()) == producer.expected(produced)
        cur.execute(f"DROP TABLE IF EXISTS {target}")
        for table in ("state.file_manifest", "state.file_chunks", "state.file_audit", "dlq.file_quarantine"):
            cur.execute(f"DELETE FROM {table} WHERE pipeline = %s", (pipeline,))


# --------------------------------------------------------------------------------------------------
# Postgres (the warehouse) during a CDC merge


def table_rows(lab: Any, database: str, schema: str, table: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(lab.pg_dsn(database))
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, amount, note FROM {}.{} ORDER BY id").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
            return cur.fetchall()
    finally:
        conn.close()


def test_postgres_killed_during_a_cdc_merge_and_source_writes_the_rerun_ends_equal_without_duplicates(
    lab, names, shop_db
):
    """One SIGKILL of the lab's Postgres hits both databases: the warehouse while a consumer merges a
    backlog (batches committed before the kill stay, the open one rolls back with its offsets) and the
    shop while a writer commits changes that Debezium streams (the connector reconnects from its
    offsets; nothing is lost or sent twice)."""
    table, group = names("pgkill"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    lab_backend = backend(lab)
    try:
        total = insert_batches(lab, table, 1, batches=80, per_batch=250)  # 20,000 rows, 80 transactions
        published(lab, topic, total, timeout=240)

        writer = Writer(lab, table, total + 1, total + 1000)  # insert i + update i-1, one transaction each
        writer.start()
        proc = start_replicate(table, group, batch_size=100)  # 200+ batches: time to land the kill
        try:
            # kill once some batches are committed in the warehouse, while the consumer merges on
            committed_before = wait_until(
                "no batch committed", lambda: count_rows(lab, "warehouse", f"core.{table}")[0], timeout=240
            )
            assert proc.poll() is None, f"the consumer ended before the kill:\n{proc.stdout.read()}"
            written_before = writer.written
            lab_backend.kill("postgres")  # SIGKILL: shop and warehouse together
            proc.wait(300)
            output = proc.stdout.read()
            assert proc.returncode != 0, f"the consumer did not notice the kill:\n{output}"
        finally:
            if proc.poll() is None:
                proc.kill()
            bring_back(lab)

        committed, _ = count_rows(lab, "warehouse", f"core.{table}")
        # the kill landed mid-merge: some rows committed, the backlog not all (crash recovery kept them)
        assert 0 < committed_before <= committed < total, (committed_before, committed, total)
        writer.join(600)
        assert writer.error is None, writer.error
        # ... and mid-write at the source: the writer had committed some changes, then rode out errors
        assert 0 < written_before < writer.written == 1000, (written_before, writer.written)
        assert writer.failures > 0, "the writer saw no error: the kill did not hit the source mid-write"
        print(
            f"drill: Postgres killed with {committed_before} of {total} backlog rows merged ({committed} "
            f"committed after recovery) and {written_before} of 1000 writer transactions committed; "
            f"the writer rode out {writer.failures} errors"
        )
        wait_for_records(lab.kafka_bootstrap, topic, total + 2 * writer.written, timeout=300)

        # the rerun; the connector may still be delivering the last changes: run until equal (bounded)
        source = table_rows(lab, "shop", "public", table)
        deadline = time.monotonic() + 180
        while True:
            replicate([f"public.{table}"], group=group, target_schema="core", batch_size=500)
            target = table_rows(lab, "warehouse", "core", table)
            if target == source or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert target == source, f"{len(target)} target rows, {len(source)} source rows"
        n, distinct = count_rows(lab, "warehouse", f"core.{table}")
        assert n == distinct == total + 1000
        # offsets at the end: a further run reads nothing
        again = replicate([f"public.{table}"], group=group, target_schema="core", batch_size=500)
        assert again["records"] == 0, again
        assert duplicates_by_key_and_lsn(lab, topic) == 0, "Debezium re-sent changes after the restart"
        triggerer_runs_again(lab)
    finally:
        drop_tables(lab, table)


def triggerer_runs_again(lab: Any, timeout: float = 240) -> None:
    """Airflow's triggerer leaves when its database heartbeat fails while Postgres is down, maybe only
    after ``up`` found it healthy. It must run again by itself: natively the supervisor restarts it
    (``make up`` started one), under compose Docker's ``restart: unless-stopped``. Checked: the status
    row is healthy and a ``TriggererJob`` heartbeated in the last 30 s."""
    lab_backend = backend(lab)
    if lab_backend.name == "native":
        from cdclab.lab import supervisor

        assert supervisor.running_pid(lab) is not None, supervisor.describe(lab)

    def heartbeating() -> bool:
        rows = lab_backend.status()
        if not any(r[0] == "airflow-triggerer" and r[2].startswith("healthy") for r in rows):
            return False
        conn = psycopg2.connect(lab.pg_dsn("airflow"))
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM job WHERE job_type = 'TriggererJob' AND state = 'running' "
                    "AND latest_heartbeat > now() - interval '30 seconds'"
                )
                return bool(cur.fetchone()[0])
        finally:
            conn.close()

    wait_until("the triggerer did not run again after the Postgres kill", heartbeating, timeout, every=1)


# --------------------------------------------------------------------------------------------------
# the Airflow scheduler during a DAG run

DAG_ID = "71_01_01_basics"
FINISHED = ("success", "failed")


def run_state(api: AirflowAPI, run_id: str) -> tuple[str, dict[str, str | None]]:
    quoted = urllib.parse.quote(run_id, safe="")
    run = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}")
    tis = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances")["task_instances"]
    return run["state"], {t["task_id"]: t["state"] for t in tis}


def wait_finished(api: AirflowAPI, run_id: str, timeout: float) -> tuple[str, dict[str, str | None]]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            seen = run_state(api, run_id)
        except OSError:  # the api-server answers again a moment after a restart
            seen = ("unknown", {})
        if seen[0] in FINISHED or time.monotonic() > deadline:
            return seen
        time.sleep(1)


def test_the_scheduler_killed_during_a_dag_run_the_run_completes_and_the_targets_equal_the_source(
    lab, names, shop_db, warehouse_db
):
    src = f"public.{names('cust')}"
    full, incr, pipeline = f"core.{names('full')}", f"core.{names('incr')}", names("71_01_01")
    create_customers_copy(shop_db, src)
    with shop_db.cursor() as cur:
        cur.execute(
            f"INSERT INTO {src} (id, email, full_name, tier) "
            "SELECT g, 'c' || g || '@example.com', 'Customer ' || g, 'basic' FROM generate_series(1, 50000) g"
        )
    conf = {"source_table": src, "full_target": full, "incremental_target": incr, "pipeline": pipeline}
    lab_backend = backend(lab)
    api = AirflowAPI.for_lab(lab)
    api.wait_for_dag(DAG_ID)
    was_paused = api.call("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"]
    try:
        if was_paused:
            api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        import pendulum

        run = api.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {"logical_date": pendulum.now("UTC").isoformat(), "conf": conf},
        )
        run_id = run["dag_run_id"]

        def in_progress() -> tuple[str, dict[str, str | None]] | None:
            seen = run_state(api, run_id)
            started = any(s in ("queued", "scheduled", "running", "success") for s in seen[1].values())
            return seen if seen[0] == "running" and started else None

        at_kill = wait_until("the run did not start", in_progress, timeout=300, every=0.5)
        try:
            lab_backend.kill("airflow-scheduler")  # SIGKILL
            after = run_state(api, run_id)
            # the kill landed while the run was in progress: not finished, not every task done
            assert after[0] == "running", after
            assert not all(s in ("success", "skipped") for s in after[1].values()), after
        finally:
            bring_back(lab)

        state_, tasks = wait_finished(api, run_id, timeout=900)
        retried = False
        if state_ == "failed":  # a task lost with the scheduler: retried by clearing it, as an operator would
            retried = True
            api.call(
                "POST",
                f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
                {"dag_run_id": run_id, "only_failed": True, "dry_run": False, "reset_dag_runs": True},
            )
            state_, tasks = wait_finished(api, run_id, timeout=900)
        assert state_ == "success", (state_, tasks, at_kill, retried)
        print(f"drill: scheduler killed at {at_kill}, just after: {after}; retried by clearing: {retried}")
    finally:
        if was_paused:
            api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})

    try:
        assert rows(warehouse_db, full) == rows(shop_db, src)
        assert rows(warehouse_db, incr) == rows(shop_db, src)
        for t in (full, incr):
            with warehouse_db.cursor() as cur:
                cur.execute(f"SELECT count(*), count(DISTINCT id) FROM {t}")
                assert cur.fetchone() == (50_000, 50_000)
    finally:
        drop(shop_db, src)
        drop(warehouse_db, full, incr)
