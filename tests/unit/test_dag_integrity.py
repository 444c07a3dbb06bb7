"""Every file in dags/ imports cleanly, opens no connection and reads no Variable at parse time,
and carries tags and documentation; curriculum DAGs follow the seed's naming."""

from __future__ import annotations

import importlib.util
import re
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))
SEED = ROOT / "docs" / "curriculum" / "seed-71-incremental-processing.md"
SHARED_SEED = ROOT.parent / "shared" / "spec" / "seed-71-incremental-processing.md"


class ParseTimeIO(AssertionError):
    pass


@pytest.fixture
def no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ParseTimeIO(f"network/database access at parse time: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import psycopg2

    monkeypatch.setattr(psycopg2, "connect", refuse)
    from airflow.sdk import Variable

    monkeypatch.setattr(Variable, "get", staticmethod(refuse))


def _curriculum() -> dict[str, set[str]]:
    """file name -> tags, as the seed lists them (``Filename: `x.py` | Tags: `['a', 'b']```)."""
    text = SEED.read_text() if SEED.exists() else ""
    return {
        name: set(re.findall(r"'([^']+)'", tags))
        for name, tags in re.findall(r"Filename: `([^`]+)` \| Tags: `(\[[^]]*\])`", text)
    }


CURRICULUM = _curriculum()


def _load_dags(path: Path) -> list:
    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location(f"dagfile_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    dags = [v for v in vars(module).values() if isinstance(v, DAG)]
    if not dags:  # @dag-decorated functions called at module level register nothing by name
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(path))
        assert not bag.import_errors, bag.import_errors
        dags = list(bag.dags.values())
    return dags


@pytest.mark.parametrize("path", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_without_io_and_is_documented(path: Path, no_io: None) -> None:
    dags = _load_dags(path)
    assert dags, f"{path.name} defines no DAG"
    for dag in dags:
        assert dag.tags, f"{dag.dag_id}: no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag.dag_id}: no doc_md"
        assert {"success", "failure"} & set(dag.tags), f"{dag.dag_id}: tags must say success or failure"
        if re.match(r"7\d_\d\d_\d\d_", path.name):
            assert dag.dag_id == path.stem, f"dag_id {dag.dag_id} must be the file stem {path.stem}"


def test_curriculum_file_names_come_from_the_seed() -> None:
    if not SEED.exists():
        pytest.fail(f"the curriculum seed is missing at {SEED}")
    if SHARED_SEED.exists():  # the team's copy beside the checkout: ours must not drift from it
        assert SEED.read_text() == SHARED_SEED.read_text(), (
            f"{SEED} differs from {SHARED_SEED}: copy it again"
        )
    names = set(re.findall(r"Filename: `([^`]+)`", SEED.read_text()))
    assert len(names) == 50
    present = {p.name for p in DAG_FILES if re.match(r"7\d_", p.name)}
    assert present <= names, f"DAG files not in the curriculum: {present - names}"


@pytest.mark.parametrize("name", sorted(CURRICULUM) or ["<seed missing>"])
def test_every_curriculum_dag_exists_with_its_dag_id_and_every_tag_the_curriculum_gives(
    name: str, no_io: None
) -> None:
    assert len(CURRICULUM) == 50, f"the seed at {SEED} lists {len(CURRICULUM)} DAGs with tags, not 50"
    path = ROOT / "dags" / name
    assert path.exists(), f"the curriculum's {name} is missing from dags/"
    dags = _load_dags(path)
    assert [d.dag_id for d in dags] == [path.stem], f"{name} must define one DAG with dag_id {path.stem}"
    missing = CURRICULUM[name] - set(dags[0].tags)
    assert not missing, f"{dags[0].dag_id} lacks the curriculum's tags {sorted(missing)}"
