"""Pure logic of the monitoring alerts: which checks become alerts, how a connector's state is graded,
when a run turns red (cdclab.ops.alerts, cdclab.ops.health.connector_states)."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from cdclab.ops import alerts, health

pytestmark = pytest.mark.unit


def check(
    status: str, value: float | None, metric: str = "kafka_lag", subject: str = "g/t[0]"
) -> dict[str, Any]:
    return {
        "metric": metric,
        "subject": subject,
        "status": status,
        "value": value,
        "warn_threshold": 2.0,
        "alert_threshold": 5.0,
        "detail": "next 0, end 10",
        "measured_for": "2026-03-01 06:00:00+00:00",
    }


def test_only_alert_checks_become_critical_alerts() -> None:
    got = alerts.from_checks(
        [check("ok", 0), check("warn", 3), check("alert", 10), check("alert", None, subject="x")]
    )
    assert [(a.check_name, a.subject, a.severity) for a in got] == [
        ("kafka_lag", "g/t[0]", "critical"),
        ("kafka_lag", "x", "critical"),
    ]
    assert got[0].summary == "kafka_lag g/t[0]: 10 (alert at 5): next 0, end 10"
    assert "not measurable" in got[1].summary
    assert alerts.from_checks([check("alert", 2595600.0)])[0].summary.startswith(
        "kafka_lag g/t[0]: 2,595,600 ("
    )
    assert alerts.from_checks([check("alert", 0.2)])[0].summary.startswith("kafka_lag g/t[0]: 0.2 (")
    assert got[0].detail["value"] == 10 and got[0].detail["alert_threshold"] == 5.0


def test_a_failed_monitor_is_its_own_alert() -> None:
    a = alerts.failure_alert("measure", ValueError("relation public.x does not exist"))
    assert (a.check_name, a.subject, a.severity) == ("monitoring_failed", "measure", "critical")
    assert a.detail == {"error": "relation public.x does not exist", "error_type": "ValueError"}


def test_a_critical_finding_fails_the_task_unless_told_not_to() -> None:
    with pytest.raises(AirflowFailException, match="2 critical finding"):
        alerts.raise_on_critical({"ok": 1, "warn": 0, "alert": 2}, True, "s")
    alerts.raise_on_critical({"ok": 1, "warn": 0, "alert": 2}, False, "s")
    alerts.raise_on_critical({"ok": 3, "warn": 1, "alert": 0}, True, "s")


def test_the_notifier_is_an_airflow_notifier_with_a_templated_scope() -> None:
    n = alerts.HealthAlertNotifier()
    assert isinstance(n, BaseNotifier)
    assert n.template_fields == ("scope",) and n.scope == "{{ params.scope }}"


class FakeConnect:
    """Stands in for ConnectClient.state(): (connector state, task states, trace) per name."""

    def __init__(self, states: dict[str, tuple[str, list[str], str]]) -> None:
        self.states = states

    def state(self, name: str) -> tuple[str, list[str], str]:
        return self.states.get(name, ("MISSING", [], f"no connector {name}"))


def test_a_connector_is_an_alert_unless_it_and_all_its_tasks_run() -> None:
    client = FakeConnect(
        {
            "up": ("RUNNING", ["RUNNING"], ""),
            "task_failed": ("RUNNING", ["FAILED"], "java.lang.IllegalStateException: boom\n\tat x"),
            "paused": ("PAUSED", ["PAUSED"], ""),
            "no_tasks": ("RUNNING", [], ""),
        }
    )
    got = {
        c.subject: c
        for c in health.connector_states(client, ["up", "task_failed", "paused", "no_tasks", "gone"])
    }
    assert {s: (c.status, c.value) for s, c in got.items()} == {
        "up": ("ok", 0),
        "task_failed": ("alert", 1),
        "paused": ("alert", 2),
        "no_tasks": ("alert", 1),
        "gone": ("alert", None),
    }
    assert (
        got["task_failed"].detail
        == "connector RUNNING, tasks ['FAILED']: java.lang.IllegalStateException: boom"
    )
    assert got["gone"].detail == "no connector gone"


def test_a_connect_that_does_not_answer_is_an_alert_with_the_reason() -> None:
    """What ``make kill S=connect`` leaves: nothing listens on Connect's port (here a port nobody uses)."""
    import socket

    from cdclab.cdc.connect import ConnectClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        [c] = health.connector_states(
            ConnectClient(f"http://127.0.0.1:{port}", timeout=5), ["shop-postgres-source"]
        )
    assert (c.metric, c.subject, c.status, c.value) == (
        "connector_state",
        "shop-postgres-source",
        "alert",
        None,
    )
    assert "does not answer" in c.detail
