"""
# 71.10.4 Incremental monitoring — progress, lag and gaps as graded rows for a dashboard

Each run measures the pipelines named in its params and appends one row per check to
``marts.pipeline_health`` with the value, the thresholds (from params) and a status ``ok | warn | alert``
(``cdclab.ops.health``).

**Progress tracking.** ``watermark_age_seconds``: how far each watermark in `watermark_keys`
(``state.watermarks``) is behind this run's ``data_interval_end``, the scheduler's clock, not the wall
clock, so a backfill grades the past correctly. No watermark at all is an alert.

**Lag detection.** ``kafka_lag`` per consumer group in `consumer_groups`: the topic's end offset minus the
group's next offset in ``state.kafka_offsets`` (``cdclab.cdc.offsets.report``), per partition.

**Gap alerting.** ``missing_intervals`` per pipeline in `ledger_pipelines`: intervals absent from or failed
in ``state.interval_ledger`` (written by 71_10_03) between its first interval and this run's start.
``row_count_drift`` per `row_count_pairs` entry compares source and target row counts.
``connector_state`` per Kafka Connect connector in `connectors` (default: the lab's own
``shop-postgres-source``): any part (connector, task) not ``RUNNING``, or Connect not answering, is an alert.

**Alerts.** A critical finding (status ``alert``) turns the run red (``report`` fails; `fail_on_alert`
= false records it and stays green) and is delivered by an Airflow notifier
(``cdclab.ops.alerts.HealthAlertNotifier``, the ``report`` task's success/failure callback) to
``marts.alerts`` (one row per run, check and subject) and to the ``report`` task's log
(``ALERT critical ...`` lines). If ``measure`` itself fails, its failure is the alert
(``monitoring_failed``). Try it: ``make kill S=connect``, trigger this DAG, see the red run and
``SELECT raised_at, run_id, check_name, subject, summary FROM marts.alerts ORDER BY id DESC``;
``make up`` brings Connect back and the next run is green.

**Defaults.** On a freshly started lab the defaults measure only what the lab itself keeps running (the
connector); watermarks, consumer groups, ledgers and row-count pairs of the pipelines you run are added
through the Trigger form's conf, e.g. ``{"watermark_keys": ["71_01_03/public.customers->core.customers_71_01_03"],
"ledger_pipelines": ["71_10_03"]}`` once 71_01_03 and 71_10_03 have run (a key with no watermark, or a
ledger with no rows, is an alert: the pipeline never ran).

**Retained WAL per replication slot.** ``slot_retained_wal_bytes`` for every slot of the source
server: the WAL it keeps (``pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)``), graded by
`slot_wal_warn_bytes` / `slot_wal_alert_bytes` (`slots_report_all=false`: only the listed slots). A slot
in `replication_slots` that does not exist, or any slot invalidated by ``max_slot_wal_keep_size``
(``wal_status = 'lost'``), is an alert marked CRITICAL:
its connector has lost changes, and only a re-snapshot repairs it (``cdclab.cdc.slots.recover``).

**Files no longer retried.** ``files_exhausted`` per file pipeline in `file_pipelines`: files of
``state.file_manifest`` in status ``exhausted`` (their attempts are used up, or the object changed after it
was planned); the detail names each with its last error.

**Dashboard design.** History in a narrow, append-only table (one metric per row, thresholds stored
with the value, so a later threshold change does not rewrite the past), and a view
``marts.pipeline_health_dashboard`` with the latest row per (scope, metric, subject) and a numeric
``severity`` to sort and colour by. Point a BI tool (or ``psql``) at the view; the `report` task log
prints it.

Observe: ``SELECT metric, subject, status, value, detail FROM marts.pipeline_health_dashboard WHERE
scope = '71_10_04' ORDER BY severity DESC`` (a new row per check and run: the history grows every run).

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag
from cdclab.ops.alerts import HealthAlertNotifier

DAG_ID = "71_10_04_monitoring"

PARAMS = {
    "scope": Param("71_10_04", type="string"),
    "watermark_keys": Param([], type="array"),
    "watermark_age_warn_seconds": Param(7200, type="number", minimum=0),
    "watermark_age_alert_seconds": Param(86400, type="number", minimum=0),
    "consumer_groups": Param([], type="array"),
    "lag_warn": Param(100, type="number", minimum=0),
    "lag_alert": Param(1000, type="number", minimum=0),
    "ledger_pipelines": Param([], type="array"),
    "ledger_step_seconds": Param(3600, type="integer", minimum=1),
    "gap_warn": Param(1, type="number", minimum=0),
    "gap_alert": Param(3, type="number", minimum=0),
    "row_count_pairs": Param([], type="array", description='[{"source": "public.x", "target": "core.x"}]'),
    "drift_warn": Param(0.01, type="number", minimum=0),
    "drift_alert": Param(0.1, type="number", minimum=0),
    "connectors": Param(["shop-postgres-source"], type="array"),
    "fail_on_alert": Param(True, type="boolean"),
    "replication_slots": Param(["cdclab_shop"], type="array", description="slots that must exist"),
    "slot_wal_warn_bytes": Param(256 * 1024**2, type="number", minimum=0),
    "slot_wal_alert_bytes": Param(2 * 1024**3, type="number", minimum=0),
    "slots_report_all": Param(True, type="boolean", description="also grade slots not listed"),
    "file_pipelines": Param([], type="array", description="file pipelines (state.file_manifest)"),
    "files_exhausted_warn": Param(1, type="number", minimum=0),
    "files_exhausted_alert": Param(1, type="number", minimum=0),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.10", "best-practice", "reference", "intermediate", "success"],
)
def monitoring() -> None:
    notifier = HealthAlertNotifier(scope="{{ params.scope }}")

    @task(on_failure_callback=notifier)
    def measure(
        params: dict[str, Any],
        dag_run: Any = None,
    ) -> dict[str, int]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import operations
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        checks = operations.measure_health(
            params, interval_start=iv.start, interval_end=iv.end, run_id=dag_run.run_id
        )
        counts = operations.status_counts(checks)
        for c in checks:
            print(f"{c.status:5} {c.metric} {c.subject}: {c.value} ({c.detail})")
        return counts

    @task(on_success_callback=notifier, on_failure_callback=notifier)
    def report(counts: dict[str, int], params: dict[str, Any]) -> None:
        from cdclab.lessons import operations
        from cdclab.ops.alerts import raise_on_critical

        for row in operations.dashboard(params["scope"]):
            print(*row)
        print(f"{counts['alert']} alert(s), {counts['warn']} warning(s), {counts['ok']} ok")
        raise_on_critical(counts, params["fail_on_alert"], params["scope"])

    report(measure())


monitoring()
