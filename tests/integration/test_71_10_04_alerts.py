"""71_10_04_monitoring delivers its critical findings: the run turns red and the notifier
(``cdclab.ops.alerts.HealthAlertNotifier``) writes one ``marts.alerts`` row per critical check, with the run's
id; a healthy run stays green and writes none. Every name here is the test's own (scope, watermark key,
connector name); the lab's own connector ``shop-postgres-source`` is only read."""

from __future__ import annotations

from typing import Any

import pytest

from tests.dagrun import run_dag
from tests.integration._71_01_helpers import execute, hour, rows

DAG_ID = "71_10_04_monitoring"


@pytest.fixture
def scope(lab: Any, warehouse_db: Any, names: Any) -> Any:
    scope, key = names("alerts"), names("wm_alerts")
    yield scope, key
    execute(warehouse_db, "DELETE FROM marts.alerts WHERE scope = %s", (scope,))
    execute(warehouse_db, "DELETE FROM marts.pipeline_health WHERE scope = %s", (scope,))
    execute(warehouse_db, "DELETE FROM state.watermarks WHERE key = %s", (key,))


def set_watermark(warehouse_db: Any, key: str, value: Any) -> None:
    execute(
        warehouse_db,
        "INSERT INTO state.watermarks (key, value, value_type) VALUES (%s, %s, 'timestamptz') "
        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, value_type = EXCLUDED.value_type",
        (key, value.isoformat()),
    )


def health(warehouse_db: Any, scope: str, run_id: str) -> dict[tuple[str, str], str]:
    return {
        (m, s): st
        for m, s, st in rows(
            warehouse_db,
            f"marts.pipeline_health WHERE scope = '{scope}' AND run_id = '{run_id}'",
            "metric, subject, status",
            "id",
        )
    }


def alerts(warehouse_db: Any, scope: str) -> list[tuple[Any, ...]]:
    return rows(
        warehouse_db,
        f"marts.alerts WHERE scope = '{scope}'",
        "dag_id, run_id, task_id, check_name, subject, severity, acknowledged",
        "check_name, subject",
    )


# slots are graded by their own test (test_71_10_04_monitoring.py); these compare alerts exactly
NO_SLOTS = {"replication_slots": [], "slots_report_all": False}


def test_a_healthy_lab_gives_a_green_run_and_no_alert(warehouse_db: Any, scope: Any) -> None:
    scope, key = scope
    # the run at 08:00 on day 2 grades ages at its data_interval_end (08:00): 10 minutes is fresh
    set_watermark(warehouse_db, key, hour(7, 2).add(minutes=50))
    dr = run_dag(DAG_ID, hour(8, 2), {"scope": scope, "watermark_keys": [key], **NO_SLOTS})
    # the default connectors param is the lab's own Debezium source, which the running lab keeps RUNNING
    assert health(warehouse_db, scope, dr.run_id) == {
        ("watermark_age_seconds", key): "ok",
        ("connector_state", "shop-postgres-source"): "ok",
    }
    assert alerts(warehouse_db, scope) == []


def test_a_critical_finding_turns_the_run_red_and_lands_in_marts_alerts(
    warehouse_db: Any, scope: Any, names: Any
) -> None:
    scope, key = scope
    missing = names("no-such-connector")
    set_watermark(warehouse_db, key, hour(8, 2).subtract(days=30))  # a pipeline that stopped a month ago
    conf = {
        "scope": scope,
        "watermark_keys": [key],
        "connectors": ["shop-postgres-source", missing],
        **NO_SLOTS,
    }
    dr = run_dag(DAG_ID, hour(9, 2), conf, expect="failed")
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states == {"measure": "success", "report": "failed"}  # measured everything, then turned red
    assert health(warehouse_db, scope, dr.run_id) == {
        ("watermark_age_seconds", key): "alert",
        ("connector_state", "shop-postgres-source"): "ok",
        ("connector_state", missing): "alert",
    }
    assert alerts(warehouse_db, scope) == [
        (DAG_ID, dr.run_id, "report", "connector_state", missing, "critical", False),
        (DAG_ID, dr.run_id, "report", "watermark_age_seconds", key, "critical", False),
    ]
    [(summary, detail)] = rows(
        warehouse_db,
        f"marts.alerts WHERE scope = '{scope}' AND check_name = 'connector_state'",
        "summary, detail",
    )
    assert "not measurable" in summary and f"no connector {missing}" in detail["detail"]

    # fail_on_alert=false: the same findings are delivered, the run stays green
    dr2 = run_dag(DAG_ID, hour(10, 2), {**conf, "fail_on_alert": False})
    assert [r[1:5] for r in alerts(warehouse_db, scope) if r[1] == dr2.run_id] == [
        (dr2.run_id, "report", "connector_state", missing),
        (dr2.run_id, "report", "watermark_age_seconds", key),
    ]


def test_a_monitor_that_cannot_measure_alerts_that_it_failed(
    warehouse_db: Any, scope: Any, names: Any
) -> None:
    scope, _ = scope
    pair = {"source": f"public.{names('absent')}", "target": f"core.{names('absent')}"}
    dr = run_dag(
        DAG_ID,
        hour(11, 2),
        {"scope": scope, "connectors": [], "row_count_pairs": [pair], **NO_SLOTS},
        expect="failed",
    )
    [row] = alerts(warehouse_db, scope)
    assert row == (DAG_ID, dr.run_id, "measure", "monitoring_failed", "measure", "critical", False)
    [(summary,)] = rows(warehouse_db, f"marts.alerts WHERE scope = '{scope}'", "summary")
    assert "does not exist" in summary
