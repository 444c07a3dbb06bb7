"""71_02_04_sliding_window: 3-hour revenue every hour; windows touched by late changes are recomputed."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pendulum
import pytest

from tests.dagrun import run_dag

DAG_ID = "71_02_04_sliding_window"


def at(h: int, m: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(2026, 6, 10, h, m, tz="UTC")


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src = "public." + names("orders")
    target, panes = "marts." + names("rev3h"), "marts." + names("rev3h_panes")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {src} (LIKE public.orders INCLUDING ALL)")
    yield src, target, panes
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {target}, {panes}, {target}_use_cases")


def _write(shop_db, src, rows):
    """rows: (id, ordered_at, total, updated_at); an existing id is updated (a correction)."""
    with shop_db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {src} (id, customer_id, ordered_at, total, updated_at) VALUES (%s, 1, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total, updated_at = EXCLUDED.updated_at",
            [(i, ts, Decimal(total), upd) for i, ts, total, upd in rows],
        )


def _expected(shop_db, src, windows):
    """Each window computed straight from the source rows (no panes): count and sum in [start, end)."""
    with shop_db.cursor() as cur:
        cur.execute(f"SELECT ordered_at, total FROM {src}")
        rows = cur.fetchall()
    out = []
    for start_h in windows:
        start, end = at(start_h), at(start_h + 3)
        inside = [total for ts, total in rows if start <= ts < end]
        out.append((start, end, len(inside), sum(inside, Decimal(0))))
    return out


def _published(warehouse_db, target):
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT window_start, window_end, orders, revenue FROM {target} ORDER BY window_start")
        return cur.fetchall()


def test_three_hour_windows_slide_hourly_and_late_changes_recompute_every_window_they_touch(
    tables, shop_db, warehouse_db
):
    src, target, panes = tables
    conf = {"source": src, "target": target, "panes": panes, "size_hours": 3, "slide_hours": 1}

    # Run 1, interval [10, 11): closes [8, 11); the 08:30 order also reaches back into [6, 9) and [7, 10).
    _write(
        shop_db,
        src,
        [
            (1, at(8, 30), "100", at(10, 1)),
            (2, at(9, 15), "20", at(10, 5)),
            (3, at(10, 20), "3", at(10, 25)),
            (4, at(10, 45), "4", at(10, 50)),
        ],
    )
    run_dag(DAG_ID, logical_date=at(11), conf=conf)
    assert _published(warehouse_db, target) == _expected(shop_db, src, [6, 7, 8])

    # Run 2, interval [11, 12): closes [9, 12); a correction of the 09:15 order recomputes [7, 10), [8, 11).
    _write(
        shop_db,
        src,
        [
            (5, at(11, 10), "50", at(11, 10)),
            (6, at(11, 59), "60", at(11, 59)),
            (2, at(9, 15), "25", at(11, 30)),
        ],
    )
    run_dag(DAG_ID, logical_date=at(12), conf=conf)
    assert _published(warehouse_db, target) == _expected(shop_db, src, [6, 7, 8, 9])

    # Run 3, interval [12, 13): closes [10, 13); a late 07:40 order recomputes [5, 8), [6, 9), [7, 10).
    # The order at exactly 12:00 is in [10, 13) but not in [9, 12).
    _write(shop_db, src, [(7, at(12, 0), "7", at(12, 5)), (8, at(7, 40), "800", at(12, 20))])
    run_dag(DAG_ID, logical_date=at(13), conf=conf)
    expected = _expected(shop_db, src, [5, 6, 7, 8, 9, 10])
    assert _published(warehouse_db, target) == expected
    assert [row[2:] for row in expected] == [
        (1, Decimal(800)),
        (2, Decimal(900)),
        (3, Decimal(925)),
        (4, Decimal(132)),
        (5, Decimal(142)),
        (5, Decimal(124)),
    ]

    # Overlap handling: every window equals the sum of its three panes; each order is in one pane.
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT window_start, orders, revenue FROM {panes} ORDER BY window_start")
        pane = {start: (n, rev) for start, n, rev in cur.fetchall()}
    for start, _end, n, rev in expected:
        hours = [start.add(hours=k) for k in range(3)]
        assert (sum(pane[h][0] for h in hours), sum(pane[h][1] for h in hours)) == (n, rev), start

    # Reruns are idempotent: the middle interval again leaves every window as it is.
    run_dag(DAG_ID, logical_date=at(12), conf=conf)
    assert _published(warehouse_db, target) == expected


def _use_cases(shop_db, src, starts, factor=Decimal(2), alert_orders=5):
    """Each use case computed from the source rows in Python, independently of the DAG's SQL:
    (start, end, orders, revenue, hourly_avg, trend, baseline, anomaly, alert) per window."""
    cent = Decimal("0.01")
    windows = {start: (n, rev) for start, _end, n, rev in _expected(shop_db, src, starts)}
    out = []
    for start, (n, rev) in sorted(windows.items()):
        prev = windows.get(start.subtract(hours=1))
        trend = None if prev is None else "up" if rev > prev[1] else "down" if rev < prev[1] else "flat"
        before = [
            windows[start.subtract(hours=k)][1] for k in (1, 2, 3) if start.subtract(hours=k) in windows
        ]
        baseline = sum(before, Decimal(0)) / len(before) if before else None
        out.append(
            (
                start,
                start.add(hours=3),
                n,
                rev,
                (rev / 3).quantize(cent, ROUND_HALF_UP),
                trend,
                None if baseline is None else baseline.quantize(cent, ROUND_HALF_UP),
                baseline is not None and rev > factor * baseline,
                n >= alert_orders,
            )
        )
    return out


def _published_use_cases(warehouse_db, target):
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT window_start, window_end, orders, revenue, hourly_avg, trend, baseline, anomaly, alert "
            f"FROM {target}_use_cases ORDER BY window_start"
        )
        return cur.fetchall()


def test_use_cases_moving_average_trend_anomaly_and_alert_match_an_independent_computation(
    tables, shop_db, warehouse_db
):
    src, target, panes = tables
    conf = {"source": src, "target": target, "panes": panes, "size_hours": 3, "slide_hours": 1}
    # One order of 10 every hour 10:00-18:59, except a spike at 15:00 (six orders of 50); all written in [18, 19).
    seeded, i = [], 0
    for h in range(10, 19):
        for k, total in enumerate(["50"] * 6 if h == 15 else ["10"]):
            i += 1
            seeded.append((i, at(h, 5 * k), total, at(18, 30)))
    _write(shop_db, src, seeded)

    # One run, interval [18, 19): every closed window touching the changed orders, [8, 11) .. [16, 19).
    run_dag(DAG_ID, logical_date=at(19), conf=conf)
    expected = _use_cases(shop_db, src, range(8, 17))
    assert _published_use_cases(warehouse_db, target) == expected
    # The facts the use cases teach, on these seeded events:
    by_start = {row[0].hour: row for row in expected}
    assert by_start[13][4] == Decimal("106.67")  # moving average: 320 over 3 hours
    assert [h for h, row in by_start.items() if row[7]] == [13, 14]  # anomaly, until the baseline absorbs it
    assert [h for h, row in by_start.items() if row[8]] == [13, 14, 15]  # alert: >= 5 orders in 3 hours
    assert [by_start[h][5] for h in range(8, 17)] == [
        None,
        "up",
        "up",
        "flat",
        "flat",
        "up",
        "flat",
        "flat",
        "down",
    ]

    # A late correction in [19, 20): the spike's orders were 5, not 50. The windows it touches are
    # recomputed, and with them every use case: the anomaly disappears, the order-count alert stays.
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {src} SET total = 5, updated_at = %s WHERE id BETWEEN 6 AND 11", (at(19, 10),))
    run_dag(DAG_ID, logical_date=at(20), conf=conf)
    expected = _use_cases(shop_db, src, range(8, 18))
    assert _published_use_cases(warehouse_db, target) == expected
    assert [row[0].hour for row in expected if row[7]] == []
    assert [row[0].hour for row in expected if row[8]] == [13, 14, 15]
