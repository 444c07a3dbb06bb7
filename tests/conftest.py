"""Shared fixtures: one lab stack per test run, isolation by names.

- The lab's environment (AIRFLOW_HOME, metadata DB, AIRFLOW_CONN_*) is exported at import time, before
  anything imports Airflow, so ``dag.test()`` runs against the lab's own metadata database.
- ``lab`` (session): uses the running lab when every service is healthy, otherwise starts it through
  the backend interface (compose via testcontainers, or the native launcher); see ``lab`` below.
- Tests under ``tests/unit`` get the ``unit`` marker, tests under ``tests/integration`` get
  ``integration``; ``pytest -m unit`` needs no running service.
- ``names`` gives each test its own table, topic and consumer-group names.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdclab.lab.config import LabConfig

CFG = LabConfig.load()
os.environ.update(CFG.airflow_env())
os.environ.setdefault("TZ", "UTC")
ROOT = CFG.root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tests that restart shared services run last, so they cannot disturb the others
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)
    for item in items:
        path = Path(str(item.fspath))
        if "integration" in path.parts:
            item.add_marker(pytest.mark.integration)
        elif not any(m.name == "integration" for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


def _print_logs(cfg: LabConfig, services: list[str]) -> None:
    """The last lines of each service's log, from whichever backend runs the lab."""
    from cdclab.lab.backend import backend

    lab = backend(cfg)
    for name in services:
        try:
            text = lab.logs(name, 40)
        except Exception as exc:  # a failing log read must not hide the test's own failure
            text = f"(could not read the log: {exc})"
        print(f"\n==> last lines of {name} ({lab.name}) <==\n{text}")


def _wait_for_dag_processor(cfg: LabConfig, timeout: float = 300) -> None:
    """Wait until the dag-processor has registered every file of dags/ (a fresh lab parses them in
    its first minute). ``dag.test()`` writes the same ``dag`` rows; racing the first parse fails with
    a duplicate key on ``dag_id``."""
    import time

    import psycopg2

    expected = len(list((cfg.root / "dags").glob("*.py")))
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        conn = psycopg2.connect(cfg.pg_dsn("airflow"))
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM dag WHERE NOT is_stale")
                count = cur.fetchone()[0]
        finally:
            conn.close()
        if count >= expected:
            return
        time.sleep(3)
    print(f"\ncdclab: the dag-processor registered {count} of {expected} DAG files in {timeout:.0f} s")


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[LabConfig]:
    """The running lab, through the backend interface (src/cdclab/lab/backend.py).

    A healthy lab is reused as it is. Otherwise: under compose, testcontainers' ``DockerCompose``
    starts compose.yaml with the env files (``up --build --wait``) and stops what it started at the
    end of the session; under native, the native launcher starts it (and leaves it running, as
    ``make up`` would).
    """
    from cdclab.lab.backend import ComposeBackend, all_healthy, backend, format_table

    lab = backend(CFG)
    started = None
    if not all_healthy(lab.status()):
        if isinstance(lab, ComposeBackend):
            from cdclab.lab.backend import testcontainers_compose

            reporter = request.config.pluginmanager.get_plugin("terminalreporter")

            def echo(line: str) -> None:  # past pytest's capture, so a first start shows progress
                if reporter is not None:
                    reporter.write_line(line)

            echo("cdclab: no healthy lab; testcontainers starts compose.yaml (up --build --wait)")
            started = testcontainers_compose(CFG, echo)
            try:
                started.start()
            except Exception:
                stdout, stderr = started.get_logs()
                print("\n".join((stdout + stderr).splitlines()[-200:]))
                raise
        else:
            lab.up()
    rows = lab.status()
    if not all_healthy(rows):
        _print_logs(
            CFG, [r[0] for r in rows if not r[2].startswith(("healthy", "RUNNING")) and r[0][0] != " "]
        )
        pytest.fail(f"the lab ({lab.name}) is not healthy:\n" + format_table(rows))
    _wait_for_dag_processor(CFG)
    yield CFG
    if started is not None:
        started.stop(down=True)


class Names:
    """Per-test names: tables, topics and consumer groups that no other test uses."""

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[-24:].strip("_")
        self.suffix = f"{slug}_{uuid.uuid4().hex[:6]}"

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_{self.suffix}"[:63]


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Names:
    return Names(request.node.name)


@pytest.fixture
def shop_db(lab: LabConfig) -> Iterator[object]:
    import psycopg2

    conn = psycopg2.connect(lab.pg_dsn("shop"))
    conn.autocommit = True
    yield conn
    conn.close()


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


@pytest.fixture
def warehouse_db(lab: LabConfig) -> Iterator[object]:
    import psycopg2

    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and "integration" in {m.name for m in item.iter_markers()}:
        services = getattr(item.module, "LOG_SERVICES", ["connect", "airflow-scheduler"])
        _print_logs(CFG, services)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped test, or a run in which no integration test ran, is a failure, not a pass."""
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = len(reporter.stats.get("skipped", []))
    passed = reporter.stats.get("passed", [])
    ran_integration = any("integration" in r.keywords for r in passed if hasattr(r, "keywords"))
    if skipped:
        print(f"\ncdclab CI: {skipped} test(s) skipped; skipping is not allowed here")
        session.exitstatus = 1
    if not session.config.option.markexpr and not ran_integration:
        print("\ncdclab CI: no integration test passed; a run that did not touch the stack is not green")
        session.exitstatus = 1
