"""Project-only test rules; the fixtures come from the cdclab pytest plugin (src/cdclab/testing/plugin.py).

- The plugin (``lab``, ``names``, ``shop_db``, ``warehouse_db``, ``workload``, ``kafka_topic``,
  ``s3_bucket``, ``make_s3_bucket``, ``cdc_fence``, ``run_dag``, ``assert_tables_equal``) loads through the package's
  ``pytest11`` entry point; a virtual environment synced before the entry point existed gets it
  registered here. The plugin exports the lab's environment (AIRFLOW_HOME, metadata DB,
  AIRFLOW_CONN_*) before anything imports Airflow, so ``dag.test()`` runs against the lab's own
  metadata database; this file does it too, at import time, as it always did.
- Tests under ``tests/unit`` get the ``unit`` marker, tests under ``tests/integration`` get
  ``integration``; ``pytest -m unit`` needs no running service.
- A skipped test fails the run, in CI and outside it (the failure lists each skipped test and why).
  In CI a run in which no integration test passed fails too. On a machine without the Compose CLI the
  Makefile's test targets set ``CDCLAB_NO_COMPOSE_CLI=1``: the compose.yaml checks that need it
  (marker ``compose_cli``) are deselected, with a line in the summary saying so.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cdclab.lab.config import LabConfig

# Every DAG through the real scheduler, twice (about 7 minutes): its own target, `make test-all-dags`,
# not part of `make test` while some DAGs still fail it on a live lab (issue 9's notes list them).
collect_ignore = [] if os.environ.get("CDCLAB_ALL_DAGS") else ["integration/test_all_dags_scheduler.py"]

CFG = LabConfig.load()
os.environ.update(CFG.airflow_env())
os.environ.setdefault("TZ", "UTC")
ROOT = CFG.root
_NOTES: list[str] = []  # lines for the terminal summary


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if manager.get_plugin("cdclab") is None and not manager.is_blocked("cdclab"):
        manager.register(importlib.import_module("cdclab.testing.plugin"), "cdclab")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CDCLAB_NO_COMPOSE_CLI"):
        # set by the Makefile on a machine without the Compose CLI: deselected (and said), never skipped
        cli = [item for item in items if item.get_closest_marker("compose_cli")]
        if cli:
            items[:] = [item for item in items if not item.get_closest_marker("compose_cli")]
            config.hook.pytest_deselected(items=cli)
            _NOTES.append(
                f"cdclab: deselected {len(cli)} compose.yaml check(s) that need the Compose CLI "
                "(CDCLAB_NO_COMPOSE_CLI=1: none on this machine; `make engine` installs it)"
            )
    # tests that restart shared services run last, so they cannot disturb the others
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif not any(m.name == "integration" for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def scratch_table(warehouse_db: Any, names: Any) -> Iterator[Callable[[str, str], str]]:
    """``make(prefix, columns_sql)``: a table ``staging.<unique name>`` of those columns, created now in
    the warehouse and dropped after the test."""
    made: list[str] = []

    def make(prefix: str, columns: str) -> str:
        table = f"staging.{names(prefix)}"
        with warehouse_db.cursor() as cur:
            cur.execute(f"CREATE TABLE {table} ({columns})")
        made.append(table)
        return table

    yield make
    with warehouse_db.cursor() as cur:
        for table in made:
            cur.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def lab_workload_paused(lab: LabConfig) -> Iterator[None]:
    """The lab's workload service (cdclab.lab.shop_workload) changes nothing while the test runs.

    For tests that compare the shop's own tables (``public.customers`` ...) with a target. Once the pause
    has committed, the service applies nothing more (it reads the flag under the row's lock); the
    previous state is restored after. A lab without the service is left alone."""
    import psycopg2

    from cdclab.lab import shop_workload as sw

    conn = psycopg2.connect(lab.pg_dsn("shop"))
    try:
        was: bool | None = sw.read_control(conn).paused
    except (sw.ControlRowMissingError, psycopg2.errors.UndefinedTable):
        conn.rollback()
        was = None
    if was is False:
        sw.set_control(conn, paused=True)
    yield
    if was is False:
        sw.set_control(conn, paused=False)
    conn.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in _NOTES:
        terminalreporter.write_line(note, yellow=True)


def skipped_summary(reports: list[Any]) -> str:
    """One line per skipped test: its id and the reason pytest recorded."""
    lines = []
    for report in reports:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        lines.append(f"  {report.nodeid}: {reason}")
    return "\n".join(lines)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run, everywhere: a skip is not a pass. In CI, a run in which no
    integration test passed fails too (a run that did not touch the stack is not green)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.ensure_newline()
        reporter.write_line(
            f"cdclab: {len(skipped)} test(s) skipped; a skip fails the run (fix the cause, or deselect "
            "the test visibly):\n" + skipped_summary(skipped),
            red=True,
        )
        session.exitstatus = 1
    if not os.environ.get("CI"):
        return
    passed = reporter.stats.get("passed", [])
    ran_integration = any("integration" in r.keywords for r in passed if hasattr(r, "keywords"))
    if not session.config.option.markexpr and not ran_integration:
        reporter.ensure_newline()
        reporter.write_line(
            "cdclab CI: no integration test passed; a run that did not touch the stack is not green"
        )
        session.exitstatus = 1
