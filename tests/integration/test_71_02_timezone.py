"""71_02_05_timezone: local-day totals per business and home zone, right on 23- and 25-hour days."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pendulum
import pytest

from tests.dagrun import run_dag

DAG_ID = "71_02_05_timezone"
BERLIN = "Europe/Berlin"
CUSTOMERS = {1: "Europe/Berlin", 2: "America/New_York", 3: "Asia/Tokyo"}
UTC = dt.UTC


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    orders, customers = "public." + names("orders"), "public." + names("customers")
    target = "marts." + names("sales_local")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {orders} (LIKE public.orders INCLUDING ALL)")
        cur.execute(f"CREATE TABLE {customers} (LIKE public.customers INCLUDING ALL)")
        cur.executemany(
            f"INSERT INTO {customers} (id, email, full_name, home_tz) VALUES (%s, %s, %s, %s)",
            [(i, f"c{i}@example.com", f"Customer {i}", tz) for i, tz in CUSTOMERS.items()],
        )
    yield orders, customers, target
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {orders}, {customers}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {target}")


def _berlin_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(BERLIN)).astimezone(UTC)


def _place_orders(shop_db, orders, start: dt.datetime, end: dt.datetime) -> list[tuple]:
    """One order per customer at half past every UTC hour in [start, end); total varies by hour."""
    rows, ts = [], start + dt.timedelta(minutes=30)
    while ts < end:
        for cid in CUSTOMERS:
            oid = cid * 1_000_000 + int(ts.timestamp()) // 3600 % 1_000_000
            rows.append((oid, cid, ts, Decimal(cid * 100 + ts.hour)))
        ts += dt.timedelta(hours=1)
    with shop_db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {orders} (id, customer_id, ordered_at, total) VALUES (%s, %s, %s, %s)", rows
        )
    return rows


def _expected(placed, scope, tz, day):
    """Straight from the placed orders with stdlib zoneinfo: which orders fall on `day` in `tz`."""
    zone = ZoneInfo(tz)
    hits = [
        total
        for _, cid, ts, total in placed
        if (scope == "business" or CUSTOMERS[cid] == tz) and ts.astimezone(zone).date() == day
    ]
    return len(hits), sum(hits, Decimal(0))


@pytest.mark.parametrize(
    ("tz", "change_day", "hours"),
    [
        ("America/New_York", dt.date(2026, 3, 8), 23),
        ("America/New_York", dt.date(2026, 11, 1), 25),
        ("Europe/Berlin", dt.date(2026, 3, 29), 23),
        ("Europe/Berlin", dt.date(2026, 10, 25), 25),
    ],
)
def test_local_day_totals_are_right_on_dst_change_days(tables, shop_db, warehouse_db, tz, change_day, hours):
    orders, customers, target = tables
    conf = {"orders": orders, "customers": customers, "target": target}
    berlin_days = [change_day + dt.timedelta(days=k) for k in (-1, 0, 1)]
    placed = []
    for day in berlin_days:  # orders for each Berlin day arrive before that day's run
        start, end = _berlin_midnight(day), _berlin_midnight(day + dt.timedelta(days=1))
        placed += _place_orders(shop_db, orders, start, end)
        dr = run_dag(DAG_ID, logical_date=pendulum.instance(end), conf=conf)
        assert (dr.data_interval_start, dr.data_interval_end) == (start, end)

    with warehouse_db.cursor() as cur:
        cur.execute(
            f"SELECT scope, tz, local_date, utc_start, utc_end, hours, orders, revenue FROM {target} "
            "ORDER BY scope, tz, local_date"
        )
        got = cur.fetchall()
    first, last = _berlin_midnight(berlin_days[0]), _berlin_midnight(berlin_days[-1] + dt.timedelta(days=1))
    expected = []
    for scope, zone_name in [("business", BERLIN)] + [
        ("home_tz", z) for z in sorted(set(CUSTOMERS.values()))
    ]:
        zone = ZoneInfo(zone_name)
        day = first.astimezone(zone).date() - dt.timedelta(days=1)
        while day <= last.astimezone(zone).date():
            lo = dt.datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
            nxt = day + dt.timedelta(days=1)
            hi = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone).astimezone(UTC)
            if first < hi <= last:  # the local day ended inside one of the three runs
                expected.append(
                    (
                        scope,
                        zone_name,
                        day,
                        lo,
                        hi,
                        int((hi - lo).total_seconds() // 3600),
                        *_expected(placed, scope, zone_name, day),
                    )
                )
            day = nxt
    assert got == sorted(expected, key=lambda r: (r[0], r[1], r[2]))

    # The change day itself: 23 or 25 hours, and (one order per customer-hour) as many orders.
    (row,) = [r for r in got if r[0] == "home_tz" and r[1] == tz and r[2] == change_day]
    assert row[5] == hours
    assert row[6] == hours
    if tz == BERLIN:
        (biz,) = [r for r in got if r[0] == "business" and r[2] == change_day]
        assert (biz[5], biz[6]) == (hours, hours * len(CUSTOMERS))


def test_an_unknown_home_zone_fails_the_run_with_the_customers_to_fix(tables, shop_db):
    orders, customers, target = tables
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {customers} SET home_tz = 'CEST' WHERE id = 2")
    dr = run_dag(
        DAG_ID,
        logical_date=pendulum.datetime(2026, 1, 2, tz=BERLIN),
        conf={"orders": orders, "customers": customers, "target": target},
        expect="failed",
    )
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states["home_zones"] == "failed"
