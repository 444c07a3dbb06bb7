"""71_02_02_last_modified: updated_at cursor in keyset batches, lookback for late commits, index vs seq scan."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import psycopg2
import pytest

from tests.dagrun import run_dag

DAG_ID = "71_02_02_last_modified"
COLS = "id, customer_id, status, ordered_at, total, updated_at, version"


def at(h: int, m: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(2026, 4, 1, h, m, tz="UTC")


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src = "public." + names("orders")
    target, run_log = "staging." + names("olm"), "state." + names("olm_runs")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {src} (LIKE public.orders INCLUDING ALL)")
        # 20k rows changed long ago: the cursor query must not read them, and the planner has a reason
        # to prefer the updated_at index.
        cur.execute(
            f"INSERT INTO {src} (id, customer_id, ordered_at, total, updated_at) "
            "SELECT 100000 + g, g, ts, 1, ts FROM generate_series(1, 20000) g, "
            "LATERAL (SELECT timestamptz '2025-01-01 00:00+00' + g * interval '1 minute' AS ts) x"
        )
        cur.execute(f"ANALYZE {src}")
    yield src, target, run_log
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {src}")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {target}, {run_log}")


def _put(cur, src, rows):
    """rows: (id, updated_at, total, version) — updated_at set explicitly (the copy has no trigger)."""
    cur.executemany(
        f"INSERT INTO {src} (id, customer_id, status, ordered_at, total, updated_at, version) "
        "VALUES (%s, %s, 'new', %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET total = EXCLUDED.total, "
        "status = 'changed', updated_at = EXCLUDED.updated_at, version = EXCLUDED.version",
        [(i, 500 + i, at(9), Decimal(total), ts, v) for i, ts, total, v in rows],
    )


def _rows(conn, query, params=()):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _expected(shop_db, src, lo, hi):
    return _rows(
        shop_db, f"SELECT {COLS} FROM {src} WHERE updated_at >= %s AND updated_at < %s ORDER BY id", (lo, hi)
    )


def _run(end, conf):
    """dag.test(logical_date=X) on the hourly CronDataIntervalTimetable runs [X - 1h, X)."""
    return run_dag(DAG_ID, logical_date=end, conf=conf)


def test_changed_rows_are_loaded_once_each_with_ties_and_a_late_commit(lab, tables, shop_db, warehouse_db):
    src, target, run_log = tables
    conf = {"source": src, "target": target, "run_log": run_log, "batch_size": 2, "lookback_minutes": 15}
    with shop_db.cursor() as cur:
        # 2, 3, 4 share one timestamp and straddle the 2-row batch boundary; 6 sits exactly on 11:00.
        _put(
            cur,
            src,
            [
                (7, at(9, 50), "7", 1),
                (1, at(10, 10), "1", 1),
                (2, at(10, 20), "2", 1),
                (3, at(10, 20), "3", 1),
                (4, at(10, 20), "4", 1),
                (5, at(10, 30), "5", 1),
                (6, at(11), "6", 1),
            ],
        )
    # A long transaction: started 10:55 (so updated_at = 10:55), commits only after run 1 has read.
    late = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        with late.cursor() as cur:
            _put(cur, src, [(8, at(10, 55), "8", 1)])
        _run(at(11), conf)
        late.commit()
    finally:
        late.close()
    assert [r[0] for r in _rows(warehouse_db, f"SELECT id FROM {target} ORDER BY id")] == [1, 2, 3, 4, 5, 7]

    with shop_db.cursor() as cur:
        _put(cur, src, [(1, at(11, 5), "1.5", 2), (9, at(11, 30), "9", 1)])
    _run(at(12), conf)  # reads [10:45, 12:00): the late-committed row 8 is caught by the lookback

    with shop_db.cursor() as cur:
        _put(
            cur,
            src,
            [
                (10, at(12, 15), "10", 1),
                (11, at(12, 15), "11", 1),
                (12, at(12, 15), "12", 1),
                (9, at(12, 40), "9.9", 2),
            ],
        )
    _run(at(13), conf)

    expected = _expected(shop_db, src, at(9, 45), at(13))
    assert [r[0] for r in expected] == list(range(1, 13))
    assert _rows(warehouse_db, f"SELECT {COLS} FROM {target} ORDER BY id") == expected
    assert _rows(warehouse_db, f"SELECT total, version FROM {target} WHERE id IN (1, 9) ORDER BY id") == [
        (Decimal("1.50"), 2),
        (Decimal("9.90"), 2),
    ]

    # A rerun of interval 2 re-reads its window and writes nothing: the guard keeps newer rows.
    _run(at(12), conf)
    assert _rows(warehouse_db, f"SELECT {COLS} FROM {target} ORDER BY id") == expected

    log = _rows(
        warehouse_db,
        f"SELECT interval_start, read_from, rows_read, rows_written, batches, uses_index, "
        f"scan_nodes FROM {run_log} ORDER BY logged_at",
    )
    assert [row[:5] for row in log] == [
        (at(10), at(9, 45), 6, 6, 3),  # 7, 1, 2 | 3, 4 | 5 — the tie 2/3/4 spans a batch boundary
        (at(11), at(10, 45), 4, 4, 2),  # 8 (late commit), 6, 1 (update) | 9
        (at(12), at(11, 45), 4, 4, 2),  # 10, 11 | 12, 9 (update)
        (at(11), at(10, 45), 3, 0, 2),  # rerun: 8, 6 | 1 re-read (9 has moved on to 12:40), nothing written
    ]
    assert all(uses_index and "Index Scan" in nodes for *_, uses_index, nodes in log), log

    # Without the index the same cursor query reads the whole table.
    index = _rows(
        shop_db,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = %s "
        "AND indexdef LIKE '%%(updated_at)'",
        (src.split(".")[1],),
    )[0][0]
    with shop_db.cursor() as cur:
        cur.execute(f"DROP INDEX public.{index}")
        cur.execute(f"ANALYZE {src}")
    _run(at(13), conf)
    last = _rows(
        warehouse_db,
        f"SELECT uses_index, scan_nodes, index_names, rows_written FROM {run_log} "
        "ORDER BY logged_at DESC LIMIT 1",
    )[0]
    assert last == (False, ["Seq Scan"], [], 0)
    assert _rows(warehouse_db, f"SELECT {COLS} FROM {target} ORDER BY id") == expected


def test_a_timestamp_only_cursor_loses_rows_that_tie_at_a_batch_boundary(tables, shop_db, warehouse_db):
    src, target, run_log = tables
    with shop_db.cursor() as cur:
        _put(
            cur,
            src,
            [
                (1, at(10, 10), "1", 1),
                (2, at(10, 20), "2", 1),
                (3, at(10, 20), "3", 1),
                (4, at(10, 20), "4", 1),
                (5, at(10, 30), "5", 1),
            ],
        )
    for mode, suffix in (("timestamp_only", "_naive"), ("keyset", "")):
        _run(
            at(11),
            {
                "source": src,
                "target": target + suffix,
                "run_log": run_log,
                "batch_size": 2,
                "lookback_minutes": 0,
                "cursor_mode": mode,
            },
        )
    try:
        naive = [r[0] for r in _rows(warehouse_db, f"SELECT id FROM {target}_naive ORDER BY id")]
        keyset = [r[0] for r in _rows(warehouse_db, f"SELECT id FROM {target} ORDER BY id")]
    finally:
        with warehouse_db.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {target}_naive")
    assert naive == [1, 2, 5]  # 3 and 4 share 10:20 with the batch's last row: skipped by `> last_ts`
    assert keyset == [1, 2, 3, 4, 5]
