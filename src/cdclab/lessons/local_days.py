"""71.2.5 Timezone handling: daily sales of the business day (``Europe/Berlin`` in the DAG) and of every
customer home-zone day that ends inside the run's data interval, for ``dags/71_02_05_timezone.py``.

Vocabulary:
- *home zone*: ``customers.home_tz``, an IANA zone name checked with :func:`cdclab.time.timezones.zone`.
- *local day*: :class:`cdclab.time.timezones.LocalDay`, a calendar date in a zone with its UTC bounds and its
  length in hours (23, 24 or 25).
- *report row*: ``(scope, tz, local_date, utc_start, utc_end, hours, orders, revenue, computed_by_run)``
  in the target, keyed by ``(scope, tz, local_date)``; ``scope`` is ``business`` or ``home_tz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.time.timezones import (
    UnknownTimeZoneError,
    day_totals_sql,
    local_date_of,
    local_day_bounds,
    local_days_ending_in,
    zone,
)


def home_zones(customers: str) -> list[str]:
    """The customers' distinct home zones; :class:`cdclab.time.timezones.UnknownTimeZoneError` naming the
    customers (the first ten per zone) when a zone is unknown."""
    with transaction(SHOP) as cur:
        cur.execute(
            sql.SQL("SELECT home_tz, array_agg(id ORDER BY id) FROM {c} GROUP BY 1 ORDER BY 1").format(
                c=ident(customers)
            )
        )
        zones = cur.fetchall()
    bad = []
    for name, ids in zones:
        try:
            zone(name)
        except UnknownTimeZoneError as exc:
            bad.append(f"{exc} (customers {ids[:10]})")
    if bad:
        raise UnknownTimeZoneError("; ".join(bad))
    return [name for name, _ in zones]


def report_local_days(
    orders: str,
    customers: str,
    target: str,
    zones: Sequence[str],
    interval: Any,
    business_tz: str,
    run_id: str,
) -> list[str]:
    """Upsert the totals of the business day that is ``interval`` (a ``ValueError`` when it is not one
    whole ``business_tz`` day) and of every home-zone day ending inside it into ``target`` (created when
    missing). Returns one line per day."""
    business = local_day_bounds(local_date_of(interval.start, business_tz), business_tz)
    if (business.utc_start, business.utc_end) != (interval.start, interval.end):
        raise ValueError(
            f"data interval {interval} is not the {business_tz} day {business.date}: the "
            f"schedule must be a daily CronDataIntervalTimetable in {business_tz}"
        )
    work = [("business", business, day_totals_sql(orders))]
    per_zone = day_totals_sql(orders, customers)
    work += [
        ("home_tz", day, per_zone)
        for tz in zones
        for day in local_days_ending_in(interval.start, interval.end, tz)
    ]
    rows = []
    with transaction(SHOP) as cur:
        for scope, day, query in work:
            cur.execute(query, {"tz": day.tz, "utc_start": day.utc_start, "utc_end": day.utc_end})
            n, revenue = cur.fetchone()
            rows.append((scope, day.tz, day.date, day.utc_start, day.utc_end, day.hours, n, revenue, run_id))
    with transaction(WAREHOUSE) as cur:
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {t} (scope text NOT NULL, tz text NOT NULL, local_date date NOT NULL, "
                "utc_start timestamptz NOT NULL, utc_end timestamptz NOT NULL, hours integer NOT NULL, "
                "orders integer NOT NULL, revenue numeric(14, 2) NOT NULL, computed_by_run text, "
                "PRIMARY KEY (scope, tz, local_date))"
            ).format(t=ident(target))
        )
        cur.executemany(
            sql.SQL(
                "INSERT INTO {t} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (scope, tz, local_date) "
                "DO UPDATE SET utc_start = EXCLUDED.utc_start, utc_end = EXCLUDED.utc_end, hours = EXCLUDED.hours, "
                "orders = EXCLUDED.orders, revenue = EXCLUDED.revenue, computed_by_run = EXCLUDED.computed_by_run"
            ).format(t=ident(target)),
            rows,
        )
    return [f"{scope} {tz} {d} ({h} h): {n} orders" for scope, tz, d, _, _, h, n, *_ in rows]
