"""# 71.2.4 Sliding-window processing: 3-hour revenue, every hour, recomputed where it changed

Every hour the DAG publishes the revenue of the last **3 hours** (by `ordered_at`) into
`marts.orders_revenue_3h`, and recomputes any earlier window that a changed order falls into.

1. **Window definition.** Size 3 h, slide 1 h, aligned to the hour (`cdclab.time.intervals.WindowSpec.sliding`):
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
   "orders in the last 3 hours" alerting thresholds and anomaly detection, rate limits. The `use_cases` task
   computes each of them from the published windows into `<target>_use_cases`
   (`cdclab.lessons.sliding_window.USE_CASES_SQL`), one row per window: `orders`/`revenue` (the rolling
   dashboard metric), `hourly_avg` (the 3-hour moving average of hourly revenue), `trend` (up/down/flat against
   the window one slide earlier), `baseline` + `anomaly` (revenue above `anomaly_factor` x the mean of the 3
   preceding windows: a spike is flagged), `alert` (orders >= `alert_orders`: a threshold alert or rate limit).
   A late correction changes a window, its trend and the baselines after it, so the task recomputes every row.

**Observe it:** `warehouse`: `SELECT * FROM marts.orders_revenue_3h ORDER BY window_start` next to
`SELECT * FROM marts.orders_revenue_panes ORDER BY window_start` (each window = sum of 3 panes); the use cases
in `SELECT window_start, orders, revenue, hourly_avg, trend, baseline, anomaly, alert FROM
marts.orders_revenue_3h_use_cases ORDER BY window_start` (the `use_cases` task log says how many windows).
Params: `source`, `target`, `panes`, `size_hours`, `slide_hours`, `anomaly_factor`, `alert_orders`.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from cdclab.dagkit import data_intervals, lesson_dag

PARAMS = {
    "source": "public.orders",
    "target": "marts.orders_revenue_3h",
    "panes": "marts.orders_revenue_panes",
    "size_hours": 3,
    "slide_hours": 1,
    "anomaly_factor": 2.0,
    "alert_orders": 5,
}


@lesson_dag(
    schedule=data_intervals("0 * * * *"), tags=["71.2", "reference", "patterns", "intermediate", "success"]
)
def _71_02_04_sliding_window():
    @task
    def affected_windows(params: dict | None = None) -> list[list[str]]:
        """The window this interval closes + every closed window that contains an order changed in it."""
        from cdclab.lessons import sliding_window as lesson
        from cdclab.time.intervals import from_context

        p = params or {}
        interval = from_context(get_current_context())
        return lesson.affected_windows(p["source"], interval, int(p["size_hours"]), int(p["slide_hours"]))

    @task
    def recompute(windows: list[list[str]], params: dict | None = None) -> int:
        """Panes from the source, windows from the panes, both upserted (idempotent)."""
        from cdclab.lessons import sliding_window as lesson

        p = params or {}
        run_id = get_current_context()["run_id"]
        return lesson.recompute(
            p["source"], p["panes"], p["target"], windows, int(p["size_hours"]), int(p["slide_hours"]), run_id
        )

    @task
    def use_cases(params: dict | None = None) -> int:
        """Moving average, trend, anomaly and alert flags of every published window."""
        from cdclab.lessons import sliding_window as lesson

        p = params or {}
        run_id = get_current_context()["run_id"]
        return lesson.compute_use_cases(
            p["target"],
            int(p["size_hours"]),
            int(p["slide_hours"]),
            float(p["anomaly_factor"]),
            int(p["alert_orders"]),
            run_id,
        )

    recompute(affected_windows()) >> use_cases()


_71_02_04_sliding_window()
