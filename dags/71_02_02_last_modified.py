"""# 71.2.2 Last-modified tracking: `updated_at` cursor, index, and the two classic edge cases

Every hour the DAG copies the orders **changed** in its data interval (by `updated_at`) from `shop`
into `staging.orders_last_modified`, an upsert keyed by `id`.

1. **Modified timestamp.** `shop.orders.updated_at` is set by the `touch_row` trigger on every write
   (`now()`, the start time of the writing transaction). The run reads
   `updated_at >= data_interval_start - lookback AND updated_at < data_interval_end`.
2. **Query optimization.** The predicate is a plain range on the bare column (sargable: no
   `date(updated_at)`, no `COALESCE(updated_at, created_at)`), read in **keyset batches** ordered by
   `(updated_at, id)` (`batch_size` rows each, never `OFFSET`), so each batch is one short index range scan.
3. **Index requirements.** `explain_cursor_query` runs `EXPLAIN (FORMAT JSON)` on the batch query and
   records the scan nodes in `state.last_modified_runs` (`scan_nodes`, `index_names`, `uses_index`):
   with `orders_updated_at_idx` the plan is an *Index Scan*; drop the index and the same query becomes a
   *Seq Scan* over the whole table for every batch of every run.
4. **Edge cases.**
   - *Equal timestamps across a batch boundary*: the keyset cursor `(updated_at, id) > (last_ts, last_id)`
     keeps rows that share the boundary timestamp; the anti-pattern `updated_at > last_ts`
     (`cursor_mode="timestamp_only"`, for demonstration) loses them.
   - *A long transaction committing late*: its rows carry the transaction's start time, possibly inside an
     interval that has already been read. The `lookback_minutes` overlap re-reads that stretch; the upsert's
     guard `(updated_at, version) < new` makes re-read rows no-ops. A transaction open longer than the
     lookback is still missed: size the lookback above the longest transaction (`pg_stat_activity`).
   - Two intervals never both own a row: `[start, end)` is half-open.

**Observe it:** `warehouse`: `SELECT * FROM state.last_modified_runs ORDER BY logged_at DESC` (rows read,
written, batches, plan); `shop`: `EXPLAIN SELECT ... FROM orders WHERE updated_at >= ... ORDER BY updated_at, id
LIMIT 1000`. Params: `source`, `target`, `run_log`, `batch_size`, `lookback_minutes`, `cursor_mode`.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from cdclab.dagkit import data_intervals, lesson_dag


def _read_window(params: dict):
    from datetime import timedelta

    from cdclab.time.intervals import from_context

    return from_context(get_current_context()).widen(
        before=timedelta(minutes=int(params["lookback_minutes"]))
    )


PARAMS = {
    "source": "public.orders",
    "target": "staging.orders_last_modified",
    "run_log": "state.last_modified_runs",
    "batch_size": 1000,
    "lookback_minutes": 15,
    "cursor_mode": "keyset",
}


@lesson_dag(
    schedule=data_intervals("0 * * * *"), tags=["71.2", "reference", "patterns", "intermediate", "success"]
)
def _71_02_02_last_modified():
    @task
    def explain_cursor_query(params: dict | None = None) -> dict:
        """EXPLAIN the first batch query against the source: which scan does the cursor get?"""
        from cdclab.delta import last_modified as lm

        p = params or {}
        return lm.explain_first_batch(
            p["source"], lm.ORDERS_COLUMNS, _read_window(p), int(p["batch_size"]), p["cursor_mode"]
        )

    @task
    def load_changes(params: dict | None = None) -> dict:
        """Keyset batches of changed rows -> guarded upsert (one transaction per batch)."""
        from cdclab.delta import last_modified as lm

        p = params or {}
        run_id = get_current_context()["run_id"]
        return lm.load_orders_changes(
            p["source"], p["target"], _read_window(p), int(p["batch_size"]), run_id, p["cursor_mode"]
        )

    @task
    def record_run(plan: dict, load: dict, params: dict | None = None) -> None:
        """One row per run in the run log: window, counts, and the plan summary."""
        from cdclab.delta import last_modified as lm
        from cdclab.time.intervals import from_context

        ctx = get_current_context()
        lm.record_run((params or {})["run_log"], ctx["run_id"], from_context(ctx), load, plan)

    record_run(explain_cursor_query(), load_changes())


_71_02_02_last_modified()
