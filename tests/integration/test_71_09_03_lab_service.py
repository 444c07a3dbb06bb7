"""71_09_03 against the lab's own partner-api service, found through the `partner_api` connection."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC

import pendulum

from cdclab.delta.partner_api import parse_ts
from tests.dagrun import run_dag
from tests.integration._71_09_helpers import warehouse_rows


def test_the_dag_syncs_from_the_lab_service_through_the_airflow_connection(lab, names, warehouse_db):
    conf = {
        "pipeline": names("p"),
        "target": f"staging.{names('acc')}",
        "stats_table": f"state.{names('runs')}",
        "page_size": 10,
    }
    end = pendulum.datetime(2026, 3, 1, 1, tz="UTC")
    run_dag("71_09_03_api_sync", end, conf)

    url = f"http://{lab.host}:{lab.port('partner_api')}/admin/snapshot"
    with urllib.request.urlopen(url, timeout=10) as resp:
        records = json.load(resp)["data"]
    expected = [
        (r["id"], r["name"], r["email"], r["tier"], parse_ts(r["modified_at"]).astimezone(UTC), r["deleted"])
        for r in records
        if parse_ts(r["modified_at"]) < end
    ]
    assert expected, "the lab's partner API serves its seed records"
    assert warehouse_rows(warehouse_db, conf["target"]) == expected
