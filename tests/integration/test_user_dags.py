"""Issue 13, item 2: the user's DAG folder in the lab's Airflow, under the launcher that runs the lab.

The test does what docs/harness.md tells a user to do: set ``CDCLAB_USER_DAGS`` to a folder of DAGs
(here the worked example's, ``examples/harness/dags``) and restart the lab's Airflow components
(``cdclab lab restart airflow-...``; natively new processes, under compose recreated containers with
the folder mounted). The example DAG then appears beside the bundled fifty, in its own DAG bundle, and
a run triggered through the REST API (the UI's Trigger) runs on the lab's scheduler and copies its
interval. Afterwards the lab's Airflow is restarted without the folder and the DAG is gone again."""

from __future__ import annotations

import time
from pathlib import Path

import pendulum

from cdclab.lab.backend import backend, reload_airflow
from cdclab.testing.dags import AirflowAPI

ROOT = Path(__file__).resolve().parents[2]
USER_DAGS = ROOT / "examples" / "harness" / "dags"
DAG_ID = "harness_orders_incremental"
SHAPE = (
    "(id int PRIMARY KEY, customer_id int, amount numeric(10,2), status text, version int, "
    "updated_at timestamptz)"
)


def dag_listed(api: AirflowAPI, dag_id: str) -> dict | None:
    found = api.call("GET", f"/api/v2/dags?dag_id_pattern={dag_id}")["dags"]
    return next((d for d in found if d["dag_id"] == dag_id and not d.get("is_stale")), None)


def wait_until_gone(api: AirflowAPI, dag_id: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while dag_listed(api, dag_id) is not None:
        assert time.monotonic() < deadline, f"{dag_id} is still active {timeout:.0f} s after its folder left"
        time.sleep(1)


def test_a_users_dag_folder_joins_the_labs_airflow_and_its_dag_runs_on_the_scheduler(
    lab, names, shop_db, warehouse_db, run_dag, assert_tables_equal, monkeypatch
):
    source, target = f"public.{names('usrc')}", f"core.{names('ucopy')}"
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {source} {SHAPE}")
        hour = pendulum.now("UTC").start_of("hour")
        cur.executemany(
            f"INSERT INTO {source} VALUES (%s, %s, %s, 'new', 1, %s)",
            [(i, 100 + i % 3, 10 * i, hour.subtract(minutes=50 - i)) for i in range(1, 31)],
        )
    with warehouse_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {target} {SHAPE}")

    lab_backend = backend(lab)
    monkeypatch.setenv("CDCLAB_USER_DAGS", str(USER_DAGS))
    reload_airflow(lab_backend)
    try:
        api = AirflowAPI.for_lab(lab)
        api.wait_for_dag(DAG_ID, timeout=300)
        details = api.call("GET", f"/api/v2/dags/{DAG_ID}/details")
        assert details["bundle_name"] == "user-dags", details
        assert dag_listed(api, "71_01_01_basics") is not None, "the bundled DAGs stay beside the user's"

        # the interval [hour-1h, hour) holds the 30 rows: logical_date = the hour (the timetable's end)
        result = run_dag(
            DAG_ID,
            logical_date=hour,
            conf={"source_table": source, "target_table": target},
            via="scheduler",
            timeout=420,
        )
        assert result.via == "scheduler" and result.task_states == {"copy_interval": "success"}, (
            result.describe()
        )
        assert_tables_equal(
            f"shop:{source}",
            f"warehouse:{target}",
            key="id",
            columns=["id", "customer_id", "amount", "status", "version", "updated_at"],
        )
        with warehouse_db.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {target}")
            assert cur.fetchone()[0] == 30
    finally:
        monkeypatch.delenv("CDCLAB_USER_DAGS")
        reload_airflow(lab_backend)
        with shop_db.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {source}")
        with warehouse_db.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {target}")
    # the lab is as it was: the folder's DAG is no longer active, the bundled ones are
    api = AirflowAPI.for_lab(lab)
    wait_until_gone(api, DAG_ID)
    assert dag_listed(api, "71_01_01_basics") is not None
