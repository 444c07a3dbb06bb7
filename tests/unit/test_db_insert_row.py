"""cdclab.common.db.insert_row: one INSERT of a row given as column -> value (the SQL runs against the lab
in the perf and watermark integration tests; here the statement and the bound values)."""

from __future__ import annotations

from typing import Any

from cdclab.common.db import insert_row
from tests.unit._sql_text import text


class RecordingCursor:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def execute(self, statement: Any, params: Any) -> None:
        self.calls.append((text(statement), params))

    def fetchone(self) -> tuple[int]:
        return (42,)


def test_insert_row_binds_values_in_column_order() -> None:
    cur = RecordingCursor()
    assert insert_row(cur, "state.run_metrics", {"pipeline": "p", "rows_read": 3, "run_id": None}) is None
    assert cur.calls == [
        (
            'INSERT INTO "state"."run_metrics" ("pipeline", "rows_read", "run_id") VALUES (%s, %s, %s)',
            ["p", 3, None],
        )
    ]


def test_insert_row_returning_gives_the_column_of_the_new_row() -> None:
    cur = RecordingCursor()
    assert insert_row(cur, "perf_runs", {"experiment": "e"}, returning="id") == 42
    assert cur.calls == [('INSERT INTO "perf_runs" ("experiment") VALUES (%s) RETURNING "id"', ["e"])]
