"""71_01_05_state_storage: which state store remembers the watermark across runs."""

from __future__ import annotations

import pytest

from cdclab.state import watermarks as state
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
    xcom,
)

DAG_ID = "71_01_05_state_storage"
STORES = ("variable", "xcom", "table", "asset")


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, prefix, key = f"public.{names('cust')}", f"core.{names('ss')}"[:50], names("71_01_05")
    create_customers_copy(shop_db, src)
    yield src, prefix, key, {"source_table": src, "target_prefix": prefix, "state_key": key}
    drop(shop_db, src)
    drop(warehouse_db, *(f"{prefix}_{s}" for s in STORES))
    from airflow.models.variable import Variable

    Variable.delete(f"{key}__watermark")


def reads(dr):
    return {store: (m["found"], m["read"]) for store, m in xcom(dr, "report")["loads"].items()}


def test_variables_table_and_asset_state_persist_across_runs_xcom_does_not(
    shop_db, warehouse_db, setup, assert_tables_equal
):
    src, prefix, key, conf = setup
    insert_customers(shop_db, src, [1, 2, 3, 4, 5])
    dr1 = run_dag(DAG_ID, hour(1), conf)
    assert reads(dr1) == {s: (False, 5) for s in STORES}
    for store in STORES:
        same_customers(assert_tables_equal, src, f"{prefix}_{store}")

    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 2")
    dr2 = run_dag(DAG_ID, hour(2), conf)
    # persistent stores read the update plus the row at the old watermark; XCom starts from nothing
    expected = {"variable": (True, 2), "table": (True, 2), "asset": (True, 2), "xcom": (False, 5)}
    assert reads(dr2) == expected
    for store in STORES:
        same_customers(assert_tables_equal, src, f"{prefix}_{store}")

    insert_customers(shop_db, src, [6])
    execute(shop_db, f"UPDATE {src} SET tier = 'silver' WHERE id = 5")
    dr3 = run_dag(DAG_ID, hour(3), conf)
    assert reads(dr3) == {"variable": (True, 3), "table": (True, 3), "asset": (True, 3), "xcom": (False, 6)}
    for store in STORES:
        same_customers(assert_tables_equal, src, f"{prefix}_{store}")

    newest = scalar(shop_db, f"SELECT max(updated_at) FROM {src}")
    # within a run, XCom hands the new watermark over to the next task
    assert state.from_xcom_payload(xcom(dr3, "report")["xcom_handover"], "timestamptz") == newest
    # the external table holds it with its type and history
    store = state.TableWatermarkStore(warehouse_db)
    assert store.get_value(f"{key}/watermark") == newest
    assert [h.reason for h in store.history(f"{key}/watermark")] == ["init", "advance", "advance"]
    # the Variable holds the same typed value
    from airflow.models.variable import Variable

    assert state.parse_typed_document(Variable.get(f"{key}__watermark"), "timestamptz") == newest


def test_a_variable_holding_the_wrong_type_stops_the_variable_load(shop_db, warehouse_db, setup):
    src, prefix, key, conf = setup
    from airflow.models.variable import Variable

    Variable.set(f"{key}__watermark", state.typed_document(42, "bigint"))
    insert_customers(shop_db, src, [1])
    dr = run_dag(DAG_ID, hour(1), conf, expect="failed")
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states["variable_load"] == "failed"
    assert states["table_load"] == "success"
    assert rows(warehouse_db, f"{prefix}_variable") == []
