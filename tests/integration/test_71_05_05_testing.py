"""71_05_05_testing: the self-check DAG runs its checks on scratch tables and a real load over three
intervals with source changes between runs; every check passes and the target equals the source."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import (
    create_customers_copy,
    drop,
    execute,
    hour,
    insert_customers,
    rows,
    same_customers,
    scalar,
)

DAG_ID = "71_05_05_testing"
CHECKS = [
    "logic_reload_is_idempotent",
    "state_preset_watermark",
    "edge_empty_interval",
    "edge_equal_timestamps",
    "edge_null_cursor",
    "integration_end_to_end",
]


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, target, results = f"public.{names('cust')}", f"staging.{names('tgt')}", f"state.{names('res')}"
    scratch = names("sc")
    create_customers_copy(shop_db, src)
    conf = {
        "source_table": src,
        "target_table": target,
        "watermark_key": names("71_05_05"),
        "results_table": results,
        "scratch_prefix": scratch,
    }
    yield src, target, results, scratch, conf
    drop(shop_db, src)
    drop(warehouse_db, target, results)


def test_every_self_check_passes_on_each_interval_and_the_target_follows_the_source(
    shop_db, warehouse_db, setup, assert_tables_equal
) -> None:
    src, target, results, scratch, conf = setup
    insert_customers(shop_db, src, [1, 2, 3])
    runs = [run_dag(DAG_ID, hour(1), conf).run_id]
    same_customers(assert_tables_equal, src, target)

    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 2")
    insert_customers(shop_db, src, [4])
    runs.append(run_dag(DAG_ID, hour(2), conf).run_id)
    same_customers(assert_tables_equal, src, target)

    execute(shop_db, f"UPDATE {src} SET tier = 'silver', full_name = 'Renamed' WHERE id IN (1, 4)")
    runs.append(run_dag(DAG_ID, hour(3), conf).run_id)
    same_customers(assert_tables_equal, src, target)
    assert rows(warehouse_db, target, "id, full_name, tier, version") == [
        (1, "Renamed", "silver", 2),
        (2, "Customer 2", "gold", 2),
        (3, "Customer 3", "basic", 1),
        (4, "Renamed", "silver", 2),
    ]

    recorded = rows(warehouse_db, results, "run_id, check_name, passed", "run_id, check_name")
    assert recorded == sorted((run, check, True) for run in runs for check in CHECKS)
    # the scratch tables of the checks are gone, in both databases
    pattern = f"{scratch}%"
    assert scalar(shop_db, "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s", (pattern,)) == 0
    assert scalar(warehouse_db, "SELECT count(*) FROM pg_tables WHERE tablename LIKE %s", (pattern,)) == 0


CAUGHT_BY = {
    "drop_rows": [
        "edge_equal_timestamps",
        "edge_null_cursor",
        "integration_end_to_end",
        "logic_reload_is_idempotent",
        "state_preset_watermark",
    ],
    "duplicate_rows": ["edge_empty_interval", "logic_reload_is_idempotent"],
    "corrupt_values": ["integration_end_to_end"],
}


BROKEN_TARGET = {
    "drop_rows": [(1, "Customer 1"), (2, "Customer 2")],  # row 3 lost, the watermark moved past it
    "duplicate_rows": [(1, "Customer 1"), (2, "Customer 2"), (3, "Customer 3")],  # right, but written twice
    "corrupt_values": [(1, "Cus"), (2, "Cus"), (3, "Cus")],
}


@pytest.mark.parametrize("defect", list(CAUGHT_BY))
def test_a_broken_load_is_caught_by_the_self_checks_and_the_run_fails_naming_them(
    shop_db, warehouse_db, setup, defect
) -> None:
    src, target, results, _, conf = setup
    insert_customers(shop_db, src, [1, 2, 3])
    dr = run_dag(DAG_ID, hour(1), {**conf, "defect": defect}, expect="failed")

    failed = rows(
        warehouse_db, f"{results} WHERE run_id = '{dr.run_id}' AND NOT passed", "check_name", "check_name"
    )
    assert [c for (c,) in failed] == CAUGHT_BY[defect]
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states.pop("verdict") == "failed"
    assert set(states.values()) == {"success"}, states  # the checks ran; the verdict turned the run red
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {results} WHERE run_id = %s", (dr.run_id,))
        assert cur.fetchone() == (len(CHECKS),)  # every check recorded a row, passed or not
    # the real load was broken the same way: what the checks caught is really in the target
    assert rows(warehouse_db, target, "id, full_name", "id") == BROKEN_TARGET[defect]


def test_the_dag_lists_the_library_checks() -> None:
    from cdclab.lessons.selfcheck import CHECKS as LIBRARY_CHECKS

    assert LIBRARY_CHECKS + ["integration_end_to_end"] == CHECKS
