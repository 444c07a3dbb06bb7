"""The lab stack itself: healthy services, an idempotent `up`, clear errors for bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cdclab.cdc.connect import ConnectClient
from cdclab.lab import native
from cdclab.lab.backend import ComposeBackend, all_healthy, backend, format_table
from cdclab.lab.config import read_env_file
from cdclab.lab.native import ServiceError

LOG_SERVICES = ["connect"]


def test_every_service_is_healthy_and_the_connector_streams(lab):
    rows = backend(lab).status()
    assert all_healthy(rows), format_table(rows)
    names = [r[0].strip() for r in rows]
    for service in (
        "postgres",
        "kafka",
        "connect",
        "minio",
        "mariadb",
        "maxwell",
        "partner-api",
        "workload",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "connector shop-postgres-source",
    ):
        assert service in names


def test_connect_has_the_debezium_postgres_source_and_jdbc_sink_plugins(lab):
    plugins = ConnectClient(lab.connect_url).plugins()
    classes = {p["class"] for p in plugins}
    assert "io.debezium.connector.postgresql.PostgresConnector" in classes
    assert "io.debezium.connector.jdbc.JdbcSinkConnector" in classes


def test_postgres_is_set_up_for_logical_replication(lab):
    import psycopg2

    with psycopg2.connect(lab.pg_dsn("shop")) as conn, conn.cursor() as cur:
        cur.execute("SHOW wal_level")
        assert cur.fetchone() == ("logical",)
        cur.execute("SELECT slot_type, plugin FROM pg_replication_slots WHERE slot_name = 'cdclab_shop'")
        assert cur.fetchone() == ("logical", "pgoutput")
        cur.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'wal2json'"
            " UNION ALL SELECT count(*) FROM pg_publication WHERE pubname = 'cdclab_shop'"
        )
        cur.execute("SELECT pubname FROM pg_publication")
        assert ("cdclab_shop",) in cur.fetchall()
    # the replication role may stream and read, but not write the shop tables
    with psycopg2.connect(lab.pg_dsn("shop", "cdc")) as conn, conn.cursor() as cur:
        cur.execute("SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user")
        assert cur.fetchone() == (True, False)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("INSERT INTO public.customers (id, email, full_name) VALUES (-1, 'x', 'x')")


def test_minio_has_the_lab_buckets(lab):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=lab.minio_url,
        aws_access_key_id=lab["MINIO_ROOT_USER"],
        aws_secret_access_key=lab["MINIO_ROOT_PASSWORD"],
        region_name="us-east-1",
    )
    assert set(native.BUCKETS) <= {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_up_a_second_time_changes_nothing(lab):
    """`make up` on a healthy lab restarts nothing: the same processes (native) or the same
    containers, started at the same moment (compose: the images rebuild from cache, unchanged)."""
    lab_backend = backend(lab)
    before = lab_backend.instances()
    assert set(before) == {s.name for s in native.SERVICES}, before
    out = subprocess.run(
        [sys.executable, "-m", "cdclab.cli", "lab", "up"], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout + out.stderr
    if lab_backend.name == "native":
        assert out.stdout.count("already healthy") == len(native.SERVICES)
    assert lab_backend.instances() == before


def test_an_invalid_connector_config_names_the_service_and_its_log(lab, tmp_path, names):
    bad = tmp_path / "bad.json"
    name = names("bad-connector")
    bad.write_text(
        json.dumps(
            {
                "name": name,
                "config": {
                    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                    "database.hostname": "127.0.0.1",
                    "database.port": "1",
                    "topic.prefix": name,
                    "plugin.name": "no-such-decoder",
                },
            }
        )
    )
    try:
        with pytest.raises(ServiceError) as err:
            native.register_connectors(lab, files=[bad], timeout=30)
        message = str(err.value)
        assert message.startswith("[connect]")
        assert name in message
        assert "make logs S=connect" in message
        if backend(lab).name == "native":
            assert str(lab.log_file("connect")) in message
    finally:
        ConnectClient(lab.connect_url).delete(name)


def test_a_taken_port_gives_a_clear_error_and_starts_nothing(lab, tmp_path):
    """MinIO's port is taken by another program: `cdclab lab up minio` fails, names the service and
    the port, and leaves nothing running. Under compose this runs as a separate compose project, so
    the shared stack is not touched."""
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    project = f"cdclab-porttest-{os.getpid()}"
    env = {
        **os.environ,
        "CDCLAB_STATE": str(tmp_path / "state"),
        "MINIO_PORT": str(port),
        "MINIO_CONSOLE_PORT": str(port + 1 if port < 65000 else port - 1),
        "COMPOSE_PROJECT_NAME": project,
    }
    compose = isinstance(backend(lab), ComposeBackend)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "cdclab.cli", "lab", "up", "minio"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        blocker.close()
        if compose:
            subprocess.run(
                [*ComposeBackend(lab).command("down", "-v"), "--remove-orphans"],
                env=env,
                capture_output=True,
                timeout=120,
            )
    assert out.returncode == 1, out.stdout + out.stderr
    if compose:
        assert "[minio] `docker compose up` failed" in out.stderr, out.stdout + out.stderr
        assert str(port) in out.stdout + out.stderr, out.stdout + out.stderr
    else:
        assert f"[minio] port {port} (MINIO_PORT in infra/ports.env) is already taken" in out.stderr
        assert "more: make logs S=minio" in out.stderr
        assert not list((tmp_path / "state" / "run").glob("*.pid")), "a failed start must leave no pid behind"


def test_mariadb_writes_a_full_row_based_binlog(lab):
    import pymysql

    conn = pymysql.connect(
        host=lab.host, port=lab.port("mariadb"), user="root", password=lab["MARIADB_ROOT_PASSWORD"]
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@character_set_server")
            assert cur.fetchone() == (1, "ROW", "FULL", "utf8mb4")
    finally:
        conn.close()


def _listeners() -> list[tuple[str, int, set[int]]]:
    """Every listening TCP socket on the machine: (address, port, pids owning it) from ``ss -ltnpH``."""
    import re

    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30, check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        host, _, port = parts[3].rpartition(":")
        rows.append(
            (host.strip("[]").split("%")[0], int(port), {int(p) for p in re.findall(r"pid=(\d+)", line)})
        )
    assert rows, "ss listed no listening socket at all"
    return rows


def _descendants(roots: set[int]) -> set[int]:
    """``roots`` and every process below them (by parent pid, from /proc)."""
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped loopback (``::ffff:127.0.0.1``: how a JVM bound to 127.0.0.1
    shows on a dual-stack socket); a wildcard or any other address is not."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_the_lab_listens_on_127_0_0_1_only(lab):
    """Exposure (issue 11, item 6). On the host, every listener on a port of infra/ports.env is on the
    loopback. Natively, every socket the lab's processes listen on is (``ss -ltnp`` matched to the
    service pids and their children), the scheduler's health server listens on its ports.env port, and
    no Airflow log server listens at all. Under compose, every published port is on 127.0.0.1."""
    ports_env = read_env_file(lab.root / "infra" / "ports.env")
    lab_ports = {int(v) for k, v in ports_env.items() if k.endswith("_PORT")}
    listeners = _listeners()
    exposed = [(a, p) for a, p, _ in listeners if p in lab_ports and not _loopback(a)]
    assert not exposed, f"lab ports listening beyond the loopback: {exposed}"
    lab_backend = backend(lab)
    if isinstance(lab_backend, ComposeBackend):
        published = [
            (name, pub)
            for name, c in lab_backend.containers().items()
            for pub in (c.get("Publishers") or [])  # type: ignore[union-attr]
            if pub.get("PublishedPort")
        ]
        internal = {"kafka_controller", "airflow_scheduler_health"}  # not published (test_compose.py)
        wanted = {lab.port(k) for s in native.SERVICES for k in s.ports if k not in internal}
        assert {pub["PublishedPort"] for _, pub in published} == wanted, published
        assert all(pub["URL"] == "127.0.0.1" for _, pub in published), published
        return
    roots = {pid for svc in native.SERVICES if (pid := svc.pid(lab)) is not None}
    assert len(roots) == len(native.SERVICES), roots
    ours = _descendants(roots)
    owned = [(a, p) for a, p, pids in listeners if pids & ours]
    assert owned, "no listening socket matched the lab's processes (does ss -p see them?)"
    assert [(a, p) for a, p in owned if not _loopback(a)] == [], owned
    assert ("127.0.0.1", lab.port("airflow_scheduler_health")) in owned, owned
    log_ports = {lab.port("airflow_worker_log"), lab.port("airflow_trigger_log")}
    assert not [(a, p) for a, p in owned if p in log_ports], owned
