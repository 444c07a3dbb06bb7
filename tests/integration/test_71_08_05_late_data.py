"""71.8.5: over three hourly runs, rows that arrive after their window was computed are identified with
their lateness, per-source delays are measured, late rows within the allowed lateness reprocess their
window and later ones go to the dead-letter table with the reason; the hourly marts match the policy."""

from __future__ import annotations

import pendulum

from cdclab.ops import diagnostics as d
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import execute

DAG_ID = "71_08_05_late_data"


def at(h: int, m: int = 0, s: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(2026, 4, 4, h, m, s, tz="UTC")


def test_late_rows_are_identified_measured_and_reprocessed_or_dead_lettered(lab, names, warehouse_db):
    events, findings = f"staging.{names('lateev')}", f"state.{names('latefind')}"
    target, dlq, pipeline = f"marts.{names('latehr')}", f"dlq.{names('latedl')}", names("latepipe")
    conf = {
        "events_table": events,
        "target_table": target,
        "dead_letter_table": dlq,
        "findings_table": findings,
        "ledger_table": "state.processed_intervals",
        "pipeline": pipeline,
        "grace_minutes": 10,
        "allowed_lateness_minutes": 60,
    }
    execute(
        warehouse_db,
        f"CREATE TABLE {events} (event_id text PRIMARY KEY, source text NOT NULL, "
        "event_time timestamptz NOT NULL, ingested_at timestamptz NOT NULL, amount int NOT NULL)",
    )

    def arrive(*rows) -> None:
        with warehouse_db.cursor() as cur:
            cur.executemany(f"INSERT INTO {events} VALUES (%s, %s, %s, %s, %s)", rows)

    def findings_of(dr):
        with warehouse_db.cursor() as cur:
            cur.execute(
                f"SELECT check_name, subject, verdict, detail FROM {findings} WHERE run_id = %s ORDER BY id",
                (dr.run_id,),
            )
            return cur.fetchall()

    def marts():
        with warehouse_db.cursor() as cur:
            cur.execute(f"SELECT window_start, events, amount FROM {target} ORDER BY window_start")
            return cur.fetchall()

    # run 1: window 10:00, cutoff 11:10 (a4 arrives within the grace period: on time)
    arrive(
        ("a1", "web", at(10, 5), at(10, 5, 30), 1),
        ("a2", "web", at(10, 20), at(10, 21), 2),
        ("a3", "mobile", at(10, 30), at(10, 50), 4),
        ("a4", "mobile", at(10, 50), at(11, 5), 8),
    )
    dr = run_dag(DAG_ID, at(11), conf)
    f = findings_of(dr)
    assert [(c, s, v) for c, s, v, _ in f] == [
        ("source_delay", "mobile", "measured"),
        ("source_delay", "web", "measured"),
        ("processing_window", at(10).isoformat(), "processed"),
    ]
    assert f[0][3] == {
        "rows": 2,
        "p50_s": d.percentile([1200, 900], 0.5),
        "p95_s": d.percentile([900, 1200], 0.95),
        "max_s": 1200.0,
    }
    assert f[1][3]["rows"] == 2 and f[1][3]["max_s"] == 60.0
    assert f[2][3]["events"] == 4 and f[2][3]["amount"] == 15

    # run 2: window 11:00, cutoff 12:10; b2 is 40 min past its window's end (reprocess), b3 arrives after 12:10
    arrive(
        ("b1", "web", at(11, 10), at(11, 11), 16),
        ("b2", "mobile", at(10, 55), at(11, 40), 32),
        ("b3", "web", at(11, 59), at(12, 20), 64),
    )
    dr = run_dag(DAG_ID, at(12), conf)
    f = findings_of(dr)
    assert [(c, s, v) for c, s, v, _ in f] == [
        ("late_identification", "b2", "late"),
        ("source_delay", "mobile", "measured"),
        ("source_delay", "web", "measured"),
        ("handling", at(10).isoformat(), "reprocessed"),
        ("processing_window", at(11).isoformat(), "processed"),
    ]
    assert f[0][3]["lateness_s"] == 45 * 60 and f[0][3]["after_window_end_s"] == 40 * 60
    assert f[0][3]["handling"] == "reprocess" and f[0][3]["window_cutoff"] == at(11, 10).isoformat()
    assert f[3][3] == {"events": 5, "amount": 47, "late_rows": 1}
    assert f[4][3]["events"] == 1

    # run 3: window 12:00, cutoff 13:10; b3 is late for 11:00 (reprocess), c1 is 90 min past 11:00 (dead letter)
    arrive(("c1", "mobile", at(10, 40), at(12, 30), 128), ("c2", "web", at(12, 30), at(12, 31), 256))
    dr = run_dag(DAG_ID, at(13), conf)
    f = findings_of(dr)
    assert [(c, s, v) for c, s, v, _ in f] == [
        ("late_identification", "b3", "late"),
        ("late_identification", "c1", "late"),
        ("source_delay", "mobile", "measured"),
        ("source_delay", "web", "measured"),
        ("handling", "c1", "dead_letter"),
        ("handling", at(11).isoformat(), "reprocessed"),
        ("processing_window", at(12).isoformat(), "processed"),
    ]
    assert f[0][3]["handling"] == "reprocess" and f[1][3]["handling"] == "dead_letter"
    assert f[1][3]["after_window_end_s"] == 90 * 60
    assert f[3][3] == {"rows": 2, "p50_s": 660.0, "p95_s": d.percentile([60, 1260], 0.95), "max_s": 1260.0}

    assert marts() == [(at(10), 5, 47), (at(11), 2, 80), (at(12), 1, 256)]
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT event_id, window_start, reason FROM {dlq} ORDER BY event_id")
        dead = cur.fetchall()
    assert [(e, w) for e, w, _ in dead] == [("c1", at(10))]
    assert "allowed lateness is 60 min" in dead[0][2]
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT interval_start, kind, rows_loaded, cutoff FROM state.processed_intervals "
            "WHERE pipeline = %s ORDER BY id",
            (pipeline,),
        )
        assert cur.fetchall() == [
            (at(10), "load", 4, at(11, 10)),
            (at(10), "reprocess", 5, at(12, 10)),
            (at(11), "load", 1, at(12, 10)),
            (at(11), "reprocess", 2, at(13, 10)),
            (at(12), "load", 1, at(13, 10)),
        ]
