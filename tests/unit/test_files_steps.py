"""Issue 12 (thin DAGs) for the file-pipeline DAGs: their steps live in ``cdclab.files.steps``; the pure
parts (chunk table name, mapped chunk items, one entry per file for assembly) and the DAG files holding
no transaction, connection or SQL of their own."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cdclab.files import steps
from cdclab.files.chunking import Chunk
from cdclab.files.store import ObjectInfo

DAGS = Path(__file__).resolve().parents[2] / "dags"
THIN = [
    "71_04_01_file_detection",
    "71_04_02_manifest",
    "71_04_04_chunking",
    "71_04_05_archive",
    "71_09_02_log_processing",
]
OBJ = ObjectInfo("landing", "p/part-1.csv", 300, "e1", datetime(2026, 1, 1, 9, tzinfo=UTC))


def database_code(source: str) -> list[str]:
    """``transaction(...)``, ``connect(...)``, ``.execute(...)`` calls and ``sql.SQL`` references, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("transaction", "connect", "execute"):
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
        "steps.load_pending(p, t, q, 3)\n"
    )
    assert database_code(source) == [
        "line 1: transaction(...)",
        "line 2: execute(...)",
        "line 2: sql.SQL",
        "line 3: connect(...)",
    ]


@pytest.mark.parametrize("stem", THIN)
def test_the_dag_leaves_transactions_and_sql_to_the_library(stem: str) -> None:
    assert database_code((DAGS / f"{stem}.py").read_text()) == []


def test_the_chunk_table_defaults_to_the_target_with_a_chunks_suffix() -> None:
    assert steps.chunk_table_of("staging.partner_events") == "staging.partner_events_chunks"
    assert steps.chunk_table_of("staging.partner_events", "") == "staging.partner_events_chunks"
    assert steps.chunk_table_of("staging.partner_events", "scratch.c") == "scratch.c"


def test_a_file_plan_maps_one_item_per_chunk_each_carrying_its_file() -> None:
    plan = steps.FilePlan(OBJ, 10, [Chunk(0, 10, 150), Chunk(1, 150, 300)])
    items = plan.items()
    assert [(i["chunk_no"], i["start"], i["end"], i["data_start"]) for i in items] == [
        (0, 10, 150, 10),
        (1, 150, 300, 10),
    ]
    assert all(ObjectInfo.from_dict(i["obj"]) == OBJ for i in items)
    assert plan.summary == "s3://landing/p/part-1.csv: 300 bytes -> 2 chunk(s) from byte 10"


def test_assembly_visits_each_file_once_in_plan_order() -> None:
    other = ObjectInfo("landing", "p/part-0.csv", 50, "e0", datetime(2026, 1, 1, 8, tzinfo=UTC))
    items = (
        steps.FilePlan(OBJ, 10, [Chunk(0, 10, 150), Chunk(1, 150, 300)]).items()
        + steps.FilePlan(other, 0, [Chunk(0, 0, 50)]).items()
    )
    files = steps.files_of(items)
    assert [(f["obj"]["key"], f["data_start"]) for f in files] == [("p/part-1.csv", 10), ("p/part-0.csv", 0)]
    assert steps.files_of([]) == []
