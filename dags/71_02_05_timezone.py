"""# 71.2.5 Time zones: store UTC, report per business day, right on 23- and 25-hour days

Daily order totals per **local day**: for the company (business zone `Europe/Berlin`) and for each
customer home zone (`shop.customers.home_tz`), in `marts.daily_sales_local`.

1. **UTC storage.** `ordered_at` is a `timestamptz`: Postgres stores the UTC instant; sessions in the lab
   run with `TimeZone=UTC`. Naive datetimes are refused (`cdclab.time.timezones.NaiveDatetimeError`): a wall time
   without a zone names no instant. Zones are applied only when reporting.
2. **Business time zones.** The DAG's schedule is `CronDataIntervalTimetable("0 0 * * *", "Europe/Berlin")`:
   each data interval *is* a Berlin business day, from Berlin midnight to Berlin midnight, expressed in UTC.
   The company row (`scope = 'business'`) totals that interval.
3. **DST handling.** On change days the interval is 23 h (2026-03-29) or 25 h (2026-10-25) long, and so is
   every local day built by `cdclab.time.timezones.local_day_bounds` from two local midnights; the `hours` column
   shows it. Adding 24 h to a midnight, or `GROUP BY date(ordered_at)` in UTC, misplaces an hour of orders.
4. **Cross-timezone.** A New York day runs 05:00Z-05:00Z (04:00Z in summer), so one instant falls on
   different dates in different zones. Each home zone's days are computed with their own UTC bounds
   (`scope = 'home_tz'`), and a zone's day is reported by the run whose interval contains the day's end
   (`local_days_ending_in`), so every local day is reported exactly once, when it is complete.

**Observe it:** `warehouse`: `SELECT * FROM marts.daily_sales_local WHERE local_date BETWEEN '2026-03-07'
AND '2026-03-10' ORDER BY tz, local_date` (New York's 23-hour 2026-03-08). Runs in the UI show the
interval in UTC: the 2026-03-29 run spans 2026-03-28T23:00Z to 2026-03-29T22:00Z.
Params: `orders`, `customers` (shop tables), `target`.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import get_current_context, task

from cdclab.dagkit import data_intervals, lesson_dag

BUSINESS_TZ = "Europe/Berlin"

PARAMS = {"orders": "public.orders", "customers": "public.customers", "target": "marts.daily_sales_local"}


@lesson_dag(
    schedule=data_intervals("0 0 * * *", tz=BUSINESS_TZ),
    tags=["71.2", "reference", "patterns", "intermediate", "success"],
    start_date=pendulum.datetime(2026, 1, 1, tz=BUSINESS_TZ),
)
def _71_02_05_timezone():
    @task
    def home_zones(params: dict | None = None) -> list[str]:
        """The customers' home zones; an unknown zone fails the run with the customers to fix."""
        from cdclab.lessons import local_days as lesson

        p = params or {}
        return lesson.home_zones(p["customers"])

    @task
    def report_local_days(zones: list[str], params: dict | None = None) -> list[str]:
        """Upsert the business day of this interval and every home-zone day that ends inside it."""
        from cdclab.lessons import local_days as lesson
        from cdclab.time.intervals import from_context

        p = params or {}
        ctx = get_current_context()
        return lesson.report_local_days(
            p["orders"], p["customers"], p["target"], zones, from_context(ctx), BUSINESS_TZ, ctx["run_id"]
        )

    report_local_days(home_zones())


_71_02_05_timezone()
