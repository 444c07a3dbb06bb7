"""The five DAGs that used to fail on a fresh lab with their default params (tables the lab does not
create, a source table that does not exist, a WatermarkInconsistentError on an empty source) run with
their DEFAULT params, twice, as a user's UI trigger does (logical date = now), and each run leaves
visible rows in the target / findings tables their docstrings name.

The broken situation each lesson investigates is built by the DAG's own ``setup`` task
(``cdclab.lessons.demos``), never by this test: the test only triggers and reads. The demo tables are the lab's
own (not per-test names), so the assertions hold whatever earlier runs left there."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from cdclab.lessons import demos
from cdclab.time.intervals import infer_interval
from tests.dagrun import get_dag, run_dag

LOG_SERVICES = ["postgres", "airflow-scheduler"]


def fetch(conn: Any, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def findings(conn: Any, table: str, run_id: str) -> list[tuple[str, str, str, Any]]:
    return [
        (c, s, v, d)
        for c, s, v, d in fetch(
            conn,
            f"SELECT check_name, subject, verdict, detail FROM {table} WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
    ]


def twice(dag_id: str) -> list[Any]:
    """Two runs with the DAG's default params (empty conf), logical date = now, as the UI's Trigger."""
    return [run_dag(dag_id, conf={}) for _ in range(2)]


def window(h: int) -> str:
    start = demos.GAP_DAY.replace(hour=h)
    return f"[{start.isoformat()}, {(start + dt.timedelta(hours=1)).isoformat()})"


def test_71_08_01_default_params_find_explain_and_backfill_the_demo_gap(
    shop_db, warehouse_db, assert_tables_equal
) -> None:
    for dr in twice("71_08_01_gap_investigation"):
        got = findings(warehouse_db, "state.findings_71_08_01", dr.run_id)
        assert [(c, s, v) for c, s, v, _ in got] == [
            ("gap_detection", window(11), "gap"),
            ("root_cause", window(11), "interval_never_run"),
            ("recovery", window(11), "backfilled"),
            ("verify", "core.events_71_08_01", "ok"),
            ("prevention", "71_08_01/events", "ledger_contiguous"),
        ]
        assert got[0][3]["keys"] == [3, 4] and got[2][3]["rows"] == 2
        # the target is complete again: exactly the source rows
        source = fetch(shop_db, "SELECT id, amount, event_at FROM public.events_71_08_01 ORDER BY id")
        assert source == [tuple(r) for r in demos.GAP_ROWS]
        assert_tables_equal(
            "shop:public.events_71_08_01",
            "warehouse:core.events_71_08_01",
            key="id",
            columns=["amount", "event_at"],
        )


def test_71_08_02_default_params_repair_the_broken_demo_watermark(
    shop_db, warehouse_db, lab_workload_paused
) -> None:
    key = "71_08_02/public.customers->core.customers_71_08_02"
    setup_reason = "reset: demo (setup): a bad deploy wrote the watermark as a bigint"
    for dr in twice("71_08_02_watermark_debug"):
        got = {c: (v, d) for c, _, v, d in findings(warehouse_db, "state.findings_71_08_02", dr.run_id)}
        assert got["value_verification"][0] == "wrong_type"  # built by setup: a bigint
        # the setup's move is the latest one (a type change when the watermark was a timestamptz before)
        assert got["history"][0] in ("type_changed", "ok")
        assert got["history"][1]["last_reason"] == setup_reason
        assert got["reset"][0] == "reset"
        source = fetch(shop_db, "SELECT id, updated_at FROM public.customers ORDER BY id")
        assert got["post_load_verification"][0] == ("ok" if source else "empty_source")
        # every source row is in the target with its cursor; the watermark is a timestamptz again (or
        # gone). A timestamp-cursor load cannot see hard deletes (71.1.1), and the lab's live workload
        # hard-deletes customers, so the target may keep rows the source no longer has: only those.
        target = fetch(warehouse_db, "SELECT id, updated_at FROM core.customers_71_08_02 ORDER BY id")
        missing = set(source) - set(target)
        assert not missing, f"source rows the load did not bring: {sorted(missing)[:10]}"
        gone = {k for k, _ in target} - {k for k, _ in source}
        if gone:
            deleted = fetch(
                shop_db, "SELECT count(*) FROM public.customers WHERE id = ANY(%s)", (sorted(gone),)
            )
            assert deleted == [(0,)]  # extra target rows are rows deleted from the source, nothing else
        wm = fetch(warehouse_db, "SELECT value_type FROM state.watermarks WHERE key = %s", (key,))
        assert wm == ([("timestamptz",)] if source else [])
        reasons = fetch(
            warehouse_db,
            "SELECT reason FROM state.watermark_history WHERE key = %s AND run_id = %s ORDER BY id",
            (key, dr.run_id),
        )
        assert reasons[0] == (setup_reason,)
        assert reasons[1][0].startswith(("reset: wrong_type", "delete: wrong_type"))  # audited repair


def test_71_08_04_default_params_find_charge_remove_and_prevent_the_demo_duplicates(warehouse_db) -> None:
    for dr in twice("71_08_04_duplicate_detection"):
        got = findings(warehouse_db, "state.findings_71_08_04", dr.run_id)
        by_check: dict[str, list[tuple[str, str, Any]]] = {}
        for c, s, v, d in got:
            by_check.setdefault(c, []).append((s, v, d))
        assert {s: v for s, v, _ in by_check["source_analysis"]} == {
            "demo-load-1-retry": "rerun_append",
            "demo-load-2": "append_of_changes",
        }
        [(_, verdict, detail)] = by_check["deduplication"]
        assert (verdict, detail) == ("deduplicated", {"before": 9, "deleted": 4, "after": 5})
        assert [v for _, v, _ in by_check["prevention"]] == ["unique_constraint_added"]
        assert fetch(warehouse_db, "SELECT id, version, tier FROM core.customers_71_08_04 ORDER BY id") == [
            (1, 1, "basic"),
            (2, 2, "gold"),
            (3, 1, "basic"),
            (4, 1, "basic"),
            (5, 1, "basic"),
        ]


def test_71_08_05_default_params_compute_the_window_and_handle_the_demo_late_rows(warehouse_db) -> None:
    runs = twice("71_08_05_late_data")
    timetable = get_dag("71_08_05_late_data").timetable
    for dr in runs:
        start, _ = infer_interval(timetable, dr.logical_date)
        got = findings(warehouse_db, "state.findings_71_08_05", dr.run_id)
        processed = [(s, v, d) for c, s, v, d in got if c == "processing_window"]
        assert [(s, v) for s, v, _ in processed] == [(start.isoformat(), "processed")]
        assert processed[0][2]["events"] == 3 and processed[0][2]["amount"] == 60  # the on-time demo events
        assert fetch(
            warehouse_db,
            "SELECT events, amount FROM marts.events_hourly_71_08_05 WHERE window_start = %s",
            (start,),
        ) == [(3, 60)]
        tag = f"{start:%Y%m%dT%H}"
        # the late arrivals of the previous window: one reprocessed into it, one dead-lettered with a reason
        [(reason,)] = fetch(
            warehouse_db,
            "SELECT reason FROM dlq.late_events_71_08_05 WHERE event_id = %s",
            (f"demo-{tag}-mobile-late",),
        )
        assert "allowed lateness is 60 min" in reason
        prev = start - dt.timedelta(hours=1)
        assert fetch(
            warehouse_db,
            "SELECT count(*) FROM state.processed_intervals WHERE pipeline = '71_08_05/events' "
            "AND interval_start = %s AND kind = 'reprocess'",
            (prev,),
        ) >= [(1,)]


def test_71_10_03_default_params_load_the_demo_interval_and_dead_letter_its_poison_row(
    shop_db, warehouse_db
) -> None:
    timetable = get_dag("71_10_03_error_recovery").timetable
    for dr in twice("71_10_03_error_recovery"):
        start, end = infer_interval(timetable, dr.logical_date)
        base = int(start.timestamp()) // 3600 * 10
        assert fetch(
            shop_db,
            "SELECT id, amount FROM public.events_71_10_03 WHERE event_time >= %s AND event_time < %s ORDER BY id",
            (start, end),
        ) == [(base + 1, "12.50"), (base + 2, "3.00"), (base + 3, "n/a"), (base + 4, "7.25")]
        got = fetch(
            warehouse_db,
            "SELECT id, amount FROM core.events_71_10_03 WHERE interval_start = %s ORDER BY id",
            (start,),
        )
        assert [(i, str(a)) for i, a in got] == [(base + 1, "12.50"), (base + 2, "3.00"), (base + 4, "7.25")]
        [(reason,)] = fetch(
            warehouse_db,
            "SELECT reason FROM dlq.rejected_rows WHERE pipeline = '71_10_03' AND row_key = %s",
            (str(base + 3),),
        )
        assert "not a number" in reason
        assert fetch(
            warehouse_db,
            "SELECT status FROM state.interval_ledger WHERE pipeline = '71_10_03' AND interval_start = %s",
            (start,),
        ) == [("succeeded",)]
        assert fetch(
            warehouse_db,
            "SELECT ok FROM state.validation_results WHERE pipeline = '71_10_03' AND interval_start = %s "
            "ORDER BY id DESC LIMIT 1",
            (start,),
        ) == [(True,)]


@pytest.fixture(autouse=True)
def _lab(lab: Any) -> None:
    """Every test here needs the running lab."""
