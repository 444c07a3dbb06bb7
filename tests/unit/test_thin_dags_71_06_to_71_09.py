"""Issue 12 (thin DAGs): the DAGs whose steps live in ``cdclab.lessons.antipattern_runs``,
``.cdc_performance``, ``.investigations`` and ``.api_sync`` open no connection and run no SQL
themselves: no ``connect(...)`` call, no ``.execute(...)``, no ``sql.SQL`` reference."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
THIN = [
    "71_06_04_unbounded_state",
    "71_06_05_assuming_order",
    "71_07_03_cdc_performance",
    "71_07_04_merge_performance",
    "71_08_01_gap_investigation",
    "71_08_04_duplicate_detection",
    "71_09_03_api_sync",
]


def database_code(source: str) -> list[str]:
    """``connect(...)`` and ``.execute(...)`` calls and ``sql.SQL`` references in ``source``, by line."""
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
    return sorted(found, key=lambda s: int(s.split()[1].rstrip(":")))


def test_the_check_finds_each_kind_of_database_code() -> None:
    source = (
        "shop, wh = connect(SHOP), connect(WAREHOUSE)\n"
        "cur.execute(sql.SQL('SELECT count(*) FROM {}').format(t))\n"
        "lesson.detect_gaps(run)\n"
    )
    assert sorted(database_code(source)) == [
        "line 1: connect(...)",
        "line 1: connect(...)",
        "line 2: execute(...)",
        "line 2: sql.SQL",
    ]


@pytest.mark.parametrize("stem", THIN)
def test_the_dag_leaves_connections_and_sql_to_the_library(stem: str) -> None:
    assert database_code((DAGS / f"{stem}.py").read_text()) == []
