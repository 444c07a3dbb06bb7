"""The cdclab pytest plugin: the lab as an integration-test harness for your own pipelines.

Installed with the ``cdclab`` package, pytest loads it through the ``pytest11`` entry point
(``-p no:cdclab`` turns it off). It exports the lab's Airflow environment (``AIRFLOW_HOME``, the
metadata database, ``AIRFLOW_CONN_*``) when pytest starts, before a test imports Airflow, so
``dag.test()`` runs against the lab's own metadata database and DAGs find the lab's connections.

Fixtures (docs/harness.md has an example of each):
- ``lab`` (session): the running lab's :class:`~cdclab.lab.config.LabConfig`; reuses a healthy lab or
  starts one (compose: testcontainers' ``DockerCompose``; native: the native launcher). A lab that
  stays unhealthy fails the test, never skips it: the failure names each unhealthy service or connector
  and holds the status table and each one's log tail (:func:`unhealthy_report`).
- ``names``: per-test unique names for tables, topics, consumer groups and buckets.
- ``shop_db``, ``warehouse_db``: psycopg2 connections in **autocommit** mode (each statement is its
  own transaction, visible to Debezium and DAG runs at once), closed afterwards.
- ``workload``: a factory of deterministic shop changes in a test-owned id range, with their expected
  end state; the id ranges are deleted afterwards.
- ``kafka_topic``: a new topic (1 partition), deleted afterwards.
- ``s3_bucket``: a new MinIO bucket, emptied and deleted afterwards; ``s3`` is a boto3 client;
  ``make_s3_bucket()`` makes one more on each call (all cleaned up the same way).
- ``cdc_fence``: ``cdc_fence()`` blocks until Debezium has published every change committed so far.
- ``run_dag``: ``run_dag(dag_or_path, logical_date=..., conf=..., via="test"|"scheduler")``.
- ``assert_tables_equal``: ``assert_tables_equal("shop:public.x", "warehouse:core.x", key="id")``;
  ``where=`` / ``source_where=`` / ``target_where=`` compare only the rows a SQL filter selects.

A failed test that used ``lab`` prints the log tails of the services named by the test module's
``LOG_SERVICES`` list (default: connect and airflow-scheduler).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from cdclab.lab.config import LabConfig
from cdclab.testing import dags as _dags
from cdclab.testing import tables as _tables
from cdclab.testing.fence import cdc_fence as _fence

DEFAULT_LOG_SERVICES = ["connect", "airflow-scheduler"]
_CONFIG: LabConfig | None = None
_CONFIG_ERROR: Exception | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _CONFIG, _CONFIG_ERROR
    try:
        _CONFIG = LabConfig.load()
    except Exception as exc:  # reported by the first fixture that needs the lab, as a failure
        _CONFIG_ERROR = exc
        return
    os.environ.update(_CONFIG.airflow_env())
    os.environ.setdefault("TZ", "UTC")


def lab_config() -> LabConfig:
    """The lab's configuration; a clear failure when pytest cannot find the lab."""
    if _CONFIG is None:
        raise pytest.fail.Exception(
            f"cdclab: cannot load the lab's configuration ({_CONFIG_ERROR}); set CDCLAB_ROOT to a cdclab "
            "checkout (the folder holding infra/versions.env)"
        )
    return _CONFIG


# --------------------------------------------------------------------------------------------------
# the lab


Logs = Callable[[str, int], str]
"""``logs(service, lines)``: the last lines of a service's log (``Backend.logs``)."""


def log_tail(lab_name: str, service: str, logs: Logs, lines: int = 40) -> str:
    """``==> last lines of <service> (<backend>) <==`` and the lines; a log that cannot be read says why
    (it must not hide the failure it is printed for)."""
    try:
        text = logs(service, lines)
    except Exception as exc:
        text = f"(could not read the log: {exc})"
    return f"==> last lines of {service} ({lab_name}) <==\n{text or '(the log is empty)'}"


def print_logs(cfg: LabConfig, services: Sequence[str], lines: int = 40) -> None:
    """The last lines of each service's log, from whichever backend runs the lab."""
    from cdclab.lab.backend import backend

    lab = backend(cfg)
    for name in services:
        print("\n" + log_tail(lab.name, name, lab.logs, lines))


