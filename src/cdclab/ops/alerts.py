"""Alerts: the critical findings of a monitoring run, delivered where a user sees them.

Vocabulary:
- *alert*: one ``alert``-status check of a monitoring run (``marts.pipeline_health``, :mod:`cdclab.ops.health`),
  or, when the run failed before it could grade anything, the failure itself (check ``monitoring_failed``).
  Its *severity* is ``critical``; warnings stay on the dashboard (``marts.pipeline_health_dashboard``).
- *sink*: where an alert is delivered: the table ``marts.alerts`` (``infra/postgres/warehouse/V005``; one
  row per run, check and subject, ``acknowledged`` for the person who handled it) and the task log of the
  task whose callback delivered it (an ``ALERT critical <summary>`` line per alert).
- :class:`HealthAlertNotifier`: an Airflow notifier (``airflow.sdk.BaseNotifier``) for a task's
  ``on_success_callback`` / ``on_failure_callback``. Task callbacks run in the task's own process after it
  ends (``airflow/sdk/execution_time/task_runner.py``, ``finalize``), so what it logs is in that task's log.
  Delivering twice for a run (both callbacks, a retry) writes each alert once.
- :func:`raise_on_critical`: the run turns red on a critical finding (``AirflowFailException``: no retry,
  a retry would measure the same thing again), unless the DAG's ``fail_on_alert`` param is false.

Observe: ``SELECT raised_at, dag_id, run_id, check_name, subject, summary FROM marts.alerts
WHERE NOT acknowledged ORDER BY id DESC``; acknowledge with ``UPDATE marts.alerts SET acknowledged = true,
acknowledged_at = now() WHERE id = ...``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow.sdk import BaseNotifier

from cdclab.common.db import WAREHOUSE

Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class Alert:
    check_name: str
    subject: str
    severity: Severity
    summary: str
    detail: dict[str, Any] = field(default_factory=dict)


def _number(value: float) -> str:
    """2595600.0 -> '2,595,600', 0.2 -> '0.2', 10.0 -> '10'."""
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def from_checks(rows: Sequence[Mapping[str, Any]]) -> list[Alert]:
    """Alerts for the ``alert``-status rows of ``marts.pipeline_health`` (dicts of its columns)."""
    out = []
    for r in rows:
        if r["status"] != "alert":
            continue
        value = "not measurable" if r["value"] is None else _number(r["value"])
        summary = f"{r['metric']} {r['subject']}: {value} (alert at {r['alert_threshold']:g}): {r['detail']}"
        detail = {
            "value": r["value"],
            "warn_threshold": r["warn_threshold"],
            "alert_threshold": r["alert_threshold"],
            "detail": r["detail"],
            "measured_for": str(r["measured_for"]),
        }
        out.append(Alert(r["metric"], r["subject"], "critical", summary, detail))
    return out


def failure_alert(task_id: str, error: object) -> Alert:
    """The alert for a monitoring run that failed without grading anything critical (it could not measure)."""
    return Alert(
        "monitoring_failed",
        task_id,
        "critical",
        f"task {task_id} failed: {error}",
        {"error": str(error), "error_type": type(error).__name__},
    )


def run_checks(conn: Any, scope: str, run_id: str) -> list[dict[str, Any]]:
    """The checks one monitoring run recorded, as dicts of ``marts.pipeline_health`` columns."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT metric, subject, status, value, warn_threshold, alert_threshold, detail, measured_for "
            "FROM marts.pipeline_health WHERE scope = %s AND run_id = %s ORDER BY id",
            (scope, run_id),
        )
        cols = [d[0] for d in cur.description]
        out = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    conn.rollback()
    return out


def record(
    conn: Any, dag_id: str, run_id: str, task_id: str | None, scope: str, alerts: Sequence[Alert]
) -> int:
    """Insert the alerts into ``marts.alerts`` in one transaction; an alert already delivered for this run,
    check and subject is kept as it is. Returns how many rows are new."""
    new = 0
    with conn, conn.cursor() as cur:
        for a in alerts:
            cur.execute(
                "INSERT INTO marts.alerts (dag_id, run_id, task_id, scope, check_name, subject, severity, "
                "summary, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb) "
                "ON CONFLICT (dag_id, run_id, check_name, subject) DO NOTHING",
                (
                    dag_id,
                    run_id,
                    task_id,
                    scope,
                    a.check_name,
                    a.subject,
                    a.severity,
                    a.summary,
                    json.dumps(a.detail, default=str),
                ),
            )
            new += cur.rowcount
    return new


def raise_on_critical(counts: Mapping[str, int], fail_on_alert: bool, scope: str) -> None:
    """Fail the task (and so the run) when the run graded anything ``alert`` and ``fail_on_alert`` is set."""
    from airflow.sdk.exceptions import AirflowFailException

    n = int(counts.get("alert", 0))
    if n and fail_on_alert:
        raise AirflowFailException(
            f"{n} critical finding(s) in scope {scope!r}; they are in marts.alerts (see this task's log); "
            "fix the cause, or trigger with fail_on_alert=false to record them without failing the run"
        )


class HealthAlertNotifier(BaseNotifier):
    """Deliver a monitoring run's critical findings to ``marts.alerts`` and the task log.

    Use it as a task callback: ``@task(on_success_callback=n, on_failure_callback=n)``. It reads the run's
    ``alert`` checks of ``scope`` from ``marts.pipeline_health``; a failed task with none of them delivers
    a ``monitoring_failed`` alert with the task's error instead (the monitor itself is broken).
    ``scope`` is templated (default ``{{ params.scope }}``)."""

    template_fields = ("scope",)

    def __init__(self, scope: str = "{{ params.scope }}", conn_id: str = WAREHOUSE) -> None:
        super().__init__()
        self.scope = scope
        self.conn_id = conn_id

    def notify(self, context: Any) -> None:
        from cdclab.common.db import connect

        ti, dag_run = context["ti"], context["dag_run"]
        conn = connect(self.conn_id, application_name="cdclab-alerts")
        try:
            alerts = from_checks(run_checks(conn, self.scope, dag_run.run_id))
            error = context.get("exception")
            if not alerts and error is not None:
                alerts = [failure_alert(ti.task_id, error)]
            new = record(conn, dag_run.dag_id, dag_run.run_id, ti.task_id, self.scope, alerts)
        finally:
            conn.close()
        for a in alerts:
            self.log.critical("ALERT %s %s", a.severity, a.summary)
        self.log.warning(
            "%d alert(s) for run %s of %s, %d new in marts.alerts",
            len(alerts),
            dag_run.run_id,
            dag_run.dag_id,
            new,
        )
