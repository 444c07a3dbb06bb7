"""
# 71.7.4 Merge performance — MERGE vs INSERT ... ON CONFLICT, statement size, join-key index, parallel partitions

**MERGE optimization.** The same Debezium changes are applied by three *strategies*, each into its own
target ``<schema>.<prefix><table>__<strategy>_b<size>``:
``mpk`` = ``MERGE`` from a staging table into a target with a primary key
(``cdclab.cdc.merge_variants.merge_changes``: stage the latest change per key, one MERGE, ledger
upkeep), ``mnx`` = the same MERGE into a target *without* an index on the join key, ``upk`` =
``INSERT ... ON CONFLICT`` (``cdclab.cdc.merge.apply_changes``). All three keep the strict position
guard and the delete ledger, so all targets end equal to the source (``compare`` fails with
``VariantsDiverged`` otherwise). MERGE pays for the staging table (truncate + insert + join); the
upsert writes directly but needs two statements for deletes and a unique index.

**Batch sizing.** Each consumer batch is cut into statements of ``batch_sizes`` changes; ``statements``
in the record counts them. Fewer, larger statements save round trips and planning; past a few hundred
rows per statement the gain flattens while locks are held longer.

**Index strategies.** ``ON CONFLICT`` cannot run without a unique index on the key (that combination is
not a variant: Postgres refuses it). MERGE can, but then every MERGE joins the staging table against the
whole target (``Seq Scan`` + ``Hash Join``): its cost grows with the target, not the batch, which the
``mnx`` durations show as the target grows from run to run.

**Parallel processing.** ``apply_partition`` is mapped (dynamic task mapping, ``.expand``) over
``partitions`` key partitions: each mapped task consumes the topic with its own consumer group
``<group>.p<i>of<n>`` and applies only the keys with ``crc32(key) % n == i``. Every change of one key lands
in one partition, so order per key is kept and partitions never touch each other's rows; they can run in
parallel on the LocalExecutor (they share the MERGE staging table, whose ``TRUNCATE`` lock serialises
that step: the cost of a shared stage). Each task records its own window (``task/p<i>``: ``started_at``,
``ended_at``, from the task itself, no metadata DB). ``summarize`` records ``parallel``: the *wall clock*
from the earliest task start to the latest task end, next to ``sum_task_ms`` (the work) and
``overlapping_pairs``. Triggered from the UI with free executor slots the windows overlap and
``speedup`` = sum / wall clock rises above 1; under ``dag.test`` (one task at a time) they do not, and
the wall clock is at least the sum. (The per-variant ``slowest_partition_ms`` is only an apply time
inside tasks that apply every variant, not a wall clock.)

Observe: ``SELECT variant, rows_read, round(duration_ms::numeric, 1), details FROM state.perf_runs WHERE
experiment = '71_07_04' ORDER BY id``; the parallel clock alone: ``... AND variant IN ('parallel',
'task/p0', 'task/p1')``; mapped task instances of ``apply_partition`` in the Grid view (their start and
end times match ``task/p<i>``); offsets per group in ``state.kafka_offsets``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import lesson_dag

DAG_ID = "71_07_04_merge_performance"

PARAMS = {
    "tables": Param(["public.customers"], type="array", description="source tables (schema.table)"),
    "consumer_group": Param("71_07_04", type="string", description="base; .p<i>of<n> is appended"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("perf_71_07_04_", type="string"),
    "batch_sizes": Param([20, 500], type="array", items={"type": "integer", "minimum": 1}),
    "partitions": Param(2, type="integer", minimum=1, maximum=16),
    "consumer_batch": Param(500, type="integer", minimum=1),
    "experiment": Param("71_07_04", type="string", description="name in state.perf_runs"),
}


@lesson_dag(schedule=None, tags=["71.7", "performance", "reference", "intermediate", "success"])
def merge_performance() -> None:
    @task
    def prepare(params: dict[str, Any], dag_run: Any = None) -> list[int]:
        from cdclab.lessons import cdc_performance as lesson

        lesson.prepare_merge_targets(lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id))
        return list(range(params["partitions"]))

    @task
    def apply_partition(partition: int, params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_performance as lesson

        p = lesson.apply_partition(
            lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id),
            partition,
            params["partitions"],
            params["consumer_batch"],
        )
        print(f"partition {partition}/{p.partitions}: {p.records} records; changes {p.changes}; µs {p.us}")
        return {"partition": partition, "records": p.records, "changes": p.changes}

    @task
    def summarize(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_performance as lesson

        out = lesson.summarize_partitions(lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id))
        for variant, d in out.items():
            print(f"{variant}: {d}")
        return out

    @task
    def compare(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_performance as lesson

        return lesson.compare_strategies(lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id))

    parts = prepare()
    applied = apply_partition.expand(partition=parts)
    applied >> summarize() >> compare()


merge_performance()
