"""Runs without a logical date (REST API / ``airflow dags trigger`` without ``--logical-date``) get the
interval the UI's Trigger would give them at ``run_after``: the last complete interval before the run
started (docs/runs_without_interval.md, ``cdclab.time.intervals.run_interval``).

Each DAG here crashed on such a run before (KeyError 'data_interval_end', KeyError 'logical_date',
TypeError on None, NotNullViolation on interval_end / measured_for). Every run below is made by
``tests.dagrun.run_dag_without_logical_date`` (``dag.test(logical_date=None, run_after=...)``, see its
docstring for why that is the same run the REST API creates), and the assertions are on the rows the DAGs
wrote: the derived interval must be the one in them."""

from __future__ import annotations

import pendulum
import pytest
from psycopg2 import sql

from cdclab.files import producer
from cdclab.files.store import ObjectStore
from tests.dagrun import run_dag_without_logical_date
from tests.integration import _71_06_helpers as h06
from tests.integration._71_01_helpers import drop, execute, hour, rows, xcom
from tests.integration._71_03_helpers import Source
from tests.integration._71_05_helpers import add_orders, add_payments, make_copy
from tests.integration._71_06_helpers import PER_HOUR, deliveries
from tests.integration._cdc_helpers import make_source_table, published

LOG_SERVICES = ["connect", "kafka", "minio", "postgres"]


def test_71_06_04_hourly_runs_without_logical_date_dedupe_the_hour_before_they_start(
    shop_db, warehouse_db, names
) -> None:
    """Four runs, each started 17 minutes past an hour, with no logical date: each deduplicates the
    hour that just closed, so the end state equals the one of four runs with logical dates."""
    src, target, seen = f"public.{names('dd_src')}", f"core.{names('dd_tgt')}", f"state.{names('dd_seen')}"
    h06.create(shop_db, src, "deliveries")
    h06.insert(shop_db, src, "seq, event_id, event_time, arrived_at, payload", deliveries())
    conf = {
        "variant": "fixed",
        "source_table": src,
        "target_table": target,
        "seen_table": seen,
        "ttl_minutes": 60,
    }
    try:
        run_ids = [
            run_dag_without_logical_date("71_06_04_unbounded_state", h06.at(h + 1, 17), conf).run_id
            for h in (1, 2, 3, 4)
        ]
        sizes = h06.fetch(
            warehouse_db,
            f"SELECT run_id, interval_end, delivered, emitted, expired, state_rows FROM {seen}__size ORDER BY id",
        )
        assert [r[0] for r in sizes] == run_ids
        assert [r[1] for r in sizes] == [h06.at(2), h06.at(3), h06.at(4), h06.at(5)]  # the derived ends
        assert [r[2:] for r in sizes] == [(6, 5, 0, 5), (7, 5, 5, 5), (7, 5, 5, 5), (7, 5, 5, 5)]
        expected = h06.fetch(shop_db, f"SELECT DISTINCT event_id, event_time, payload FROM {src} ORDER BY 1")
        assert len(expected) == 4 * PER_HOUR
        assert h06.fetch(warehouse_db, f"SELECT event_id, event_time, payload FROM {target} ORDER BY 1") == (
            expected
        )
    finally:
        h06.drop(shop_db, src)
        h06.drop(warehouse_db, target, seen, f"{seen}__size")


def test_71_05_02_buffer_and_expiry_use_the_derived_interval_end(shop_db, warehouse_db, names) -> None:
    orders, payments = f"public.{names('ord')}", f"public.{names('pay')}"
    prefix, dlq = f"core.{names('ooo')}", f"dlq.{names('pay')}"
    make_copy(shop_db, orders, "public.orders")
    make_copy(shop_db, payments, "public.payments")
    conf = {
        "orders_table": orders,
        "payments_table": payments,
        "target_prefix": prefix,
        "dead_letter_table": dlq,
        "watermark_prefix": names("71_05_02"),
        "buffer_window_hours": 2,
        "repair": True,
    }
    try:
        add_orders(shop_db, orders, [(1, 100)])
        add_payments(shop_db, payments, [(11, 1, "5.00"), (14, 4, "9.00")])
        # started 01:17 with no logical date: interval [00:00, 01:00), so first_seen = 01:00
        dr = run_dag_without_logical_date("71_05_02_out_of_order", hour(1).add(minutes=17), conf)
        assert xcom(dr, "ingest")["payments_buffered"] == 1
        assert rows(warehouse_db, f"{prefix}_payments", "id, via") == [(11, "direct")]
        assert rows(warehouse_db, f"{prefix}_buffer", "id, order_id, first_seen") == [(14, 4, hour(1))]
        # started 02:40: interval ends 02:00, 1 h after first_seen: still within the 2 h window
        dr = run_dag_without_logical_date("71_05_02_out_of_order", hour(2).add(minutes=40), conf)
        assert xcom(dr, "expire") == []
        # started 03:05: interval ends 03:00 = first_seen + 2 h: the window is over, dead-lettered
        dr = run_dag_without_logical_date("71_05_02_out_of_order", hour(3).add(minutes=5), conf)
        assert xcom(dr, "expire") == [14]
        [(pid, reason)] = rows(warehouse_db, dlq, "payment_id, reason", "payment_id")
        assert pid == 14
        assert "order 4 did not arrive within the buffer window" in reason
        assert rows(warehouse_db, f"{prefix}_reconciliation", "checked_at", "checked_at")[-1] == (hour(3),)
    finally:
        drop(shop_db, orders, payments)
        drop(
            warehouse_db, *(f"{prefix}_{s}" for s in ("orders", "payments", "buffer", "reconciliation")), dlq
        )


