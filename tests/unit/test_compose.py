"""compose.yaml, resolved by the Compose CLI, runs the same lab as the native launcher, the Docker way.

Reads ``docker compose config --format json`` with the three env files (what `make up` runs): no
running service is needed, only the Compose CLI (`make engine` installs it here; Docker Desktop and
Docker Engine ship it). Checks: no warning, no host networking, every published port on 127.0.0.1 at
its infra/ports.env value, a healthcheck on every ``service_healthy`` target, every mounted host path
present, every image built from the project's Dockerfiles and tagged with the versions.env version,
and the same services and ports as the native launcher (src/cdclab/lab/native.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cdclab.lab import native
from cdclab.lab.backend import ComposeBackend
from cdclab.lab.config import LabConfig

ROOT = Path(__file__).resolve().parents[2]
CFG = LabConfig.load(ROOT)
ONE_SHOT = {"connect-init": "connect", "minio-init": "minio", "airflow-init": "airflow-api-server"}
# compose service -> (image repository, versions.env key of its tag)
IMAGES = {
    "postgres": ("cdclab/postgres", "POSTGRES_MAJOR"),
    "kafka": ("cdclab/kafka", "KAFKA_VERSION"),
    "connect": ("cdclab/connect", "DEBEZIUM_VERSION"),
    "minio": ("cdclab/minio", "MINIO_MODULE_VERSION"),
    "mariadb": ("cdclab/mariadb", "MARIADB_MAJOR"),
}
LAB_IMAGE = ("cdclab/airflow", "AIRFLOW_VERSION")  # the project's image: Airflow and the lab's own services
# ports a user needs, per native service (ports.env keys); the KRaft controller and the scheduler's
# health check server stay inside
INTERNAL_PORTS = {"kafka_controller", "airflow_scheduler_health"}


def _compose_config() -> tuple[dict[str, Any], str]:
    if (
        shutil.which("docker") is None
        or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode
    ):
        pytest.fail(
            "the Compose CLI is missing: run `make engine`, or run `make test-unit` / `make test`, which "
            "deselect the compose.yaml checks on a machine without it and say so (CDCLAB_NO_COMPOSE_CLI=1)"
        )
    env = {k: v for k, v in os.environ.items() if k not in CFG.values and not k.endswith("_HOST")}
    out = subprocess.run(
        ComposeBackend(CFG).command("config", "--format", "json"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout), out.stderr


@pytest.fixture(scope="module")
def resolved() -> tuple[dict[str, Any], str]:
    return _compose_config()


@pytest.fixture(scope="module")
def services(resolved: tuple[dict[str, Any], str]) -> dict[str, dict[str, Any]]:
    return resolved[0]["services"]


@pytest.mark.compose_cli
def test_compose_config_prints_no_warning(resolved):
    assert resolved[1].strip() == "", resolved[1]


@pytest.mark.compose_cli
def test_the_services_are_the_native_ones_plus_three_one_shot_jobs(services):
    long_running = {name for name, s in services.items() if s.get("restart") != "no"}
    assert long_running == {s.name for s in native.SERVICES}
    assert set(services) - long_running == set(ONE_SHOT)


@pytest.mark.compose_cli
def test_no_host_networking_and_one_network(services):
    for name, svc in services.items():
        assert "network_mode" not in svc, f"{name}: network_mode {svc.get('network_mode')}"
        assert list(svc.get("networks", {"default": None})) == ["default"], name


@pytest.mark.compose_cli
def test_every_published_port_is_on_127_0_0_1_at_its_ports_env_value(services):
    """Published: the ports.env value on 127.0.0.1; inside the network each server keeps its usual port."""
    published: dict[str, set[int]] = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name}: {port}"
            published.setdefault(name, set()).add(int(port["published"]))
    for svc in native.SERVICES:
        wanted = {CFG.port(key) for key in svc.ports if key not in INTERNAL_PORTS}
        assert published.get(svc.name, set()) == wanted, svc.name


@pytest.mark.compose_cli
def test_every_service_healthy_target_has_a_healthcheck_and_jobs_are_awaited_to_completion(services):
    for name, svc in services.items():
        for target, dep in svc.get("depends_on", {}).items():
            if dep["condition"] == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), f"{name} -> {target}"
            else:
                assert dep["condition"] == "service_completed_successfully", f"{name} -> {target}"
                assert target in ONE_SHOT
    for name, svc in services.items():
        if name not in ONE_SHOT:
            assert svc.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


@pytest.mark.compose_cli
def test_every_mounted_host_path_exists(services):
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"
                assert volume.get("read_only"), f"{name}: host paths are mounted read-only: {volume}"


@pytest.mark.compose_cli
def test_every_image_is_built_from_the_projects_dockerfile_and_tagged_with_its_version(services):
    for name, svc in services.items():
        repo, key = IMAGES.get(name, LAB_IMAGE)
        assert svc["image"] == f"{repo}:{CFG[key]}", name
        if "build" not in svc:
            # the project image is built once, by airflow-init; nobody pulls it from a registry
            assert svc["image"] == services["airflow-init"]["image"], name
            assert svc["pull_policy"] == "never", name
            continue
        build = svc["build"]
        assert Path(build["context"]).resolve() == ROOT, name
        dockerfile = ROOT / build["dockerfile"]
        assert dockerfile.is_file(), name
        text = dockerfile.read_text()
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M | re.I))
        assert all(f == "debian:bookworm-slim" or f in stages for f in froms), f"{name}: {froms}"
        # every build argument the Dockerfile declares gets the versions.env value
        declared = {
            item.split("=")[0] for arg in re.findall(r"^ARG\s+(.+)$", text, re.M) for item in arg.split()
        }
        assert set(build.get("args", {})) == declared, name
        for var in declared:
            assert build["args"][var] == CFG[var], f"{name}: build arg {var}"


@pytest.mark.compose_cli
def test_services_reach_each_other_by_name_and_host_tools_by_127_0_0_1(services):
    lab_env = services["airflow-scheduler"]["environment"]
    for svc in ("postgres", "kafka", "connect", "minio", "mariadb"):
        assert lab_env[f"{svc.upper()}_HOST"] == svc
        assert svc in services
    assert lab_env["PARTNER_API_HOST"] == "partner-api"
    assert lab_env["AIRFLOW_HOST"] == "airflow-api-server"
    # Kafka: one listener inside the network, one for the host, advertised as such
    overrides = services["kafka"]["environment"]["CDCLAB_OVERRIDES"]
    assert (
        f"advertised.listeners=INTERNAL://kafka:{lab_env['KAFKA_PORT']},PLAINTEXT://127.0.0.1:{CFG.port('kafka')}"
        in overrides
    )
    # the connector file takes the database host from the worker's environment
    connector = json.loads((ROOT / "connectors" / "shop-postgres-source.json").read_text())["config"]
    assert connector["database.hostname"] == "${env:POSTGRES_HOST}"
    assert services["connect"]["environment"]["POSTGRES_HOST"] == "postgres"


@pytest.mark.compose_cli
def test_airflow_connections_inside_the_network_use_service_names(services, monkeypatch):
    """Inside the containers LabConfig (the one source of Airflow's settings) resolves the names."""
    env = services["airflow-scheduler"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    inside = LabConfig.load(ROOT).airflow_env()
    assert "@postgres:" in inside["AIRFLOW_CONN_WAREHOUSE"]
    assert '"bootstrap.servers": "kafka:19092"' in inside["AIRFLOW_CONN_KAFKA_DEFAULT"]
    assert "http://minio:" in inside["AIRFLOW_CONN_MINIO"]
    assert inside["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-api-server:")
    assert inside["AIRFLOW__API__HOST"] == "0.0.0.0"
    assert inside["AIRFLOW__API__BASE_URL"] == f"http://127.0.0.1:{CFG.port('airflow')}"


def test_the_dockerignore_keeps_local_state_out_of_build_contexts():
    text = (ROOT / ".dockerignore").read_text().splitlines()
    assert text[next(i for i, line in enumerate(text) if line.strip() and not line.startswith("#"))] == "*"
    allowed = {line[1:] for line in text if line.startswith("!")}
    assert not allowed & {".venv", ".lab", "bench", "tests", ".git"}
