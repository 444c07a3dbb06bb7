"""71_03_02: CDC topics processed with offsets in the warehouse; lag reported; replay from a chosen offset."""

from __future__ import annotations

import subprocess
import sys

import pendulum
from psycopg2 import sql

from tests.dagrun import run_dag
from tests.integration._cdc_helpers import make_source_table, published, write_changes

DAG_ID = "71_03_02_kafka_cdc"
COLUMNS = ["id", "email", "full_name", "home_tz", "tier", "version", "is_deleted"]


def target(warehouse_db, table):
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {c} FROM core.{t} ORDER BY id").format(
                c=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), t=sql.Identifier(f"kcdc_{table}")
            )
        )
        return cur.fetchall()


def lag(warehouse_db, group):
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT lag FROM state.kafka_lag WHERE consumer_group = %s ORDER BY measured_at DESC LIMIT 1",
            (group,),
        )
        return cur.fetchone()[0]


def test_three_intervals_of_changes_land_once_with_zero_lag_and_a_replay_changes_nothing(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("kc"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "kcdc_",
        "batch_size": 7,
    }
    n = 0
    plan = [(1, 15, [1, 2, 3], [4]), (16, 10, [1, 16, 17], [5, 16]), (26, 5, [2, 26], [1])]
    for i, (start, inserts, updates, deletes) in enumerate(plan):
        n += write_changes(shop_db, table, start, inserts, updates, deletes)
        published(lab, topic, n)
        run_dag(DAG_ID, pendulum.datetime(2026, 4, 1, 10, 10 * i, tz="UTC"), conf)
        assert_tables_equal(f"shop:public.{table}", f"warehouse:core.kcdc_{table}", key="id", columns=COLUMNS)
        assert lag(warehouse_db, group) == 0

    before = target(warehouse_db, table)
    run_dag(DAG_ID, pendulum.datetime(2026, 4, 1, 11, tz="UTC"), {**conf, "replay_from": "earliest"})
    assert target(warehouse_db, table) == before
    assert lag(warehouse_db, group) == 0

    shown = subprocess.run(
        [sys.executable, "-m", "cdclab.cli", "offsets", "show", "--group", group],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0
    assert topic in shown.stdout
