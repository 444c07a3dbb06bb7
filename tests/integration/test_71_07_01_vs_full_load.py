"""71_07_01_vs_full_load: full and incremental loads of the same changes end equal to the source; the
recorded measurements show what each read and wrote per change ratio, and the break-even analysis."""

from __future__ import annotations

import math

import pytest

from cdclab.ops import perf
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, hour, same_customers, scalar

DAG_ID = "71_07_01_vs_full_load"
RATIOS = [0.01, 0.1, 0.5]


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src = f"public.{names('perf')}"
    full, incr = f"core.{names('full')}", f"core.{names('incr')}"
    conf = {
        "source_table": src,
        "table_rows": 400,
        "change_ratios": RATIOS,
        "full_target": full,
        "incremental_target": incr,
        "experiment": names("exp"),
    }
    yield conf
    drop(shop_db, src)
    drop(warehouse_db, full, incr)


def test_both_strategies_match_the_source_and_incremental_reads_only_the_changes(
    shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    conf = setup
    src, exp = conf["source_table"], conf["experiment"]
    external_changes = [None, 5 + 3, 7]  # rows changed outside the DAG before runs 2 and 3
    for run, external in enumerate(external_changes, start=1):
        if run == 2:
            execute(
                shop_db,
                f"INSERT INTO {src} (id, email, full_name) "
                "SELECT i, 'n' || i || '@perf.test', 'New ' || i FROM generate_series(1001, 1005) i",
            )
            execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id IN (1, 2, 3)")
        if run == 3:
            execute(shop_db, f"UPDATE {src} SET tier = 'silver' WHERE id BETWEEN 10 AND 16")
        dr = run_dag(DAG_ID, hour(run), conf)

        same_customers(assert_tables_equal, src, conf["full_target"])
        n = same_customers(assert_tables_equal, src, conf["incremental_target"]).source_count
        recorded = perf.measurements(warehouse_db, exp, dr.run_id)
        assert [m["variant"] for m in recorded] == ["catch_up"] + ["incremental", "full"] * 3 + ["break_even"]
        catch_up = recorded[0]
        # the first run's catch-up is the initial load; later ones take in exactly the outside changes
        assert catch_up["rows_read"] == (400 if external is None else external)
        for ratio in RATIOS:
            incr, full = (
                next(m for m in recorded if m["variant"] == v and m["details"].get("ratio") == ratio)
                for v in ("incremental", "full")
            )
            changed = math.ceil(ratio * n)
            assert incr["details"]["changed"] == full["details"]["changed"] == changed
            assert (incr["rows_read"], incr["rows_written"]) == (changed, changed)
            assert (full["rows_read"], full["rows_written"]) == (n, n)
            assert incr["rows_read"] < full["rows_read"]
            assert incr["duration_ms"] is not None and full["duration_ms"] is not None

        analysis = recorded[-1]["details"]
        assert analysis["by_duration"]["side"] in {"crosses", "incremental_cheaper", "full_cheaper"}
        assert [p[0] for p in analysis["by_duration"]["points"]] == RATIOS
        assert analysis["by_duration"]["ratio"] is None or 0.01 <= analysis["by_duration"]["ratio"] <= 0.5
        assert {float(k): round(v, 6) for k, v in analysis["rows_read_saving"].items()} == {
            r: round(1 - math.ceil(r * n) / n, 6) for r in RATIOS
        }
    assert scalar(warehouse_db, "SELECT count(*) FROM state.perf_runs WHERE experiment = %s", (exp,)) == 3 * 8
