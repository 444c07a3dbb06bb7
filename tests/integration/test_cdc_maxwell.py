"""The MySQL side: MariaDB binlog -> Maxwell JSON in Kafka -> the same warehouse model, row by row."""

from __future__ import annotations

import pendulum
import pymysql
import pytest

from cdclab.cdc.inspect import wait_for_records
from tests.dagrun import run_dag

LOG_SERVICES = ["maxwell", "mariadb"]
COLUMNS = ["id", "email", "full_name", "home_tz", "tier", "version", "is_deleted"]


@pytest.fixture
def mysql(lab):
    conn = pymysql.connect(
        host=lab.host,
        port=lab.port("mariadb"),
        user="shop",
        password=lab["SHOP_PASSWORD"],
        database="shop",
        autocommit=True,
    )
    yield conn
    conn.close()


def mysql_rows(mysql, table) -> list[dict]:
    """The MariaDB table's rows as dicts (is_deleted as a bool: MariaDB stores a tinyint)."""
    with mysql.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM `{table}`")
        return [dict(zip(COLUMNS, (*r[:6], bool(r[6])), strict=True)) for r in cur.fetchall()]


def test_mariadb_changes_reach_the_warehouse_through_maxwell_records(
    lab, names, mysql, warehouse_db, assert_tables_equal
):
    table, group = names("my"), names("grp")
    topic = f"maxwell.shop.{table}"
    with mysql.cursor() as cur:
        cur.execute(f"CREATE TABLE `{table}` LIKE customers")
    conf = {
        "tables": [],
        "maxwell_tables": [f"shop.{table}"],
        "maxwell_group": group,
        "target_schema": "core",
    }
    expected = 0
    rounds = [
        (range(1, 21), [1, 2, 3], [4, 5]),
        (range(21, 31), [1, 21, 22], [6, 21]),
        (range(31, 36), [2], [1]),
    ]
    for i, (ids, updates, deletes) in enumerate(rounds):
        with mysql.cursor() as cur:
            cur.executemany(
                f"INSERT INTO `{table}` (id, email, full_name, home_tz) VALUES (%s, %s, %s, %s)",
                [(j, f"m{j}@shop.test", f"Maria {j}", "Europe/Berlin") for j in ids],
            )
            for j in updates:
                cur.execute(f"UPDATE `{table}` SET tier = 'gold', version = version + 1 WHERE id = %s", (j,))
            for j in deletes:
                cur.execute(f"DELETE FROM `{table}` WHERE id = %s", (j,))
        expected += len(ids) + len(updates) + len(deletes)
        records = wait_for_records(lab.kafka_bootstrap, topic, expected, timeout=120)
        assert len(records) == expected, "the binlog producer must write each row change exactly once"
        run_dag("71_03_01_database_cdc", pendulum.datetime(2026, 6, 1, 10, 5 * i, tz="UTC"), conf)
        diff = assert_tables_equal(
            mysql_rows(mysql, table), (warehouse_db, f"core.mysql_{table}"), key="id", columns=COLUMNS
        )
    assert diff.source_count == 20 + 10 - 4 + 5 - 1
