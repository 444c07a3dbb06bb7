"""71_10_05_documentation: the generated document names every DAG and every state table, carries the
runbook, and follows the system as DAGs and state tables come and go; its TOC lands in state.docs_index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cdclab.files.store import ObjectStore
from cdclab.lessons import opsdocs
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, execute, rows, xcom

DAG_ID = "71_10_05_documentation"
DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture
def setup(warehouse_db, names, tmp_path):
    folder = tmp_path / "dags"
    folder.mkdir()
    for f in DAGS.glob("*.py"):
        shutil.copy(f, folder / f.name)
    conf = {
        "dags_folder": str(folder),
        "bucket": "lab-tests",
        "prefix": f"{names.suffix}/docs",
        "document": "ops.md",
    }
    extra = f"state.{names('doc')}"
    yield conf, folder, extra
    drop(warehouse_db, extra)
    ObjectStore().delete("lab-tests", [f"{conf['prefix']}/ops.md"])
    execute(
        warehouse_db,
        "DELETE FROM state.docs_index WHERE doc_uri = %s",
        (f"s3://lab-tests/{conf['prefix']}/ops.md",),
    )


def state_tables(warehouse_db):
    return [
        f"state.{t}"
        for (t,) in rows(
            warehouse_db,
            "information_schema.tables WHERE table_schema = 'state' AND table_type = 'BASE TABLE'",
            "table_name",
            "table_name",
        )
    ]


def document(conf):
    return ObjectStore().get("lab-tests", f"{conf['prefix']}/ops.md").decode()


def index(warehouse_db, conf):
    return rows(
        warehouse_db,
        f"state.docs_index WHERE doc_uri = 's3://lab-tests/{conf['prefix']}/ops.md'",
        "level, title, anchor",
        "position",
    )


def test_the_generated_document_follows_dags_and_state_tables_as_they_change(warehouse_db, setup) -> None:
    conf, folder, extra = setup
    # every file that declares a DAG (the integrity test makes dag_id == file stem)
    dag_ids = sorted(f.stem for f in folder.glob("*.py") if "dag(" in f.read_text().lower())
    tables = state_tables(warehouse_db)
    dr1 = run_dag(DAG_ID, None, conf)
    doc = document(conf)
    assert [d for d in dag_ids if f"### {d}\n" not in doc] == []
    assert [t for t in tables if f"### {t}\n" not in doc] == []
    for section in (
        "## Strategy documentation",
        "## State schema",
        "## Recovery runbook",
        "## Operations guide",
    ):
        assert section in doc
    assert "### Lost or wrong watermark" in doc and "### Failed or missing intervals" in doc
    # the DAG's own row: schedule and tags as written, the strategy from its docstring
    assert (
        '| `71_10_05_documentation` | `"@daily"` | 71.10, best-practice, reference, beginner, success | '
        "71.10.5 Incremental documentation — generated from the live system, so it cannot go stale |"
    ) in doc
    assert '`CronDataIntervalTimetable("@hourly", timezone="UTC")`' in doc
    toc = index(warehouse_db, conf)
    assert toc[0] == (2, "Strategy documentation", "strategy-documentation")
    assert [t for lvl, t, _ in toc if lvl == 2] == [
        "Strategy documentation",
        "State schema",
        "Recovery runbook",
        "Operations guide",
    ]
    assert xcom(dr1, "publish")["dags"] == len(dag_ids)

    # a new DAG file and a new state table appear in the next generation
    (folder / "zz_new_pipeline.py").write_text(
        '"""\n# New pipeline — loads things hourly\n\nIt reads the `things` table by updated_at.\n"""\n'
        "from airflow.sdk import dag\n\n\n@dag(dag_id='zz_new_pipeline', schedule='@hourly', tags=['x', 'success'])\n"
        "def p():\n    pass\n"
    )
    (folder / "helpers.py").write_text("X = 1\n")  # not a DAG: ignored
    execute(warehouse_db, f"CREATE TABLE {extra} (key text PRIMARY KEY, value bigint)")
    dr2 = run_dag(DAG_ID, None, conf)
    doc = document(conf)
    assert "| `zz_new_pipeline` | `'@hourly'` | x, success | New pipeline — loads things hourly |" in doc
    assert "It reads the `things` table by updated_at." in doc
    assert f"### {extra}\n\n| column | type |\n|---|---|\n| `key` | text |\n| `value` | bigint |\n" in doc
    assert "helpers" not in doc
    assert (3, extra, opsdocs.anchor(extra)) in index(warehouse_db, conf)
    assert xcom(dr2, "publish")["dags"] == len(dag_ids) + 1

    # and disappear when they are gone
    (folder / "zz_new_pipeline.py").unlink()
    drop(warehouse_db, extra)
    run_dag(DAG_ID, None, conf)
    doc = document(conf)
    assert "zz_new_pipeline" not in doc and extra not in doc
    assert all(t != extra for _, t, _ in index(warehouse_db, conf))


def test_a_folder_without_dags_fails_with_a_clear_error(tmp_path) -> None:
    with pytest.raises(opsdocs.NoDagsFoundError, match="point dags_folder"):
        opsdocs.read_dag_folder(tmp_path)
