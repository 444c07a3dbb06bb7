"""71_10_01_strategy_selection: every table gets the strategy its profile and the requirements call for,
with reasons; the recommended loader keeps the target equal to the source as the recommendation changes."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import (
    CUSTOMER_COLS,
    create_customers_copy,
    drop,
    execute,
    hour,
    insert_customers,
    rows,
    same_customers,
    xcom,
)

DAG_ID = "71_10_01_strategy_selection"


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    t = {k: f"public.{names(k)}" for k in ("lookup", "small", "versioned", "stamped", "deleting", "plain")}
    execute(shop_db, f"CREATE TABLE {t['lookup']} (code text, label text)")
    execute(shop_db, f"INSERT INTO {t['lookup']} VALUES ('a', 'A'), ('b', 'B'), ('c', 'C')")
    for k in ("small", "stamped", "deleting", "plain"):
        create_customers_copy(shop_db, t[k])
    insert_customers(shop_db, t["small"], [1, 2])
    for k in ("stamped", "deleting", "plain"):
        insert_customers(shop_db, t[k], list(range(1, 11)))
    seq = names("seq")
    execute(shop_db, f"CREATE SEQUENCE public.{seq}")
    execute(
        shop_db,
        f"CREATE TABLE {t['versioned']} (id int PRIMARY KEY, amount int, "
        f"change_seq bigint NOT NULL DEFAULT nextval('public.{seq}'))",
    )
    execute(shop_db, f"INSERT INTO {t['versioned']} (id, amount) SELECT g, g FROM generate_series(1, 10) g")
    # `plain` has updated_at but no index on it
    with shop_db.cursor() as cur:
        cur.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s "
            "AND indexdef LIKE '%%(updated_at)%%'",
            (t["plain"].split(".")[1],),
        )
        for (index,) in cur.fetchall():
            cur.execute(f'DROP INDEX public."{index}"')
    target = f"core.{names('strat')}"
    yield t, target, names("pipe")
    drop(shop_db, *t.values())
    execute(shop_db, f"DROP SEQUENCE IF EXISTS public.{seq}")
    drop(warehouse_db, target)
    execute(warehouse_db, "DELETE FROM state.watermarks WHERE key LIKE %s", (names("pipe") + "/%",))


def conf(t, target, pipeline, **over):
    base = {
        "tables": list(t.values()),
        "load_table": t["plain"],
        "target_table": target,
        "pipeline": pipeline,
        "hard_delete_tables": [t["deleting"]],
        "max_staleness_seconds": 3600,
        "schedule_seconds": 3600,
        "full_load_max_rows": 5,
    }
    return {**base, **over}


def recommendations(warehouse_db, pipeline, run_id):
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT source_table, strategy, reasons FROM state.strategy_recommendations "
            "WHERE pipeline = %s AND run_id = %s ORDER BY id",
            (pipeline, run_id),
        )
        return {table: (strategy, reasons) for table, strategy, reasons in cur.fetchall()}


def test_each_table_gets_the_strategy_its_profile_calls_for_and_the_loader_follows(
    shop_db, warehouse_db, tables, assert_tables_equal
) -> None:
    t, target, pipeline = tables
    dr1 = run_dag(DAG_ID, hour(1), conf(t, target, pipeline))
    recs = recommendations(warehouse_db, pipeline, dr1.run_id)
    assert {k: recs[v][0] for k, v in t.items()} == {
        "lookup": "full",
        "small": "full",
        "versioned": "version",
        "stamped": "timestamp",
        "deleting": "log_cdc",
        "plain": "hash",
    }
    assert "no primary key" in recs[t["lookup"]][1][0]
    assert any("full_load_max_rows 5" in r for r in recs[t["small"]][1])
    assert any("log-based CDC sees deletes" in r for r in recs[t["deleting"]][1])
    assert any("has no index" in r for r in recs[t["plain"]][1])
    assert xcom(dr1, "load") == {
        "strategy": "hash",
        "rows_read": 10,
        "inserted": 10,
        "updated": 0,
        "deleted": 0,
    }
    same_customers(assert_tables_equal, t["plain"], target)

    # changes: an index on updated_at makes `plain` a timestamp table; `small` grows past the threshold
    execute(shop_db, f"CREATE INDEX ON {t['plain']} (updated_at)")
    execute(shop_db, f"UPDATE {t['plain']} SET tier = 'gold' WHERE id IN (2, 3)")
    insert_customers(shop_db, t["plain"], [11])
    insert_customers(shop_db, t["small"], [3, 4, 5, 6])
    dr2 = run_dag(DAG_ID, hour(2), conf(t, target, pipeline))
    recs = recommendations(warehouse_db, pipeline, dr2.run_id)
    assert {k: recs[v][0] for k, v in t.items()} == {
        "lookup": "full",
        "small": "timestamp",
        "versioned": "version",
        "stamped": "timestamp",
        "deleting": "log_cdc",
        "plain": "timestamp",
    }
    assert xcom(dr2, "load")["strategy"] == "timestamp"
    same_customers(assert_tables_equal, t["plain"], target)

    # `plain` starts hard-deleting and loses its WAL key: CDC is impossible, 9 rows > 5 -> hash
    # (Postgres refuses UPDATE/DELETE on a published table without replica identity: change first)
    execute(shop_db, f"DELETE FROM {t['plain']} WHERE id IN (1, 11)")
    execute(shop_db, f"UPDATE {t['plain']} SET tier = 'silver' WHERE id = 4")
    execute(shop_db, f"ALTER TABLE {t['plain']} REPLICA IDENTITY NOTHING")
    dr3 = run_dag(DAG_ID, hour(4), conf(t, target, pipeline, hard_delete_tables=[t["deleting"], t["plain"]]))
    recs = recommendations(warehouse_db, pipeline, dr3.run_id)
    assert recs[t["plain"]][0] == "hash"
    assert any("REPLICA IDENTITY NOTHING" in r for r in recs[t["plain"]][1])
    assert xcom(dr3, "load") == {
        "strategy": "hash",
        "rows_read": 9,
        "inserted": 0,
        "updated": 1,
        "deleted": 2,
    }
    same_customers(assert_tables_equal, t["plain"], target)
    assert [r[0] for r in rows(warehouse_db, target, CUSTOMER_COLS)] == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_a_table_recommended_for_log_cdc_is_left_to_the_cdc_pipeline_and_the_run_stays_green(
    shop_db, warehouse_db, tables
) -> None:
    """The default `load_table` (public.products) is a log_cdc table on the lab: a UI trigger must not
    fail on it. The run records its recommendations and names the pipeline that loads it; no target."""
    t, target, pipeline = tables
    dr = run_dag(DAG_ID, hour(5), conf(t, target, pipeline, load_table=t["deleting"]))
    assert recommendations(warehouse_db, pipeline, dr.run_id)[t["deleting"]][0] == "log_cdc"
    assert xcom(dr, "load") == {
        "table": t["deleting"],
        "strategy": "log_cdc",
        "loaded_by": "71_03_02_kafka_cdc",
    }
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (target,))
        assert cur.fetchone() == (None,)
