"""71.4.3 Streaming File Ingestion — files become rows seconds after they land, in mini-batches.

1. **Continuous ingestion** — a run does not load once and exit: it polls the landing prefix every
   ``params.poll_seconds`` for ``params.run_seconds`` and loads what arrived; the next run (one per
   minute, ``max_active_runs=1``) takes over, so the prefix is watched without a gap. All exactly-once
   guarantees come from the ledger (``state.file_manifest``), as in 71_04_01.
2. **Mini-batch patterns** — each poll is one *mini-batch*: detect new (key, ETag)s, load at most
   ``params.max_files`` of them, each file in its own transaction (file-level atomicity, corrupt files
   quarantined). Bounding the batch keeps latency flat under a burst.
3. **Trigger strategies** — chosen here: a short cron schedule plus in-run polling (works with any S3
   and no extra infrastructure; latency ~ poll interval while a run is active). Alternatives, with their
   trade-off: a sensor-gated run (71_04_01; latency ~ poke interval + run start-up), or event-driven
   scheduling with an ``AssetWatcher`` on a message-queue trigger fed by MinIO bucket notifications
   (lowest latency; needs the notification target configured on the MinIO server).
4. **Low latency** — every file's ``loaded_at - LastModified`` is in ``state.file_manifest``; each run
   returns and prints p50/p95/max latency. The integration test lands files while the run is active and
   asserts they are in the table within a few seconds.

Observe: copy files into ``landing/71_04_03_streaming/`` while the DAG is on; ``SELECT key,
loaded_at - last_modified AS latency FROM state.file_manifest WHERE pipeline = '71_04_03_streaming'
ORDER BY loaded_at DESC``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from cdclab.dagkit import landing_params, lesson_dag

TAGS = ["71.4", "files", "reference", "patterns", "advanced", "success"]

PIPELINE = "71_04_03_streaming"

PARAMS = {
    **landing_params(PIPELINE),  # pipeline, bucket "landing", prefix "<pipeline>/", pattern "*"
    "target": "staging.partner_events",
    "run_seconds": 50,
    "poll_seconds": 2,
    "max_files": 100,
}


@lesson_dag("71_04_03_streaming", __doc__, schedule="* * * * *", tags=TAGS, params=PARAMS)
def streaming_71_04_03():
    @task
    def ingest_continuously(**context: Any) -> dict[str, Any]:
        from cdclab.files import streaming

        p = context["params"]
        result = streaming.run_micro_batches(
            p["pipeline"],
            p["bucket"],
            p["prefix"],
            p["pattern"],
            p["target"],
            float(p["run_seconds"]),
            float(p["poll_seconds"]),
            int(p["max_files"]),
        )
        print(
            f"mini-batches {result['batches']}; latency p50 {result['latency_p50_s']}s "
            f"p95 {result['latency_p95_s']}s max {result['latency_max_s']}s"
        )
        return result

    ingest_continuously()


streaming_71_04_03()
