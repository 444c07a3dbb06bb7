"""Every DAG of ``dags/`` as its users meet it: unpaused and triggered through the api-server's REST API,
as the UI's Trigger button does (logical date = now, default params), all at once, run by the lab's
real scheduler and LocalExecutor; then a second round once the first has ended. Every triggered run
succeeds, and each run leaves something the user can see, named in the DAG's docstring (``EFFECTS``).

``CDCLAB_SCHEDULER_DAGS=71_01_01_basics,71_10_04_monitoring`` restricts the set for a quick run
(the test ids in ``EFFECTS`` must still cover every DAG file). ``CDCLAB_SCHEDULER_TIMEOUT`` (seconds,
default 3600) bounds each round. All problems of both rounds are collected and reported together.

Effects, one query per DAG (``warehouse`` unless the entry says ``shop``), each returning one number:
- ``per_run``: the query takes ``%(run_id)s`` and must count > 0 rows written *by that run*, for each of
  the two runs (it changed something, every time);
- ``rows``: the lesson's target must hold > 0 rows after each round (the DAG's own table, which only it
  writes with these defaults).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from cdclab.testing.dags import AirflowAPI, DagRunResult, trigger_many

ROOT = Path(__file__).resolve().parents[2]
LOG_SERVICES = ["airflow-scheduler", "airflow-api-server", "airflow-dag-processor"]


@dataclass(frozen=True)
class Effect:
    kind: Literal["per_run", "rows"]
    query: str
    database: Literal["warehouse", "shop"] = "warehouse"


def per_run(query: str) -> Effect:
    return Effect("per_run", query)


def rows(table: str, where: str = "") -> Effect:
    return Effect("rows", f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else ""))


def metrics(pipeline: str) -> Effect:
    return per_run(
        f"SELECT count(*) FROM state.run_metrics WHERE pipeline LIKE '{pipeline}/%%' AND run_id = %(run_id)s"
    )


def perf(experiment: str) -> Effect:
    return per_run(
        f"SELECT count(*) FROM state.perf_runs WHERE experiment = '{experiment}' AND run_id = %(run_id)s"
    )


def findings(dag: str) -> Effect:
    return per_run(f"SELECT count(*) FROM state.findings_{dag} WHERE run_id = %(run_id)s")


def files(pipeline: str, table: str = "state.file_manifest") -> Effect:
    return rows(table, f"pipeline = '{pipeline}'")


# Derived from each DAG's docstring ("Observe ...") and default params.
EFFECTS: dict[str, Effect] = {
    "71_01_01_basics": metrics("71_01_01"),
    "71_01_02_cdc_concepts": rows("staging.cdc_changes_71_01_02"),
    "71_01_03_watermarks": rows("core.customers_71_01_03"),
    "71_01_04_delta_detection": per_run(
        "SELECT count(*) FROM state.delta_reconciliation WHERE run_id = %(run_id)s"
    ),
    "71_01_05_state_storage": rows("core.customers_71_01_05_table"),
    "71_02_01_execution_date": rows("core.orders_by_day"),
    "71_02_02_last_modified": per_run(
        "SELECT count(*) FROM state.last_modified_runs WHERE run_id = %(run_id)s"
    ),
    "71_02_03_event_time": rows("marts.orders_hourly_event_time"),
    "71_02_04_sliding_window": rows("marts.orders_revenue_panes"),
    "71_02_05_timezone": rows("marts.daily_sales_local"),
    "71_03_01_database_cdc": rows("core.customers"),
    "71_03_02_kafka_cdc": per_run("SELECT count(*) FROM state.kafka_lag WHERE dag_run = %(run_id)s"),
    "71_03_03_merge_upsert": rows("core.customers__merge"),
    "71_03_04_scd2": rows("marts.dim_customers"),
    "71_03_05_soft_delete": rows("core.soft_customers"),
    "71_04_01_file_detection": files("71_04_01_file_detection"),
    "71_04_02_manifest": files("71_04_02_manifest"),
    "71_04_03_streaming": files("71_04_03_streaming"),
    "71_04_04_chunking": files("71_04_04_chunking", "state.file_chunks"),
    "71_04_05_archive": files("71_04_05_archive", "state.file_audit"),
    "71_05_01_exactly_once": rows("marts.exactly_once_transactional_events"),
    "71_05_02_out_of_order": per_run(
        "SELECT count(*) FROM core.ooo_71_05_02_reconciliation WHERE run_id = %(run_id)s"
    ),
    "71_05_03_aggregations": per_run(
        "SELECT count(*) FROM marts.agg_71_05_03_metrics WHERE run_id = %(run_id)s"
    ),
    "71_05_04_ml_features": rows("marts.features_71_05_04_offline"),
    "71_05_05_testing": per_run("SELECT count(*) FROM state.selfcheck_71_05_05 WHERE run_id = %(run_id)s"),
    "71_06_01_lost_watermarks": metrics("71_06_01"),
    "71_06_02_ignoring_late": rows("marts.totals_71_06_02_anti_pattern"),
    "71_06_03_full_fallback": metrics("71_06_03"),
    "71_06_04_unbounded_state": per_run(
        "SELECT count(*) FROM state.seen_71_06_04_anti_pattern__size WHERE run_id = %(run_id)s"
    ),
    "71_06_05_assuming_order": rows("core.status_71_06_05_anti_pattern"),
    "71_07_01_vs_full_load": perf("71_07_01"),
    "71_07_02_watermark_efficiency": perf("71_07_02"),
    "71_07_03_cdc_performance": perf("71_07_03"),
    "71_07_04_merge_performance": perf("71_07_04"),
    "71_07_05_state_performance": perf("71_07_05"),
    "71_08_01_gap_investigation": findings("71_08_01"),
    "71_08_02_watermark_debug": findings("71_08_02"),
    "71_08_03_cdc_debug": findings("71_08_03"),
    "71_08_04_duplicate_detection": findings("71_08_04"),
    "71_08_05_late_data": findings("71_08_05"),
    "71_09_01_db_replication": per_run(
        "SELECT count(*) FROM state.replication_checks WHERE dag_run = %(run_id)s"
    ),
    "71_09_02_log_processing": rows("staging.app_logs"),
    "71_09_03_api_sync": per_run("SELECT count(*) FROM state.api_sync_runs WHERE run_id = %(run_id)s"),
    "71_09_04_dw_loading": metrics("71_09_04"),
    "71_09_05_event_stream": rows("marts.clickstream_windows"),
    "71_10_01_strategy_selection": per_run(
        "SELECT count(*) FROM state.strategy_recommendations WHERE run_id = %(run_id)s"
    ),
    "71_10_02_state_management": per_run(
        "SELECT count(*) FROM state.state_backups WHERE run_id = %(run_id)s"
    ),
    "71_10_03_error_recovery": rows("core.events_71_10_03"),
    "71_10_04_monitoring": per_run(
        "SELECT count(*) FROM marts.pipeline_health WHERE scope = '71_10_04' AND run_id = %(run_id)s"
    ),
    "71_10_05_documentation": per_run("SELECT count(*) FROM state.docs_index WHERE run_id = %(run_id)s"),
}


def curriculum_dags() -> list[str]:
    return sorted(p.stem for p in (ROOT / "dags").glob("71_*.py"))


def selected() -> list[str]:
    wanted = [d.strip() for d in os.environ.get("CDCLAB_SCHEDULER_DAGS", "").split(",") if d.strip()]
    unknown = sorted(set(wanted) - set(curriculum_dags()))
    assert not unknown, f"CDCLAB_SCHEDULER_DAGS names DAGs that are not in dags/: {unknown}"
    return wanted or curriculum_dags()


def measure(conns: dict[str, Any], effect: Effect, run_id: str) -> tuple[int | None, str]:
    """(the effect's number, '' or the error reading it)."""
    conn = conns[effect.database]
    try:
        with conn.cursor() as cur:
            cur.execute(effect.query, {"run_id": run_id})
            return int(cur.fetchone()[0]), ""
    except Exception as exc:  # a missing table is a finding, reported with the others
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    finally:
        conn.rollback()


def notifier_logged(api: AirflowAPI, result: DagRunResult) -> str:
    """'' when the monitoring run's ``report`` task log holds the alert notifier's line, else a problem."""
    report = result.tasks.get("report")
    if report is None:
        return f"{result.dag_id} run {result.run_id} has no report task"
    log = api.task_log(result.dag_id, result.run_id, "report", report.try_number)
    if "alert(s) for run" not in log:
        return f"{result.dag_id} run {result.run_id}: no notifier line in the report log:\n{log[-2000:]}"
    return ""


def problems_of(
    round_no: int, results: dict[str, DagRunResult], conns: dict[str, Any], api: AirflowAPI
) -> list[str]:
    out = []
    for dag_id, result in sorted(results.items()):
        if result.state != "success":
            out.append(f"round {round_no}: " + result.describe())
            continue
        effect = EFFECTS[dag_id]
        value, error = measure(conns, effect, result.run_id)
        if error or not value:
            what = "rows written by the run" if effect.kind == "per_run" else "rows in the target"
            out.append(
                f"round {round_no}: {dag_id} run {result.run_id} succeeded but shows no visible effect: "
                f"{what}: {value if not error else error} ({effect.query})"
            )
        if dag_id == "71_10_04_monitoring" and (problem := notifier_logged(api, result)):
            out.append(f"round {round_no}: {problem}")
    return out


def test_every_dag_file_has_a_visible_effect_to_check() -> None:
    assert sorted(EFFECTS) == curriculum_dags()


@pytest.mark.timeout(3 * 3600)
def test_every_dag_triggered_from_the_ui_twice_at_once_succeeds_and_shows_its_effect(
    lab: Any, shop_db: Any, warehouse_db: Any
) -> None:
    dag_ids = selected()
    timeout = float(os.environ.get("CDCLAB_SCHEDULER_TIMEOUT", "3600"))
    conns = {"shop": shop_db, "warehouse": warehouse_db}
    problems: list[str] = []
    run_ids: dict[str, list[str]] = {d: [] for d in dag_ids}
    for round_no in (1, 2):
        results = trigger_many(lab, dag_ids, timeout=timeout)
        assert sorted(results) == sorted(dag_ids)
        for dag_id, result in results.items():
            run_ids[dag_id].append(result.run_id)
        problems += problems_of(round_no, results, conns, AirflowAPI.for_lab(lab))
    assert all(len(set(r)) == 2 for r in run_ids.values()), run_ids
    assert not problems, f"{len(problems)} problem(s) in {len(dag_ids)} DAGs x 2 rounds:\n" + "\n\n".join(
        problems
    )
