"""71_02_03_event_time: windows by event time, late arrivals recomputed, too-late and future ones recorded."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import pytest

from tests.dagrun import run_dag

DAG_ID = "71_02_03_event_time"
LATENESS_MIN, SKEW_MIN = 60, 5


def at(h: int, m: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(2026, 5, 4, h, m, tz="UTC")


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src = "public." + names("orders")
    target, late_log = "marts." + names("oet"), "dlq." + names("oet_late")
    ledger = "state." + names("oet_arrivals")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {src} (LIKE public.orders INCLUDING ALL)")
    yield src, target, late_log, ledger
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {target}, {late_log}, {ledger}")


def _conf(tables):
    src, target, late_log, ledger = tables
    return {
        "source": src,
        "target": target,
        "late_log": late_log,
        "arrivals": ledger,
        "window_minutes": 60,
        "allowed_lateness_minutes": LATENESS_MIN,
        "skew_tolerance_minutes": SKEW_MIN,
    }


def _arrive(shop_db, src, events):
    """events: (id, ordered_at = event time, updated_at = arrival time)."""
    with shop_db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {src} (id, customer_id, ordered_at, total, updated_at) VALUES (%s, 1, %s, %s, %s)",
            [(i, ev, Decimal(i), seen) for i, ev, seen in events],
        )


def _expected(events):
    """Independent model: hour windows; accepted unless too late (>= end + 60 min) or > 5 min ahead."""
    windows, rejected = {}, []
    for i, ev, seen in events:
        start = ev.start_of("hour")
        end = start.add(hours=1)
        if ev > seen.add(minutes=SKEW_MIN):
            rejected.append((i, "future"))
        elif seen >= end.add(minutes=LATENESS_MIN):
            rejected.append((i, "too_late"))
        else:
            n, rev, late = windows.get(start, (0, Decimal(0), 0))
            windows[start] = (n + 1, rev + Decimal(i), late + (seen >= end))
    rows = [(s, s.add(hours=1), *v) for s, v in sorted(windows.items())]
    return rows, sorted(rejected)


def test_windows_follow_event_time_late_rows_are_reprocessed_and_too_late_rows_recorded(
    tables, shop_db, warehouse_db
):
    src, target, late_log, _ = tables
    conf = _conf(tables)
    batches = [
        [  # arrive during [10:00, 11:00)
            (1, at(10, 5), at(10, 6)),  # on time
            (2, at(10, 50), at(10, 55)),  # on time
            (3, at(9, 30), at(10, 10)),  # late, accepted: window 09-10 is reprocessed
            (4, at(8, 10), at(10, 20)),  # too late: window 08-09 closed for good at 10:00
            (5, at(11, 30), at(10, 30)),  # from the future: 60 min ahead of its arrival
            (6, at(11, 3), at(10, 59)),  # 4 min ahead: within the skew tolerance
        ],
        [  # arrive during [11:00, 12:00)
            (7, at(10, 40), at(11, 20)),  # late, accepted: window 10-11 recomputed
            (8, at(11, 10), at(11, 15)),
            (9, at(9, 45), at(11, 30)),  # too late
        ],
        [  # arrive during [12:00, 13:00)
            (10, at(11, 59), at(12, 59)),  # late by 59 min: still accepted
            (11, at(12, 0), at(12, 1)),  # exactly on the window boundary: window 12-13
            (12, at(10, 59), at(12, 10)),  # too late
            (13, at(12, 30), at(12, 29)),
        ],
    ]
    cols = "window_start, window_end, orders, revenue, late_orders"
    seen = []
    for hour, batch in zip((11, 12, 13), batches, strict=True):
        _arrive(shop_db, src, batch)
        seen += batch
        run_dag(DAG_ID, logical_date=at(hour), conf=conf)  # the interval [hour - 1h, hour)
        with warehouse_db.cursor() as cur:
            cur.execute(f"SELECT {cols} FROM {target} ORDER BY window_start")
            got = cur.fetchall()
        assert got == _expected(seen)[0], f"after the run ending {hour}:00"

    rows, rejected = _expected(seen)
    assert rows == [
        (at(9), at(10), 1, Decimal(3), 1),
        (at(10), at(11), 3, Decimal(1 + 2 + 7), 1),
        (at(11), at(12), 3, Decimal(6 + 8 + 10), 1),
        (at(12), at(13), 2, Decimal(11 + 13), 0),
    ]
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT order_id, arrival, window_start, seen_at FROM {late_log} ORDER BY order_id")
        logged = cur.fetchall()
    assert (
        [(i, a) for i, a, *_ in logged]
        == rejected
        == [(4, "too_late"), (5, "future"), (9, "too_late"), (12, "too_late")]
    )
    by_id = {i: (ev, s) for i, ev, s in seen}
    assert all(ws == by_id[i][0].start_of("hour") and s == by_id[i][1] for i, _, ws, s in logged)

    # A rerun of the middle interval recomputes the same windows with the same result.
    run_dag(DAG_ID, logical_date=at(12), conf=conf)
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT {cols} FROM {target} ORDER BY window_start")
        assert cur.fetchall() == rows
        cur.execute(f"SELECT count(*) FROM {late_log}")
        assert cur.fetchone() == (4,)


def test_an_update_does_not_move_an_orders_arrival_and_a_rerun_of_an_old_interval_changes_nothing(
    tables, shop_db, warehouse_db
):
    """``updated_at`` is reset by every UPDATE: an order placed and received on time whose status changes
    hours later must stay on time in its window (not be dead-lettered as too late), and rerunning the
    interval it first arrived in must give the same windows."""
    src, target, late_log, ledger = tables
    conf = _conf(tables)
    cols = "window_start, window_end, orders, revenue, late_orders"

    def windows():
        with warehouse_db.cursor() as cur:
            cur.execute(f"SELECT {cols} FROM {target} ORDER BY window_start")
            return cur.fetchall()

    _arrive(
        shop_db,
        src,
        [
            (1, at(10, 5), at(10, 6)),  # on time in 10-11
            (2, at(10, 20), at(10, 30)),  # on time in 10-11
            (3, at(9, 30), at(10, 10)),  # late (accepted) in 09-10
        ],
    )
    run_dag(DAG_ID, logical_date=at(11), conf=conf)  # [10:00, 11:00)
    first = windows()
    assert first == [(at(9), at(10), 1, Decimal(3), 1), (at(10), at(11), 2, Decimal(1 + 2), 0)]

    # hours later, orders 1 and 3 are shipped and order 1's total corrected: updated_at moves to 13:30,
    # past every window's end + allowed lateness (11:00 + 60 min), as the shop's touch_row trigger does
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {src} SET status = 'shipped', updated_at = %s WHERE id IN (1, 3)", (at(13, 30),))
        cur.execute(f"UPDATE {src} SET total = 10 WHERE id = 1")
    run_dag(DAG_ID, logical_date=at(14), conf=conf)  # [13:00, 14:00) reads the updates
    after_update = [(at(9), at(10), 1, Decimal(3), 1), (at(10), at(11), 2, Decimal(10 + 2), 0)]
    assert windows() == after_update  # still counted, with the new total; order 3 still late, not too late
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {late_log}")
        assert cur.fetchone() == (0,)  # nothing dead-lettered
        cur.execute(f"SELECT order_id, first_seen_at, arrival FROM {ledger} ORDER BY order_id")
        assert cur.fetchall() == [
            (1, at(10, 6), "on_time"),
            (2, at(10, 30), "on_time"),
            (3, at(10, 10), "late"),
        ]

    # rerunning the old interval (as a backfill or a clear would) changes no window
    run_dag(DAG_ID, logical_date=at(11), conf=conf)
    assert windows() == after_update
    run_dag(DAG_ID, logical_date=at(14), conf=conf)
    assert windows() == after_update
