"""71_06_01_lost_watermarks: a watermark kept in an Airflow Variable is lost and the run starts from
"now", leaving a gap; the watermark kept in the warehouse is recovered from the target and leaves none."""

from __future__ import annotations

import pytest

from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_06_helpers import at, create, drop, fetch, hour, insert, xcom

DAG_ID = "71_06_01_lost_watermarks"


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src, target = f"public.{names('wm_src')}", f"core.{names('wm_tgt')}"
    create(shop_db, src, "rows")
    yield src, target
    drop(shop_db, src)
    drop(warehouse_db, target)
    with warehouse_db.cursor() as cur:
        cur.execute("DELETE FROM state.watermarks WHERE key = %s", (f"71_06_01/{src}->{target}",))
    from airflow.models import Variable

    Variable.delete(f"{src}__71_06_01_watermark")


def run(conf, h, **extra):
    return xcom(run_dag(DAG_ID, hour(h), {**conf, "lose_state": False, **extra}), "load")


def scenario(shop_db, warehouse_db, src, target, variant):
    """Three runs: two normal hours, a paused hour 3 with a change in it, then hour 4 after the state
    was lost. Returns the last run's payload and the target's rows."""
    conf = {
        "variant": variant,
        "source_table": src,
        "target_table": target,
        "anti_cold_start": "interval_start",
    }
    insert(shop_db, src, "id, amount, updated_at", [(1, 10, at(1, 10)), (2, 20, at(1, 20))])
    assert run(conf, 1)["gap"] == []
    insert(shop_db, src, "id, amount, updated_at", [(3, 30, at(2, 10))])
    assert run(conf, 2)["gap"] == []
    # the pipeline is paused during hour 3 while the source changes
    insert(shop_db, src, "id, amount, updated_at", [(4, 40, at(3, 30))])
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {src} SET amount = 11, updated_at = %s WHERE id = 1", (at(3, 40),))
    insert(shop_db, src, "id, amount, updated_at", [(5, 50, at(4, 10))])
    last = run(conf, 4, lose_state=True)
    return last, fetch(warehouse_db, f"SELECT id, amount FROM {target} ORDER BY id")


def test_the_anti_pattern_starts_from_now_after_losing_its_variable_and_leaves_a_gap(
    shop_db, warehouse_db, tables
) -> None:
    src, target = tables
    last, target_rows = scenario(shop_db, warehouse_db, src, target, "anti_pattern")
    assert last["strategy"] == "from_now"
    assert last["gap"] == [4]  # inserted while paused: never read
    # row 1's update during the pause is lost too: the target keeps the stale amount
    assert target_rows == [(1, 10), (2, 20), (3, 30), (5, 50)]
    source_rows = fetch(shop_db, f"SELECT id, amount FROM {src} ORDER BY id")
    assert source_rows == [(1, 11), (2, 20), (3, 30), (4, 40), (5, 50)]
    assert sorted(set(source_rows) - set(target_rows)) == [(1, 11), (4, 40)]


def test_the_fixed_variant_recovers_the_watermark_from_the_target_and_leaves_no_gap(
    shop_db, warehouse_db, tables, assert_tables_equal
) -> None:
    src, target = tables
    last, _ = scenario(shop_db, warehouse_db, src, target, "fixed")
    assert last["strategy"] == "recovered"
    assert last["gap"] == []
    assert last["rows_read"] == 3  # only the delta after the recovered watermark: 4, 1 (updated), 5
    assert_tables_equal(f"shop:{src}", f"warehouse:{target}", key="id", columns=["amount"])
    key = f"71_06_01/{src}->{target}"
    reasons = fetch(
        warehouse_db,
        "SELECT split_part(reason, ':', 1) FROM state.watermark_history WHERE key = %s ORDER BY id",
        (key,),
    )
    assert [r for (r,) in reasons] == ["init", "advance", "delete", "reset", "advance"]
    assert state.TableWatermarkStore(warehouse_db).get_value(key) == at(4, 10)


def test_the_anti_pattern_with_a_full_reload_on_cold_start_has_no_gap_but_reads_everything(
    shop_db, warehouse_db, tables
) -> None:
    src, target = tables
    conf = {
        "variant": "anti_pattern",
        "source_table": src,
        "target_table": target,
        "anti_cold_start": "everything",
    }
    insert(shop_db, src, "id, amount, updated_at", [(i, i, at(1, i)) for i in range(1, 6)])
    assert run(conf, 1)["rows_read"] == 5
    insert(shop_db, src, "id, amount, updated_at", [(6, 6, at(2, 1))])
    assert run(conf, 2)["rows_read"] == 1
    insert(shop_db, src, "id, amount, updated_at", [(7, 7, at(3, 1))])
    last = run(conf, 3, lose_state=True)
    assert (last["strategy"], last["rows_read"], last["gap"]) == ("everything", 7, [])
