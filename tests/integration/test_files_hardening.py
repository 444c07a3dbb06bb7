"""Files on real MinIO: a file whose attempts are used up is ``exhausted`` in the manifest ledger, raised
and graded, never parked silently; whole and ranged reads are pinned to the ETag that was planned, so an
object replaced after planning raises ObjectChanged and nothing of it is loaded.

Each test owns its bucket (``s3_bucket``), pipeline name and target tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdclab.common.db import WAREHOUSE, transaction
from cdclab.files import chunking, loading, producer, state
from cdclab.files.errors import ChunkIncomplete, FilesExhausted, ObjectChanged
from cdclab.files.store import ObjectStore
from cdclab.ops import health

LOG_SERVICES = ["minio", "postgres"]
V006 = Path(__file__).resolve().parents[2] / "infra" / "postgres" / "warehouse" / "V006__files_exhausted.sql"


@pytest.fixture(scope="module")
def exhausted_status(lab):
    """The lab's warehouse takes status 'exhausted' (V006; idempotent, the same statement migrate.sh
    runs at the next lab start, for a lab started before this version existed)."""
    import psycopg2

    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        with conn, conn.cursor() as cur:
            state.ensure_tables(cur)
            cur.execute(V006.read_text())
    finally:
        conn.close()


@pytest.fixture
def files(lab, names, s3_bucket, warehouse_db, exhausted_status):
    pipeline = f"hard_{names.suffix}"
    targets = {k: f"staging.{names(k)}" for k in ("fhard", "fhard_chunks")}
    yield {"pipeline": pipeline, "bucket": s3_bucket, "store": ObjectStore(), **targets}
    with warehouse_db.cursor() as cur:
        for t in targets.values():
            cur.execute(f"DROP TABLE IF EXISTS {t}")
        for table in ("state.file_manifest", "state.file_chunks", "state.file_audit", "dlq.file_quarantine"):
            cur.execute(f"DELETE FROM {table} WHERE pipeline = %s", (pipeline,))


def ledger(warehouse_db, pipeline):
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT key, etag, status, attempts, error FROM state.file_manifest WHERE pipeline = %s ORDER BY key, status",
            (pipeline,),
        )
        return cur.fetchall()


def target_rows(warehouse_db, target, key=None):
    with warehouse_db.cursor() as cur:
        cur.execute(
            f"SELECT source_key, source_etag, event_id FROM {target} WHERE %s::text IS NULL OR source_key = %s "
            "ORDER BY source_key, source_offset",
            (key, key),
        )
        return cur.fetchall()


def register(f, prefix):
    objs = f["store"].list_objects(f["bucket"], prefix)
    with transaction(WAREHOUSE) as cur:
        loading.ensure_target(cur, f["fhard"])
        state.register(cur, f["pipeline"], objs)
    return objs


def load(f, objs, max_attempts=3):
    return loading.load_all(f["store"], f["pipeline"], objs, f["fhard"], max_attempts=max_attempts)


def pending(f, max_attempts=3):
    with transaction(WAREHOUSE) as cur:
        return [r.obj for r in state.pending(cur, f["pipeline"], max_attempts=max_attempts)]


def test_a_file_that_uses_up_its_attempts_is_exhausted_loudly_and_reprocessed_after_the_fix(
    files, warehouse_db
):
    f = files
    rows = producer.make_rows(30, 7, 1)
    producer.drop(f["store"], f["bucket"], "in/a.csv", rows)
    # an operational failure on every attempt: the target demands a column the loader does not write
    with transaction(WAREHOUSE) as cur:
        loading.ensure_target(cur, f["fhard"])
    with warehouse_db.cursor() as cur:
        cur.execute(f"ALTER TABLE {f['fhard']} ADD COLUMN required_by_nobody text NOT NULL")
    register(f, "in/")

    for attempt in (1, 2):
        with pytest.raises(loading.FilesFailed, match="the next run retries them"):
            load(f, pending(f))
        ((key, _etag, status, attempts, error),) = ledger(warehouse_db, f["pipeline"])
        assert (key, status, attempts) == ("in/a.csv", "failed", attempt)
        assert "NotNullViolation" in error
    with pytest.raises(FilesExhausted, match=r"1 file\(s\) of pipeline .* are exhausted.*in/a\.csv"):
        load(f, pending(f))
    ((key, _etag, status, attempts, error),) = ledger(warehouse_db, f["pipeline"])
    assert (status, attempts) == ("exhausted", 3) and "NotNullViolation" in error

    # not pending any more, and still loud: the next run raises again, the health check alerts
    assert pending(f) == []
    with pytest.raises(FilesExhausted):
        load(f, pending(f))
    (check,) = health.files_exhausted(warehouse_db, [f["pipeline"]], warn=1, alert=1)
    assert (check.status, check.value) == ("alert", 1) and "in/a.csv after 3 attempt(s)" in check.detail
    assert target_rows(warehouse_db, f["fhard"]) == []

    # the cause is fixed, the file reprocessed: attempts start from 0 and it loads
    with warehouse_db.cursor() as cur:
        cur.execute(f"ALTER TABLE {f['fhard']} DROP COLUMN required_by_nobody")
    with transaction(WAREHOUSE) as cur:
        assert [r.key for r in state.reset_for_reprocess(cur, f["pipeline"], keys=["in/a.csv"])] == [
            "in/a.csv"
        ]
    summary = load(f, pending(f))
    assert summary["loaded"] == ["in/a.csv"] and summary["rows"] == 30
    ((key, _etag, status, attempts, error),) = ledger(warehouse_db, f["pipeline"])
    assert (status, attempts, error) == ("loaded", 1, None)
    assert [r[2] for r in target_rows(warehouse_db, f["fhard"])] == sorted(r["event_id"] for r in rows)
    (check,) = health.files_exhausted(warehouse_db, [f["pipeline"]], warn=1, alert=1)
    assert (check.status, check.value) == ("ok", 0)


def test_a_failed_file_parked_by_an_older_version_is_swept_to_exhausted(files, warehouse_db):
    f = files
    producer.drop(f["store"], f["bucket"], "old/b.csv", producer.make_rows(5, 8, 1))
    (obj,) = register(f, "old/")
    with transaction(WAREHOUSE) as cur:  # what the loader before V006 left: failed, attempts used up
        state.set_status(cur, f["pipeline"], obj, "failed", error="OperationalError: gone")
        state.set_status(cur, f["pipeline"], obj, "failed", error="OperationalError: gone")
    with pytest.raises(FilesExhausted, match=r"old/b\.csv"):
        load(f, pending(f, max_attempts=2), max_attempts=2)
    assert [(r[2], r[3]) for r in ledger(warehouse_db, f["pipeline"])] == [("exhausted", 2)]


def test_a_whole_read_is_pinned_to_the_planned_etag(files, warehouse_db):
    f = files
    store, bucket = f["store"], f["bucket"]
    v1, v2 = producer.make_rows(20, 1, 1), producer.make_rows(25, 2, 100)
    producer.drop(store, bucket, "w/c.csv", v1)
    (planned,) = register(f, "w/")
    assert store.get(bucket, "w/c.csv", etag=planned.etag) == producer.file_bytes(v1, "w/c.csv")

    producer.drop(store, bucket, "w/c.csv", v2)  # replaced after it was planned
    with pytest.raises(ObjectChanged, match=f"planned ETag {planned.etag}, now ETag"):
        store.get(bucket, "w/c.csv", etag=planned.etag)
    with pytest.raises(ObjectChanged, match=r"1 file\(s\) changed after they were planned"):
        load(f, pending(f))
    assert target_rows(warehouse_db, f["fhard"]) == []  # nothing of either version under the old row
    ((_key, etag, status, _attempts, error),) = ledger(warehouse_db, f["pipeline"])
    assert (etag, status) == (planned.etag, "exhausted") and error.startswith("ObjectChanged:")

    # detection lists the new version: a row of its own, loaded with its own ETag
    (current,) = register(f, "w/")
    assert current.etag != planned.etag
    with pytest.raises(FilesExhausted):  # the superseded row stays visible until someone removes it
        load(f, pending(f))
    loaded = target_rows(warehouse_db, f["fhard"])
    assert {e for _, e, _ in loaded} == {current.etag}
    assert [i for *_, i in loaded] == sorted(r["event_id"] for r in v2)


def test_ranged_reads_are_pinned_and_a_changed_object_is_never_half_loaded(files, warehouse_db):
    f = files
    store, bucket = f["store"], f["bucket"]
    rows = producer.make_rows(600, 3, 1)  # ~36 KB of CSV
    producer.drop(store, bucket, "r/big.csv", rows)
    (obj,) = register(f, "r/")
    data_start, chunks = chunking.plan_object(store, obj, chunk_bytes=8 * 1024)
    assert len(chunks) >= 3
    with transaction(WAREHOUSE) as cur:
        chunking.ensure_chunk_table(cur, f["fhard_chunks"])
        chunking.register_chunks(cur, f["pipeline"], obj, chunks)
    first = chunking.load_chunk(store, f["pipeline"], obj, chunks[0], f["fhard_chunks"])
    assert first["status"] == "loaded"

    producer.drop(store, bucket, "r/big.csv", producer.make_rows(600, 4, 1))  # same size class, new bytes
    with pytest.raises(ObjectChanged, match=f"planned ETag {obj.etag}"):
        chunking.load_chunk(store, f["pipeline"], obj, chunks[1], f["fhard_chunks"])
    with transaction(WAREHOUSE) as cur:
        statuses = [c["status"] for c in chunking.chunk_rows(cur, f["pipeline"], obj)]
    assert statuses[0] == "loaded" and set(statuses[1:]) == {"pending"}
    with pytest.raises(ChunkIncomplete), transaction(WAREHOUSE) as cur:
        chunking.assemble(cur, store, f["pipeline"], obj, data_start, f["fhard"], f["fhard_chunks"])
    assert target_rows(warehouse_db, f["fhard"]) == []  # the target holds nothing of the file
    with pytest.raises(ObjectChanged):  # planning is pinned too: a stale listing cannot be re-planned
        chunking.plan_object(store, obj, chunk_bytes=8 * 1024)
