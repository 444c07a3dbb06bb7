"""71_01_02_cdc_concepts: log-, query- and trigger-based capture of the same changes; which styles
see deletes and intermediate updates."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import create_customers_copy, drop, execute, hour, insert_customers

DAG_ID = "71_01_02_cdc_concepts"
LOG_SERVICES = ["connect", "kafka"]


@pytest.fixture
def setup(shop_db, warehouse_db, names):
    src, audit, changes = f"public.{names('cust')}", f"public.{names('audit')}", f"staging.{names('chg')}"
    create_customers_copy(shop_db, src)
    conf = {
        "source_table": src,
        "changes_table": changes,
        "audit_table": audit,
        "consumer_group": names("grp"),
        "topic_prefix": "shop",
        "state_key": names("71_01_02"),
        "fence_timeout_seconds": 60,
    }
    yield src, changes, conf
    drop(shop_db, src, audit)
    drop(warehouse_db, changes)
    execute(
        warehouse_db, "DELETE FROM state.kafka_offsets WHERE consumer_group = %s", (conf["consumer_group"],)
    )


def captured(warehouse_db, changes, style):
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT op, row_id, version, tier FROM {changes} WHERE style = %s ORDER BY id", (style,))
        return cur.fetchall()


def test_log_and_trigger_see_every_change_query_sees_only_the_latest_state(shop_db, warehouse_db, setup):
    src, changes, conf = setup
    run_dag(DAG_ID, hour(1), conf)  # installs the audit trigger; nothing changed yet
    assert captured(warehouse_db, changes, "log") == []

    insert_customers(shop_db, src, [1, 2])
    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 1")
    execute(shop_db, f"UPDATE {src} SET tier = 'platinum' WHERE id = 1")
    run_dag(DAG_ID, hour(2), conf)

    execute(shop_db, f"DELETE FROM {src} WHERE id = 2")
    execute(shop_db, f"UPDATE {src} SET tier = 'silver' WHERE id = 1")
    insert_customers(shop_db, src, [3])
    run_dag(DAG_ID, hour(3), conf)

    every_change = [
        ("c", 1, 1, "basic"),
        ("c", 2, 1, "basic"),
        ("u", 1, 2, "gold"),
        ("u", 1, 3, "platinum"),
        ("d", 2, 1, "basic"),
        ("u", 1, 4, "silver"),
        ("c", 3, 1, "basic"),
    ]
    assert captured(warehouse_db, changes, "log") == every_change
    assert captured(warehouse_db, changes, "trigger") == every_change
    # polling: the state at each poll — version 2 of row 1 and the delete of row 2 were never seen
    assert captured(warehouse_db, changes, "query") == [
        ("c", 2, 1, "basic"),
        ("u", 1, 3, "platinum"),
        ("u", 1, 4, "silver"),
        ("c", 3, 1, "basic"),
    ]

    run_dag(DAG_ID, hour(4), conf)  # no new changes: every style is idempotent
    assert len(captured(warehouse_db, changes, "log")) == len(every_change)
    assert len(captured(warehouse_db, changes, "trigger")) == len(every_change)
    assert len(captured(warehouse_db, changes, "query")) == 4
