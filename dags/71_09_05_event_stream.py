"""
# 71.9.5 Event Stream Processing — clickstream windows from Kafka, exactly once

**Pattern.** Click events (`page_view`, `product_view`, `add_to_cart`, `checkout`, `purchase`) arrive
on a Kafka topic (default `clickstream.events`, one partition) — some *out of order*, some *late*,
some *twice* (producer retries). Each run of this DAG reads the topic from where the last run
stopped up to its current end, and folds the events into **tumbling event-time windows** (default
5 minutes) counted per event type (`cdclab.streams.windows`).

**Offset management.** The consumer never relies on Kafka's committed offsets: the next offset to read
is stored in `warehouse.state.kafka_offsets` (consumer group `71_09_05_event_stream`) and the run
*seeks* to it. Kafka's own commit happens afterwards, only so `kafka-consumer-groups` can show progress.

**Exactly-once processing.** Every batch is one Postgres transaction holding: the de-duplication
ledger (`marts.clickstream_seen`, one row per `event_id`), the window count increments, the too-late
records, the checkpoint and the offsets. Kill the task anywhere and the rerun starts from a state that
matches its offsets: no event is lost, none counted twice. A duplicate delivery (same `event_id`) is
recognised by the ledger and counted in `duplicates`, not in a window.

**Bounded de-duplication state.** The seen-ids ledger must not grow with every event ever read — that
is the unbounded-state anti-pattern of 71.6.4 (`71_06_04_unbounded_state`). Each batch, in its
transaction, deletes the ids whose event time is more than `dedup_horizon_seconds` (default 1 hour, at
least one window; `null` keeps every id) behind the watermark. The guarantee: a duplicate delivered
within the horizon is recognised and not counted; a redelivery of a pruned id is older than the
watermark by more than a window, so its window is final and it is rejected as `too_late` (recorded,
never counted) — the counts stay exactly once, only the label changes. Duplicates later than the
horizon are therefore *not caught as duplicates*; events older than the watermark are rejected as late
anyway. The `consume` task's return value says how many ids it pruned (`pruned_seen_ids`).

**Windowing.** An event belongs to the window `[start, start + size)` of its *event time* (not its
ingest time). The *watermark* is `max event time seen - allowed lateness` (default 2 minutes):
- an event whose window has ended in event time but not beyond the watermark is *late* — still counted
  (`late_events`);
- an event whose window ends at or before the watermark is *too late*: the window is **final**
  (`final = true`, `finalized_at`) and never changes again; the event is recorded with its reason in
  `marts.clickstream_too_late`, never dropped silently;
- an event whose event time is far ahead of its ingest time (a wrong client clock) is recorded as
  `future` instead of dragging the watermark forward.
Records that are not click events at all go to `warehouse.dlq.kafka_records` with the reason.

**State checkpointing.** The window state (counts per window and event type, `final` flags, seen ids)
and `marts.clickstream_checkpoint` (max event time, watermark, counts per verdict) are the checkpoint:
they are committed with the offsets, so the stream can stop after any batch and resume. The watermark
only moves when newer events arrive: the last windows of a quiet stream stay open.

**Try it in the lab.** Trigger with the defaults (`produce_events = 300`; 0 consumes only): the
`produce` task writes a deterministic stream (seed from the run's date unless `produce_seed` is set) to
the topic, then `consume` processes it.
- Windows: `SELECT * FROM marts.clickstream_windows ORDER BY window_start, event_type;` (database `warehouse`)
- Watermark and verdict counts: `SELECT * FROM marts.clickstream_checkpoint;`
- The bounded ledger: `SELECT count(*), min(event_time) FROM marts.clickstream_seen;` (min stays within the
  horizon of the watermark)
- Rejected: `SELECT verdict, reason, event_time FROM marts.clickstream_too_late;`
- Offsets: `SELECT * FROM state.kafka_offsets WHERE consumer_group = '71_09_05_event_stream';`
- The topic: Kafka at 127.0.0.1:9092, topic `clickstream.events`.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import lesson_dag, run_if_positive

PARAMS = {
    "topic": Param("clickstream.events", type="string", description="Kafka topic (one partition)"),
    "consumer_group": Param("71_09_05_event_stream", type="string"),
    "schema": Param("marts", type="string", description="warehouse schema of the stream's tables"),
    "table_prefix": Param("clickstream_", type="string", description="<prefix>windows, seen, ..."),
    "window_seconds": Param(300, type="integer", minimum=1, description="tumbling window size"),
    "allowed_lateness_seconds": Param(120, type="integer", minimum=0),
    "skew_tolerance_seconds": Param(
        300, type="integer", minimum=0, description="event time may be this far ahead of ingest time"
    ),
    "batch_size": Param(200, type="integer", minimum=1),
    "dedup_horizon_seconds": Param(
        3600,
        type=["null", "integer"],
        minimum=0,
        description="seen ids further than this behind the watermark are pruned (>= window_seconds); "
        "null keeps every id",
    ),
    "produce_events": Param(
        300,
        type="integer",
        minimum=0,
        description="> 0: first write this many generated events to the topic",
    ),
    "produce_seed": Param(None, type=["null", "integer"], description="default: from the run's date"),
    "produce_start": Param(
        None,
        type=["null", "string"],
        description="event time of the first event (ISO 8601 with offset); default: the run's logical date",
    ),
    "produce_late_fraction": Param(0.05, type="number", minimum=0, maximum=1),
    "produce_duplicate_fraction": Param(0.05, type="number", minimum=0, maximum=1),
    "produce_out_of_order_fraction": Param(0.1, type="number", minimum=0, maximum=1),
    "produce_late_by_seconds": Param(
        600, type="integer", minimum=5, description="late events arrive this to twice this late"
    ),
}


@lesson_dag(
    schedule="*/5 * * * *",
    tags=["71.9", "streaming", "windowing", "exactly-once", "success", "reference", "example", "advanced"],
)
def event_stream():
    @run_if_positive("produce_events", "produce")
    @task
    def produce() -> dict:
        """Write a deterministic clickstream (late, duplicate, out-of-order events) to the topic."""
        from cdclab.streams.windows import produce_clickstream
        from cdclab.time.intervals import run_interval

        ctx = get_current_context()
        p = ctx["params"]
        if p["produce_start"]:
            start = pendulum.parse(p["produce_start"])
            if not isinstance(start, dt.datetime) or start.tzinfo is None:
                raise ValueError(
                    f"produce_start {p['produce_start']!r} needs a date, a time and a UTC offset"
                )
        else:
            start = run_interval(ctx).logical_date  # run_after when the run has no logical date
        return produce_clickstream(
            p["topic"],
            int(p["produce_events"]),
            start=start,
            seed=p["produce_seed"],  # None: from the start, the same events on a rerun
            late_fraction=p["produce_late_fraction"],
            duplicate_fraction=p["produce_duplicate_fraction"],
            out_of_order_fraction=p["produce_out_of_order_fraction"],
            lateness=dt.timedelta(seconds=p["produce_late_by_seconds"]),
            kafka_conn_id="kafka_default",
        )

    @task(trigger_rule="none_failed")
    def consume() -> dict:
        """Fold the topic into windows from the stored offsets to the end, one transaction per batch."""
        from cdclab.cdc.pipeline import kafka_bootstrap
        from cdclab.common.db import WAREHOUSE
        from cdclab.streams.windows import StreamConfig, StreamTables, process_stream

        ctx = get_current_context()
        p = ctx["params"]
        config = StreamConfig(
            window=dt.timedelta(seconds=p["window_seconds"]),
            allowed_lateness=dt.timedelta(seconds=p["allowed_lateness_seconds"]),
            skew_tolerance=dt.timedelta(seconds=p["skew_tolerance_seconds"]),
            dedup_horizon=None
            if p["dedup_horizon_seconds"] is None
            else dt.timedelta(seconds=p["dedup_horizon_seconds"]),
        )
        return process_stream(
            bootstrap=kafka_bootstrap("kafka_default"),
            topic=p["topic"],
            group=p["consumer_group"],
            conn_id=WAREHOUSE,
            application_name="71_09_05_event_stream",
            tables=StreamTables(p["schema"], p["table_prefix"]),
            config=config,
            batch_size=p["batch_size"],
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )

    produce() >> consume()


event_stream()
