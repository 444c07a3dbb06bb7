"""
# 71.1.5 Incremental state storage — Variables, XCom, an external table and the asset state store

Four copies of the same incremental load of ``shop.public.customers``; each keeps its high watermark
(``updated_at``) somewhere else (``cdclab.state.watermarks``), so the runs show what each store remembers.

**Variables for state.** ``variable_load`` keeps ``{"type": "timestamptz", "value": ...}`` in the
Airflow Variable ``<variable_prefix>watermark`` (read with ``airflow.sdk.Variable`` inside the task,
never at parse time). Persists across runs and shows in *Admin -> Variables*, but last writer wins
(no compare-and-set), no history, and the metadata DB is now part of your data pipeline's state.

**XCom state.** ``xcom_load`` looks for the watermark a previous run pushed and finds none: an XCom
belongs to its DAG run (and a cleared task loses it), so the next run starts empty and re-reads the
whole table every time. Within a run XCom is the right tool: ``xcom_load`` hands its new watermark to
``report`` (key ``watermark``).

**External state store.** ``table_load`` uses ``state.watermarks`` in the warehouse: typed value,
``state.watermark_history``, compare-and-set and audited resets, next to the data it describes (the
recommended store; ``71_01_03_watermarks`` shows its recovery story).

**State persistence.** ``asset_state_load`` uses Airflow 3.3's asset state store
(``context["asset_state_store"][asset]``, AIP-103): state attached to an asset, kept across runs in the
metadata DB table ``asset_state_store``, visible under the asset in the UI. It works under ``dag.test()``
against the lab's metadata DB. (The *task* state store is scoped to one DAG run — only retries of a
task share it — so it cannot hold a watermark.) ``report`` prints rows read per store: after the first
run the Variable, table and asset stores read only the changes, XCom reads everything again.

Observe: ``state.watermarks`` / ``state.watermark_history`` (key ``71_01_05/...``), Admin -> Variables
(``71_01_05__watermark``), the asset ``cdclab-71_01_05-state`` page, the targets
``core.customers_71_01_05_{variable,xcom,table,asset}`` and the ``report`` task log.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_01_05_state_storage"
STORES = ("variable", "xcom", "table", "asset")
STATE_ASSET = Asset(name="cdclab-71_01_05-state", uri="cdclab://state/71_01_05")

PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "target_prefix": Param("core.customers_71_01_05", type="string"),
    "state_key": Param(
        "71_01_05",
        type="string",
        description="watermark key (table, asset) and Variable prefix <state_key>__",
    ),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.1", "state", "reference", "core", "intermediate", "success"]
)
def state_storage() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import state_storage as lesson

        lesson.prepare(params["source_table"], params["target_prefix"])

    @task
    def variable_load(params: dict[str, Any]) -> dict[str, Any]:
        from cdclab.lessons import state_storage as lesson

        return lesson.variable_load(params["source_table"], params["target_prefix"], params["state_key"])

    @task
    def xcom_load(params: dict[str, Any], ti: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_storage as lesson

        # what a previous run pushed is not visible: XCom is scoped to this DAG run
        previous = ti.xcom_pull(task_ids="xcom_load", key="watermark")
        loaded, payload = lesson.xcom_load(previous, params["source_table"], params["target_prefix"])
        if payload is not None:
            ti.xcom_push(key="watermark", value=payload)
        return loaded

    @task
    def table_load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_storage as lesson

        return lesson.table_load(
            params["source_table"],
            params["target_prefix"],
            params["state_key"],
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )

    @task(inlets=[STATE_ASSET], outlets=[STATE_ASSET])
    def asset_load(params: dict[str, Any], asset_state_store: Any = None) -> dict[str, Any]:
        from cdclab.lessons import state_storage as lesson

        return lesson.asset_load(
            asset_state_store[STATE_ASSET],
            params["source_table"],
            params["target_prefix"],
            params["state_key"],
        )

    @task
    def report(loads: list[dict[str, Any]], ti: Any = None) -> dict[str, Any]:
        summary = dict(zip(STORES, loads, strict=True))
        handed_over = ti.xcom_pull(task_ids="xcom_load", key="watermark")
        for store, m in summary.items():
            print(f"{store:<9} found a previous watermark: {m['found']!s:<5} rows read: {m['read']}")
        print(f"watermark handed over by XCom within this run: {handed_over}")
        return {"loads": summary, "xcom_handover": handed_over}

    prepared = prepare()
    loads = [variable_load(), xcom_load(), table_load(), asset_load()]
    prepared >> loads
    report(loads)


state_storage()
