"""cdclab.common.db.insert_rows against Postgres: one row per tuple, an ON CONFLICT clause when given,
and a clear error for a row that does not fit the columns."""

from __future__ import annotations

import pytest

from cdclab.common.db import insert_rows


@pytest.fixture
def target(scratch_table):
    return scratch_table("ins", "id bigint PRIMARY KEY, tags text[], note text")


def rows_of(conn, table):
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, tags, note FROM {table} ORDER BY id")
        return cur.fetchall()


def test_inserts_each_row_and_applies_on_conflict(warehouse_db, target) -> None:
    with warehouse_db.cursor() as cur:
        assert insert_rows(cur, target, ("id", "tags", "note"), [(1, ["a"], "x"), (2, [], None)]) == 2
        assert insert_rows(cur, target, ("id", "note"), iter([])) == 0
        sent = insert_rows(
            cur,
            target,
            ("id", "note"),
            [(2, "y"), (3, "z")],
            on_conflict="ON CONFLICT (id) DO UPDATE SET note = EXCLUDED.note",
        )
        assert sent == 2
    assert rows_of(warehouse_db, target) == [(1, ["a"], "x"), (2, [], "y"), (3, None, "z")]


def test_refuses_rows_that_do_not_fit_the_columns(warehouse_db, target) -> None:
    with warehouse_db.cursor() as cur:
        with pytest.raises(ValueError, match=r"3 values for 2 columns \('id', 'note'\)"):
            insert_rows(cur, target, ("id", "note"), [(1, "a", "b")])
        with pytest.raises(ValueError, match="no columns"):
            insert_rows(cur, target, (), [()])
    assert rows_of(warehouse_db, target) == []
