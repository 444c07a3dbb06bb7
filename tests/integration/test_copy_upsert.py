"""cdclab.merge.upsert.copy_upsert against Postgres: the set-based incremental load (COPY out of the source,
COPY into a temporary table beside the target, one guarded INSERT ... ON CONFLICT)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cdclab.delta import detection as delta
from cdclab.merge import upsert

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # a DST change day in Europe: text must carry the offset
COLS = "id bigint PRIMARY KEY, name text, amount numeric(12,2), day date, updated_at timestamptz, version int NOT NULL"


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    schema = names("cu")  # its own schema in the shop: outside the CDC connector's tables
    source, target = f"{schema}.src", f"staging.{names('cu_tgt')}"
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(f"CREATE TABLE {source} ({COLS})")
        cur.execute(
            f"INSERT INTO {source} SELECT i, 'n' || i, i / 100.0, DATE '2026-03-29' + (i %% 3),"
            " %s + i * interval '1 minute', 1 FROM generate_series(1, 100) i",
            (T0,),
        )
    with warehouse_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {target} ({COLS})")
    yield source, target
    with shop_db.cursor() as cur:
        cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    with warehouse_db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {target}")


def rows(conn, table):
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, name, amount, day, updated_at, version FROM {table} ORDER BY id")
        return cur.fetchall()


def load(shop_db, warehouse_db, source, target, since, until=None):
    return upsert.copy_upsert(
        shop_db,
        source,
        warehouse_db,
        target,
        key_columns=["id"],
        cursor_column="updated_at",
        since=since,
        until=until,
        guard_column="version",
    )


def test_first_load_then_only_the_window_and_the_guard_holds(shop_db, warehouse_db, tables) -> None:
    source, target = tables
    with warehouse_db.cursor() as cur:
        cur.execute("SET TIME ZONE 'Europe/Berlin'")  # a session zone unlike the source's: values stay exact
    first = load(shop_db, warehouse_db, source, target, None)
    assert (first.rows_read, first.written) == (100, 100)
    assert first.max_cursor == T0 + timedelta(minutes=100)
    assert rows(warehouse_db, target) == rows(shop_db, source)

    with shop_db.cursor() as cur:  # 10 rows change; one target row is already newer than its source
        cur.execute(
            f"UPDATE {source} SET name = name || '!', version = 2, updated_at = %s + id * interval '1 second'"
            " WHERE id %% 10 = 0",
            (T0 + timedelta(days=1),),
        )
    with warehouse_db.cursor() as cur:
        cur.execute(f"UPDATE {target} SET version = 9, name = 'newer' WHERE id = 50")
    second = load(shop_db, warehouse_db, source, target, first.max_cursor + timedelta(microseconds=1))
    assert second.rows_read == 10
    assert second.written == 9  # id 50: read, guarded, not written
    assert second.max_cursor == T0 + timedelta(days=1, seconds=100)
    want = [
        r if r[0] != 50 else (50, "newer", *r[2:4], rows(warehouse_db, target)[49][4], 9)
        for r in rows(shop_db, source)
    ]
    assert rows(warehouse_db, target) == want

    again = load(shop_db, warehouse_db, source, target, first.max_cursor + timedelta(microseconds=1))
    assert (again.rows_read, again.written) == (10, 0)  # a rerun of the window writes nothing
    assert rows(warehouse_db, target) == want
    with warehouse_db.cursor() as cur:  # the staging table is gone
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_cdclab_copy_upsert_%%'")
        assert cur.fetchone()[0] == 0


def test_an_empty_window_and_an_upper_bound(shop_db, warehouse_db, tables) -> None:
    source, target = tables
    empty = load(shop_db, warehouse_db, source, target, T0 + timedelta(days=9))
    assert (empty.rows_read, empty.written, empty.max_cursor) == (0, 0, None)
    part = load(shop_db, warehouse_db, source, target, T0, T0 + timedelta(minutes=11))
    assert (part.rows_read, part.written) == (10, 10)  # minutes 1..10: until is exclusive
    assert [r[0] for r in rows(warehouse_db, target)] == list(range(1, 11))


def test_null_cursors_and_naive_bounds_are_refused(shop_db, warehouse_db, tables) -> None:
    source, target = tables
    with pytest.raises(upsert.UpsertError, match="naive"):
        load(shop_db, warehouse_db, source, target, datetime(2026, 3, 29))  # noqa: DTZ001
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {source} SET updated_at = NULL WHERE id = 7")
    with pytest.raises(delta.NullCursorError, match="1 row"):
        load(shop_db, warehouse_db, source, target, None)
    assert rows(warehouse_db, target) == []


def test_in_a_transaction_nothing_is_visible_before_the_commit(shop_db, warehouse_db, tables, lab) -> None:
    source, target = tables
    import psycopg2

    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        result = load(shop_db, conn, source, target, None)
        assert result.written == 100
        assert rows(warehouse_db, target) == []  # not committed yet
        conn.commit()
        assert rows(warehouse_db, target) == rows(shop_db, source)
    finally:
        conn.close()


def test_a_null_cursor_outside_the_window_is_refused_too(shop_db, warehouse_db, tables) -> None:
    source, target = tables  # the NULL check rides in the window's COPY: it must not depend on since/until
    first = load(shop_db, warehouse_db, source, target, None)
    with shop_db.cursor() as cur:
        cur.execute(f"UPDATE {source} SET updated_at = NULL, version = 2 WHERE id IN (3, 4)")
        cur.execute(f"UPDATE {source} SET name = 'late', version = 2 WHERE id = 99")
    with pytest.raises(delta.NullCursorError, match="2 row"):
        load(shop_db, warehouse_db, source, target, first.max_cursor - timedelta(minutes=2), first.max_cursor)
    assert [r[1] for r in rows(warehouse_db, target)][98] == "n99"  # nothing written
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE '_cdclab_copy_upsert_%%'")
        assert cur.fetchone()[0] == 0


def test_a_key_twice_in_the_window_keeps_its_newest_version_by_the_guard(
    shop_db, warehouse_db, tables
) -> None:
    source, target = tables
    log = source.replace(".src", ".changes")  # a change log: no unique key, a key may come twice
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE {log} AS SELECT * FROM {source} WHERE id <= 3")
        cur.execute(  # id 2 again, newer by version but with an older cursor; id 3 again, older by version
            f"INSERT INTO {log} VALUES (2, 'v5', 2.00, DATE '2026-03-29', %s, 5),"
            " (3, 'v0', 3.00, DATE '2026-03-29', %s, 0)",
            (T0 + timedelta(seconds=30), T0 + timedelta(hours=1)),
        )
    result = load(shop_db, warehouse_db, log, target, None)
    assert (result.rows_read, result.written) == (5, 3)
    assert [(r[0], r[1], r[5]) for r in rows(warehouse_db, target)] == [
        (1, "n1", 1),
        (2, "v5", 5),
        (3, "n3", 1),
    ]
