"""
# 71.5.4 Incremental ML features — customer order features, versioned, point-in-time correct

**Feature updates.** Every run pulls the orders changed since the watermark (``cdclab.delta.pull``), mirrors them
and recomputes ``orders_7d, amount_7d, orders_30d, amount_30d`` *as of* the end of the data interval only
for the affected customers: those with a changed order and those with an order that entered or left a
window since the version's last run (time passing changes a rolling feature even without new data).

**Feature store integration.** ``<target_prefix>_offline`` is the offline store: one row per customer,
feature version and validity ``[valid_from, valid_to)``, written only when the vector changed (the previous
row is closed). ``<target_prefix>_online`` holds the current vector per customer for serving.

**Training data.** ``training_set`` joins labels with the vector *valid at the label time*
(``valid_from <= t < valid_to``) into ``<target_prefix>_training``: a correction or a late order that the
warehouse learned after ``t`` never leaks into a training row for ``t``. ``training_as_of`` (ISO timestamp;
empty = the end of the data interval) chooses ``t``.

**Versioning.** ``feature_version`` selects a definition registered in ``<target_prefix>_registry`` (``v1``
excludes cancelled orders, ``v2`` counts them). Versions coexist in the same tables; a version's first run
backfills every customer; a run older than the version's ``last_as_of`` is refused
(``FeatureTimeRegressionError``).

Observe: ``SELECT * FROM marts.features_71_05_04_offline ORDER BY customer_id, feature_version, valid_from``,
``..._online``, ``..._registry``, ``..._training``; vocabulary in ``cdclab.lessons.features``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_05_04_ml_features"

PARAMS = {
    "orders_table": Param("public.orders", type="string"),
    "target_prefix": Param("marts.features_71_05_04", type="string"),
    "watermark_key": Param("", type="string", description="default: 71_05_04/<orders_table>"),
    "feature_version": Param("v1", enum=["v1", "v2"]),
    "training_as_of": Param("", type="string", description="ISO timestamp; empty = data interval end"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.5", "features", "reference", "patterns", "advanced", "success"],
)
def ml_features() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import ml_features as lesson

        lesson.prepare(params["target_prefix"])

    @task
    def update_features(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import ml_features as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        pulled, result = lesson.update_features(
            params["orders_table"],
            params["target_prefix"],
            lesson.watermark_key(params["watermark_key"], params["orders_table"]),
            version=params["feature_version"],
            as_of=iv.end,
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(f"pulled {pulled} orders; {result}")
        return result

    @task
    def training_set(params: dict[str, Any]) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import ml_features as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        label_time = lesson.label_time(params["training_as_of"], iv.end)
        n = lesson.training_set(
            params["target_prefix"], version=params["feature_version"], label_time=label_time
        )
        print(f"training set as of {label_time}: {n} rows")
        return {"label_time": label_time.isoformat(), "rows": n}

    prepare() >> update_features() >> training_set()


ml_features()
