"""The lab's application services as native processes: Maxwell's producer, the partner API, the
shop workload and Airflow's four components (see :mod:`cdclab.lab.native`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab.config import LabConfig
from cdclab.lab.processes import ServiceError, http_get, progress
from cdclab.lab.service import Service


class MaxwellProducer(Service):
    """Maxwell-format change events from MariaDB's binlog into Kafka (``cdclab.cdc.maxwell``)."""

    def __init__(self) -> None:
        super().__init__("maxwell", (), 60)

    def address(self, cfg: LabConfig) -> str:
        return "topics maxwell.shop.<table>"

    def status(self, cfg: LabConfig) -> dict[str, object]:
        try:
            return dict(json.loads((cfg.state / "maxwell" / "status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def healthy(self, cfg: LabConfig) -> bool:
        st = self.status(cfg)
        pid = self.pid(cfg)
        return bool(st) and st.get("pid") == pid and time.time() - float(st.get("at", 0)) < 15  # type: ignore[arg-type]

    def start(self, cfg: LabConfig) -> None:
        from cdclab.cdc.maxwell import first_start_args

        # --from-start only until the producer has committed its first checkpoint: later starts without
        # a checkpoint refuse loudly instead of silently starting at the current binlog
        start = first_start_args(cfg.state)
        progress(f"maxwell: starting the binlog -> Kafka producer {' '.join(start)}".rstrip())
        pid = self.spawn(cfg, [sys.executable, "-m", "cdclab.cdc.maxwell", *start])
        self.wait_ready(cfg, pid)


class PartnerAPI(Service):
    """The partner HTTP API that 71_09_03 syncs from (``cdclab.delta.partner_api``): cursor pagination,
    ``modified_since``, rate limiting, injectable faults."""

    def __init__(self) -> None:
        super().__init__("partner-api", ("partner_api",), 30)

    def address(self, cfg: LabConfig) -> str:
        return f"http://{cfg.host}:{cfg.port('partner_api')}/accounts"

    def healthy(self, cfg: LabConfig) -> bool:
        status, _ = http_get(f"{cfg.partner_api_url}/accounts?limit=1")
        return status in (200, 429)

    def start(self, cfg: LabConfig) -> None:
        self.check_ports_free(cfg)
        progress("partner-api: starting")
        env = cfg.service_env()
        env.update(PARTNER_API_HOST=cfg.host, PARTNER_API_PORT=str(cfg.port("partner_api")))
        pid = self.spawn(cfg, [sys.executable, "-m", "cdclab.delta.partner_api"], env=env)
        self.wait_ready(cfg, pid)


class WorkloadService(Service):
    """The shop's workload (``cdclab.lab.shop_workload``): seeds the shop, then keeps changing it.

    Healthy once the seed is in (so ``make up`` returns with a loaded shop) and while it reports."""

    def __init__(self) -> None:
        super().__init__("workload", (), 600)  # seeding takes a while on a busy machine

    def address(self, cfg: LabConfig) -> str:
        return "shop lab.workload (make workload)"

    def healthy(self, cfg: LabConfig) -> bool:
        from cdclab.lab.shop_workload import status_file

        try:
            st = json.loads(status_file(cfg.state).read_text())
        except (OSError, ValueError):
            return False
        fresh = time.time() - float(st.get("at", 0)) < 30
        return bool(st.get("seeded")) and fresh and st.get("pid") == self.pid(cfg)

    def start(self, cfg: LabConfig) -> None:
        progress("workload: seeding the shop (first start only), then changing it gently")
        pid = self.spawn(cfg, [sys.executable, "-m", "cdclab.lab.shop_workload", "serve"])
        self.wait_ready(cfg, pid)


class Airflow(Service):
    """One Airflow 3 component run from this virtual environment's ``airflow`` command."""

    PORTS = {"api-server": ("airflow",), "scheduler": ("airflow_scheduler_health",)}

    def __init__(self, component: str, timeout: float = 180) -> None:
        super().__init__(f"airflow-{component}", self.PORTS.get(component, ()), timeout)
        self.component = component

    def address(self, cfg: LabConfig) -> str:
        return cfg.airflow_url if self.component == "api-server" else "-"

    def healthy(self, cfg: LabConfig) -> bool:
        if not airflow_component_healthy(cfg, self.component):
            return False
        # a heartbeat recorded by an earlier run of the component is not enough: it must be ours
        return self.component == "api-server" or self.pid(cfg) is not None

    def start(self, cfg: LabConfig) -> None:
        if self.component == "api-server":
            prepare_airflow(cfg)
        self.check_ports_free(cfg)
        progress(f"airflow: starting {self.component}")
        pid = self.spawn(cfg, airflow_command(str(Path(sys.executable).parent / "airflow"), self.component))
        self.wait_ready(cfg, pid)


def airflow_command(airflow: str, component: str) -> list[str]:
    """The command line of an Airflow component. The scheduler and the triggerer run without their log
    servers: Airflow's ``serve_logs`` listens on every interface and has no host setting, and with the
    LocalExecutor the api-server reads task and trigger logs from the shared log folder anyway."""
    skip = ["--skip-serve-logs"] if component in ("scheduler", "triggerer") else []
    return [airflow, component, *skip]


def airflow_component_healthy(cfg: LabConfig, component: str) -> bool:
    """The api-server's health endpoint says ``component`` (api-server, scheduler, ...) is healthy."""
    status, body = http_get(f"{cfg.airflow_url}/api/v2/monitor/health")
    if status != 200:
        return False
    try:
        health = json.loads(body)
    except ValueError:
        return False
    key = {
        "api-server": "metadatabase",
        "scheduler": "scheduler",
        "dag-processor": "dag_processor",
        "triggerer": "triggerer",
    }[component]
    part = health.get(key) if isinstance(health, dict) else None
    return isinstance(part, dict) and part.get("status") == "healthy"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), also when the file existed before."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def prepare_airflow(cfg: LabConfig) -> None:
    home = cfg.state / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    cfg.airflow_secrets()  # generated at the first up, kept in the state directory
    write_private(
        home / "passwords.json", json.dumps({cfg["AIRFLOW_ADMIN_USER"]: cfg["AIRFLOW_ADMIN_PASSWORD"]})
    )
    progress("airflow: migrating the metadata database (airflow db migrate)")
    airflow = str(Path(sys.executable).parent / "airflow")
    out = subprocess.run([airflow, "db", "migrate"], capture_output=True, text=True, env=cfg.service_env())
    if out.returncode != 0:
        log = cfg.log_file("airflow-api-server")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as fh:
            fh.write(out.stdout + out.stderr)
        raise ServiceError("airflow-api-server", "airflow db migrate failed", log)