def test_71_10_04_measures_against_the_derived_interval_end(warehouse_db, names) -> None:
    from cdclab.state import watermarks as state

    scope, fresh, stale = names("scope"), names("wm_fresh"), names("wm_stale")
    state.ensure_schema(warehouse_db)
    for key, value in ((fresh, hour(5).add(minutes=50)), (stale, hour(3))):
        execute(
            warehouse_db,
            "INSERT INTO state.watermarks (key, value, value_type) VALUES (%s, %s, 'timestamptz')",
            (key, value.isoformat()),
        )
    conf = {
        "scope": scope,
        "watermark_keys": [fresh, stale],
        "watermark_age_warn_seconds": 3600,
        "watermark_age_alert_seconds": 86400,
        "consumer_groups": [],
        "ledger_pipelines": [],
        "row_count_pairs": [],
        "connectors": [],
        "replication_slots": [],  # graded by test_71_10_04_monitoring.py; this test compares rows exactly
        "slots_report_all": False,
    }
    try:
        # started 06:17, no logical date: interval [05:00, 06:00), ages measured at 06:00
        dr = run_dag_without_logical_date("71_10_04_monitoring", hour(6).add(minutes=17), conf)
        assert rows(
            warehouse_db,
            f"marts.pipeline_health WHERE run_id = '{dr.run_id}'",
            "measured_for, metric, subject, status, value",
            "subject",
        ) == sorted(
            [
                (hour(6), "watermark_age_seconds", fresh, "ok", 600.0),
                (hour(6), "watermark_age_seconds", stale, "warn", 3 * 3600.0),
            ],
            key=lambda r: r[2],
        )
    finally:
        execute(warehouse_db, "DELETE FROM marts.pipeline_health WHERE scope = %s", (scope,))
        execute(warehouse_db, "DELETE FROM state.watermarks WHERE key = ANY(%s)", ([fresh, stale],))


@pytest.fixture
def store(lab) -> ObjectStore:
    return ObjectStore()


def test_71_04_05_archives_under_the_run_after_date(store, warehouse_db, names) -> None:
    """A cron-string DAG: no interval to derive, its logical date is the run's start (run_after)."""
    pipeline, prefix = f"t_{names.suffix}", f"{names.suffix}/"
    conf = {
        "pipeline": pipeline,
        "prefix": prefix,
        "pattern": "*",
        "target": f"staging.{names('pe')}",
        "retention_days": 30,
    }
    run_after = pendulum.now("UTC")  # the archive day is run_after's date; retention counts from it
    try:
        rows_a = producer.make_rows(6, 1, 1)
        data = producer.drop(store, "landing", f"{prefix}a.csv", rows_a)
        run_dag_without_logical_date("71_04_05_archive", run_after, conf)
        key = f"{pipeline}/{run_after:%Y/%m/%d}/{prefix}a.csv"
        assert store.list_objects("landing", prefix) == []
        assert {
            o.key: store.get("archive", o.key) for o in store.list_objects("archive", pipeline + "/")
        } == {key: data}
        assert rows(
            warehouse_db,
            f"state.file_audit WHERE pipeline = '{pipeline}'",
            "action, src_key, dst_bucket, dst_key",
            "id",
        ) == [("archive", f"{prefix}a.csv", "archive", key)]
        # 31 days later the archive is past retention: expired, archive day vs that run's run_after
        run_dag_without_logical_date("71_04_05_archive", run_after.add(days=31), conf)
        assert store.list_objects("archive", pipeline + "/") == []
        assert [
            r[0]
            for r in rows(warehouse_db, f"state.file_audit WHERE pipeline = '{pipeline}'", "action", "id")
        ] == ["archive", "expire"]
    finally:
        for bucket, p in (("landing", prefix), ("archive", pipeline + "/"), ("quarantine", pipeline + "/")):
            store.delete(bucket, [o.key for o in store.list_objects(bucket, p)])
        drop(warehouse_db, f"staging.{names('pe')}")


def test_71_03_05_archive_cutoff_counts_from_the_derived_day(lab, shop_db, warehouse_db, names) -> None:
    """Daily timetable: a run started 2026-03-10 05:17 without a logical date archives from the day
    [03-09, 03-10), so rows deleted before 03-10 - archive_after_days move to the archive."""
    table, group = names("sd"), names("grp")
    topic = f"shop.public.{table}"
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "soft_",
        "archive_after_days": 30,
        "batch_size": 500,
    }
    end = pendulum.datetime(2026, 3, 10, tz="UTC")
    make_source_table(shop_db, table)
    src = Source(shop_db, table)
    try:
        for i in (1, 2, 3):
            src.insert(i)
        src.soft_delete(2, end.subtract(days=30, minutes=1))  # before the cutoff: archived
        src.soft_delete(3, end.subtract(days=29))  # after it: stays flagged
        published(lab, topic, src.records)
        dr = run_dag_without_logical_date("71_03_05_soft_delete", end.add(hours=5, minutes=17), conf)
        archived = xcom(dr, "archive")
        assert archived["cutoff"] == end.subtract(days=30).isoformat()
        assert archived["archived"] == {f"core.soft_{table}": 1}
        with warehouse_db.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, _deleted FROM core.{t} ORDER BY id").format(
                    t=sql.Identifier(f"soft_{table}")
                )
            )
            assert cur.fetchall() == [(1, False), (3, True)]
            cur.execute(
                sql.SQL("SELECT DISTINCT id FROM core.{t}").format(t=sql.Identifier(f"soft_{table}__archive"))
            )
            assert cur.fetchall() == [(2,)]
    finally:
        drop(shop_db, f"public.{table}")
        drop(
            warehouse_db,
            *(f"core.soft_{table}{s}" for s in ("", "__archive", "__deleted")),
        )
