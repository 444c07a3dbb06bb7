"""cdclab.merge.upsert against Postgres: an older version never overwrites a newer one."""

from __future__ import annotations

import pytest

from cdclab.merge import upsert


@pytest.fixture
def target(scratch_table):
    return scratch_table("ups", "id bigint PRIMARY KEY, name text, version int NOT NULL")


def rows_of(conn, table):
    with conn.cursor() as cur:
        cur.execute(f"SELECT id, name, version FROM {table} ORDER BY id")
        return cur.fetchall()


def test_versions_are_guarded_and_counted(warehouse_db, target) -> None:
    first = upsert.upsert_rows(
        warehouse_db,
        target,
        [{"id": 1, "name": "a1", "version": 1}, {"id": 2, "name": "b2", "version": 2}],
        ["id"],
        "version",
    )
    assert first == upsert.UpsertResult(inserted=2, updated=0, skipped=0)
    second = upsert.upsert_rows(
        warehouse_db,
        target,
        [
            {"id": 1, "name": "a3", "version": 3},  # newer: updates
            {"id": 2, "name": "b1", "version": 1},  # older: skipped
            {"id": 2, "name": "b2", "version": 2},  # same version again: skipped (idempotent replay)
            {"id": 3, "name": "c1", "version": 1},  # new key
        ],
        ["id"],
        "version",
    )
    assert second == upsert.UpsertResult(inserted=1, updated=1, skipped=2)
    assert rows_of(warehouse_db, target) == [(1, "a3", 3), (2, "b2", 2), (3, "c1", 1)]


def test_without_a_guard_the_last_write_wins(warehouse_db, target) -> None:
    upsert.upsert_rows(warehouse_db, target, [{"id": 1, "name": "new", "version": 5}], ["id"])
    result = upsert.upsert_rows(warehouse_db, target, [{"id": 1, "name": "old", "version": 1}], ["id"])
    assert result == upsert.UpsertResult(0, 1, 0)
    assert rows_of(warehouse_db, target) == [(1, "old", 1)]


def test_delete_keys_counts_what_it_deleted(warehouse_db, target) -> None:
    upsert.upsert_rows(
        warehouse_db, target, [{"id": i, "name": str(i), "version": 1} for i in range(5)], ["id"]
    )
    assert upsert.delete_keys(warehouse_db, target, ["id"], [(1,), (3,), (99,)]) == 2
    assert [r[0] for r in rows_of(warehouse_db, target)] == [0, 2, 4]


def test_the_statement_text_quotes_every_identifier(warehouse_db) -> None:
    text = upsert.build_upsert("core.my table", ["id", "select"], ["id"], "select").as_string(warehouse_db)
    assert text == (
        'INSERT INTO "core"."my table" AS t ("id", "select") VALUES %s ON CONFLICT ("id") '
        'DO UPDATE SET "select" = EXCLUDED."select" WHERE "t"."select" < EXCLUDED."select" '
        "RETURNING (t.xmax = 0) AS inserted"
    )
