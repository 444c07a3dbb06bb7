"""# 71.2.3 Event-time processing: late data, reprocessing windows, clock skew

Hourly revenue **by the hour the order was placed** (`ordered_at`, event time), although orders reach
`shop` minutes or hours later (`updated_at`, processing time: a phone that was offline, a partner
batch upload). Target: `marts.orders_hourly_event_time`, one row per event-time hour.

1. **Event vs processing time.** The run for data interval `[s, e)` reads the rows that *arrived* in it
   (`updated_at` in `[s, e)`) but aggregates them into the window of their *event time*: an order placed
   at 09:30 and arriving at 10:10 belongs to 09:00-10:00. `updated_at` is a poor *arrival* time, though:
   every UPDATE resets it, so an order placed and received at 10:05 whose status changes at 15:00 would
   look five hours late. Each order's **first arrival** is therefore written once to an arrivals ledger
   (`arrivals`, default `state.orders_arrivals_71_02_03`, key `order_id`, `INSERT ... ON CONFLICT DO
   NOTHING`, `cdclab.time.arrivals`): the time this pipeline first saw it. Later updates re-read the order
   (so its window picks up the new total) but never move its first arrival.
2. **Late data handling.** Each order is classified by its first arrival (`cdclab.time.intervals.classify_arrival`,
   stored in the ledger): *on time* (arrived before its window ended), *late* (after, but within
   `allowed_lateness_minutes`: accepted), *too late* (after that). The verdict never changes: an on-time
   order updated later stays on time. Too-late rows are **not applied and not dropped**: they are written
   to `dlq.orders_late_events` with their reason, window and the run that saw them.
3. **Reprocessing windows.** Every window that received an accepted arrival is **recomputed from the
   source** (`cdclab.time.window_aggregates.recompute_accepted`), not incremented: it sums the current source values of
   all the orders the ledger accepted for the window, so a recompute is idempotent and convergent. A
   rerun of an old interval finds the same ledger rows and writes the same window rows (with
   `updated_at` as the arrival, a rerun after an update would drop the order from its window). `late_orders`
   shows how many of a window's orders came late.
4. **Time skew.** An event time ahead of its arrival by more than `skew_tolerance_minutes` means a wrong
   client clock: it is classified `future`, kept out of the aggregate (it would open a window that has not
   happened yet) and recorded in `dlq.orders_late_events` as well. Skew within the tolerance is accepted.

**On a fresh lab** the shop's seed carries a week of arrivals (`updated_at` = business time plus a
delay, a few percent hours late: `cdclab.lab.shop_workload.with_history_arrival`), so the first Trigger
already finds the last hour's arrivals, late ones included; the live workload adds new ones every second.

**Observe it:** `warehouse`: `SELECT * FROM marts.orders_hourly_event_time ORDER BY 1`,
`SELECT arrival, count(*) FROM state.orders_arrivals_71_02_03 GROUP BY 1` and
`SELECT arrival, count(*) FROM dlq.orders_late_events GROUP BY 1`; in the Airflow UI the
`classify_arrivals` task's return value lists the windows each run recomputed.
Params: `source`, `target`, `late_log`, `arrivals`, `window_minutes`, `allowed_lateness_minutes`, `skew_tolerance_minutes`.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from airflow.sdk import get_current_context, task

from cdclab.dagkit import data_intervals, lesson_dag

PARAMS = {
    "source": "public.orders",
    "target": "marts.orders_hourly_event_time",
    "late_log": "dlq.orders_late_events",
    "arrivals": "state.orders_arrivals_71_02_03",
    "window_minutes": 60,
    "allowed_lateness_minutes": 120,
    "skew_tolerance_minutes": 5,
}


@lesson_dag(
    schedule=data_intervals("0 * * * *"), tags=["71.2", "reference", "patterns", "intermediate", "success"]
)
def _71_02_03_event_time():
    @task
    def classify_arrivals(params: dict | None = None) -> list[list[str]]:
        """Classify this interval's arrivals; record too-late and future ones; return windows to recompute."""
        from cdclab.time import arrivals
        from cdclab.time.intervals import from_context

        p = params or {}
        ctx = get_current_context()
        done = arrivals.classify_interval(
            p["source"],
            p["arrivals"],
            p["late_log"],
            from_context(ctx),
            window_minutes=int(p["window_minutes"]),
            allowed_lateness_minutes=int(p["allowed_lateness_minutes"]),
            skew_tolerance_minutes=int(p["skew_tolerance_minutes"]),
            run_id=ctx["run_id"],
        )
        print(
            f"{done.seen} arrivals, {len(done.rejected)} recorded as too late / future, "
            f"{len(done.windows)} windows to recompute"
        )
        return arrivals.windows_xcom(done.windows)

    @task
    def recompute_windows(windows: list[list[str]], params: dict | None = None) -> int:
        """Recompute each affected window from the source: all of its events the ledger accepted."""
        from cdclab.time import window_aggregates as windowagg

        p = params or {}
        return windowagg.recompute_accepted_windows(
            p["source"], p["target"], p["arrivals"], windows, get_current_context()["run_id"]
        )

    recompute_windows(classify_arrivals())


_71_02_03_event_time()
