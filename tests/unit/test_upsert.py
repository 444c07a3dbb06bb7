"""Pure logic of cdclab.merge.upsert: in-batch de-duplication and the statement's shape."""

from __future__ import annotations

import pytest

from cdclab.merge import upsert


def test_the_newest_version_of_a_key_wins_inside_one_batch() -> None:
    rows = [
        {"id": 1, "v": 2, "x": "b"},
        {"id": 1, "v": 1, "x": "a"},
        {"id": 2, "v": 1, "x": "c"},
        {"id": 1, "v": 3, "x": "c"},
    ]
    kept, dropped = upsert.dedupe_by_key(rows, ["id"], "v")
    assert kept == [{"id": 1, "v": 3, "x": "c"}, {"id": 2, "v": 1, "x": "c"}]
    assert dropped == 2


def test_without_a_guard_the_last_row_of_a_key_wins() -> None:
    kept, dropped = upsert.dedupe_by_key([{"id": 1, "x": "a"}, {"id": 1, "x": "b"}], ["id"])
    assert kept == [{"id": 1, "x": "b"}]
    assert dropped == 1


def test_missing_key_column_is_a_clear_error() -> None:
    with pytest.raises(upsert.MissingColumnError, match="no key column"):
        upsert.dedupe_by_key([{"x": 1}], ["id"])


def test_guard_column_must_be_among_the_columns() -> None:
    with pytest.raises(upsert.MissingColumnError):
        upsert.build_upsert("core.t", ["id", "x"], ["id"], guard_column="version")


def test_upsert_needs_key_columns() -> None:
    with pytest.raises(upsert.UpsertError):
        upsert.build_upsert("core.t", ["id"], [])


def test_results_add_up() -> None:
    total = upsert.UpsertResult(1, 2, 3) + upsert.UpsertResult(4, 5, 6)
    assert total == upsert.UpsertResult(5, 7, 9)
    assert total.written == 12
