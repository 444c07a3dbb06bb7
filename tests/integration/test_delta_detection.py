"""cdclab.delta.detection against the real shop and warehouse databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from cdclab.delta import detection as delta

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture
def src(shop_db, names):
    table = f"public.{names('dd')}"
    with shop_db.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {table} (id bigint PRIMARY KEY, name text, updated_at timestamptz, seq bigint)"
        )
    yield table
    with shop_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")


def insert(conn, table, rows):
    with conn.cursor() as cur:
        for r in rows:
            cur.execute(f"INSERT INTO {table} (id, name, updated_at, seq) VALUES (%s, %s, %s, %s)", r)


def ids(result):
    return [r["id"] for r in result.rows]


def test_equal_timestamps_across_a_page_boundary_are_read_exactly_once(shop_db, src) -> None:
    insert(
        shop_db, src, [(i, f"n{i}", T0, i) for i in range(1, 8)] + [(8, "n8", T0 + timedelta(seconds=1), 8)]
    )
    result = delta.read_timestamp_delta(
        shop_db, src, cursor_column="updated_at", key_columns=["id"], since=None, batch_size=3
    )
    assert ids(result) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert result.pages == 3
    assert result.max_cursor == T0 + timedelta(seconds=1)


def test_the_range_is_half_open_and_the_lower_bound_closed(shop_db, src) -> None:
    insert(
        shop_db,
        src,
        [(1, "a", T0 - timedelta(seconds=1), 1), (2, "b", T0, 2), (3, "c", T0 + timedelta(hours=1), 3)],
    )
    result = delta.read_timestamp_delta(
        shop_db, src, cursor_column="updated_at", key_columns=["id"], since=T0, until=T0 + timedelta(hours=1)
    )
    assert ids(result) == [2]


def test_a_lookback_catches_a_transaction_that_committed_late(shop_db, src) -> None:
    watermark = T0
    # committed after the last read, but stamped with its (earlier) transaction start
    insert(shop_db, src, [(1, "late", T0 - timedelta(seconds=20), 1)])
    without = delta.read_timestamp_delta(
        shop_db, src, cursor_column="updated_at", key_columns=["id"], since=watermark
    )
    with_lookback = delta.read_timestamp_delta(
        shop_db,
        src,
        cursor_column="updated_at",
        key_columns=["id"],
        since=watermark,
        lookback=timedelta(minutes=1),
    )
    assert ids(without) == []
    assert ids(with_lookback) == [1]
    assert delta.next_watermark(watermark, with_lookback) == watermark


def test_the_oldest_open_transaction_bounds_the_read(lab, shop_db, src, lab_workload_paused) -> None:
    """Every open transaction counts, whichever table it writes: it may write ``src`` later."""
    writer = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        with writer.cursor() as cur:
            cur.execute(f"INSERT INTO {src} (id, name, updated_at) VALUES (1, 'open', now()) RETURNING now()")
            started = cur.fetchone()[0]
        assert delta.oldest_open_transaction_start(shop_db) <= started
        assert delta.oldest_open_transaction_start(shop_db, src) <= started
        assert delta.oldest_open_transaction_start(shop_db, "public.customers") <= started
        assert delta.read_upper_bound(shop_db, T0) == T0  # an earlier `until` wins
        assert delta.read_upper_bound(shop_db) <= started
    finally:
        writer.rollback()
        writer.close()


def _load(shop_db, src, since):
    """One timestamp load as the DAGs do it: bound, read, next watermark."""
    until = delta.read_upper_bound(shop_db)
    result = delta.read_timestamp_delta(
        shop_db, src, cursor_column="updated_at", key_columns=["id"], since=since, until=until
    )
    return ids(result), delta.next_watermark(since, result)


def test_a_transaction_open_across_a_load_that_writes_the_table_later_is_not_missed(
    lab, shop_db, src
) -> None:
    """A long transaction starts (``now()`` = its start), touches nothing yet, and inserts into ``src``
    only after a load has run; it commits after that load. A row stamped later commits first. The rows
    of both loads together are every row: the open transaction held the first load's bound back even
    though it held no lock on ``src`` and no xid when the load ran."""
    insert(shop_db, src, [(1, "before", T0, 1)])
    writer = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        with writer.cursor() as cur:
            cur.execute("SELECT now()")  # the transaction is open from here on
            started = cur.fetchone()[0]
        with shop_db.cursor() as cur:  # a row stamped after the open transaction's start commits first
            cur.execute(f"INSERT INTO {src} (id, name, updated_at, seq) VALUES (2, 'later', now(), 2)")
        first, watermark = _load(shop_db, src, None)
        with writer.cursor() as cur:  # now the long transaction writes the table, stamped at its start
            cur.execute(f"INSERT INTO {src} (id, name, updated_at, seq) VALUES (3, 'long', now(), 3)")
        writer.commit()
    finally:
        writer.rollback()
        writer.close()
    second, _ = _load(shop_db, src, watermark)
    assert first == [1]
    assert watermark < started
    assert sorted(set(first) | set(second)) == [1, 2, 3]


def test_the_read_bound_refuses_a_repeatable_read_snapshot(lab, src) -> None:
    conn = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        conn.set_session(isolation_level="REPEATABLE READ")
        with pytest.raises(delta.UnsafeReadBoundError, match="READ COMMITTED"):
            delta.read_upper_bound(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("policy", ["raise", "include", "exclude"])
def test_null_cursor_rows_follow_the_policy(shop_db, src, policy) -> None:
    insert(shop_db, src, [(1, "a", T0, 1), (2, "null", None, 2), (3, "c", T0, 3)])
    read = lambda: delta.read_timestamp_delta(  # noqa: E731
        shop_db,
        src,
        cursor_column="updated_at",
        key_columns=["id"],
        since=T0 - timedelta(hours=1),
        null_policy=policy,
    )
    if policy == "raise":
        with pytest.raises(delta.NullCursorError, match=r"1 row\(s\) .* NULL updated_at"):
            read()
        return
    result = read()
    assert result.null_cursor_rows == 1
    assert ids(result) == ([1, 3, 2] if policy == "include" else [1, 3])


def test_version_delta_uses_an_exclusive_lower_bound(shop_db, src) -> None:
    insert(shop_db, src, [(i, "x", T0, i * 10) for i in range(1, 5)])
    result = delta.read_version_delta(
        shop_db, src, version_column="seq", key_columns=["id"], since=20, batch_size=1
    )
    assert ids(result) == [3, 4]
    assert result.max_cursor == 40


def test_xmin_delta_never_misses_a_row_written_after_the_snapshot(shop_db, src) -> None:
    insert(shop_db, src, [(1, "a", T0, 1), (2, "b", T0, 2)])
    first = delta.read_xmin_delta(shop_db, src, key_columns=["id"], since=None)
    assert ids(first) == [1, 2]
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {src} SET name = 'b2' WHERE id = 2")
    insert(shop_db, src, [(3, "c", T0, 3)])
    second = delta.read_xmin_delta(shop_db, src, key_columns=["id"], since=first.max_cursor)
    # rows 2 and 3 for sure; row 1 too when another session's transaction, open since before row 1 was
    # written, still holds the snapshot xmin back (conservative: a re-read, never a miss)
    assert {2, 3} <= set(ids(second))
    with shop_db.cursor() as cur:
        cur.execute(
            f"SELECT id FROM {src} WHERE {delta.FULL_XMIN.as_string(shop_db)} >= %s ORDER BY id",
            (first.max_cursor,),
        )
        assert ids(second) == [r[0] for r in cur.fetchall()]
    assert second.max_cursor >= first.max_cursor


def test_hash_snapshots_find_inserts_updates_and_deletes(shop_db, warehouse_db, src, names) -> None:
    delta.ensure_snapshot_table(warehouse_db)
    snap = names("snap")
    insert(shop_db, src, [(1, "a", T0, 1), (2, "b", T0, 2), (3, "c", T0, 3)])
    hashes = delta.table_hashes(shop_db, src, key_columns=["id"], columns=["name"])
    first = delta.diff_hashes(delta.load_snapshot(warehouse_db, snap), hashes)
    assert first.inserted == [(1,), (2,), (3,)]
    delta.save_snapshot(warehouse_db, snap, hashes, first)
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {src} SET name = 'b2' WHERE id = 2")
        cur.execute(f"DELETE FROM {src} WHERE id = 3")
        cur.execute(f"UPDATE {src} SET seq = 99 WHERE id = 1")  # not a compared column
    insert(shop_db, src, [(4, "d", T0, 4)])
    hashes = delta.table_hashes(shop_db, src, key_columns=["id"], columns=["name"])
    second = delta.diff_hashes(delta.load_snapshot(warehouse_db, snap), hashes)
    assert second == delta.ChangeSet(inserted=[(4,)], updated=[(2,)], deleted=[(3,)])
    delta.save_snapshot(warehouse_db, snap, hashes, second)
    assert delta.load_snapshot(warehouse_db, snap) == hashes
    with warehouse_db.cursor() as cur:
        cur.execute("DELETE FROM state.row_hashes WHERE snapshot = %s", (snap,))


def test_full_comparison_reports_missing_extra_and_different_keys(shop_db, warehouse_db, src, names) -> None:
    insert(shop_db, src, [(1, "a", T0, 1), (2, "b", T0, 2), (3, "c", T0, 3)])
    target = f"staging.{names('cmp')}"
    with warehouse_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {target} (id bigint PRIMARY KEY, name text, updated_at timestamptz)")
        cur.execute(f"INSERT INTO {target} VALUES (1, 'a', %s), (2, 'B', %s), (4, 'd', %s)", (T0, T0, T0))
    try:
        result = delta.compare_tables(
            shop_db, src, warehouse_db, target, key_columns=["id"], columns=["name", "updated_at"]
        )
        assert (result.missing, result.extra, result.different) == ([(3,)], [(4,)], [(2,)])
    finally:
        with warehouse_db.cursor() as cur:
            cur.execute(f"DROP TABLE {target}")
