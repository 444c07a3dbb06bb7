"""71.8.2: a watermark pushed ahead of the data, one of the wrong type and one moved backwards are each
detected before the load, explained from the history, reset with an audit row where needed, and the
rerun loads every source row."""

from __future__ import annotations

import datetime as dt

import pendulum

from cdclab.ops import diagnostics as d
from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import (
    create_customers_copy,
    execute,
    insert_customers,
    rows,
    same_customers,
)

DAG_ID = "71_08_02_watermark_debug"


def test_bad_watermarks_are_detected_reset_with_an_audit_trail_and_the_rerun_recovers(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table = names("wmsrc")
    src, tgt, key, findings = f"public.{table}", f"core.{table}", names("wmkey"), f"state.{names('wmfind')}"
    conf = {
        "source_table": src,
        "target_table": tgt,
        "watermark_key": key,
        "findings_table": findings,
        "auto_reset": True,
    }
    store = state.TableWatermarkStore(warehouse_db)

    def findings_of(dr):
        with warehouse_db.cursor() as cur:
            cur.execute(
                f"SELECT check_name, verdict, detail FROM {findings} WHERE run_id = %s ORDER BY id",
                (dr.run_id,),
            )
            return cur.fetchall()

    def verdicts(dr):
        return [(c, v) for c, v, _ in findings_of(dr)]

    def stored():
        return store.get(key)

    create_customers_copy(shop_db, src)
    insert_customers(shop_db, src, [1, 2, 3])
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 2, 1, tz="UTC"), conf)
    assert verdicts(dr) == [
        ("value_verification", "missing"),
        ("history", "empty"),
        ("reset", "not_needed"),
        ("post_load_verification", "ok"),
    ]
    same_customers(assert_tables_equal, src, tgt)

    # someone sets the watermark past rows that are not loaded yet (still within the 5 min future tolerance)
    insert_customers(shop_db, src, [4, 5])
    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 2")
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
    store.reset(key, ahead, "operator guessed", run_id="manual-1")
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 2, 2, tz="UTC"), conf)
    f = findings_of(dr)
    assert [(c, v) for c, v, _ in f] == [
        ("value_verification", "ahead_of_data"),
        ("history", "ok"),
        ("reset", "reset"),
        ("post_load_verification", "ok"),
    ]
    assert f[0][2]["skipped_keys"] == [2, 4, 5]
    assert f[1][2]["last_reason"] == "reset: operator guessed" and f[1][2]["last_run_id"] == "manual-1"
    assert f[2][2]["cause"] == "ahead_of_data"
    same_customers(assert_tables_equal, src, tgt)
    assert stored().value < ahead

    # a deploy writes an integer into the timestamp watermark
    insert_customers(shop_db, src, [6])
    store.reset(key, 42, "bad deploy", value_type="bigint", run_id="manual-2")
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 2, 3, tz="UTC"), conf)
    f = findings_of(dr)
    assert [(c, v) for c, v, _ in f] == [
        ("value_verification", "wrong_type"),
        ("history", "type_changed"),
        ("reset", "reset"),
        ("post_load_verification", "ok"),
    ]
    assert f[0][2]["stored"] == 42 and f[0][2]["stored_type"] == "bigint"
    same_customers(assert_tables_equal, src, tgt)
    assert stored().value_type == "timestamptz"

    # a backwards reset only re-reads: reported, not reset, and the guarded upsert changes nothing
    before = rows(warehouse_db, tgt)
    high = stored().value
    store.reset(key, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "replay everything", run_id="manual-3")
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 2, 4, tz="UTC"), conf)
    f = findings_of(dr)
    assert [(c, v) for c, v, _ in f] == [
        ("value_verification", "behind_data"),
        ("history", "regressed"),
        ("reset", "not_needed"),
        ("post_load_verification", "ok"),
    ]
    assert f[3][2]["read"] == 6 and f[3][2]["inserted"] == 0 and f[3][2]["updated"] == 0
    assert rows(warehouse_db, tgt) == before
    same_customers(assert_tables_equal, src, tgt)
    assert stored().value == high

    with warehouse_db.cursor() as cur:
        reasons = [h.reason for h in d.watermark_history(cur, key)]
    assert reasons.count("reset: ahead_of_data: back to max(updated_at) loaded") == 1
    assert reasons.count("reset: wrong_type: back to max(updated_at) loaded") == 1
