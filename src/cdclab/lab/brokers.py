"""Kafka (KRaft, one node) and Kafka Connect with Debezium as native Java processes, and the
connector registration (see :mod:`cdclab.lab.native`)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterable
from pathlib import Path

from cdclab.cdc.connect import ConnectClient, ConnectError
from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab.config import LabConfig
from cdclab.lab.processes import ServiceError, http_get, port_open, progress
from cdclab.lab.service import Service


class Java(Service):
    """A JVM service started from the Maven-assembled classpath."""

    main_class = ""

    def classpath(self, cfg: LabConfig) -> str:
        folder = cfg.jars / "kafka"
        if not folder.is_dir() or not any(folder.glob("kafka_*.jar")):
            raise ServiceError(
                self.name,
                f"jars missing in {folder}: run make bootstrap (mvn -f infra/maven/pom.xml package)",
            )
        return f"{folder}/*"

    def java_cmd(self, cfg: LabConfig, heap: str, *args: str) -> list[str]:
        java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else "java"
        return [
            java,
            f"-Xmx{heap}",
            f"-Xms{heap}" if heap.endswith("m") and int(heap[:-1]) <= 256 else "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={cfg.root / 'infra' / 'kafka' / 'log4j2.properties'}",
            "-cp",
            self.classpath(cfg),
            self.main_class,
            *args,
        ]

    @staticmethod
    def render_properties(source: Path, target: Path, overrides: dict[str, str]) -> None:
        """Copy a shared .properties file and append launcher-specific overrides (later keys win)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        lines = [source.read_text(), "\n# ---- native launcher overrides ----\n"]
        lines += [f"{k}={v}\n" for k, v in overrides.items()]
        target.write_text("".join(lines))


class Kafka(Java):
    main_class = "kafka.Kafka"

    def __init__(self) -> None:
        super().__init__("kafka", ("kafka", "kafka_controller"), 90)

    def address(self, cfg: LabConfig) -> str:
        return f"kafka://{cfg.kafka_bootstrap}"

    def healthy(self, cfg: LabConfig) -> bool:
        if not port_open(cfg.host_of("kafka"), cfg.port("kafka")):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap}).list_topics(timeout=3)
        except Exception:
            return False
        return bool(md.brokers)

    def start(self, cfg: LabConfig) -> None:
        self.check_ports_free(cfg)
        data = cfg.state / "kafka" / "data"
        props = cfg.state / "kafka" / "server.properties"
        self.render_properties(
            cfg.root / "infra" / "kafka" / "server.properties", props, {"log.dirs": str(data)}
        )
        if not (data / "meta.properties").exists():
            progress("kafka: formatting KRaft storage")
            data.mkdir(parents=True, exist_ok=True)
            cluster_id = cfg.state / "kafka" / "cluster.id"
            if not cluster_id.exists():
                cluster_id.write_text(_kafka_cluster_id())
            self.main_class = "kafka.tools.StorageTool"
            try:
                out = subprocess.run(
                    self.java_cmd(
                        cfg,
                        "256m",
                        "format",
                        "--standalone",
                        "-t",
                        cluster_id.read_text().strip(),
                        "-c",
                        str(props),
                    ),
                    capture_output=True,
                    text=True,
                    env=cfg.service_env(),
                )
            finally:
                self.main_class = "kafka.Kafka"
            if out.returncode != 0:
                with open(cfg.log_file(self.name), "a") as fh:
                    fh.write(out.stdout + out.stderr)
                raise ServiceError("kafka", "formatting the KRaft storage failed", cfg.log_file(self.name))
        progress("kafka: starting broker + controller (KRaft)")
        pid = self.spawn(cfg, self.java_cmd(cfg, "768m", str(props)))
        self.wait_ready(cfg, pid)


def _kafka_cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class Connect(Java):
    main_class = "org.apache.kafka.connect.cli.ConnectDistributed"

    def __init__(self) -> None:
        super().__init__("connect", ("connect",), 180)

    def address(self, cfg: LabConfig) -> str:
        return cfg.connect_url

    def healthy(self, cfg: LabConfig) -> bool:
        status, body = http_get(f"{cfg.connect_url}/connector-plugins")
        return status == 200 and b"PostgresConnector" in body

    def start(self, cfg: LabConfig) -> None:
        self.check_ports_free(cfg)
        plugins = cfg.jars / "plugins"
        if not plugins.is_dir():
            raise ServiceError("connect", f"connector plugins missing in {plugins}: run make bootstrap")
        props = cfg.state / "connect" / "connect-distributed.properties"
        self.render_properties(
            cfg.root / "infra" / "kafka" / "connect-distributed.properties",
            props,
            {"plugin.path": str(plugins)},
        )
        progress("connect: starting Kafka Connect (distributed) with Debezium")
        pid = self.spawn(cfg, self.java_cmd(cfg, "1g", str(props)))
        self.wait_ready(cfg, pid)
        register_connectors(cfg)


def register_connectors(
    cfg: LabConfig,
    names: Iterable[str] | None = None,
    timeout: float = 120,
    files: Iterable[Path] | None = None,
) -> None:
    """PUT every ``connectors/*.json`` (idempotent) and wait until connector and tasks are RUNNING."""
    client = ConnectClient(cfg.connect_url)
    for path in sorted(files if files is not None else (cfg.root / "connectors").glob("*.json")):
        try:
            spec = json.loads(path.read_text())
            name, config = spec["name"], spec["config"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ServiceError(
                "connect",
                f'{path} is not a connector file of the form {{"name": ..., "config": {{...}}}}: {exc}',
            ) from None
        if names is not None and name not in names:
            continue
        try:
            if client.register(name, config, timeout):
                progress(f"connect: connector {name} registered")
        except ConnectError as exc:
            raise ServiceError(
                "connect", f"connector {name} ({path.name}): {exc}", cfg.log_file("connect")
            ) from None


def connector_state(cfg: LabConfig, name: str) -> tuple[str, list[str], str]:
    return ConnectClient(cfg.connect_url).state(name)


def wait_connector_running(cfg: LabConfig, name: str, timeout: float = 120) -> None:
    try:
        ConnectClient(cfg.connect_url).wait_running(name, timeout)
    except ConnectError as exc:
        raise ServiceError("connect", str(exc), cfg.log_file("connect")) from None
