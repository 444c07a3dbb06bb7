"""
# 71.10.2 State management — persist, back up, restore and watch the state that says "where we are"

A timestamp-incremental load appends every new row version of a source table to a change log
(``staging.customer_changes_71_10_02``, key ``(id, version)``). It reads up to now, held back to the start
of the oldest transaction still open in the shop (``cdclab.delta.detection.read_upper_bound``), so a long
transaction that commits rows stamped with its early start is read by the next run, not skipped. Its watermark, plus the Kafka offsets of
the groups in `consumer_groups`, are the pipeline's *state* (``cdclab.state.backup``).

**Persistence options.** Airflow Variables and XCom are metadata-DB rows without history; the asset state
store outlives runs but not a metadata reset; ``state.watermarks`` / ``state.kafka_offsets`` live in the
warehouse next to the data, so rows and state commit in one transaction (used here). Whatever holds it,
state is data: it needs a backup.

**Backup strategies.** After every successful load the `backup` task writes a versioned JSON snapshot
(``v000001.json``, ``v000002.json``, ...) with a sha256 to MinIO (`bucket`/`prefix`, connection
``minio``) and catalogues it in ``state.state_backups``. Snapshots are immutable; keep as many as
the retention needs.

**Recovery procedures.** The `recover` task runs first: with `restore` = ``auto`` it restores the latest
snapshot when the watermark is gone (state loss) and only the rows that are missing (a live watermark is
never moved backwards); ``force`` overwrites with `restore_version` (or the latest); ``never`` leaves a
deliberately deleted watermark alone (a full reload). A restored watermark is at most one run old, so
the next load re-reads from there: no gap; the change log's key makes the re-read rows no duplicates.

**Monitoring setup.** The `monitor` task writes ``watermark_age_seconds`` and ``backup_age_seconds``
(against the run's ``data_interval_end``) to ``marts.pipeline_health`` (scope = `pipeline`), graded by
thresholds, the same table 71_10_04 reads. An age is only meaningful if it is positive: a watermark
*after* the run's interval end (a backfill or rerun of an old interval behind a watermark that is
already newer, a skewed clock, a value set by hand) gives a negative age that a plain threshold would
grade ``ok`` — the one state a freshness check must not pass silently. It is an ``alert`` whose detail
starts with ``future_watermark``. The load reads up to *now*, so a scheduled run that starts a little
after its interval end may legitimately store a watermark a few seconds past it:
`watermark_future_tolerance_seconds` (default 15 min) absorbs that delay.

Observe: ``state.state_backups``, the objects under ``lab-tests/71_10_02/state/``,
``state.watermark_history`` (reason ``restore``), ``marts.pipeline_health_dashboard WHERE scope =
'71_10_02'``. Simulate state loss with ``DELETE FROM state.watermarks WHERE key LIKE '71_10_02/%'``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_10_02_state_management"


def _wm_key(params: dict[str, Any]) -> str:
    return f"{params['pipeline']}/{params['source_table']}->{params['target_table']}"


PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "target_table": Param("staging.customer_changes_71_10_02", type="string"),
    "pipeline": Param("71_10_02", type="string"),
    "consumer_groups": Param([], type="array"),
    "bucket": Param("lab-tests", type="string"),
    "prefix": Param("71_10_02/state", type="string"),
    "restore": Param("auto", enum=["auto", "force", "never"]),
    "restore_version": Param(None, type=["integer", "null"]),
    "watermark_age_warn_seconds": Param(7200, type="number", minimum=0),
    "watermark_age_alert_seconds": Param(86400, type="number", minimum=0),
    "watermark_future_tolerance_seconds": Param(900, type="number", minimum=0),
    "backup_age_warn_seconds": Param(7200, type="number", minimum=0),
    "backup_age_alert_seconds": Param(86400, type="number", minimum=0),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.10", "best-practice", "reference", "intermediate", "success"],
)
def state_management() -> None:
    @task
    def recover(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any] | None:
        from cdclab.lessons import state_management as lesson

        return lesson.recover(
            _wm_key(params),
            params["pipeline"],
            params["restore"],
            params["restore_version"],
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab.lessons import state_management as lesson

        r = lesson.load_changes(
            params["source_table"],
            params["target_table"],
            _wm_key(params),
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(f"watermark {r['old']} -> {r['new']}; read {r['read']}, appended {r['appended']}")
        return {"read": r["read"], "appended": r["appended"]}

    @task
    def backup(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_management as lesson

        info = lesson.backup(
            params["pipeline"],
            params["bucket"],
            params["prefix"],
            params["consumer_groups"],
            run_id=dag_run.run_id,
        )
        print(f"state snapshot v{info['version']} -> {params['bucket']}/{info['object_key']}")
        return info

    @task
    def monitor(params: dict[str, Any], dag_run: Any = None) -> dict[str, str]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import state_management as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        return lesson.monitor(
            params["pipeline"],
            [_wm_key(params)],
            iv.end,
            watermark_age=(params["watermark_age_warn_seconds"], params["watermark_age_alert_seconds"]),
            future_tolerance=params["watermark_future_tolerance_seconds"],
            backup_age=(params["backup_age_warn_seconds"], params["backup_age_alert_seconds"]),
            run_id=dag_run.run_id,
        )

    recovered = recover()
    loaded = load()
    recovered >> loaded
    backed_up = backup()
    loaded >> backed_up
    backed_up >> monitor()


state_management()
