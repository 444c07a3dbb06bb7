"""Issue 12 (thin DAGs): every DAG in ``dags/`` leaves transactions, connections and SQL to the library.

A DAG file holds its lesson's docstring, schedule, params and task wiring; each task calls a named step
in ``cdclab`` (``cdclab.lessons.*`` for lesson-specific steps, the concept packages otherwise). No DAG
calls ``transaction(...)``, ``connect(...)``, ``.execute(...)`` or ``.cursor(...)``, and none builds
``sql.SQL``. (SQL in a docstring, to show the idea, is fine: docstrings are not code.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DATABASE_CALLS = ("transaction", "connect", "execute", "executemany", "cursor")


def database_code(source: str) -> list[str]:
    """The database calls and ``sql.SQL`` references in ``source``, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in DATABASE_CALLS:
                found.append((node.lineno, f"{name}(...)"))
        elif isinstance(node, ast.Attribute) and node.attr == "SQL":
            if isinstance(node.value, ast.Name) and node.value.id == "sql":
                found.append((node.lineno, "sql.SQL"))
    return [f"line {n}: {what}" for n, what in sorted(found)]


def test_the_check_finds_each_kind_of_database_code() -> None:
    source = (
        "with transaction(WAREHOUSE) as cur:\n"
        "    cur.execute(sql.SQL('SELECT 1 FROM {}').format(t))\n"
        "conn = db.connect(SHOP)\n"
        "with conn.cursor() as c: c.executemany('INSERT', rows)\n"
        "steps.load_pending(p, t, q, 3)\n"
        '"""SELECT * FROM shop.orders WHERE updated_at > :watermark"""\n'
    )
    assert database_code(source) == [
        "line 1: transaction(...)",
        "line 2: execute(...)",
        "line 2: sql.SQL",
        "line 3: connect(...)",
        "line 4: cursor(...)",
        "line 4: executemany(...)",
    ]


def test_every_dag_file_is_checked() -> None:
    assert len(sorted(DAGS.glob("71_*.py"))) == 50


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.stem)
def test_the_dag_leaves_transactions_connections_and_sql_to_the_library(path: Path) -> None:
    assert database_code(path.read_text()) == []
