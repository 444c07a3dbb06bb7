"""No test file imports another test file: shared test helpers live in helper modules
(``tests/integration/_*.py``, ``tests/unit/_*.py``, ``tests/conftest.py``, ``tests/dagrun.py``).

A test module imported by another runs its module-level code twice and ties the two files together:
renaming or deleting a test then breaks an unrelated one (issue 12, item 6; issue 13, item 4).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

TESTS = Path(__file__).resolve().parents[1]
TEST_MODULE = re.compile(r"^tests\.(integration|unit)\.test_\w*$")


def imported_test_modules(source: str) -> list[str]:
    """The ``tests.integration.test_*`` / ``tests.unit.test_*`` modules that ``source`` imports,
    however it spells the import (``from m import x``, ``import m``, ``from tests.unit import test_x``)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if TEST_MODULE.match(a.name)]
        elif (
            isinstance(node, ast.ImportFrom) and node.level > 0
        ):  # from .test_x import y / from . import test_x
            parts = [*(node.module or "").split("."), *(a.name for a in node.names)]
            found += [f"{'.' * node.level}{p}" for p in parts if p.startswith("test_")]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if TEST_MODULE.match(node.module):
                found.append(node.module)
            elif node.module in ("tests.integration", "tests.unit"):
                found += [
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if TEST_MODULE.match(f"{node.module}.{a.name}")
                ]
    return found


def test_the_check_sees_each_way_of_importing_a_test_module() -> None:
    source = (
        "from tests.integration.test_cdc_end_to_end import COLUMNS\n"
        "import tests.unit.test_intervals\n"
        "from tests.unit import test_schema_files, _schema_helpers\n"
        "from tests.integration._cdc_helpers import COLUMNS\n"
        "from tests.dagrun import run_dag\n"
        "from .test_cdc_hardening import made\n"
    )
    assert imported_test_modules(source) == [
        "tests.integration.test_cdc_end_to_end",
        "tests.unit.test_intervals",
        "tests.unit.test_schema_files",
        ".test_cdc_hardening",
    ]


def test_no_file_under_tests_imports_a_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS.parent)): found
        for path in sorted(TESTS.rglob("*.py"))
        if (found := imported_test_modules(path.read_text()))
    }
    assert offenders == {}, f"move the shared helpers into a helpers module (tests/*/_*.py): {offenders}"
