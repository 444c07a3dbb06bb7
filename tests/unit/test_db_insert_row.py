"""cdclab.common.db.insert_row: one INSERT of a row given as column -> value (the SQL runs against the lab
in the perf and watermark integration tests; here the statement's parts and the bound values)."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from cdclab.common.db import insert_row


class RecordingCursor:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []

    def execute(self, statement: Any, params: Any) -> None:
        self.calls.append((statement, params))

    def fetchone(self) -> tuple[int]:
        return (42,)


def _parts(composable: Any) -> list[Any]:
    """The leaves of a composed statement: SQL text, identifier names and placeholders, in order."""
    if isinstance(composable, sql.Composed):
        return [leaf for part in composable.seq for leaf in _parts(part)]
    if isinstance(composable, sql.SQL):
        return [composable.string]
    if isinstance(composable, sql.Identifier):
        return [composable.strings]
    if isinstance(composable, sql.Placeholder):
        return ["%s"]
    raise AssertionError(composable)


def test_insert_row_binds_values_in_column_order() -> None:
    cur = RecordingCursor()
    assert insert_row(cur, "state.run_metrics", {"pipeline": "p", "rows_read": 3, "run_id": None}) is None
    (statement, params) = cur.calls[0]
    assert params == ["p", 3, None]
    text = "".join(p if isinstance(p, str) else ".".join(p) for p in _parts(statement))
    assert text == "INSERT INTO state.run_metrics (pipeline, rows_read, run_id) VALUES (%s, %s, %s)"


def test_insert_row_returning_gives_the_column_of_the_new_row() -> None:
    cur = RecordingCursor()
    assert insert_row(cur, "perf_runs", {"experiment": "e"}, returning="id") == 42
    (statement, params) = cur.calls[0]
    text = "".join(p if isinstance(p, str) else ".".join(p) for p in _parts(statement))
    assert text == "INSERT INTO perf_runs (experiment) VALUES (%s) RETURNING id"
    assert params == ["e"]
