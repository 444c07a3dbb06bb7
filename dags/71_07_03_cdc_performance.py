"""
# 71.7.3 CDC performance — parsing speed, batch sizing and a throughput knob of the Debezium sink

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
they usually pay: batch size (above), fewer round trips per batch (one statement per table instead of
one per change), one transaction per batch instead of per record, more partitions consumed in parallel
(71.7.4), and only then faster parsing. ``tune`` turns the round-trip knob alone: the same records (same
end offsets, same consumer batches of ``max(tune_statement_sizes)``) applied ``s`` changes per
``apply_changes`` call for each ``s`` in ``tune_statement_sizes`` (``1`` = row at a time, ``500`` =
set-based), each setting with its own group ``<group>.t<s>`` and targets ``<prefix>t<s>_<table>``.
A counting cursor counts every statement sent (``statements``, i.e. round trips); ``apply_calls`` falls
from one per change to one per batch, ``statements`` with it, and ``changes_per_s`` shows what that buys.
``compare`` checks the tuned targets too: the knob changes the cost, never the rows.

Observe: ``SELECT variant, rows_read AS records, rows_written, round(duration_ms::numeric) AS ms,
details->>'batches' AS batches, details->>'records_per_s' AS rps FROM state.perf_runs WHERE experiment
= '71_07_03' ORDER BY id``; the tuning knob: ``SELECT variant, rows_written AS changes,
details->>'apply_calls' AS calls, details->>'statements' AS round_trips, details->>'statements_per_change'
AS per_change, details->>'changes_per_s' AS cps FROM state.perf_runs WHERE experiment = '71_07_03' AND
variant LIKE 't%' ORDER BY id DESC``; offsets per group in ``state.kafka_offsets``; targets
``core.perf_71_07_03_b<size>_customers`` and ``core.perf_71_07_03_t<s>_customers``. Seconds include the
consumer's final idle polls (about ``poll_timeout`` x ``idle_polls``), so small catch-ups look slow:
compare variants within one run, and trust the counts over the seconds.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import lesson_dag

DAG_ID = "71_07_03_cdc_performance"

PARAMS = {
    "tables": Param(["public.customers"], type="array", description="source tables (schema.table)"),
    "consumer_group": Param("71_07_03", type="string", description="base; .b<size> is appended"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("perf_71_07_03_", type="string", description="b<size>_ is appended"),
    "batch_sizes": Param([10, 100, 1000], type="array", items={"type": "integer", "minimum": 1}),
    "experiment": Param("71_07_03", type="string", description="name in state.perf_runs"),
    "tune_statement_sizes": Param(
        [1, 500],
        type="array",
        items={"type": "integer", "minimum": 1},
        description="changes per apply call: 1 = row at a time, 500 = set-based",
    ),
}


@lesson_dag(schedule=None, tags=["71.7", "performance", "reference", "advanced", "success"])
def cdc_performance() -> None:
    @task
    def parse(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_performance as lesson

        p = lesson.measure_parse(lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id))
        print(f"parsed {p.records} records ({p.details['bytes']} bytes) in {p.ms:.1f} ms: {p.details}")
        return {"records": p.records, **p.details}

    @task
    def replicate(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import cdc_performance as lesson

        return lesson.replicate_batch_sizes(
            lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id), echo=print
        )

    @task
    def tune(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import cdc_performance as lesson

        bench = lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id)
        return lesson.tune_statement_sizes(bench, params["tune_statement_sizes"], echo=print)

    @task
    def compare(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import cdc_performance as lesson

        bench = lesson.CdcBench.from_params(params, DAG_ID, dag_run.run_id)
        return lesson.compare_batch_sizes(bench, params["tune_statement_sizes"])

    parse() >> replicate() >> tune() >> compare()


cdc_performance()
