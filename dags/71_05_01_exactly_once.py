"""
# 71.5.1 Exactly-Once Processing — four layers on top of at-least-once delivery

Kafka delivers at least once: a consumer that crashes re-reads from its last checkpoint, and a producer
that retries writes an event twice. This DAG consumes the same kind of events in one of two **modes**
(param `mode`) into the warehouse and logs every delivery, so the layers can be compared side by side
(`cdclab.streams.exactly_once`):

1. **Idempotent writes.** `marts.exactly_once_<mode>_events` is upserted by the natural key `event_id`
   (`INSERT … ON CONFLICT (event_id) DO UPDATE … WHERE … IS DISTINCT FROM …`). Writing an event again
   changes nothing — trigger with `replay_from_start = true` and the table stays identical while every
   record is delivered once more.
2. **Transaction patterns.** `transactional`: rows and next offsets commit in ONE Postgres transaction
   (`cdclab.cdc.consumer`), so no record is ever redelivered. `at_least_once`: rows commit to Postgres,
   then offsets to Kafka; a crash between the two redelivers the whole batch. The delivery log
   `marts.exactly_once_<mode>_deliveries` (append-only, one row per processing) makes that visible:
   `redeliveries` = rows whose (partition, offset) appears more than once.
3. **Deduplication.** By `event_id`, within a batch and across batches: producer duplicates (one event at
   two offsets) and redeliveries both end as one event row (`producer_duplicates` in the report).
4. **Checkpointing.** `transactional` keeps its checkpoint in `warehouse.state.kafka_offsets`
   (group `71_05_01_exactly_once.transactional`); `at_least_once` in Kafka's committed offsets of group
   `71_05_01_exactly_once.at_least_once`. Each mode has its own group and tables.

**The failure it simulates.** Set `CDCLAB_FAIL_AFTER_BATCHES=2` in a process that calls
`cdclab.streams.exactly_once.run(...)`: it SIGKILLs itself while handling batch 3. Rerun: the at-least-once
mode shows that batch's offsets twice in the delivery log; the transactional mode shows none.
Either way the events table is right, because layer 1 absorbs what layer 2 lets through.

**Observe it in the lab** (database `warehouse`), after a Trigger with the defaults (`produce_events = 200`:
each run first writes 200 new events, seeded by its date; 0 consumes only) in each mode:
- `SELECT kafka_offset, count(*) FROM marts.exactly_once_at_least_once_deliveries GROUP BY 1 HAVING count(*) > 1;`
- `SELECT count(*) FROM marts.exactly_once_transactional_events;` (= distinct event ids on the topic)
- `SELECT * FROM state.kafka_offsets WHERE consumer_group LIKE '71_05_01%';`
- the `report` task's log and XCom: the four layers' counts for the mode.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, get_current_context, task

from cdclab.dagkit import lesson_dag, run_if_positive
from cdclab.streams.exactly_once import MODES  # the mode param's choices

PARAMS = {
    "mode": Param(
        "transactional",
        enum=list(MODES),
        description="transactional: offsets in the data transaction; at_least_once: Kafka "
        "offsets committed after the write",
    ),
    "topic": Param("exactly_once.events", type="string"),
    "consumer_group": Param("71_05_01_exactly_once", type="string", description="'.<mode>' is appended"),
    "schema": Param("marts", type="string"),
    "table_prefix": Param("exactly_once_", type="string", description="<prefix><mode>_events, _deliveries"),
    "batch_size": Param(50, type="integer", minimum=1),
    "replay_from_start": Param(
        False, type="boolean", description="move the checkpoint to the start first (idempotence demo)"
    ),
    "produce_events": Param(
        200,
        type="integer",
        minimum=0,
        description="> 0: first write this many generated events to the topic",
    ),
    "produce_seed": Param(None, type=["null", "integer"], description="default: from the run's date"),
    "produce_duplicate_fraction": Param(
        0.1, type="number", minimum=0, maximum=1, description="events the producer writes twice (retries)"
    ),
}


@lesson_dag(
    schedule=None,
    tags=["71.5", "exactly-once", "idempotency", "success", "reference", "patterns", "advanced"],
)
def exactly_once():
    @run_if_positive("produce_events", "produce")
    @task
    def produce() -> dict:
        """Write generated events, some of them twice (producer retries), to the topic."""
        from cdclab.streams.windows import produce_clickstream
        from cdclab.time.intervals import run_interval

        ctx = get_current_context()
        p = ctx["params"]
        return produce_clickstream(
            p["topic"],
            int(p["produce_events"]),
            start=run_interval(ctx).logical_date,  # run_after when the run has no logical date
            seed=p["produce_seed"],  # None: from the start, the same events on a rerun
            duplicate_fraction=p["produce_duplicate_fraction"],
            step=dt.timedelta(seconds=1),
            kafka_conn_id="kafka_default",
        )

    @task(trigger_rule="none_failed")
    def consume() -> dict:
        """One bounded run in the chosen mode; returns the layers' counts."""
        from cdclab.cdc.pipeline import kafka_bootstrap
        from cdclab.common.db import WAREHOUSE
        from cdclab.streams.exactly_once import SinkTables, check_mode, run

        ctx = get_current_context()
        p = ctx["params"]
        mode = check_mode(p["mode"])
        return run(
            mode,
            bootstrap=kafka_bootstrap("kafka_default"),
            topic=p["topic"],
            group=f"{p['consumer_group']}.{mode}",
            conn_id=WAREHOUSE,
            application_name="71_05_01_exactly_once",
            tables=SinkTables(p["schema"], p["table_prefix"], mode),
            batch_size=p["batch_size"],
            replay=p["replay_from_start"],
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )

    @task
    def report(summary: dict) -> dict:
        """Log the four layers for this mode, one line each."""
        layers = summary["layers"]
        print(f"mode {summary['mode']}: {summary['records']} records in {summary['batches']} batches")
        print(f"1 idempotent writes : {layers['event_rows']} event rows (upsert by event_id)")
        print(
            f"2 transactions      : {layers['redeliveries']} redelivered records of {layers['deliveries']} "
            f"deliveries"
        )
        print(f"3 deduplication     : {layers['producer_duplicates']} producer duplicates absorbed")
        print(f"4 checkpoint        : {summary['checkpoint']} in {summary['checkpoint_store']}")
        return layers

    summary = consume()
    produce() >> summary
    report(summary)


exactly_once()
