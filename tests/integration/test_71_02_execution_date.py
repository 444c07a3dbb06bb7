"""71_02_01_execution_date: each daily data interval fills exactly its own partition; reruns replace it."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import pytest

from tests.dagrun import run_dag

DAG_ID = "71_02_01_execution_date"
UTC = "UTC"
COLS = "id, customer_id, status, ordered_at, total, updated_at"


def _day(d: int, h: int = 0, m: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(2026, 2, d, h, m, tz=UTC)


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src = "public." + names("orders")
    target, staging = "core." + names("obd"), "staging." + names("obd")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {src} (LIKE public.orders INCLUDING ALL)")
    yield src, target, staging
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {target}, {staging}")


def _insert(shop_db, src, rows):
    with shop_db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {src} (id, customer_id, status, ordered_at, total, updated_at) "
            "VALUES (%s, %s, 'new', %s, %s, %s)",
            [(i, 100 + i, ts, Decimal(total), ts) for i, ts, total in rows],
        )


def _source_rows(shop_db, src, start, end):
    with shop_db.cursor() as cur:
        cur.execute(
            f"SELECT {COLS} FROM {src} WHERE ordered_at >= %s AND ordered_at < %s ORDER BY id", (start, end)
        )
        return cur.fetchall()


def _target_rows(warehouse_db, target):
    with warehouse_db.cursor() as cur:
        cur.execute(f"SELECT {COLS} FROM {target} ORDER BY id")
        return cur.fetchall()


def _run(day_end, conf):
    """dag.test(logical_date=X) on a CronDataIntervalTimetable runs the interval that ENDS at X."""
    return run_dag(DAG_ID, logical_date=day_end, conf=conf)


def test_the_run_gets_the_interval_that_ends_at_its_logical_date(tables):
    src, target, staging = tables
    dr = _run(_day(2), {"source": src, "target": target, "staging": staging})
    assert (dr.data_interval_start, dr.data_interval_end) == (_day(1), _day(2))


def test_each_interval_fills_its_own_day_partition_and_reruns_replace_it(tables, shop_db, warehouse_db):
    src, target, staging = tables
    conf = {"source": src, "target": target, "staging": staging}
    # Day 1 rows, one exactly on the Feb 2 midnight boundary (belongs to day 2, not day 1).
    _insert(
        shop_db,
        src,
        [
            (1, _day(1, 0, 0), "10.00"),
            (2, _day(1, 13, 5), "20.00"),
            (3, _day(1, 23, 59), "30.00"),
            (4, _day(2, 0, 0), "40.00"),
        ],
    )
    expected = {}
    _run(_day(2), conf)
    expected[1] = _source_rows(shop_db, src, _day(1), _day(2))
    assert _target_rows(warehouse_db, target) == expected[1]
    assert [r[0] for r in expected[1]] == [1, 2, 3]

    # Source changes: more day-2 orders, a late correction of a day-1 order.
    _insert(shop_db, src, [(5, _day(2, 9), "50.00"), (6, _day(2, 23, 30), "60.00"), (7, _day(3, 1), "70.00")])
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {src} SET total = 25.00, status = 'paid' WHERE id = 2")
    _run(_day(3), conf)
    expected[2] = _source_rows(shop_db, src, _day(2), _day(3))
    assert [r[0] for r in expected[2]] == [4, 5, 6]
    # Day 1 is not touched by the day-2 run: the correction is not there yet.
    assert _target_rows(warehouse_db, target) == expected[1] + expected[2]

    # Day 3, a delete in day 2 (only visible after a rerun of day 2), then rerun day 1 and day 2.
    _insert(
        shop_db,
        src,
        [
            (8, _day(3, 12), "80.00"),
            (
                9,
                _day(
                    3,
                    23,
                    59,
                ),
                "90.00",
            ),
            (10, _day(4), "1.00"),
        ],
    )
    with shop_db.cursor() as cur:
        cur.execute(f"DELETE FROM {src} WHERE id = 5")
    _run(_day(4), conf)
    expected[3] = _source_rows(shop_db, src, _day(3), _day(4))
    assert _target_rows(warehouse_db, target) == expected[1] + expected[2] + expected[3]

    _run(_day(2), conf)
    _run(_day(3), conf)
    _run(_day(3), conf)  # a second rerun changes nothing
    expected = {d: _source_rows(shop_db, src, _day(d), _day(d + 1)) for d in (1, 2, 3)}
    assert [r[0] for r in expected[1] + expected[2] + expected[3]] == [1, 2, 3, 4, 6, 7, 8, 9]
    assert _target_rows(warehouse_db, target) == expected[1] + expected[2] + expected[3]
    assert _target_rows(warehouse_db, target)[1][2:5] == ("paid", _day(1, 13, 5), Decimal("25.00"))

    # One partition per interval, with exactly the interval's bounds; each row in its own day.
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass ORDER BY 1",
            (target,),
        )
        parts = cur.fetchall()
        cur.execute(f"SELECT tableoid::regclass::text, count(*) FROM {target} GROUP BY 1 ORDER BY 1")
        per_partition = cur.fetchall()
    table = target.split(".")[1]
    assert parts == [
        (
            f"{table}_p2026020{d}",
            f"FOR VALUES FROM ('2026-02-0{d} 00:00:00+00') TO ('2026-02-0{d + 1} 00:00:00+00')",
        )
        for d in (1, 2, 3)
    ]
    assert per_partition == [(f"core.{table}_p2026020{d}", len(expected[d])) for d in (1, 2, 3)]
