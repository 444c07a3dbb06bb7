"""
# 71.10.1 Incremental strategy selection — profile the source, then choose with reasons

There is no best incremental strategy, only the best one *for a table*. This DAG profiles every source
table in the `tables` param and records a recommendation with every reason in
``state.strategy_recommendations`` (``cdclab.lessons.strategy``), then loads one table (`load_table`) with the
strategy it just recommended.

**Data characteristics.** Row count, primary key, hard deletes (observed in ``pg_stat_user_tables`` or
declared). Without a key nothing can be matched, so the answer is a full reload; hard deletes rule out
cursor polling (a deleted row has no ``updated_at`` to find).

**Source capabilities.** A cursor column (``updated_at``) *with an index*, a monotonic version column
(``change_seq`` fed by a sequence; the per-row ``version`` counter is not monotonic across rows), replica
identity and membership in the Debezium publication ``cdclab_shop``. Log-based CDC needs the publication
and a WAL image with the key (REPLICA IDENTITY NOTHING rules it out).

**Business requirements.** `hard_delete_tables` (tables known to delete rows) and
`max_staleness_seconds`: staleness below the schedule's period asks for streaming (log-based CDC).

**Resource constraints.** `full_load_max_rows`: up to that size a full reload is the simplest correct
strategy; above it load only changes: version > timestamp (indexed) > hash (reads every row, but sees
deletes).

Rule order: no key -> full; deletes -> log_cdc if CDC-capable, else full if small, else hash; staleness ->
log_cdc; small -> full; version; indexed timestamp; hash. ``log_cdc`` tables are loaded by 71_03_02.

Observe: ``SELECT source_table, strategy, reasons FROM state.strategy_recommendations WHERE pipeline =
'71_10_01' ORDER BY id DESC``; the target ``core.strategy_71_10_01``; ``state.run_metrics`` (strategy,
rows read/written) and ``state.watermarks WHERE key LIKE '71_10_01/%'``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, from_params, lesson_dag

DAG_ID = "71_10_01_strategy_selection"

PARAMS = {
    "tables": Param(
        ["public.customers", "public.products", "public.orders", "public.order_items", "public.payments"],
        type="array",
    ),
    "load_table": Param("public.products", type=["string", "null"]),
    "target_table": Param("core.strategy_71_10_01", type="string"),
    "pipeline": Param("71_10_01", type="string"),
    "hard_delete_tables": Param([], type="array"),
    "max_staleness_seconds": Param(3600, type="integer", minimum=0),
    "schedule_seconds": Param(3600, type="integer", minimum=1),
    "full_load_max_rows": Param(10_000, type="integer", minimum=0),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.10", "best-practice", "reference", "beginner", "success"]
)
def strategy_selection() -> None:
    @task
    def recommend(params: dict[str, Any], dag_run: Any = None) -> dict[str, str]:
        from cdclab.lessons import operations, strategy

        req = strategy.Requirements(
            **from_params(
                params,
                "hard_delete_tables",
                "max_staleness_seconds",
                "schedule_seconds",
                "full_load_max_rows",
            ),
        )
        recs = operations.recommend(params["tables"], req, pipeline=params["pipeline"], run_id=dag_run.run_id)
        for rec in recs:
            print(f"{rec.table}: {rec.strategy} because " + "; ".join(rec.reasons))
        return {rec.table: rec.strategy for rec in recs}

    @task
    def load(chosen: dict[str, str], params: dict[str, Any], dag_run: Any = None) -> dict[str, Any] | None:
        from dataclasses import asdict

        from cdclab.lessons import operations

        if not params["load_table"]:
            return None
        table, chosen_strategy, result = operations.load_recommended(
            params["load_table"],
            chosen,
            target=params["target_table"],
            pipeline=params["pipeline"],
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        if result is None:  # log_cdc: Kafka Connect streams it; 71_03_02 merges it
            print(
                f"{table}: the recommendation is log_cdc, which runs continuously on Kafka Connect "
                f"(topic shop.{table}); load it with 71_03_02_kafka_cdc. Nothing loaded here."
            )
            return {"table": table, "strategy": chosen_strategy, "loaded_by": "71_03_02_kafka_cdc"}
        print(result)
        return asdict(result)

    load(recommend())


strategy_selection()
