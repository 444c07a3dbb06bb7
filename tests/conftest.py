"""Shared fixtures: one lab stack per test run, isolation by names.

- The lab's environment (AIRFLOW_HOME, metadata DB, AIRFLOW_CONN_*) is exported at import time, before
  anything imports Airflow, so ``dag.test()`` runs against the lab's own metadata database.
- ``lab`` (session): uses the running lab when every service is healthy, otherwise starts it
  (native launcher; through compose when LAB_BACKEND=compose).
- Tests under ``tests/unit`` get the ``unit`` marker, tests under ``tests/integration`` get
  ``integration``; ``pytest -m unit`` needs no running service.
- ``names`` gives each test its own table, topic and consumer-group names.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdclab.lab.config import ENV_FILES, LabConfig

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
    for name in services:
        path = cfg.log_file(name)
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-40:]
            print(f"\n==> last lines of {path} <==\n" + "\n".join(tail))


def _backend() -> str:
    """``LAB_BACKEND`` if set, else compose when a Docker engine answers, else native (as ``make up``)."""
    if os.environ.get("LAB_BACKEND"):
        return os.environ["LAB_BACKEND"]
    try:
        engine = subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        engine = False
    return "compose" if engine else "native"


@pytest.fixture(scope="session")
def lab() -> LabConfig:
    from cdclab.lab import native

    if _backend() == "compose":
        # A Docker engine answers: the same stack from official images, started and awaited by
        # testcontainers (docker compose up --wait on compose.yaml with the same env files).
        from testcontainers.compose import DockerCompose

        compose = DockerCompose(
            context=str(ROOT),
            compose_file_name="compose.yaml",
            build=True,
            wait=True,
            env_file=[f"infra/{name}" for name in ENV_FILES],
        )
        compose.start()
        return CFG
    rows = native.status(CFG)
    if not native.all_healthy(rows):
        native.up(CFG)
        rows = native.status(CFG)
    if not native.all_healthy(rows):
        _print_logs(CFG, [s.name for s in native.SERVICES])
        pytest.fail("the lab is not healthy:\n" + native.format_table(rows))
    return CFG


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
