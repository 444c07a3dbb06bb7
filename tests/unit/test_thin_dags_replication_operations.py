"""Issue 12 (thin DAGs): the DAGs whose steps live in ``cdclab.lessons.replication``, ``.operations``,
``.dw_loading``, ``cdclab.exactly_once`` and ``cdclab.streams`` open no connection and run no SQL themselves:
no ``connect(...)`` call, no ``.execute(...)``, no ``sql.SQL``. (Widen ``THIN`` to every DAG once all of
them are thin.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
THIN = [
    "71_03_02_kafka_cdc",
    "71_05_01_exactly_once",
    "71_09_01_db_replication",
    "71_09_04_dw_loading",
    "71_09_05_event_stream",
    "71_10_01_strategy_selection",
    "71_10_03_error_recovery",
    "71_10_04_monitoring",
    "71_10_05_documentation",
]


def database_code(source: str) -> list[str]:
    """``connect(...)`` calls, ``.execute(...)`` calls and ``sql.SQL`` references in ``source``, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("connect", "execute"):
                found.append(f"line {node.lineno}: {name}(...)")
        elif isinstance(node, ast.Attribute) and node.attr == "SQL":
            if isinstance(node.value, ast.Name) and node.value.id == "sql":
                found.append(f"line {node.lineno}: sql.SQL")
    return found


def test_the_check_finds_each_kind_of_database_code() -> None:
    source = (
        "wh = connect(WAREHOUSE)\n"
        "x = db.connect('shop')\n"
        "cur.execute('SELECT 1')\n"
        "q = sql.SQL('SELECT {}')\n"
        "lesson.load(conn_id='warehouse')\n"
    )
    assert database_code(source) == [
        "line 1: connect(...)",
        "line 2: connect(...)",
        "line 3: execute(...)",
        "line 4: sql.SQL",
    ]


@pytest.mark.parametrize("stem", THIN)
def test_the_dag_leaves_connections_and_sql_to_the_library(stem: str) -> None:
    assert database_code((DAGS / f"{stem}.py").read_text()) == []
