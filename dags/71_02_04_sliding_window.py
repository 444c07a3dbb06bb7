"""# 71.2.4 Sliding-window processing: 3-hour revenue, every hour, recomputed where it changed

Every hour the DAG publishes the revenue of the last **3 hours** (by `ordered_at`) into
`marts.orders_revenue_3h`, and recomputes any earlier window that a changed order falls into.

1. **Window definition.** Size 3 h, slide 1 h, aligned to the hour (`cdclab.intervals.WindowSpec.sliding`):
   the window `[09:00, 12:00)` is published by the run whose data interval `[11:00, 12:00)` closes it
   (`windows_ending_in`). Half-open windows: an order at exactly 12:00 is in `[10:00, 13:00)`, not in
   `[09:00, 12:00)`.
2. **Overlap handling.** Every order lies in `size / slide = 3` windows. Windows are never summed with each
   other (that would count each order three times); instead each order is aggregated once into its hourly
   **pane** (`marts.orders_revenue_panes`), and a window is the sum of its 3 panes.
3. **Aggregation pattern.** Recompute, not increment: the run finds the orders that changed in its interval
   (`updated_at`), takes every *closed* window they touch (`windows_touching`, end <= `data_interval_end`)
   plus the window the interval closes, recomputes those windows' panes from the source and the windows from
   the panes, and upserts them by `(window_start, window_end)`. Reruns and late corrections write the same
   rows again: idempotent. (Deletes are invisible to an `updated_at` cursor; see 71.1 delta detection.)
4. **Use cases.** Rolling revenue and order counts for dashboards, moving averages that smooth hourly noise,
   "orders in the last 3 hours" alerting thresholds and anomaly detection, rate limits.

**Observe it:** `warehouse`: `SELECT * FROM marts.orders_revenue_3h ORDER BY window_start` next to
`SELECT * FROM marts.orders_revenue_panes ORDER BY window_start` (each window = sum of 3 panes).
Params: `source`, `target`, `panes`, `size_hours`, `slide_hours`.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, get_current_context, task


@dag(
    dag_id="71_02_04_sliding_window",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.2", "reference", "patterns", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source": "public.orders",
        "target": "marts.orders_revenue_3h",
        "panes": "marts.orders_revenue_panes",
        "size_hours": 3,
        "slide_hours": 1,
    },
)
def _71_02_04_sliding_window():
    @task
    def affected_windows(params: dict | None = None) -> list[list[str]]:
        """The window this interval closes + every closed window that contains an order changed in it."""
        from datetime import timedelta

        from psycopg2 import sql

        from cdclab.db import SHOP, ident, transaction
        from cdclab.intervals import WindowSpec, from_context

        p = params or {}
        interval = from_context(get_current_context())
        spec = WindowSpec.sliding(
            timedelta(hours=int(p["size_hours"])), timedelta(hours=int(p["slide_hours"]))
        )
        where, bounds = interval.sql_predicate("updated_at")
        with transaction(SHOP) as cur:
            cur.execute(
                sql.SQL("SELECT DISTINCT ordered_at FROM {src} WHERE {w}").format(
                    src=ident(p["source"]), w=where
                ),
                bounds,
            )
            changed = [row[0] for row in cur.fetchall()]
        windows = set(spec.windows_ending_in(interval))
        windows.update(w for w in spec.windows_touching(changed) if w.end <= interval.end)
        print(f"{len(changed)} changed event times -> {len(windows)} windows to recompute")
        return [[w.start.isoformat(), w.end.isoformat()] for w in sorted(windows)]

    @task
    def recompute(windows: list[list[str]], params: dict | None = None) -> int:
        """Panes from the source, windows from the panes, both upserted (idempotent)."""
        from datetime import timedelta

        from cdclab import windowagg
        from cdclab.db import SHOP, WAREHOUSE, transaction
        from cdclab.ddl import ensure as ensure_ddl
        from cdclab.intervals import Window, WindowSpec

        p = params or {}
        run_id = get_current_context()["run_id"]
        panes_spec = WindowSpec.tumbling(timedelta(hours=int(p["slide_hours"])))
        todo = [Window(pendulum.parse(a), pendulum.parse(b)) for a, b in windows]
        panes = sorted(
            {
                pane
                for w in todo
                for pane in panes_spec.windows_touching(
                    [
                        w.start + panes_spec.size * k
                        for k in range(int(p["size_hours"]) // int(p["slide_hours"]))
                    ]
                )
            }
        )
        with transaction(SHOP) as src, transaction(WAREHOUSE) as dst:
            for table in (p["panes"], p["target"]):
                ensure_ddl(dst, table, windowagg.create_window_table_sql(table))
            windowagg.recompute(src, dst, p["source"], p["panes"], panes, run_id)
            combine = windowagg.sliding_from_panes_sql(p["panes"])
            for w in todo:
                dst.execute(combine, {"w_start": w.start, "w_end": w.end})
                orders, revenue, late = dst.fetchone()
                dst.execute(
                    windowagg.upsert_window_sql(p["target"]),
                    {
                        "w_start": w.start,
                        "w_end": w.end,
                        "orders": orders,
                        "revenue": revenue,
                        "late_orders": late,
                        "run_id": run_id,
                    },
                )
        return len(todo)

    recompute(affected_windows())


_71_02_04_sliding_window()
