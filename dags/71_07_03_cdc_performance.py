"""
# 71.7.3 CDC performance — parsing speed, batch sizing and throughput of the Debezium sink

**Log parsing speed.** ``parse`` reads every record of the source tables' Debezium topics
(``shop.public.<table>``) and times ``cdclab.cdc.events.parse_debezium`` alone over them: records,
bytes and records per second of pure parsing, no database involved. It is the ceiling for the whole
pipeline; on this lab it is far above what the sink achieves, so parsing is not the bottleneck.

**Event processing.** ``replicate`` runs the exactly-once sink (``cdclab.cdc.pipeline.replicate``:
parse, latest change per key, guarded upsert/delete, offsets in the same transaction) once per batch
size, each with its own consumer group ``<group>.b<size>`` and its own targets
``<schema>.<prefix>b<size>_<table>``: the same events, processed independently, each up to the same
end offsets taken once before the first (``stop_at``: the shop keeps changing meanwhile). ``compare`` checks
that every variant's target holds the same rows (``VariantsDiverged`` otherwise).

**Batch sizing.** One transaction per batch: small batches pay a commit, an offsets write and a
round trip per few records; large ones amortise them and collapse repeated changes of one key
(``latest_per_key``), at the price of longer transactions, more memory and more work redone after a
crash. ``batches`` and ``records`` in the record show the shape; ``records_per_s`` the effect.

**Throughput optimization.** Throughput = records / seconds of a catch-up. Levers, in the order
they usually pay: batch size (above), fewer round trips per batch (``execute_values``, one statement
per table), one transaction per batch instead of per record, more partitions consumed in parallel
(71.7.4), and only then faster parsing.

Observe: ``SELECT variant, rows_read AS records, rows_written, round(duration_ms::numeric) AS ms,
details->>'batches' AS batches, details->>'records_per_s' AS rps FROM state.perf_runs WHERE experiment
= '71_07_03' ORDER BY id``; offsets per group in ``state.kafka_offsets``; targets
``core.perf_71_07_03_b<size>_customers``. Seconds include the consumer's final idle polls (about
``poll_timeout`` x ``idle_polls``), so small catch-ups look slow: compare variants within one run.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

DAG_ID = "71_07_03_cdc_performance"


def _prefix(params: dict[str, Any], batch_size: int) -> str:
    return f"{params['target_prefix']}b{batch_size}_"


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.7", "performance", "reference", "advanced", "success"],
    doc_md=__doc__,
    params={
        "tables": Param(["public.customers"], type="array", description="source tables (schema.table)"),
        "consumer_group": Param("71_07_03", type="string", description="base; .b<size> is appended"),
        "target_schema": Param("core", type="string"),
        "target_prefix": Param("perf_71_07_03_", type="string", description="b<size>_ is appended"),
        "batch_sizes": Param([10, 100, 1000], type="array", items={"type": "integer", "minimum": 1}),
        "experiment": Param("71_07_03", type="string", description="name in state.perf_runs"),
    },
)
def cdc_performance() -> None:
    @task
    def parse(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab import perf
        from cdclab.cdc.events import MalformedEvent, parse_debezium
        from cdclab.cdc.inspect import read_topic
        from cdclab.cdc.pipeline import kafka_bootstrap
        from cdclab.db import WAREHOUSE, connect

        bootstrap = kafka_bootstrap("kafka_default")
        records = [m for t in params["tables"] for m in read_topic(bootstrap, f"shop.{t}")]
        malformed = 0
        with perf.Stopwatch() as sw:
            for m in records:
                try:
                    parse_debezium(m.key(), m.value(), m.topic())
                except MalformedEvent:
                    malformed += 1
        size = sum(len(m.value() or b"") + len(m.key() or b"") for m in records)
        details = {
            "bytes": size,
            "malformed": malformed,
            "records_per_s": round(len(records) / (sw.ms / 1000), 1) if sw.ms else None,
        }
        wh = connect(WAREHOUSE)
        try:
            perf.ensure_schema(wh)
            with wh:
                perf.record(
                    wh,
                    perf.Measurement(params["experiment"], "parse", len(records), None, sw.ms, details),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
        finally:
            wh.close()
        print(f"parsed {len(records)} records ({size} bytes) in {sw.ms:.1f} ms: {details}")
        return {"records": len(records), **details}

    @task
    def replicate(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab import perf
        from cdclab.cdc.pipeline import end_offsets
        from cdclab.cdc.pipeline import replicate as run_sink
        from cdclab.db import WAREHOUSE, connect

        out = []
        # every variant stops at the same offsets, taken once: the live workload keeps writing meanwhile
        stop_at = end_offsets(params["tables"], topic_prefix="shop")
        wh = connect(WAREHOUSE)
        try:
            for size in params["batch_sizes"]:  # one after the other: parallel variants would share the CPU
                result = run_sink(
                    params["tables"],
                    group=f"{params['consumer_group']}.b{size}",
                    topic_prefix="shop",
                    target_schema=params["target_schema"],
                    target_prefix=_prefix(params, size),
                    batch_size=size,
                    who=f"{DAG_ID}/{dag_run.run_id}",
                    stop_at=stop_at,
                )
                written = sum(t["upserted"] + t["deleted"] for t in result["targets"].values())
                seconds = result["seconds"]
                details = {
                    "batch_size": size,
                    "batches": result["batches"],
                    "dead_letters": result["dead_letters"],
                    "skipped": result["skipped"],
                    "records_per_s": round(result["records"] / seconds, 1) if seconds else None,
                    "records_per_batch": round(result["records"] / result["batches"], 2)
                    if result["batches"]
                    else None,
                }
                m = perf.Measurement(
                    params["experiment"], f"b{size}", result["records"], written, seconds * 1000, details
                )
                with wh:
                    perf.record(wh, m, dag_id=DAG_ID, run_id=dag_run.run_id)
                print(f"batch size {size}: {result['records']} records, {details}")
                out.append({"variant": m.variant, "records": m.rows_read, **details})
        finally:
            wh.close()
        return out

    @task
    def compare(params: dict[str, Any]) -> dict[str, Any]:
        from cdclab.cdc.merge_variants import VariantsDiverged, differing_keys
        from cdclab.cdc.pipeline import routes_for
        from cdclab.db import WAREHOUSE, transaction

        sizes = params["batch_sizes"]
        diverged = {}
        with transaction(WAREHOUSE) as cur:
            for size in sizes[1:]:
                base = routes_for(
                    params["tables"],
                    topic_prefix="shop",
                    target_schema=params["target_schema"],
                    target_prefix=_prefix(params, sizes[0]),
                )
                other = routes_for(
                    params["tables"],
                    topic_prefix="shop",
                    target_schema=params["target_schema"],
                    target_prefix=_prefix(params, size),
                )
                for a, b in zip(base, other, strict=True):
                    diff = differing_keys(cur, a.target, b.target, a.key)
                    if diff:
                        diverged[b.target] = diff[:20]
        if diverged:
            raise VariantsDiverged(
                f"targets differ from the batch size {sizes[0]} variant for keys {diverged}"
            )
        return {"compared": len(sizes)}

    parse() >> replicate() >> compare()


cdc_performance()
