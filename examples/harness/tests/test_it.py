"""Tests of dags/orders_incremental.py against the real lab, with the cdclab plugin's fixtures only.

Run from the cdclab checkout: ``make harness-example`` (or ``pytest examples/harness/tests``)."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest

DAG = Path(__file__).parents[1] / "dags" / "orders_incremental.py"
COLUMNS = ["id", "customer_id", "amount", "status", "version", "updated_at"]


def at(hour: int, minute: int) -> pendulum.DateTime:
    return pendulum.datetime(2026, 3, 1, hour, minute, tz="UTC")


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    """A source table in shop and a target table in warehouse, both this test's own."""
    source, target = f"public.{names('orders_src')}", f"core.{names('orders_copy')}"
    shape = "(id int PRIMARY KEY, customer_id int, amount numeric(10,2), status text, version int, updated_at timestamptz)"
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {source} {shape}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {target} {shape}")
    yield source, target
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE {source}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE {target}")


def test_each_interval_copies_its_changes_and_the_target_ends_equal_to_the_source(
    tables, shop_db, run_dag, assert_tables_equal
):
    source, target = tables
    conf = {"source_table": source, "target_table": target}
    with shop_db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {source} VALUES (%s, %s, %s, 'new', 1, %s)",
            [(i, 100 + i % 3, 10 * i, at(10, i)) for i in range(1, 21)],
        )

    first = run_dag(DAG, logical_date=at(11, 0), conf=conf)  # the interval [10:00, 11:00)
    assert first.task_states == {"copy_interval": "success"}
    assert_tables_equal(f"shop:{source}", f"warehouse:{target}", key="id", columns=COLUMNS)

    # the next hour: five orders paid, one new order
    with shop_db.cursor() as cur:
        cur.execute(
            f"UPDATE {source} SET status = 'paid', version = version + 1, updated_at = %s WHERE id <= 5",
            [at(11, 30)],
        )
        cur.execute(f"INSERT INTO {source} VALUES (21, 101, 99.50, 'new', 1, %s)", [at(11, 45)])
    run_dag(DAG, logical_date=at(12, 0), conf=conf)
    assert_tables_equal(f"shop:{source}", f"warehouse:{target}", key="id", columns=COLUMNS)

    # a rerun of the first hour brings the old versions again: the newer ones stay
    run_dag(DAG, logical_date=at(11, 0), conf=conf)
    assert_tables_equal(f"shop:{source}", f"warehouse:{target}", key="id", columns=COLUMNS)


def test_the_shop_workload_is_on_kafka_after_the_fence(workload, cdc_fence, assert_tables_equal):
    """The CDC side of a pipeline: deterministic shop changes, their expected end state, and a fence
    after which every change is on the connector's topics (what a Kafka-reading DAG would consume)."""
    changes = workload(seed=7, ops=60, only=("customers",))
    changes.apply()
    assert_tables_equal(changes.expected("customers"), changes.actual("customers"), key="id")
    cdc_fence()
