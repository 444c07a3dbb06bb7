"""
# 71.10.2 State management — persist, back up, restore and watch the state that says "where we are"

A timestamp-incremental load appends every new row version of a source table to a change log
(``staging.customer_changes_71_10_02``, key ``(id, version)``). It reads up to now, held back to the start
of the oldest transaction still open in the shop (``cdclab.delta.read_upper_bound``), so a long
transaction that commits rows stamped with its early start is read by the next run, not skipped. Its watermark, plus the Kafka offsets of
the groups in `consumer_groups`, are the pipeline's *state* (``cdclab.statebackup``).

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
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_10_02_state_management"


def _wm_key(params: dict[str, Any]) -> str:
    return f"{params['pipeline']}/{params['source_table']}->{params['target_table']}"


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.10", "best-practice", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
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
    },
)
def state_management() -> None:
    @task
    def recover(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any] | None:
        from dataclasses import asdict

        from cdclab import state, statebackup
        from cdclab.cdc.consumer import ensure_schema as ensure_offsets
        from cdclab.db import WAREHOUSE, connect
        from cdclab.files.store import ObjectStore

        wh = connect(WAREHOUSE)
        try:
            state.ensure_schema(wh)
            with wh.cursor() as cur:
                ensure_offsets(cur)
            wh.commit()
            statebackup.ensure_schema(wh)
            lost = state.TableWatermarkStore(wh).get(_wm_key(params)) is None
            wh.rollback()
            if params["restore"] == "never" or (params["restore"] == "auto" and not lost):
                print(f"no restore (restore={params['restore']}, watermark present={not lost})")
                return None
            try:
                result = statebackup.restore(
                    wh,
                    ObjectStore(),
                    scope=params["pipeline"],
                    version=params["restore_version"],
                    mode="missing" if params["restore"] == "auto" else "overwrite",
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
            except statebackup.NoBackupError:
                if params["restore"] == "force":
                    raise
                print("watermark missing and no backup yet: first run, loading from the beginning")
                return None
        finally:
            wh.close()
        print(f"restored {result}")
        return asdict(result)

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from psycopg2 import sql
        from psycopg2.extras import execute_values

        from cdclab import delta, state
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        key = _wm_key(params)
        target = params["target_table"]
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with wh, wh.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id bigint, version integer, tier text, "
                        "updated_at timestamptz, loaded_by text, PRIMARY KEY (id, version))"
                    ).format(ident(target))
                )
            store = state.TableWatermarkStore(wh)
            old = store.read(key, "timestamptz")
            # now, held back to the start of the oldest transaction still open in the shop (it commits
            # rows stamped with that start later): the watermark never passes a row not committed yet
            upper = delta.read_upper_bound(shop)
            result = delta.read_timestamp_delta(
                shop,
                params["source_table"],
                cursor_column="updated_at",
                key_columns=["id"],
                since=old,
                until=upper,
            )
            shop.rollback()
            new = delta.next_watermark(old, result)
            with wh, wh.cursor() as cur:
                inserted = execute_values(
                    cur,
                    sql.SQL(
                        "INSERT INTO {} (id, version, tier, updated_at, loaded_by) VALUES %s "
                        "ON CONFLICT (id, version) DO NOTHING RETURNING id"
                    ).format(ident(target)),
                    [
                        (r["id"], r["version"], r["tier"], r["updated_at"], dag_run.run_id)
                        for r in result.rows
                    ],
                    fetch=True,
                )
                if new is not None and new != old:
                    store.advance(
                        key, old, new, value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id
                    )
        finally:
            shop.close()
            wh.close()
        print(f"watermark {old} -> {new}; read {len(result.rows)}, appended {len(inserted)}")
        return {"read": len(result.rows), "appended": len(inserted)}

    @task
    def backup(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from dataclasses import asdict

        from cdclab import statebackup
        from cdclab.db import WAREHOUSE, connect
        from cdclab.files.store import ObjectStore

        wh = connect(WAREHOUSE)
        try:
            info = statebackup.backup(
                wh,
                ObjectStore(),
                scope=params["pipeline"],
                bucket=params["bucket"],
                prefix=params["prefix"],
                watermark_prefix=f"{params['pipeline']}/",
                groups=params["consumer_groups"],
                run_id=dag_run.run_id,
            )
        finally:
            wh.close()
        print(f"state snapshot v{info.version} -> {params['bucket']}/{info.object_key}")
        return asdict(info)

    @task
    def monitor(params: dict[str, Any], dag_run: Any = None) -> dict[str, str]:
        from airflow.sdk import get_current_context

        from cdclab import health
        from cdclab.db import WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        data_interval_end = iv.end

        wh = connect(WAREHOUSE)
        try:
            health.ensure_schema(wh)
            checks = health.watermark_ages(
                wh,
                [_wm_key(params)],
                data_interval_end,
                params["watermark_age_warn_seconds"],
                params["watermark_age_alert_seconds"],
                future_tolerance=params["watermark_future_tolerance_seconds"],
            )
            with wh.cursor() as cur:
                cur.execute(
                    "SELECT max(taken_at) FROM state.state_backups WHERE scope = %s", (params["pipeline"],)
                )
                taken = cur.fetchone()[0]
            wh.rollback()
            age = None if taken is None else max((data_interval_end - taken).total_seconds(), 0.0)
            checks.append(
                health.Check(
                    "backup_age_seconds",
                    params["pipeline"],
                    age,
                    params["backup_age_warn_seconds"],
                    params["backup_age_alert_seconds"],
                    health.grade(age, params["backup_age_warn_seconds"], params["backup_age_alert_seconds"]),
                    f"latest backup {taken}",
                )
            )
            health.record(wh, params["pipeline"], dag_run.run_id, data_interval_end, checks)
        finally:
            wh.close()
        return {c.metric: c.status for c in checks}

    recovered = recover()
    loaded = load()
    recovered >> loaded
    backed_up = backup()
    loaded >> backed_up
    backed_up >> monitor()


state_management()
