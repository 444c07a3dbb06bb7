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

**Parallel processing.** ``apply_partition`` is mapped (dynamic task mapping) over ``partitions`` key
partitions: each mapped task consumes the topic with its own consumer group
``<group>.p<i>of<n>`` and applies only the keys with ``crc32(key) % n == i``. Every change of one key lands
in one partition, so order per key is kept and partitions never touch each other's rows; they can run in
parallel on the LocalExecutor (they share the MERGE staging table, whose ``TRUNCATE`` lock serialises
that step: the cost of a shared stage). ``summarize`` records, per variant, the sum of partition times
(total work) and the slowest partition (the parallel wall clock).

Observe: ``SELECT variant, rows_read, round(duration_ms::numeric, 1), details FROM state.perf_runs WHERE
experiment = '71_07_04' ORDER BY id``; mapped task instances of ``apply_partition`` in the Grid view;
offsets per group in ``state.kafka_offsets``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

DAG_ID = "71_07_04_merge_performance"
STRATEGIES = ("mpk", "mnx", "upk")


def _targets(route_target: str, batch_sizes: list[int]) -> dict[tuple[str, int], str]:
    return {(s, b): f"{route_target}__{s}_b{b}" for s in STRATEGIES for b in batch_sizes}


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.7", "performance", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "tables": Param(["public.customers"], type="array", description="source tables (schema.table)"),
        "consumer_group": Param("71_07_04", type="string", description="base; .p<i>of<n> is appended"),
        "target_schema": Param("core", type="string"),
        "target_prefix": Param("perf_71_07_04_", type="string"),
        "batch_sizes": Param([20, 500], type="array", items={"type": "integer", "minimum": 1}),
        "partitions": Param(2, type="integer", minimum=1, maximum=16),
        "consumer_batch": Param(500, type="integer", minimum=1),
        "experiment": Param("71_07_04", type="string", description="name in state.perf_runs"),
    },
)
def merge_performance() -> None:
    @task
    def prepare(params: dict[str, Any]) -> list[int]:
        from psycopg2 import sql

        from cdclab import perf
        from cdclab.cdc.merge import ensure_target
        from cdclab.cdc.merge_variants import ensure_stage
        from cdclab.cdc.pipeline import routes_for
        from cdclab.db import WAREHOUSE, connect, ident

        routes = routes_for(
            params["tables"],
            topic_prefix="shop",
            target_schema=params["target_schema"],
            target_prefix=params["target_prefix"],
        )
        wh = connect(WAREHOUSE)
        try:
            perf.ensure_schema(wh)
            with wh, wh.cursor() as cur:
                for r in routes:
                    for (strategy, _), target in _targets(r.target, params["batch_sizes"]).items():
                        ensure_target(cur, target, list(r.types.items()), r.key)
                        if strategy == "mnx":  # no index on the join key
                            cur.execute(
                                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                                "AND contype = 'p'",
                                (target,),
                            )
                            for (name,) in cur.fetchall():
                                cur.execute(
                                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                                        ident(target), sql.Identifier(name)
                                    )
                                )
                        if strategy != "upk":
                            ensure_stage(cur, target)  # up front: parallel partitions must not race on DDL
        finally:
            wh.close()
        return list(range(params["partitions"]))

    @task
    def apply_partition(partition: int, params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        import time
        import zlib
        from collections import defaultdict

        from cdclab import perf
        from cdclab.cdc.merge import apply_changes
        from cdclab.cdc.merge_variants import merge_changes, replicate_with
        from cdclab.db import WAREHOUSE, connect

        n = params["partitions"]
        sizes = params["batch_sizes"]
        us: dict[str, float] = defaultdict(float)
        rows: dict[str, int] = defaultdict(int)
        statements: dict[str, int] = defaultdict(int)

        def apply(cur: Any, route: Any, changes: list[Any]) -> dict[str, int]:
            mine = [
                c
                for c in changes
                if zlib.crc32(repr(tuple(c.key[k] for k in route.key)).encode()) % n == partition
            ]
            for (strategy, size), target in _targets(route.target, sizes).items():
                variant = f"{strategy}/b{size}"
                t0 = time.perf_counter()
                for i in range(0, len(mine), size):
                    chunk = mine[i : i + size]
                    if strategy == "upk":
                        apply_changes(cur, target, route.key, chunk)
                    else:
                        merge_changes(cur, target, route.key, chunk)
                    statements[variant] += 1
                us[variant] += (time.perf_counter() - t0) * 1e6
                rows[variant] += len(mine)
            return {"changes": len(mine)}

        summary = replicate_with(
            params["tables"],
            apply,
            group=f"{params['consumer_group']}.p{partition}of{n}",
            topic_prefix="shop",
            target_schema=params["target_schema"],
            target_prefix=params["target_prefix"],
            batch_size=params["consumer_batch"],
            who=f"{DAG_ID}/{dag_run.run_id}/p{partition}",
        )
        wh = connect(WAREHOUSE)
        try:
            with wh:
                for strategy in STRATEGIES:
                    for size in sizes:
                        variant = f"{strategy}/b{size}"
                        details = {
                            "strategy": strategy,
                            "batch_size": size,
                            "partition": partition,
                            "partitions": n,
                            "statements": statements[variant],
                            "records": summary.records,
                        }
                        perf.record(
                            wh,
                            perf.Measurement(
                                params["experiment"],
                                f"{variant}/p{partition}",
                                rows[variant],
                                rows[variant],
                                us[variant] / 1000,
                                details,
                            ),
                            dag_id=DAG_ID,
                            run_id=dag_run.run_id,
                        )
        finally:
            wh.close()
        print(f"partition {partition}/{n}: {summary.records} records; changes {dict(rows)}; µs {dict(us)}")
        return {"partition": partition, "records": summary.records, "changes": dict(rows)}

    @task
    def summarize(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab import perf
        from cdclab.db import WAREHOUSE, connect

        wh = connect(WAREHOUSE)
        out: dict[str, Any] = {}
        try:
            parts = [
                m
                for m in perf.measurements(wh, params["experiment"], dag_run.run_id)
                if m["details"].get("partition") is not None
            ]
            with wh:
                for strategy in STRATEGIES:
                    for size in params["batch_sizes"]:
                        mine = [p for p in parts if p["variant"].startswith(f"{strategy}/b{size}/")]
                        total = sum(p["duration_ms"] for p in mine)
                        details = {
                            "strategy": strategy,
                            "batch_size": size,
                            "partitions": len(mine),
                            "statements": sum(p["details"]["statements"] for p in mine),
                            "slowest_partition_ms": max((p["duration_ms"] for p in mine), default=0.0),
                        }
                        rows = sum(p["rows_read"] for p in mine)
                        perf.record(
                            wh,
                            perf.Measurement(
                                params["experiment"], f"{strategy}/b{size}", rows, rows, total, details
                            ),
                            dag_id=DAG_ID,
                            run_id=dag_run.run_id,
                        )
                        out[f"{strategy}/b{size}"] = {"rows": rows, "total_ms": round(total, 1), **details}
        finally:
            wh.close()
        for variant, d in out.items():
            print(f"{variant}: {d}")
        return out

    @task
    def compare(params: dict[str, Any]) -> dict[str, Any]:
        from cdclab.cdc.merge_variants import VariantsDiverged, differing_keys
        from cdclab.cdc.pipeline import routes_for
        from cdclab.db import WAREHOUSE, transaction

        routes = routes_for(
            params["tables"],
            topic_prefix="shop",
            target_schema=params["target_schema"],
            target_prefix=params["target_prefix"],
        )
        diverged = {}
        with transaction(WAREHOUSE) as cur:
            for r in routes:
                targets = list(_targets(r.target, params["batch_sizes"]).values())
                for other in targets[1:]:
                    diff = differing_keys(cur, targets[0], other, r.key)
                    if diff:
                        diverged[other] = diff[:20]
        if diverged:
            raise VariantsDiverged(f"targets differ from {targets[0]} for keys {diverged}")
        return {"compared": len(routes)}

    parts = prepare()
    applied = apply_partition.expand(partition=parts)
    applied >> summarize() >> compare()


merge_performance()
