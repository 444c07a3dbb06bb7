"""The shared warehouse tables are declared once, by the versioned files of infra/postgres/warehouse.

A table is *shared* when the library names it (``src/cdclab``) or two or more DAGs do: it must be
declared by a ``V<n>__<name>.sql`` file, so the lab creates it at start and no task has to. A table
that only one DAG names (its own default param, e.g. ``state.findings_71_08_01``) may stay created at
task time. ``cdclab.common.ddl.SHARED`` (the shared tables the ``ensure_*`` functions check with
``ddl.require``) must only name declared tables, with the version that declares them, and the library
holds no second copy of their DDL: no ``CREATE TABLE`` of a declared table in ``src/cdclab``, and
``ddl.ensure`` refuses a shared name.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from cdclab.common import ddl
from tests.unit._schema_helpers import ROOT, _versions, declared

pytestmark = pytest.mark.unit

SHARED_SCHEMAS = ("state", "dlq", "marts")
# not after "cdclab.": cdclab.state.watermarks, cdclab.state.backup are modules of the package cdclab/state/
NAME = re.compile(r"(?<!cdclab\.)\b(" + "|".join(SHARED_SCHEMAS) + r")\.([a-z_][a-z0-9_]*)\b")
NOT_TABLES = {"state.py"}  # a module path in prose, not a table


def _named_in(path: Path) -> set[str]:
    """Shared-schema table names in the string literals of a module (SQL, params, docstrings)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names |= {f"{s}.{t}" for s, t in NAME.findall(node.value)}
    return names - NOT_TABLES


def shared_names() -> dict[str, list[str]]:
    """Tables of the shared schemas named by the library or by two or more DAGs -> who names them."""
    by: dict[str, list[str]] = {}
    for path in sorted((ROOT / "src" / "cdclab").rglob("*.py")):
        for name in _named_in(path):
            by.setdefault(name, []).append(str(path.relative_to(ROOT)))
    dag_users: dict[str, list[str]] = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        for name in _named_in(path):
            dag_users.setdefault(name, []).append(path.name)
    for name, users in dag_users.items():
        if len(users) > 1 or name in by:
            by.setdefault(name, []).extend(users)
    return by


def test_versions_are_numbered_one_by_one_from_one() -> None:
    versions = [v for v, _, _ in _versions()]
    assert versions, "infra/postgres/warehouse holds no V<n>__<name>.sql"
    assert versions == list(range(1, len(versions) + 1))


def test_every_statement_is_idempotent() -> None:
    for _, _, path in _versions():
        text = re.sub(r"--[^\n]*", "", path.read_text())
        for stmt in filter(None, (s.strip() for s in text.split(";"))):
            head = " ".join(stmt.split()).upper()
            assert (
                "IF NOT EXISTS" in head
                or head.startswith(("CREATE OR REPLACE", "SET "))
                or _replaces_a_constraint(head)
            ), f"{path.name}: not idempotent: {stmt[:80]}"


REPLACE_CONSTRAINT = re.compile(
    r"ALTER TABLE (\S+) DROP CONSTRAINT IF EXISTS (\S+), ADD CONSTRAINT (\S+) (CHECK|UNIQUE|FOREIGN KEY) .*"
)


def _replaces_a_constraint(head: str) -> bool:
    """``ALTER TABLE t DROP CONSTRAINT IF EXISTS c, ADD CONSTRAINT c ...``: one statement that drops and
    adds the same constraint again is idempotent (how a CHECK's value list grows)."""
    m = REPLACE_CONSTRAINT.fullmatch(head)
    return m is not None and m[2] == m[3]


def test_a_constraint_is_replaced_only_by_itself() -> None:
    assert _replaces_a_constraint(
        "ALTER TABLE STATE.X DROP CONSTRAINT IF EXISTS X_CHECK, ADD CONSTRAINT X_CHECK CHECK (A > 0)"
    )
    assert not _replaces_a_constraint("ALTER TABLE STATE.X ADD CONSTRAINT X_CHECK CHECK (A > 0)")
    assert not _replaces_a_constraint(
        "ALTER TABLE STATE.X DROP CONSTRAINT IF EXISTS X_CHECK, ADD CONSTRAINT Y_CHECK CHECK (A > 0)"
    )


def test_every_shared_table_the_library_or_several_dags_name_is_declared() -> None:
    tables = declared()
    missing = {name: users for name, users in shared_names().items() if name not in tables}
    assert not missing, (
        "shared tables with no CREATE in infra/postgres/warehouse (add them to a new V<n>__<name>.sql): "
        f"{missing}"
    )


def test_the_ensure_fast_path_names_only_declared_tables_with_their_version() -> None:
    tables = declared()
    for name, version in ddl.SHARED.items():
        assert name in tables, f"ddl.SHARED names {name}, which no versioned file declares"
        assert version >= tables[name], f"{name} is declared by V{tables[name]}, SHARED says V{version}"
        assert version <= max(tables.values())


def test_the_known_shared_tables_are_found() -> None:
    """The scan is not vacuous: it sees the tables everybody knows are shared."""
    found = shared_names()
    for name in (
        "state.watermarks",
        "state.kafka_offsets",
        "state.processed_intervals",
        "dlq.file_quarantine",
    ):
        assert name in found


CREATES = re.compile(
    r"CREATE\s+(?:TABLE|(?:OR\s+REPLACE\s+)?VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?([a-z_]+\.[a-z_][a-z0-9_]*)",
    re.I,
)


def test_the_library_holds_no_copy_of_a_declared_tables_ddl() -> None:
    """The versioned files are the only definition of the shared tables (a copy in the library drifts)."""
    tables = declared()
    copies = []
    for path in sorted((ROOT / "src" / "cdclab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                copies += [
                    f"{path.relative_to(ROOT)}: {name}"
                    for name in CREATES.findall(node.value)
                    if name in tables
                ]
    assert copies == [], f"DDL of tables that infra/postgres/warehouse declares: {copies}"


def test_ensure_refuses_a_shared_table_before_touching_the_database() -> None:
    for name in ddl.SHARED:
        with pytest.raises(ValueError, match="shared table"):
            ddl.ensure(None, name, f"CREATE TABLE IF NOT EXISTS {name} (id int)")


def test_require_knows_only_shared_tables() -> None:
    with pytest.raises(KeyError, match="not a shared table"):
        ddl.require(None, "staging.some_lessons_target")
