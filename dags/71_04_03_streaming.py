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
   (lowest latency; needs the notification target configured on the MinIO server). The
   ``compare_triggers`` task measures them on the same drops (``cdclab.lessons.trigger_strategies``): it
   drops ``trigger_drop_ticks`` files into ``landing/71_04_03_streaming_triggers/<unique>/`` on a shared
   clock of ``trigger_ticks`` ticks (``trigger_tick_seconds`` each) and replays five strategies against
   MinIO: cron every ``trigger_schedule_ticks`` ticks, in-run polling every tick, a poke-mode sensor and a
   deferrable sensor every ``trigger_poke_ticks`` ticks, and event-driven (each drop announced, as a bucket
   notification would; no listing); the drops are removed at the end. Per file it records drop and
   pick-up tick and the lab's own clock stamps (MinIO ``LastModified``, the warehouse's
   ``clock_timestamp()``); per strategy the list calls made and the ticks it held a worker slot. With the
   defaults (7 drops, 30 ticks): cron 4 checks and up to 7 ticks late, in-run polling 30 checks and 30
   worker ticks for 0 delay, sensors 10 checks and up to 2 ticks late (poke mode holding a worker all 30
   ticks, deferrable only for its loads), events 0 checks and 0 delay. The ticks and counts are the same
   on every run; the seconds depend on the machine.
   Polling pays per check whether files come or not; events pay per file.
4. **Low latency** — every file's ``loaded_at - LastModified`` is in ``state.file_manifest``; each run
   returns and prints p50/p95/max latency. The integration test lands files while the run is active and
   asserts they are in the table within a few seconds.

Observe: copy files into ``landing/71_04_03_streaming/`` while the DAG is on; ``SELECT key,
loaded_at - last_modified AS latency FROM state.file_manifest WHERE pipeline = '71_04_03_streaming'
ORDER BY loaded_at DESC``. Trigger strategies: ``SELECT strategy, checks, worker_ticks, files,
max_delay_ticks, max_delay_s FROM state.triggers_71_04_03_summary WHERE run_id = '<run>'`` and per file
``SELECT strategy, key, drop_tick, pick_tick, picked_at - dropped_at AS delay FROM state.triggers_71_04_03
WHERE run_id = '<run>' ORDER BY strategy, key`` (the ``compare_triggers`` task log prints the totals).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from cdclab.dagkit import landing_params, lesson_dag

PIPELINE = "71_04_03_streaming"

PARAMS = {
    **landing_params(PIPELINE),  # pipeline, bucket "landing", prefix "<pipeline>/", pattern "*"
    "target": "staging.partner_events",
    "run_seconds": 50,
    "poll_seconds": 2,
    "max_files": 100,
    "trigger_prefix": f"{PIPELINE}_triggers/",
    "trigger_table": "state.triggers_71_04_03",
    "trigger_ticks": 30,
    "trigger_tick_seconds": 0.2,
    "trigger_drop_ticks": [1, 2, 7, 12, 13, 14, 22],
    "trigger_schedule_ticks": 8,
    "trigger_poke_ticks": 3,
}


@lesson_dag(schedule="* * * * *", tags=["71.4", "files", "reference", "patterns", "advanced", "success"])
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

    @task
    def compare_triggers(**context: Any) -> list[dict[str, Any]]:
        from cdclab.lessons import trigger_strategies as lesson

        p = context["params"]
        totals = lesson.compare(
            p["bucket"],
            p["trigger_prefix"],
            p["trigger_table"],
            context["run_id"],
            lesson.plan_from_params(p),
            float(p["trigger_tick_seconds"]),
        )
        for t in totals:
            print(
                f"{t['strategy']:<15} checks {t['checks']:>3} worker ticks {t['worker_ticks']:>3} "
                f"files {t['files']} max delay {t['max_delay_ticks']} ticks / {t['max_delay_s']} s"
            )
        return totals

    ingest_continuously()
    compare_triggers()


streaming_71_04_03()
