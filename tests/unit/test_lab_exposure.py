"""Exposure (issue 11, item 6): what the launchers tell each server to listen on, the ports of
infra/ports.env, and Airflow's secrets (generated per install, never committed, 0600)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cdclab.lab import native
from cdclab.lab.config import LabConfig, read_env_file

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_INTERNAL = {
    "AIRFLOW_SCHEDULER_HEALTH_PORT": "8974",
    "AIRFLOW_WORKER_LOG_PORT": "8793",
    "AIRFLOW_TRIGGER_LOG_PORT": "8794",
}


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LabConfig:
    monkeypatch.delenv("CDCLAB_BIND_HOST", raising=False)
    for key in (*AIRFLOW_INTERNAL, "LAB_HOST"):
        monkeypatch.delenv(key, raising=False)
    base = LabConfig.load(ROOT)
    return LabConfig(root=base.root, state=tmp_path / "state", cache=tmp_path / "cache", values=base.values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_airflows_internal_servers_have_their_ports_in_ports_env() -> None:
    ports = read_env_file(ROOT / "infra" / "ports.env")
    assert ports["LAB_HOST"] == "127.0.0.1"
    for key, value in AIRFLOW_INTERNAL.items():
        assert ports[key] == value, key
    # every port of the file is distinct: no two servers can be configured onto one port
    values = [v for k, v in ports.items() if k.endswith("_PORT")]
    assert len(values) == len(set(values))


def test_natively_every_airflow_server_binds_the_lab_host_on_its_ports_env_port(cfg) -> None:
    env = cfg.airflow_env()
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "8974"
    assert env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "8793"
    assert env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "8794"
    # the log servers can only listen on every interface: they are not started at all
    assert native.airflow_command("airflow", "scheduler") == ["airflow", "scheduler", "--skip-serve-logs"]
    assert native.airflow_command("airflow", "triggerer") == ["airflow", "triggerer", "--skip-serve-logs"]
    assert native.airflow_command("airflow", "api-server") == ["airflow", "api-server"]


def test_in_a_container_servers_bind_every_interface(cfg, monkeypatch) -> None:
    """Inside a container 127.0.0.1 is the container's own loopback; compose publishes on the host's
    127.0.0.1 only (tests/unit/test_compose.py)."""
    monkeypatch.setenv("CDCLAB_BIND_HOST", "0.0.0.0")
    env = cfg.airflow_env()
    assert env["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "0.0.0.0"


def test_the_port_check_covers_every_port_a_native_service_listens_on() -> None:
    ports = {svc.name: set(svc.ports) for svc in native.SERVICES}
    assert ports["airflow-api-server"] == {"airflow"}
    assert ports["airflow-scheduler"] == {"airflow_scheduler_health"}
    listed = {key.removesuffix("_PORT").lower() for key in read_env_file(ROOT / "infra" / "ports.env")}
    not_listened = {"airflow_worker_log", "airflow_trigger_log"}  # --skip-serve-logs
    assert set().union(*ports.values()) == listed - {"lab_host"} - not_listened


def test_the_native_server_configs_listen_on_127_0_0_1_only() -> None:
    infra = ROOT / "infra"
    pg = (infra / "postgres" / "postgresql.conf").read_text()
    assert "listen_addresses = '127.0.0.1'" in pg
    kafka = read_env_file(infra / "kafka" / "server.properties")
    assert kafka["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    connect = read_env_file(infra / "kafka" / "connect-distributed.properties")
    assert connect["listeners"] == "http://127.0.0.1:8083"
    assert "bind-address = 127.0.0.1" in (infra / "mariadb" / "my.cnf").read_text()


def test_airflow_secrets_are_generated_once_per_install_and_reused(cfg, tmp_path) -> None:
    assert not cfg.airflow_secrets_file.exists()
    first = cfg.airflow_env()
    path = cfg.airflow_secrets_file
    assert path.is_file() and mode(path) == 0o600
    again = LabConfig(root=cfg.root, state=cfg.state, cache=cfg.cache, values=cfg.values).airflow_env()
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
        assert first[key] == again[key]
        assert len(first[key]) >= 32
    assert first["AIRFLOW__API_AUTH__JWT_SECRET"] != first["AIRFLOW__API__SECRET_KEY"]
    other = LabConfig(root=cfg.root, state=tmp_path / "other", cache=cfg.cache, values=cfg.values)
    assert other.airflow_env()["AIRFLOW__API_AUTH__JWT_SECRET"] != first["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert list(path.parent.glob(".secrets.json.*")) == []  # no temporary file left behind


def test_processes_starting_at_once_share_one_set_of_secrets(cfg) -> None:
    """Under compose every Airflow container reads the same file on the lab-state volume: even
    processes racing to create it end up with the same keys."""
    code = (
        "import json, sys; from pathlib import Path; from cdclab.lab.config import LabConfig; "
        "b = LabConfig.load(Path(sys.argv[1])); "
        "c = LabConfig(root=b.root, state=Path(sys.argv[2]), cache=b.cache, values=b.values); "
        "print(json.dumps(c.airflow_secrets()))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(ROOT), str(cfg.state)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    outputs = {p.communicate(timeout=120)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(outputs) == 1
    assert json.loads(outputs.pop()) == json.loads(cfg.airflow_secrets_file.read_text())


def test_no_airflow_secret_is_committed() -> None:
    for name in ("versions.env", "ports.env", "credentials.env"):
        keys = read_env_file(ROOT / "infra" / name)
        assert not [k for k in keys if "JWT" in k or "SECRET_KEY" in k or "FERNET" in k], name
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if f.endswith("secrets.json") or f.startswith(".lab/")]


def test_the_passwords_file_is_readable_by_its_owner_only(cfg, monkeypatch) -> None:
    """prepare_airflow (first up, compose's airflow-init) writes passwords.json 0600, also over an
    existing world-readable one; `airflow db migrate` is replaced by a no-op for this unit test."""
    home = cfg.state / "airflow"
    home.mkdir(parents=True)
    (home / "passwords.json").write_text("{}")
    os.chmod(home / "passwords.json", 0o644)
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout="", stderr="")
    )
    native.prepare_airflow(cfg)
    assert mode(home / "passwords.json") == 0o600
    assert json.loads((home / "passwords.json").read_text()) == {
        cfg["AIRFLOW_ADMIN_USER"]: cfg["AIRFLOW_ADMIN_PASSWORD"]
    }
    assert mode(cfg.airflow_secrets_file) == 0o600
