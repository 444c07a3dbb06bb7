"""71_06_03_full_fallback: after one unreadable watermark the anti-pattern reloads the whole table on
every run; the fix repairs the watermark from the target and reads only the delta. Both end correct."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_06_helpers import at, create, drop, fetch, hour, insert, xcom

DAG_ID = "71_06_03_full_fallback"
INITIAL = 20


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src, target = f"public.{names('ff_src')}", f"core.{names('ff_tgt')}"
    create(shop_db, src, "rows")
    yield src, target
    drop(shop_db, src)
    drop(warehouse_db, target)
    with warehouse_db.cursor() as cur:
        cur.execute("DELETE FROM state.watermarks WHERE key = %s", (f"71_06_03/{src}->{target}",))


def scenario(shop_db, warehouse_db, assert_tables_equal, src, target, variant):
    """An initial load of 20 rows, then the watermark is corrupted and three hours follow, each with two
    new rows and one update. Returns ``[(strategy, rows_read, rows_written)]`` from state.run_metrics."""
    conf = {"variant": variant, "source_table": src, "target_table": target, "corrupt_state": False}
    insert(shop_db, src, "id, amount, updated_at", [(i, i, at(1, i)) for i in range(1, INITIAL + 1)])
    run_dag(DAG_ID, hour(1), conf)
    for h in (2, 3, 4):
        n = INITIAL + 2 * (h - 2)
        insert(shop_db, src, "id, amount, updated_at", [(n + 1, 1, at(h, 1)), (n + 2, 2, at(h, 2))])
        with shop_db.cursor() as cur:
            cur.execute(
                f"UPDATE {src} SET amount = amount + 100, updated_at = %s WHERE id = %s", (at(h, 3), h)
            )
        payload = xcom(run_dag(DAG_ID, hour(h), {**conf, "corrupt_state": h == 2}), "load")
        assert payload["variant"] == variant
    assert_tables_equal(f"shop:{src}", f"warehouse:{target}", key="id", columns=["amount", "updated_at"])
    return fetch(
        warehouse_db,
        "SELECT strategy, rows_read, rows_written FROM state.run_metrics WHERE pipeline = %s ORDER BY id",
        (f"71_06_03/{src}->{target}",),
    )


def test_the_fallback_reloads_the_whole_table_on_every_run_after_one_bad_watermark(
    shop_db, warehouse_db, tables, assert_tables_equal
) -> None:
    src, target = tables
    metrics = scenario(shop_db, warehouse_db, assert_tables_equal, src, target, "anti_pattern")
    assert metrics == [
        ("anti_pattern:initial", 20, 20),
        ("anti_pattern:full", 22, 22),  # the whole table, every run: the state is never repaired
        ("anti_pattern:full", 24, 24),
        ("anti_pattern:full", 26, 26),
    ]


def test_the_fixed_variant_repairs_the_watermark_and_reads_only_the_delta(
    shop_db, warehouse_db, tables, assert_tables_equal
) -> None:
    src, target = tables
    metrics = scenario(shop_db, warehouse_db, assert_tables_equal, src, target, "fixed")
    assert metrics == [
        ("fixed:initial", 20, 20),
        ("fixed:recovered", 3, 3),  # two new rows and one update
        ("fixed:incremental", 3, 3),
        ("fixed:incremental", 3, 3),
    ]
    reasons = fetch(
        warehouse_db,
        "SELECT split_part(reason, ':', 1) FROM state.watermark_history WHERE key = %s ORDER BY id",
        (f"71_06_03/{src}->{target}",),
    )
    assert [r for (r,) in reasons] == ["init", "reset", "advance", "advance", "advance"]
