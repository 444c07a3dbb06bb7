"""
# orders_incremental — a user's incremental DAG, tested with the cdclab harness

Every hourly run copies the rows of ``source_table`` (in the ``shop`` database) whose ``updated_at``
lies in the run's data interval ``[data_interval_start, data_interval_end)`` into ``target_table``
(in ``warehouse``), upserting by ``id`` and only when the incoming ``version`` is newer. A rerun of an
interval changes nothing; an old version never overwrites a newer one.

Connections: ``shop`` and ``warehouse`` (the lab exports ``AIRFLOW_CONN_SHOP`` and
``AIRFLOW_CONN_WAREHOUSE``). Tables: the test creates both; see ``tests/test_it.py``.
"""

from __future__ import annotations

import re
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable


def _table(name: str) -> str:
    """``schema.table`` from a run's conf, checked and quoted (it becomes part of the SQL text)."""
    parts = name.split(".")
    if len(parts) != 2 or not all(re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", p) for p in parts):
        raise ValueError(f"expected a lower-case schema.table, got {name!r}")
    return ".".join(f'"{p}"' for p in parts)


@dag(
    dag_id="harness_orders_incremental",
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "harness"],
    doc_md=__doc__,
    params={
        "source_table": Param("public.orders_src", type="string"),
        "target_table": Param("core.orders_copy", type="string"),
    },
)
def orders_incremental() -> None:
    @task
    def copy_interval(
        params: dict[str, Any], data_interval_start: Any = None, data_interval_end: Any = None
    ) -> int:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        source_table, target_table = _table(params["source_table"]), _table(params["target_table"])

        source = PostgresHook(postgres_conn_id="shop").get_conn()
        with source, source.cursor() as cur:
            cur.execute(
                f"SELECT id, customer_id, amount, status, version, updated_at FROM {source_table} "
                "WHERE updated_at >= %s AND updated_at < %s ORDER BY id",
                (data_interval_start, data_interval_end),
            )
            rows = cur.fetchall()
        source.close()
        target = PostgresHook(postgres_conn_id="warehouse").get_conn()
        with target, target.cursor() as cur:
            for row in rows:
                cur.execute(
                    f"INSERT INTO {target_table} AS t (id, customer_id, amount, status, version, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
                    "customer_id = EXCLUDED.customer_id, amount = EXCLUDED.amount, "
                    "status = EXCLUDED.status, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at "
                    "WHERE t.version < EXCLUDED.version",
                    row,
                )
        target.close()
        print(f"copied {len(rows)} row(s) of [{data_interval_start}, {data_interval_end})")
        return len(rows)

    copy_interval()


orders_incremental()
