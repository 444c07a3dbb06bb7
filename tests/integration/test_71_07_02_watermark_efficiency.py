"""71_07_02_watermark_efficiency: the closed-window load lands exactly the interval's rows; the recorded plans
show a sequential scan without the index, an index scan with it, and the open range reading more rows."""

from __future__ import annotations

import pendulum
import psycopg2
import pytest

from cdclab.ops import perf
from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, rows

DAG_ID = "71_07_02_watermark_efficiency"
COLS = "id, updated_at, payload"


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, target = f"public.{names('wm')}", f"core.{names('wmt')}"
    conf = {"source_table": src, "table_rows": 2400, "target_table": target, "experiment": names("exp")}
    yield conf
    drop(shop_db, src)
    drop(warehouse_db, target)


def test_closed_windows_load_each_interval_and_the_index_plan_is_used(shop_db, warehouse_db, setup) -> None:
    conf = setup
    src, target, exp = conf["source_table"], conf["target_table"], conf["experiment"]
    for run in (1, 2, 3):
        if run == 2:  # old rows modified into hour 2, and rows inserted into hour 3
            execute(
                shop_db,
                f"UPDATE {src} SET updated_at = %s + (id %% 60) * interval '1 minute', payload = 'changed' "
                "WHERE id IN (3, 5, 7, 150, 2399)",
                (hour(2),),
            )
            execute(
                shop_db,
                f"INSERT INTO {src} SELECT 5000 + i, %s + i * interval '1 minute', 'new' "
                "FROM generate_series(1, 3) i",
                (hour(3),),
            )
        if run == 3:
            execute(shop_db, f"UPDATE {src} SET updated_at = %s, payload = 'late' WHERE id = 4", (hour(3),))
        dr = run_dag(DAG_ID, hour(run + 1), conf)  # a manual run covers the interval ending at its date

        start, end = hour(run), hour(run + 1)
        assert (dr.data_interval_start, dr.data_interval_end) == (start, end)
        in_window = rows(shop_db, f"{src} WHERE updated_at >= '{start}' AND updated_at < '{end}'", COLS)
        after_start = rows(shop_db, f"{src} WHERE updated_at >= '{start}'", COLS)
        recorded = {m["variant"]: m for m in perf.measurements(warehouse_db, exp, dr.run_id)}
        assert sorted(recorded) == [
            "index/closed",
            "index/open",
            "load/closed",
            "no_index/closed",
            "no_index/open",
        ]
        for variant, m in recorded.items():
            expected = len(after_start) if variant.endswith("/open") else len(in_window)
            assert m["rows_read"] == expected, variant
        for rng in ("closed", "open"):
            plan = recorded[f"no_index/{rng}"]["details"]["plan"]
            assert plan["scan_nodes"] == ["Seq Scan"] and not plan["uses_index"]
            assert plan["shared_hit"] is not None and plan["actual_rows"] is not None
        closed = recorded["index/closed"]["details"]["plan"]
        assert closed["uses_index"] and closed["index_names"] == [src.split(".")[1] + "_updated_at_idx"]
        assert len(after_start) > len(in_window)
        assert recorded["load/closed"]["rows_written"] == len(in_window)

    # the target holds every row whose latest version falls in the three loaded hours, row by row
    assert rows(warehouse_db, target, COLS) == rows(
        shop_db, f"{src} WHERE updated_at >= '{hour(1)}' AND updated_at < '{hour(4)}'", COLS
    )
    key = f"{exp}/{src}->{target}"
    assert state.TableWatermarkStore(warehouse_db).get_value(key) == hour(4)


def test_a_transaction_open_across_a_run_commits_late_and_the_next_run_still_loads_it(
    lab, shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    """``updated_at`` is a transaction's start. A transaction opens, the run for the hour holding its
    start passes while it is still open, then it inserts a row (stamped at its start, inside the hour
    already read) and commits. The run held its watermark back at that start, so the next hour's run
    reads the row: the target ends equal to the source."""
    conf = setup
    src, target = conf["source_table"], conf["target_table"]
    execute(
        shop_db,
        f"CREATE TABLE {src} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, payload text NOT NULL)",
    )
    writer = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT now()")  # the long transaction is open from here on
            started = cur.fetchone()[0]
        hour_start = pendulum.instance(started).start_of("hour")
        execute(shop_db, f"INSERT INTO {src} VALUES (1, %s, 'committed before')", (hour_start,))
        execute(shop_db, f"INSERT INTO {src} VALUES (3, now(), 'committed after its start')")
        run_dag(DAG_ID, hour_start.add(hours=1), conf)  # the hour holding the open transaction's start
        first = rows(warehouse_db, target, COLS)
        key = f"{conf['experiment']}/{src}->{target}"
        held_back = state.TableWatermarkStore(warehouse_db).get_value(key)
        with writer.cursor() as cur:  # the long transaction writes the table only now, stamped `started`
            cur.execute(f"INSERT INTO {src} VALUES (2, now(), 'long transaction')")
        writer.commit()
    finally:
        writer.rollback()
        writer.close()
    run_dag(DAG_ID, hour_start.add(hours=2), conf)  # the next hour

    assert [r[0] for r in first] == [1]
    assert held_back <= started
    assert [r[0] for r in rows(warehouse_db, target, COLS)] == [1, 2, 3]
    assert_tables_equal(f"shop:{src}", f"warehouse:{target}", key="id", columns=["updated_at", "payload"])
