"""The native launcher: the whole lab as plain processes, for machines without a Docker engine.

Every service has a pid file (``<state>/run/<name>.pid``), a log file (``<state>/logs/<name>.log``),
a readiness check with a timeout, and on failure a :class:`ServiceError` that names the service, its
log file and the log's last lines. ``up`` is idempotent (a healthy service is left alone) and, when a
service fails to start, stops what this call started, so nothing is left half-started.

Only processes the launcher started are ever signalled: next to each pid file a record
(``<name>.pid.json``, :class:`ProcessRecord`) keeps the process's start time (``/proc/<pid>/stat``
field 22) and command line. A pid file whose process is not that one any more (the pid was reused) is
removed and the process left alone. Every server binds ``LAB_HOST`` (127.0.0.1).

What must already be on the machine (``infra/native/bootstrap.sh`` installs it): PostgreSQL server
binaries with wal2json, Java 17+, the Kafka/Connect/Debezium jars under the cache, the MinIO binary,
and this virtual environment (Airflow).

Modules: :mod:`cdclab.lab.processes` (pids, records, ports, process trees, :class:`ServiceError`),
:mod:`cdclab.lab.service` (the :class:`Service` base), :mod:`cdclab.lab.stores` (Postgres, MinIO,
MariaDB), :mod:`cdclab.lab.brokers` (Kafka, Connect, connectors), :mod:`cdclab.lab.apps` (Maxwell,
partner API, workload, Airflow), :mod:`cdclab.lab.supervisor` (restarts a service that died, as
compose's ``restart: unless-stopped``; ``up`` marks what it started as wanted, ``down`` what it stopped
as stopped on purpose); this module orders them (:data:`SERVICES`) and runs ``up``, ``down``,
``status`` and ``clean``. Their public names are importable from here as before.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterable

from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab import supervisor
from cdclab.lab.apps import (
    Airflow,
    MaxwellProducer,
    PartnerAPI,
    WorkloadService,
    airflow_command,
    airflow_component_healthy,
    prepare_airflow,
    write_private,
)
from cdclab.lab.brokers import (
    Connect,
    Java,
    Kafka,
    connector_state,
    register_connectors,
    wait_connector_running,
)
from cdclab.lab.config import LabConfig
from cdclab.lab.processes import (
    ProcessRecord,
    ServiceError,
    descendants,
    forget,
    gone,
    http_get,
    pid_alive,
    port_open,
    port_owner,
    proc_cmdline,
    proc_start_ticks,
    progress,
    read_record,
    record_file,
    wait_for,
    write_record,
)
from cdclab.lab.service import (
    Service,
)
from cdclab.lab.stores import (
    BUCKETS,
    PG_BIN_CANDIDATES,
    MariaDB,
    MinIO,
    Postgres,
    create_buckets,
)

SERVICES: list[Service] = [
    Postgres(),
    Kafka(),
    Connect(),
    MinIO(),
    MariaDB(),
    MaxwellProducer(),
    PartnerAPI(),
    WorkloadService(),
    Airflow("api-server"),
    Airflow("scheduler"),
    Airflow("dag-processor"),
    Airflow("triggerer"),
]


def service(name: str) -> Service:
    for svc in SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"unknown service {name!r}; one of {[s.name for s in SERVICES]}")


def select(only: Iterable[str] | None) -> list[Service]:
    if not only:
        return list(SERVICES)
    wanted = set(only)
    return [s for s in SERVICES if s.name in wanted or s.name.split("-")[0] in wanted]


def up(cfg: LabConfig, only: Iterable[str] | None = None) -> list[tuple[str, str, str]]:
    """Start every service that is not healthy yet; on failure stop what this call started.

    Each service is *wanted* once healthy (:mod:`cdclab.lab.supervisor` restarts it when it dies); what
    a failed ``up`` stops again is not. Holds the launcher lock (no supervisor restart meanwhile)."""
    with supervisor.launcher_lock(cfg):
        return _up(cfg, only)


def _up(cfg: LabConfig, only: Iterable[str] | None) -> list[tuple[str, str, str]]:
    started: list[Service] = []
    current: Service | None = None
    before: tuple[int, int | None] | None = None
    t0 = time.monotonic()
    try:
        for svc in select(only):
            current, before = svc, svc.instance(cfg)
            if svc.healthy(cfg) and svc.pid(cfg) is not None:
                progress(f"{svc.name}: already healthy")
                if svc.name in ("postgres", "mariadb"):
                    svc.initialise(cfg)  # type: ignore[attr-defined]
                elif svc.name == "connect":
                    register_connectors(cfg)
                supervisor.want(cfg, svc.name, "up")
                continue
            if svc.pid(cfg) is not None:  # running but unhealthy: restart it
                progress(f"{svc.name}: running but not healthy, restarting")
                svc.stop(cfg)
            t = time.monotonic()
            svc.start(cfg)
            started.append(svc)
            supervisor.want(cfg, svc.name, "up")
            progress(f"{svc.name}: ready in {time.monotonic() - t:.1f}s")
    except BaseException:
        # the failing service may have left a process behind before it raised: stop it only when this
        # call started it (a new instance), never a process that ran before or one that is not ours
        now = current.instance(cfg) if current is not None and current not in started else None
        failing = [current] if current is not None and now is not None and now != before else []
        for svc in reversed(started + failing):
            if svc in started:
                supervisor.unwant(cfg, svc.name)
            try:
                svc.stop(cfg)
            except Exception as exc:  # keep stopping the rest
                print(f"  ! stopping {svc.name}: {exc}", file=sys.stderr)
        raise
    progress(f"lab up in {time.monotonic() - t0:.1f}s")
    return status(cfg)


def down(cfg: LabConfig, only: Iterable[str] | None = None) -> None:
    """Stop services on purpose (the supervisor leaves them down); the whole lab: the supervisor first."""
    if not only:
        if supervisor.running_pid(cfg) is not None:
            progress("supervisor: stopping")
        supervisor.stop(cfg)
    with supervisor.launcher_lock(cfg):
        for svc in reversed(select(only)):
            supervisor.unwant(cfg, svc.name)
            if svc.pid(cfg) is not None:
                progress(f"{svc.name}: stopping")
            svc.stop(cfg)


def status(cfg: LabConfig) -> list[tuple[str, str, str]]:
    rows = []
    for svc in SERVICES:
        pid = svc.pid(cfg)
        if pid is None:
            state = "stopped"
        elif svc.healthy(cfg):
            state = "healthy"
        else:
            state = "unhealthy"
        rows.append((svc.name, svc.address(cfg), state if pid is None else f"{state} (pid {pid})"))
        if svc.name == "connect" and state == "healthy":
            for path in sorted((cfg.root / "connectors").glob("*.json")):
                name = json.loads(path.read_text())["name"]
                cstate, tasks, _ = connector_state(cfg, name)
                rows.append((f"  connector {name}", "", f"{cstate} (tasks {','.join(tasks) or '-'})"))
    return rows


def format_table(rows: list[tuple[str, str, str]]) -> str:
    header = ("SERVICE", "ADDRESS", "STATE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def all_healthy(rows: list[tuple[str, str, str]]) -> bool:
    return all(r[2].startswith(("healthy", "RUNNING")) for r in rows)


def clean(cfg: LabConfig) -> None:
    down(cfg)
    for path in (cfg.state, cfg.pg_data):
        if path.exists():
            progress(f"removing {path}")
            shutil.rmtree(path)


__all__ = [
    "BUCKETS",
    "PG_BIN_CANDIDATES",
    "SERVICES",
    "Airflow",
    "Connect",
    "Java",
    "Kafka",
    "MariaDB",
    "MaxwellProducer",
    "MinIO",
    "PartnerAPI",
    "Postgres",
    "ProcessRecord",
    "Service",
    "ServiceError",
    "WorkloadService",
    "airflow_command",
    "airflow_component_healthy",
    "all_healthy",
    "clean",
    "connector_state",
    "create_buckets",
    "descendants",
    "down",
    "forget",
    "format_table",
    "gone",
    "http_get",
    "http_json",
    "pid_alive",
    "port_open",
    "port_owner",
    "prepare_airflow",
    "proc_cmdline",
    "proc_start_ticks",
    "progress",
    "read_record",
    "record_file",
    "register_connectors",
    "select",
    "service",
    "status",
    "up",
    "wait_connector_running",
    "wait_for",
    "write_private",
    "write_record",
]
