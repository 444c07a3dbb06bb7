"""71_10_04_monitoring: stale watermarks, lagging consumer groups, gappy ledgers and drifting targets are
graded ok/warn/alert row by row, and the dashboard view shows the latest grade per subject."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from cdclab.cdc.consumer import ensure_schema as ensure_offsets
from cdclab.ops import recovery
from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, rows, xcom

DAG_ID = "71_10_04_monitoring"


def produce(lab, topic, n):
    p = Producer({"bootstrap.servers": lab.kafka_bootstrap})
    for i in range(n):
        p.produce(topic, key=str(i).encode(), value=b"{}")
    assert p.flush(30) == 0


def set_offset(warehouse_db, group, topic, next_offset):
    execute(
        warehouse_db,
        "INSERT INTO state.kafka_offsets (consumer_group, topic, kafka_partition, next_offset) "
        "VALUES (%s, %s, 0, %s) ON CONFLICT (consumer_group, topic, kafka_partition) "
        "DO UPDATE SET next_offset = EXCLUDED.next_offset",
        (group, topic, next_offset),
    )


def set_watermark(warehouse_db, key, value):
    execute(
        warehouse_db,
        "INSERT INTO state.watermarks (key, value, value_type) VALUES (%s, %s, 'timestamptz') "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        (key, value.isoformat()),
    )


def set_ledger(warehouse_db, pipeline, h, status):
    execute(
        warehouse_db,
        "INSERT INTO state.interval_ledger (pipeline, interval_start, interval_end, status, attempts) "
        "VALUES (%s, %s, %s, %s, 1) ON CONFLICT (pipeline, interval_start) DO UPDATE SET status = EXCLUDED.status",
        (pipeline, hour(h), hour(h + 1), status),
    )


@pytest.fixture
def setup(lab, shop_db, warehouse_db, names, kafka_topic):
    scope = names("scope")
    topic = kafka_topic
    wm = {k: names(f"wm_{k}") for k in ("fresh", "stale", "dead", "missing")}
    groups = {k: names(f"g_{k}") for k in ("ok", "warn", "alert")}
    ledgers = {k: names(f"l_{k}") for k in ("ok", "gappy")}
    src, tgt = f"public.{names('cnt')}", {k: f"core.{names(f'cnt_{k}')}" for k in ("ok", "warn", "alert")}
    state.ensure_schema(warehouse_db)
    recovery.ensure_schema(warehouse_db)
    with warehouse_db.cursor() as cur:
        ensure_offsets(cur)
    execute(shop_db, f"CREATE TABLE {src} AS SELECT g AS id FROM generate_series(1, 100) g")
    for k, n in (("ok", 100), ("warn", 95), ("alert", 80)):
        execute(warehouse_db, f"CREATE TABLE {tgt[k]} AS SELECT g AS id FROM generate_series(1, {n}) g")
    conf = {
        "scope": scope,
        "watermark_keys": list(wm.values()),
        "watermark_age_warn_seconds": 3600,
        "watermark_age_alert_seconds": 86400,
        "consumer_groups": list(groups.values()),
        "lag_warn": 2,
        "lag_alert": 5,
        "ledger_pipelines": list(ledgers.values()),
        "ledger_step_seconds": 3600,
        "gap_warn": 1,
        "gap_alert": 3,
        "row_count_pairs": [{"source": src, "target": t} for t in tgt.values()],
        "drift_warn": 0.01,
        "drift_alert": 0.1,
        "connectors": [],  # the connector check: tests/integration/test_71_10_04_alerts.py
        "fail_on_alert": False,  # grade and deliver, stay green: the lesson's runs are compared below
        "replication_slots": [],  # slots are graded by their own test below
        "slots_report_all": False,
    }
    yield conf, topic, wm, groups, ledgers, src, tgt
    drop(shop_db, src)
    drop(warehouse_db, *tgt.values())
    execute(warehouse_db, "DELETE FROM marts.pipeline_health WHERE scope = %s", (scope,))
    execute(warehouse_db, "DELETE FROM marts.alerts WHERE scope = %s", (scope,))
    execute(warehouse_db, "DELETE FROM state.watermarks WHERE key = ANY(%s)", (list(wm.values()),))
    execute(
        warehouse_db,
        "DELETE FROM state.kafka_offsets WHERE consumer_group = ANY(%s)",
        (list(groups.values()),),
    )
    execute(
        warehouse_db, "DELETE FROM state.interval_ledger WHERE pipeline = ANY(%s)", (list(ledgers.values()),)
    )


def checks(warehouse_db, run_id):
    return {
        (metric, subject): (status, value)
        for metric, subject, status, value in rows(
            warehouse_db,
            f"marts.pipeline_health WHERE run_id = '{run_id}'",
            "metric, subject, status, value",
            "id",
        )
    }


def test_lag_gaps_staleness_and_drift_are_graded_row_by_row_across_runs(lab, warehouse_db, setup) -> None:
    conf, topic, wm, groups, ledgers, src, tgt = setup
    produce(lab, topic, 10)
    for k, offset in (("ok", 10), ("warn", 7), ("alert", 0)):
        set_offset(warehouse_db, groups[k], topic, offset)
    # the run at 06:00 measures the interval [05:00, 06:00): ages at 06:00, ledgers up to 05:00
    set_watermark(warehouse_db, wm["fresh"], hour(5, 1).add(minutes=50))
    set_watermark(warehouse_db, wm["stale"], hour(3))
    set_watermark(warehouse_db, wm["dead"], hour(3).subtract(days=2))
    for h in (1, 2, 3, 4):
        set_ledger(warehouse_db, ledgers["ok"], h, "succeeded")
    set_ledger(warehouse_db, ledgers["gappy"], 1, "succeeded")
    set_ledger(warehouse_db, ledgers["gappy"], 2, "failed")
    set_ledger(warehouse_db, ledgers["gappy"], 4, "succeeded")

    g = {k: f"{v}/{topic}[0]" for k, v in groups.items()}
    pairs = {k: f"{src}->{t}" for k, t in tgt.items()}
    dr1 = run_dag(DAG_ID, hour(6), conf)
    assert checks(warehouse_db, dr1.run_id) == {
        ("watermark_age_seconds", wm["fresh"]): ("ok", 600.0),
        ("watermark_age_seconds", wm["stale"]): ("warn", 3 * 3600.0),
        ("watermark_age_seconds", wm["dead"]): ("alert", 51 * 3600.0),
        ("watermark_age_seconds", wm["missing"]): ("alert", None),
        ("kafka_lag", g["ok"]): ("ok", 0.0),
        ("kafka_lag", g["warn"]): ("warn", 3.0),
        ("kafka_lag", g["alert"]): ("alert", 10.0),
        ("missing_intervals", ledgers["ok"]): ("ok", 0.0),
        ("missing_intervals", ledgers["gappy"]): ("warn", 2.0),  # hour 2 failed, hour 3 missing
        ("row_count_drift", pairs["ok"]): ("ok", 0.0),
        ("row_count_drift", pairs["warn"]): ("warn", 0.05),
        ("row_count_drift", pairs["alert"]): ("alert", 0.2),
    }
    assert xcom(dr1, "measure") == {"ok": 4, "warn": 4, "alert": 4}
    # fail_on_alert=false: the run stays green, the notifier still delivers the four critical findings
    assert rows(
        warehouse_db,
        f"marts.alerts WHERE run_id = '{dr1.run_id}' AND scope = '{conf['scope']}'",
        "check_name, subject, severity, task_id",
        "check_name, subject",
    ) == sorted(
        [
            ("watermark_age_seconds", wm["dead"], "critical", "report"),
            ("watermark_age_seconds", wm["missing"], "critical", "report"),
            ("kafka_lag", g["alert"], "critical", "report"),
            ("row_count_drift", pairs["alert"], "critical", "report"),
        ]
    )

    # the lagging group catches up, the gaps are filled, the target is reloaded
    set_offset(warehouse_db, groups["alert"], topic, 10)
    set_ledger(warehouse_db, ledgers["gappy"], 2, "succeeded")
    set_ledger(warehouse_db, ledgers["gappy"], 3, "succeeded")
    execute(warehouse_db, f"INSERT INTO {tgt['alert']} SELECT g FROM generate_series(81, 100) g")
    dr2 = run_dag(DAG_ID, hour(6), conf)
    c2 = checks(warehouse_db, dr2.run_id)
    assert c2[("kafka_lag", g["alert"])] == ("ok", 0.0)
    assert c2[("missing_intervals", ledgers["gappy"])] == ("ok", 0.0)
    assert c2[("row_count_drift", pairs["alert"])] == ("ok", 0.0)

    # an hour later: new records nobody consumed, the ledgers stop at hour 4 (hour 5 missing),
    # and the fresh watermark did not move
    produce(lab, topic, 6)
    dr3 = run_dag(DAG_ID, hour(7), conf)
    c3 = checks(warehouse_db, dr3.run_id)
    assert [c3[("kafka_lag", g[k])] for k in ("ok", "warn", "alert")] == [
        ("alert", 6.0),
        ("alert", 9.0),
        ("alert", 6.0),
    ]
    assert c3[("missing_intervals", ledgers["ok"])] == ("warn", 1.0)
    assert c3[("watermark_age_seconds", wm["fresh"])] == ("warn", 4200.0)

    # the dashboard view: the latest grade per subject, worst first
    board = rows(
        warehouse_db,
        f"marts.pipeline_health_dashboard WHERE scope = '{conf['scope']}'",
        "metric, subject, status, severity",
        "severity DESC, metric, subject",
    )
    assert len(board) == 12
    assert {(m, s): st for m, s, st, _ in board} == {k: v[0] for k, v in c3.items()}
    assert [sev for *_, sev in board] == sorted((sev for *_, sev in board), reverse=True)


def test_retained_wal_per_slot_is_graded_and_a_missing_slot_is_critical(lab, names, warehouse_db) -> None:
    """A slot of our own that holds WAL nobody reads is graded by its retained bytes; an expected slot that
    does not exist is an alert marked CRITICAL with the remedy. (An invalidated slot, wal_status = 'lost',
    takes the same path: cdclab.cdc.slots.lost_reason, unit-tested.)"""
    import psycopg2

    slot, missing, scope = names("slot7110"), names("gone7110"), names("scope")
    admin = psycopg2.connect(lab.pg_dsn("shop", role="postgres"))
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
            # ~1 MB of WAL after the slot's restart_lsn, in a schema outside the lab's publication
            cur.execute(f"CREATE SCHEMA {slot}")
            cur.execute(
                f"CREATE TABLE {slot}.pad AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 4000) g"
            )
            cur.execute(f"DROP SCHEMA {slot} CASCADE")
            cur.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            (held,) = cur.fetchone()
        assert held > 500_000
        conf = {
            "scope": scope,
            "watermark_keys": [],
            "consumer_groups": [],
            "ledger_pipelines": [],
            "row_count_pairs": [],
            "replication_slots": [slot, missing],
            "slots_report_all": False,
            "slot_wal_warn_bytes": 100_000,
            "slot_wal_alert_bytes": 100_000_000,
            "fail_on_alert": False,  # the missing slot is critical: graded and delivered, the run stays green
        }
        dr = run_dag(DAG_ID, hour(6), conf)
        graded = {
            subject: (status, value, detail)
            for subject, status, value, detail in rows(
                warehouse_db,
                f"marts.pipeline_health WHERE run_id = '{dr.run_id}' AND metric = 'slot_retained_wal_bytes'",
                "subject, status, value, detail",
                "id",
            )
        }
        assert set(graded) == {slot, missing}
        status, value, detail = graded[slot]
        assert status == "warn" and value >= held and "INACTIVE" in detail
        status, value, detail = graded[missing]
        assert status == "alert" and value is None
        assert detail.startswith("CRITICAL: replication slot") and "re-snapshot" in detail
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (slot,),
            )
        admin.close()
        execute(warehouse_db, "DELETE FROM marts.pipeline_health WHERE scope = %s", (scope,))
