"""71_04_05: loaded files move to a dated archive prefix (copy, verify, delete) with an audit trail;
corrupt files go to quarantine; archives past retention are expired exactly once."""

from __future__ import annotations

from typing import Any

import pendulum
import pytest

from cdclab.files import producer
from cdclab.files.store import ObjectStore
from tests.dagrun import run_dag

DAG = "71_04_05_archive"
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
        "target": f"staging.{names('pe')}",
        "retention_days": 30,
    }
    yield c
    for bucket, prefix in (
        ("landing", c["prefix"]),
        ("archive", c["pipeline"] + "/"),
        ("quarantine", c["pipeline"] + "/"),
    ):
        store.delete(bucket, [o.key for o in store.list_objects(bucket, prefix)])
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{names("pe")}"')


def audit(db, pipeline: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT action, src_bucket, src_key, dst_bucket, dst_key FROM state.file_audit"
            " WHERE pipeline = %s ORDER BY id",
            (pipeline,),
        )
        return cur.fetchall()


def test_loaded_files_are_archived_once_audited_and_expired_after_retention(conf, store, warehouse_db):
    p, q = conf["prefix"], conf["pipeline"]
    day1 = pendulum.now("UTC")
    files = {f"{p}a.csv": producer.make_rows(10, 1, 1), f"{p}b.jsonl": producer.make_rows(5, 2, 100)}
    data = {k: producer.drop(store, "landing", k, rows) for k, rows in files.items()}
    store.put("landing", f"{p}bad.csv", producer.corrupt("bad_row", "bad.csv", producer.make_rows(4, 3, 200)))

    run_dag(DAG, day1, conf=conf)
    dated = f"{q}/{day1:%Y/%m/%d}/"
    assert store.list_objects("landing", p) == []
    assert {o.key: store.get("archive", o.key) for o in store.list_objects("archive", q + "/")} == {
        dated + k: v for k, v in data.items()
    }
    assert audit(warehouse_db, q) == [
        ("quarantine", "landing", f"{p}bad.csv", "quarantine", f"{q}/{p}bad.csv"),
        ("archive", "landing", f"{p}a.csv", "archive", dated + f"{p}a.csv"),
        ("archive", "landing", f"{p}b.jsonl", "archive", dated + f"{p}b.jsonl"),
    ]

    day2 = day1.add(days=1)
    later = producer.make_rows(7, 4, 300)
    producer.drop(store, "landing", f"{p}c.csv", later)
    run_dag(DAG, day2, conf=conf)
    with warehouse_db.cursor() as cur:
        cur.execute(
            f'SELECT event_id, customer_id, sku, qty, amount, event_time FROM staging."{conf["target"][8:]}"'
            " ORDER BY event_id"
        )
        assert cur.fetchall() == producer.expected([*files[f"{p}a.csv"], *files[f"{p}b.jsonl"], *later])
    actions = [a[0] for a in audit(warehouse_db, q)]
    assert actions == ["quarantine", "archive", "archive", "archive"], "nothing archived twice"
    assert store.head("archive", f"{q}/{day2:%Y/%m/%d}/{p}c.csv") is not None

    # retention counts from each file's archive day (its logical date), not from when it was archived
    run_dag(DAG, day1.add(days=31), conf=conf)  # day-1 archives are 31 days old: expired; day-2 ones not
    assert sorted(a[2] for a in audit(warehouse_db, q) if a[0] == "expire") == [
        dated + f"{p}a.csv",
        dated + f"{p}b.jsonl",
    ]
    run_dag(DAG, day1.add(days=31), conf=conf)  # a rerun expires nothing again
    run_dag(DAG, day1.add(days=32), conf=conf)  # now day 2's
    expired = [a for a in audit(warehouse_db, q) if a[0] == "expire"]
    assert sorted(a[2] for a in expired) == sorted(
        [dated + f"{p}a.csv", dated + f"{p}b.jsonl", f"{q}/{day2:%Y/%m/%d}/{p}c.csv"]
    )
    assert store.list_objects("archive", q + "/") == []


def test_a_backfill_in_the_past_expires_by_archive_day_and_a_rerun_expires_nothing_newer(
    conf, store, warehouse_db
):
    """Logical dates in January, archived today: retention compares the archive day with the logical date
    (with the audit rows' wall-clock time, nothing would ever expire in a backfill)."""
    p, q = conf["prefix"], conf["pipeline"]
    days = [pendulum.datetime(2026, 1, d, 6, tz="UTC") for d in (1, 10, 20)]
    for i, day in enumerate(days):
        producer.drop(store, "landing", f"{p}f{i}.csv", producer.make_rows(3, i + 1, 100 * i))
        run_dag(DAG, day, conf=conf)
    keys = [f"{q}/{day:%Y/%m/%d}/{p}f{i}.csv" for i, day in enumerate(days)]
    assert sorted(o.key for o in store.list_objects("archive", q + "/")) == keys
    assert [a[2] for a in audit(warehouse_db, q) if a[0] == "expire"] == []  # none was 30 days old

    run_dag(DAG, pendulum.datetime(2026, 2, 15, 6, tz="UTC"), conf=conf)  # cutoff 2026-01-16
    assert [a[2] for a in audit(warehouse_db, q) if a[0] == "expire"] == keys[:2]
    assert [o.key for o in store.list_objects("archive", q + "/")] == keys[2:]

    # a rerun of an older day (a clear or a backfill after the fact) expires nothing that was not due then
    run_dag(DAG, days[1], conf=conf)
    run_dag(DAG, pendulum.datetime(2026, 2, 15, 6, tz="UTC"), conf=conf)
    assert [a[2] for a in audit(warehouse_db, q) if a[0] == "expire"] == keys[:2]
    assert [o.key for o in store.list_objects("archive", q + "/")] == keys[2:]
