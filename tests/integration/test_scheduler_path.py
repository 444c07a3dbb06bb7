"""The user's path, not dag.test(): a DAG triggered through the api-server's REST API (what the UI's
Trigger button calls), queued by the real scheduler, run by the LocalExecutor inside the lab
(containers under compose, processes natively), with the connections the launcher gave Airflow.

Proves the lab's Airflow itself works end to end: the dag-processor parsed the DAG, the scheduler
ran it, the task reached Postgres through ``AIRFLOW_CONN_*`` (service names inside compose), and the
end state is in the warehouse.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pendulum

LOG_SERVICES = ["airflow-scheduler", "airflow-api-server", "airflow-dag-processor"]
DAG_ID = "71_01_01_basics"


class AirflowAPI:
    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base
        token = self.call("POST", "/auth/token", {"username": user, "password": password}, auth=False)
        self.token = token["access_token"]

    def call(self, method: str, path: str, body: object | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")


def wait_for_dag(api: AirflowAPI, dag_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            api.call("GET", f"/api/v2/dags/{dag_id}")
            return
        except urllib.error.HTTPError as exc:
            if exc.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(3)


def test_a_dag_triggered_through_the_api_runs_on_the_labs_scheduler(lab, names, warehouse_db, shop_db):
    api = AirflowAPI(lab.airflow_public_url, lab["AIRFLOW_ADMIN_USER"], lab["AIRFLOW_ADMIN_PASSWORD"])
    wait_for_dag(api, DAG_ID)
    full, incremental, pipeline = f"core.{names('sfull')}", f"core.{names('sincr')}", names("sched")
    conf = {"full_target": full, "incremental_target": incremental, "pipeline": pipeline}
    api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    try:
        run = api.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {"logical_date": pendulum.now("UTC").isoformat(), "conf": conf},
        )
        run_id = run["dag_run_id"]
        deadline = time.monotonic() + 420
        state = run["state"]
        while state not in ("success", "failed") and time.monotonic() < deadline:
            time.sleep(3)
            state = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        tasks = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")["task_instances"]
        assert state == "success", {t["task_id"]: t["state"] for t in tasks}
    finally:
        api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})

    with shop_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM public.customers")
        source_count = cur.fetchone()[0]
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {full}")
        assert cur.fetchone()[0] == source_count
        cur.execute(f"SELECT count(*) FROM {incremental}")
        assert cur.fetchone()[0] == source_count
        cur.execute(
            "SELECT strategy, rows_read FROM state.run_metrics WHERE pipeline LIKE %s ORDER BY strategy",
            (f"{pipeline}%",),
        )
        metrics = cur.fetchall()
    assert [m[0] for m in metrics] == ["full", "incremental"], metrics
    assert metrics[0][1] == source_count