def unhealthy(rows: Sequence[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """``(what, service whose log explains it)`` for each status row that is not healthy. A service row
    names the service; a connector row (indented, under connect) names the connector, and its log is
    connect's."""
    bad = []
    for name, _address, state in rows:
        if state.startswith(("healthy", "RUNNING")):
            continue
        if name.startswith(" "):
            bad.append((f"{name.strip()} is {state}", "connect"))
        else:
            bad.append((f"{name} is {state}", name))
    return bad


def unhealthy_report(lab_name: str, rows: Sequence[tuple[str, str, str]], logs: Logs, lines: int = 40) -> str:
    """Why the lab is not healthy: each unhealthy service or connector, the status table, then the log
    tail of each service concerned (a failed connector: connect's)."""
    from cdclab.lab.native import format_table

    bad = unhealthy(rows)
    parts = [
        f"the lab ({lab_name}) is not healthy: " + "; ".join(what for what, _ in bad),
        format_table(list(rows)),
    ]
    parts += [log_tail(lab_name, service, logs, lines) for service in dict.fromkeys(s for _, s in bad)]
    return "\n".join(parts)


def wait_for_dag_processor(cfg: LabConfig, timeout: float = 300) -> None:
    """Wait until the dag-processor has registered every file of the lab's dags/ and of the user's DAG
    folder (``CDCLAB_USER_DAGS``), if set (a fresh lab parses them in its first minute). ``dag.test()`` writes the same ``dag`` rows; racing the first parse fails
    with a duplicate key on ``dag_id``."""
    import psycopg2

    folders = ([cfg.root / "dags"] if cfg.bundled_dags else []) + ([cfg.user_dags] if cfg.user_dags else [])
    expected = sum(len(list(folder.glob("*.py"))) for folder in folders)
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
        time.sleep(1)
    print(f"\ncdclab: the dag-processor registered {count} of {expected} DAG files in {timeout:.0f} s")


LAB_START_POLICIES = ("auto", "never")


def lab_start_policy() -> str:
    """``CDCLAB_LAB_START``: ``auto`` (default: reuse a healthy lab, else start it) or ``never``."""
    from cdclab.common.options import one_of

    return one_of(
        "CDCLAB_LAB_START", os.environ.get("CDCLAB_LAB_START", "auto") or "auto", LAB_START_POLICIES
    )


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[LabConfig]:
    """The running lab, through the backend interface (src/cdclab/lab/backend.py).

    A healthy lab is reused as it is. Otherwise: under compose, testcontainers' ``DockerCompose``
    starts compose.yaml with the env files (``up --build --wait``) and stops what it started at the
    end of the session; under native, the native launcher starts it (and leaves it running, as
    ``make up`` would). A lab still unhealthy then fails the test with :func:`unhealthy_report`: the
    unhealthy services (and connectors), the status table and their log tails.

    ``CDCLAB_LAB_START=never`` (a lab shared with others, e.g. one you also use from the UI): never
    start or restart anything; an unhealthy lab fails at once with the same report.
    """
    from cdclab.lab.backend import ComposeBackend, all_healthy, backend

    cfg = lab_config()
    lab = backend(cfg)
    started = None
    policy = lab_start_policy()
    if not all_healthy(lab.status()):
        if policy == "never":
            rows = lab.status()
            pytest.fail(
                unhealthy_report(lab.name, rows, lab.logs)
                + "\nCDCLAB_LAB_START=never: the fixture starts and restarts nothing; run `make up`.",
                pytrace=False,
            )
        if isinstance(lab, ComposeBackend):
            from cdclab.lab.backend import testcontainers_compose

            reporter = request.config.pluginmanager.get_plugin("terminalreporter")

            def echo(line: str) -> None:  # past pytest's capture, so a first start shows progress
                if reporter is not None:
                    reporter.write_line(line)
                    reporter.flush()  # stdout is block-buffered when it is a file (CI logs)
                else:
                    print(line, flush=True)

            echo("cdclab: no healthy lab; testcontainers starts compose.yaml (up --build --wait)")
            started = testcontainers_compose(cfg, echo)
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
        pytest.fail(unhealthy_report(lab.name, rows, lab.logs), pytrace=False)
    wait_for_dag_processor(cfg)
    yield cfg
    if started is not None:
        started.stop(down=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome: Any = yield
    report = outcome.get_result()
    uses_lab = "lab" in getattr(item, "fixturenames", ()) or item.get_closest_marker("integration")
    if report.when == "call" and report.failed and uses_lab and _CONFIG is not None:
        module = getattr(item, "module", None)
        print_logs(_CONFIG, getattr(module, "LOG_SERVICES", DEFAULT_LOG_SERVICES))


# --------------------------------------------------------------------------------------------------
# names and connections


class Names:
    """Per-test names: tables, topics and consumer groups that no other test uses. Every name handed
    out is recorded (``handed_out``); :attr:`markers` are the strings teardown matches on."""

    def __init__(self, test_name: str) -> None:
        slug = re.sub(r"[^a-z0-9]+", "_", test_name.lower()).strip("_")[-24:].strip("_")
        self.suffix = f"{slug}_{uuid.uuid4().hex[:6]}"
        self.handed_out: list[str] = []

    def __call__(self, prefix: str) -> str:
        name = f"{prefix}_{self.suffix}"[:63]
        self.handed_out.append(name)
        return name

    @property
    def markers(self) -> list[str]:
        """What teardown matches names on: the unique suffix, once a name was handed out (else nothing
        to do). A name whose 63-character cut lost the suffix is not matched: without its random part
        it could be someone else's (:attr:`cut_short` lists them)."""
        return [self.suffix] if self.handed_out else []

    @property
    def cut_short(self) -> list[str]:
        """Handed-out names that the 63-character cut left without the unique suffix."""
        return sorted({n for n in self.handed_out if self.suffix not in n})


@pytest.fixture(scope="session")
def _names_kafka_sweep(lab: LabConfig) -> Iterator[Any]:
    """The session's one Kafka teardown for every test's names (torn down before ``lab``)."""
    from cdclab.testing.cleanup import KafkaSweep

    sweep = KafkaSweep(lab)
    yield sweep
    sweep.run()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Iterator[Names]:
    """Per-test unique names. After a test that uses the lab, everything named from them is dropped:
    Connect connectors, tables and views (any schema) in shop and warehouse (and MariaDB if the test
    used it), inactive replication slots and publications whose names contain the test's unique suffix
    (:func:`cdclab.testing.cleanup.drop_named`); the Kafka topics and consumer groups named from them
    go at the end of the session, after one CDC fence for all tests (:class:`~cdclab.testing.cleanup.KafkaSweep`)."""
    made = Names(request.node.name)
    uses_lab = "lab" in request.fixturenames and _CONFIG is not None
    sweep = request.getfixturevalue("_names_kafka_sweep") if uses_lab else None
    yield made
    if made.markers and sweep is not None and _CONFIG is not None:
        from cdclab.testing.cleanup import NamesTeardownWarning, drop_named

        drop_named(_CONFIG, made.markers, kafka=False)
        sweep.add(made.markers)
        if made.cut_short:
            import warnings

            warnings.warn(
                f"cdclab names: {made.cut_short} lost the unique suffix to the 63-character cut and are "
                "not dropped after the test; use a shorter prefix",
                NamesTeardownWarning,
                stacklevel=1,
            )


def _connect(cfg: LabConfig, database: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(cfg.pg_dsn(database))
    conn.autocommit = True
    return conn


@pytest.fixture
def shop_db(lab: LabConfig) -> Iterator[Any]:
    """The shop (source) database, autocommit."""
    conn = _connect(lab, "shop")
    yield conn
    conn.close()


@pytest.fixture
def warehouse_db(lab: LabConfig) -> Iterator[Any]:
    """The warehouse (target) database, autocommit."""
    conn = _connect(lab, "warehouse")
    yield conn
    conn.close()


# --------------------------------------------------------------------------------------------------
# workload


class LabWorkload:
    """A :class:`~cdclab.workload.Workload` bound to the shop database: apply it, read its end state."""

    def __init__(self, conn: Any, spec: Any) -> None:
        self.conn = conn
        self.spec = spec

    @property
    def id_range(self) -> tuple[int, int]:
        return self.spec.id_range

    def apply(self, start: int = 0, stop: int | None = None, **kwargs: Any) -> Any:
        """Apply operations ``start .. stop-1`` (:func:`cdclab.workload.run_workload`)."""
        from cdclab import workload as wk

        return wk.run_workload(self.conn, self.spec, start=start, stop=stop, **kwargs)

    def expected(self, table: str, upto: int | None = None) -> list[dict[str, Any]]:
        """The rows the model says ``table`` holds in this id range after ``upto`` operations."""
        from cdclab import workload as wk

        return wk.expected_state(self.spec, upto)[table]  # type: ignore[index]

    def actual(self, table: str) -> list[dict[str, Any]]:
        """The rows Postgres holds for ``table`` in this id range (same columns as :meth:`expected`)."""
        from cdclab import workload as wk

        return wk.actual_state(self.conn, self.spec, table)  # type: ignore[arg-type]


@pytest.fixture
def workload(shop_db: Any, names: Names) -> Iterator[Callable[..., LabWorkload]]:
    """``workload(seed=1, ops=100, **fields)``: a workload in an id range of its own (every call gets
    another one); every range is deleted from the shop tables after the test."""
    from cdclab import workload as wk

    made: list[LabWorkload] = []

    def make(seed: int = 1, ops: int = 100, **fields: Any) -> LabWorkload:
        spec = wk.Workload(seed=seed, ops=ops, id_base=wk.id_base_for(names(f"wl{len(made)}")), **fields)
        made.append(LabWorkload(shop_db, spec))
        return made[-1]

    yield make
    for w in reversed(made):
        wk.reset_range(shop_db, w.spec)


# --------------------------------------------------------------------------------------------------
# Kafka and MinIO


@pytest.fixture
def kafka_topic(lab: LabConfig, names: Names) -> Iterator[str]:
    """A new topic with one partition, deleted after the test."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    topic = names("topic")
    for future in admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).values():
        future.result(30)
    yield topic
    for future in admin.delete_topics([topic], operation_timeout=30).values():
        future.result(60)


@pytest.fixture
def s3(lab: LabConfig) -> Any:
    """A boto3 S3 client for the lab's MinIO."""
    return lab.s3_client()


@pytest.fixture
def make_s3_bucket(s3: Any, names: Names) -> Iterator[Callable[[], str]]:
    """``make_s3_bucket()``: another new MinIO bucket on each call, for a test that needs more than
    ``s3_bucket``; every one is emptied and deleted after the test."""
    made: list[str] = []

    def make() -> str:
        prefix = "bkt" if not made else f"bkt{len(made) + 1}"
        bucket = names(prefix).replace("_", "-")[:63].strip("-")
        s3.create_bucket(Bucket=bucket)
        made.append(bucket)
        return bucket

    yield make
    for bucket in reversed(made):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)


@pytest.fixture
def s3_bucket(make_s3_bucket: Callable[[], str]) -> str:
    """A new MinIO bucket, emptied and deleted after the test."""
    return make_s3_bucket()


# --------------------------------------------------------------------------------------------------
# CDC, DAG runs, comparisons


@pytest.fixture
def cdc_fence(lab: LabConfig) -> Callable[..., str]:
    """``cdc_fence(timeout=180)``: returns once Debezium has published every change committed in
    ``shop`` before the call (see :mod:`cdclab.testing.fence`)."""

    def fence(timeout: float = 180) -> str:
        return _fence(lab, timeout=timeout)

    return fence


@pytest.fixture
def run_dag(lab: LabConfig) -> Callable[..., _dags.DagRunResult]:
    """``run_dag(dag_or_path, logical_date=None, conf=None, via="test", expect="success", dag_id=None)``:
    one DAG run; returns a :class:`~cdclab.testing.dags.DagRunResult` (state, tasks with states and
    logs); fails with the task states and the failed tasks' log tails when the state is not ``expect``."""

    def run(
        dag: Any,
        logical_date: Any = None,
        conf: dict[str, Any] | None = None,
        *,
        via: _dags.Via = "test",
        expect: str | None = "success",
        dag_id: str | None = None,
        timeout: float = 600,
    ) -> _dags.DagRunResult:
        __tracebackhide__ = True
        return _dags.run_dag(
            lab, dag, logical_date, conf, via=via, expect=expect, dag_id=dag_id, timeout=timeout
        )

    return run


@pytest.fixture
def assert_tables_equal(lab: LabConfig) -> Callable[..., _tables.TableDiff]:
    """``assert_tables_equal(source, target, key="id", columns=None, *, where=None, source_where=None,
    target_where=None)``: tables as ``"database:schema.table"`` (a lab database), ``(connection,
    "schema.table")`` or lists of dict rows; the ``*where`` filters limit the rows read from a table
    (both sides, or one; see :mod:`cdclab.testing.tables`)."""

    def check(
        source: _tables.TableRef,
        target: _tables.TableRef,
        key: str | Sequence[str] = "id",
        columns: Sequence[str] | None = None,
        *,
        where: _tables.Predicate | None = None,
        source_where: _tables.Predicate | None = None,
        target_where: _tables.Predicate | None = None,
    ) -> _tables.TableDiff:
        __tracebackhide__ = True
        return _tables.assert_tables_equal(
            source,
            target,
            key,
            columns,
            where=where,
            source_where=source_where,
            target_where=target_where,
            connect=lambda database: _connect(lab, database),
        )

    return check
