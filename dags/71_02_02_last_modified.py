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
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task

COLUMNS = ["id", "customer_id", "status", "ordered_at", "total", "updated_at", "version"]


def _read_window(params: dict):
    from datetime import timedelta

    from cdclab.intervals import from_context

    return from_context(get_current_context()).widen(
        before=timedelta(minutes=int(params["lookback_minutes"]))
    )


@dag(
    dag_id="71_02_02_last_modified",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.2", "reference", "patterns", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source": "public.orders",
        "target": "staging.orders_last_modified",
        "run_log": "state.last_modified_runs",
        "batch_size": 1000,
        "lookback_minutes": 15,
        "cursor_mode": "keyset",
    },
)
def _71_02_02_last_modified():
    @task
    def explain_cursor_query(params: dict | None = None) -> dict:
        """EXPLAIN the first batch query against the source: which scan does the cursor get?"""
        from psycopg2 import sql

        from cdclab import lastmodified as lm
        from cdclab.db import SHOP, transaction

        p = params or {}
        window = _read_window(p)
        query = lm.batch_sql(p["source"], COLUMNS, mode=p["cursor_mode"])
        with transaction(SHOP) as cur:
            cur.execute(
                sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query),
                lm.first_params(window, int(p["batch_size"]), p["cursor_mode"]),
            )
            plan = cur.fetchone()[0]
        summary = lm.plan_summary(plan, p["source"].split(".")[-1])
        print(f"cursor query plan: {summary.text}")
        return {
            "scan_nodes": list(summary.scan_nodes),
            "index_names": list(summary.index_names),
            "uses_index": summary.uses_index,
            "plan": plan,
        }

    @task
    def load_changes(params: dict | None = None) -> dict:
        """Keyset batches of changed rows -> guarded upsert (one transaction per batch)."""
        from psycopg2 import sql
        from psycopg2.extras import execute_values

        from cdclab import lastmodified as lm
        from cdclab.db import SHOP, WAREHOUSE, connect, ident, transaction

        p = params or {}
        window = _read_window(p)
        run_id = get_current_context()["run_id"]
        with transaction(WAREHOUSE) as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {t} (id bigint PRIMARY KEY, customer_id bigint, status text, "
                    "ordered_at timestamptz, total numeric(12, 2), updated_at timestamptz NOT NULL, "
                    "version integer NOT NULL, loaded_by_run text)"
                ).format(t=ident(p["target"]))
            )
        upsert = lm.upsert_sql(p["target"], COLUMNS, extra=["loaded_by_run"])
        read = lm.BatchRead()
        written = 0
        src = connect(SHOP)
        try:
            with src.cursor() as scur:
                for rows in lm.read_batches(
                    scur, p["source"], COLUMNS, window, int(p["batch_size"]), mode=p["cursor_mode"], log=read
                ):
                    with transaction(WAREHOUSE) as cur:
                        execute_values(cur, upsert.as_string(cur), [(*r, run_id) for r in rows])
                        written += cur.rowcount
        finally:
            src.close()
        return {
            "read_from": window.start.isoformat(),
            "rows_read": read.rows,
            "rows_written": written,
            "batches": len(read.batch_sizes),
        }

    @task
    def record_run(plan: dict, load: dict, params: dict | None = None) -> None:
        """One row per run in the run log: window, counts, and the plan summary."""
        from psycopg2 import sql
        from psycopg2.extras import Json

        from cdclab.db import WAREHOUSE, ident, transaction
        from cdclab.intervals import from_context

        p = params or {}
        ctx = get_current_context()
        window = from_context(ctx)
        with transaction(WAREHOUSE) as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {t} (run_id text PRIMARY KEY, interval_start timestamptz, "
                    "interval_end timestamptz, read_from timestamptz, rows_read integer, rows_written integer, "
                    "batches integer, uses_index boolean, scan_nodes text[], index_names text[], plan jsonb, "
                    "logged_at timestamptz NOT NULL DEFAULT now())"
                ).format(t=ident(p["run_log"]))
            )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {t} (run_id, interval_start, interval_end, read_from, rows_read, rows_written, "
                    "batches, uses_index, scan_nodes, index_names, plan) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                    "%s, %s) ON CONFLICT (run_id) DO NOTHING"
                ).format(t=ident(p["run_log"])),
                (
                    ctx["run_id"],
                    window.start,
                    window.end,
                    load["read_from"],
                    load["rows_read"],
                    load["rows_written"],
                    load["batches"],
                    plan["uses_index"],
                    plan["scan_nodes"],
                    plan["index_names"],
                    Json(plan["plan"]),
                ),
            )

    record_run(explain_cursor_query(), load_changes())


_71_02_02_last_modified()
