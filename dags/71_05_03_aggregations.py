"""
# 71.5.3 Incremental aggregations — per-customer daily totals kept current from the changed orders only

**Rolling aggregates.** ``<target_prefix>_rolling_7d`` holds, for every customer and active day, the orders
and amount of the last 7 days. A change on day d affects the rows of d..d+6, so per affected customer the
rows from the earliest affected day on are recomputed from the daily table.

**Update vs replace.** Every run pulls the orders changed since the watermark (``cdclab.delta.pull``) and maintains
the same daily aggregate ``(customer_id, day) -> orders, amount`` two ways, side by side:
``<target_prefix>_daily_update`` adds ``new contribution - old contribution`` of each changed order (the old
contribution comes from the mirror ``<target_prefix>_orders``; a cancelled order contributes nothing), and
``<target_prefix>_daily_replace`` deletes every affected group (old and new group of each changed order) and
recomputes it from the mirror.

**Efficiency patterns.** Only changed rows are read from the source and only affected groups are written; a
re-read row whose version is already mirrored is skipped (a delta applied twice would corrupt the update
table forever). ``<target_prefix>_metrics`` records per run and strategy the changed rows, groups touched,
rows written and elapsed ms (compare them; the lab never asserts timings).

**Hard deletes.** A timestamp pull cannot see a row that is gone. After each pull the run reads every
source key and treats a mirrored order the source no longer holds as deleted: it contributes nothing from
then on (``deleted_rows`` in the task's return value). This key-set comparison reads every key, which is
the price of finding deletes without CDC (71.3 reads them from the log instead).

**Consistency.** ``check`` first catches up (the same pull and delete detection, so changes the live
workload committed since ``apply`` are in), then aggregates the source from scratch, as read after that
pull (rows changed after the pull count in the version the pipeline has seen, ``cdclab.merge.aggregates.
expected_source``), and compares it with both strategies and the rolling table. Any difference fails the run
with ``AggregateMismatchError`` naming the groups, and ``consistent`` is set in the metrics.

Observe: ``SELECT * FROM marts.agg_71_05_03_daily_update`` vs ``..._daily_replace``,
``marts.agg_71_05_03_rolling_7d``, ``marts.agg_71_05_03_metrics ORDER BY id``; vocabulary in
``cdclab.merge.aggregates``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_05_03_aggregations"

PARAMS = {
    "orders_table": Param("public.orders", type="string"),
    "target_prefix": Param("marts.agg_71_05_03", type="string"),
    "watermark_key": Param("", type="string", description="default: 71_05_03/<orders_table>"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.5", "aggregations", "reference", "patterns", "advanced", "success"],
)
def aggregations() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.merge import aggregates

        aggregates.prepare(params["target_prefix"])

    @task
    def apply(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        """Pull, detect hard deletes, apply both strategies and record the metrics (one transaction)."""
        from cdclab.merge import aggregates

        return aggregates.run_step(
            params["orders_table"], params["target_prefix"], params["watermark_key"], DAG_ID, dag_run.run_id
        )

    @task
    def check(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        """Catch up on what changed since ``apply``, then compare with a full recompute of that read."""
        from cdclab.merge import aggregates

        return aggregates.run_check(
            params["orders_table"], params["target_prefix"], params["watermark_key"], DAG_ID, dag_run.run_id
        )

    prepare() >> apply() >> check()


aggregations()
