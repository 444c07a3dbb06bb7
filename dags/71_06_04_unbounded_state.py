"""
# 71.6.4 Unbounded incremental state (anti-pattern) — a dedup table that only ever grows

**State growth.** Events are delivered at least once: a producer retry or a replayed batch delivers the
same ``event_id`` again, a little later. To emit each event once into an append-only target, the
pipeline remembers the ids it has seen. ``variant="anti_pattern"`` keeps every id forever: the
seen-state grows with the *total* input since the first run, not with the traffic that can still be
duplicated.

**Memory issues.** The same mistake in memory (a Python ``set`` of seen keys, a stream processor's keyed
state without TTL, a growing Variable or XCom) ends in an out-of-memory kill; in a table it ends in
ever slower lookups and inserts (the index outgrows the cache) and ever longer backups.

**Storage costs, measured.** After every run the seen-state is measured in four units and appended to
``<seen_table>__size``: ``state_rows``; ``state_bytes`` (``pg_total_relation_size``: heap + index, in
8 kB pages, dead space included); ``live_bytes`` (``sum(pg_column_size(row))``: the live rows only); and
``memory_bytes``, the same ids held *in process* as a Python ``set`` (the in-memory form of this
anti-pattern), measured in the task with ``tracemalloc`` (``cdclab.lessons.antipatterns.measure_state``).
The anti-pattern's four lines rise with every run, forever; the fix's stay flat.

**State management (the fix).** ``variant="fixed"`` bounds the state by a *time-to-live*: after every run
the ids first seen before ``data_interval_end - ttl_minutes`` are deleted. Dedup stays exact for every
re-delivery that arrives within ``ttl`` of the first one — the contract to size the TTL from (the
producer's retry horizon, the broker's redelivery window). The state then holds about ``ttl`` worth
of traffic whatever the history. Deleting bounds the *rows*; the *bytes* stay bounded only when the
deleted rows' space comes back. A plain VACUUM (or autovacuum, later) bounds the heap, but the index
pages it empties are reused only once no snapshot in the whole cluster predates them, and a lagging
replication slot (this lab's Debezium slot) holds that back, so the index would keep growing: the fix
rewrites its small state compactly after expiring (``VACUUM FULL``). A large state would be partitioned
by time and expired partitions dropped. Other bounded designs: a key derived from the interval (dedup per
partition), a keyed target (``ON CONFLICT DO NOTHING``) when the target itself can be the state, or
compaction of the state into a Bloom filter per period.

Observe: ``SELECT variant, interval_end, delivered, emitted, expired, state_rows, state_bytes, live_bytes,
memory_bytes FROM state.seen_71_06_04_<variant>__size ORDER BY id`` — run both variants over the same
hours and compare the last four columns run by run (the task log prints them too); the seen-state
``state.seen_71_06_04_<variant>`` and the target ``core.events_71_06_04_<variant>`` (one row per event
id). ``tests/integration/test_71_06_04_unbounded_state.py`` does this with 1,000 events an hour.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag, per_variant_table, variant_params

DAG_ID = "71_06_04_unbounded_state"

PARAMS = {
    # variant, source_table, target_table:
    **variant_params("public.deliveries_71_06_04", "core.events_71_06_04_{variant}"),
    "seen_table": per_variant_table("state.seen_71_06_04_{variant}"),
    "ttl_minutes": Param(60, type="integer", minimum=1, description="fixed variant only"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.6", "anti-pattern", "reference", "advanced", "failure"]
)
def unbounded_state() -> None:
    @task
    def deduplicate(
        params: dict[str, Any],
        dag_run: Any = None,
    ) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import antipattern_runs as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        r = lesson.deduplicate_deliveries(
            variant=params["variant"],
            source=params["source_table"],
            target=params["target_table"],
            seen=params["seen_table"],
            ttl_minutes=params["ttl_minutes"],
            start=iv.start,
            end=iv.end,
            run_id=dag_run.run_id,
        )
        print(
            f"{r.variant}: {r.delivered} delivered, {r.emitted} emitted, {r.delivered - r.emitted} duplicates "
            f"dropped, {r.expired} expired; state now {r.state_rows} rows, {r.state_bytes} bytes on disk, "
            f"{r.live_bytes} live bytes, {r.memory_bytes} bytes as a Python set"
        )
        return {
            "delivered": r.delivered,
            "emitted": r.emitted,
            "expired": r.expired,
            "state_rows": r.state_rows,
            "state_bytes": r.state_bytes,
            "memory_bytes": r.memory_bytes,
        }

    deduplicate()


unbounded_state()
