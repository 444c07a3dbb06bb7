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
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cdclab.cdc.connect import ConnectClient, ConnectError
from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab.config import LabConfig

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/{major}/bin",)


class ServiceError(RuntimeError):
    """A lab service did not start or is not healthy. The message says which and where to look."""

    def __init__(self, service: str, problem: str, log_file: Path | None = None, tail: int = 30):
        self.service = service
        lines = ""
        if log_file is not None and log_file.exists():
            text = log_file.read_text(errors="replace").splitlines()[-tail:]
            lines = "\n".join(f"    {line}" for line in text)
        where = f"\n  log file: {log_file}" if log_file is not None and log_file.exists() else ""
        where += f"\n  more: make logs S={service}"
        last = f"\n  last lines of the log:\n{lines}" if lines else ""
        super().__init__(f"[{service}] {problem}{where}{last}")


def progress(message: str) -> None:
    print(f"  · {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def gone(pid: int) -> bool:
    """Whether ``pid`` has left the process table, not only died: a zombie still holds its pid, and
    Postgres's lock-file check (``kill(pid, 0)``) takes a zombie postmaster for a running one. Reaps
    ``pid`` when it is this process's own child (a service started from this process, e.g. by a test)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    return not os.path.exists(f"/proc/{pid}")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...), from ``/proc``. Postgres backends
    are their own session leaders (``setsid``), so a signal to the postmaster's process group misses them."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def proc_start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None.

    A pid is reused once its process is gone; ``(pid, start ticks)`` names one process for the whole
    uptime of the machine."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 2 (comm) is in parentheses and may hold spaces: count the fields after its closing one
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[22 - 3])
    except (IndexError, ValueError):
        return None


def proc_cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid`` (``/proc/<pid>/cmdline``), or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] if raw else []


@dataclass(frozen=True)
class ProcessRecord:
    """What the launcher knows of a process it started, stored next to its pid file
    (``<state>/run/<name>.pid.json``): the pid, its start time, the argv it was started with and the
    command line the kernel reported just after the start."""

    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    cmdline: tuple[str, ...]

    @classmethod
    def of(cls, pid: int, argv: Iterable[str]) -> ProcessRecord:
        ticks = proc_start_ticks(pid)
        if ticks is None:
            raise ProcessLookupError(f"pid {pid} is gone before its start could be recorded")
        # Popen returns once exec has closed its error pipe, which the kernel does before it sets up
        # the new program's arguments: for a moment /proc/<pid>/cmdline reads empty (seen under load).
        # An empty record would never match the running process again, so wait for the real one.
        cmdline: list[str] | None = None
        for _ in range(200):
            cmdline = proc_cmdline(pid)
            if cmdline or not pid_alive(pid):
                break
            time.sleep(0.01)
        return cls(pid, ticks, tuple(argv), tuple(cmdline or ()))

    def is_running(self) -> bool:
        """The recorded process is alive: same pid, same start time, and the command line we started
        (or, for a program that retitles itself with setproctitle, one that still names it)."""
        if not pid_alive(self.pid) or proc_start_ticks(self.pid) != self.start_ticks:
            return False
        current = proc_cmdline(self.pid)
        if current is None:
            return False
        if tuple(current) == self.cmdline:
            return True
        program = os.path.basename(self.argv[0]) if self.argv else ""
        return bool(program) and any(program in part for part in current)


def record_file(cfg: LabConfig, service: str) -> Path:
    pid_file = cfg.pid_file(service)
    return pid_file.with_name(pid_file.name + ".json")


def write_record(cfg: LabConfig, service: str, record: ProcessRecord) -> None:
    """Write the pid file and its record (the record first: a pid file is never without one)."""
    pid_file = cfg.pid_file(service)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    record_file(cfg, service).write_text(
        json.dumps(
            {
                "pid": record.pid,
                "start_ticks": record.start_ticks,
                "argv": list(record.argv),
                "cmdline": list(record.cmdline),
            }
        )
    )
    pid_file.write_text(str(record.pid))


def read_record(cfg: LabConfig, service: str) -> ProcessRecord | None:
    try:
        data = json.loads(record_file(cfg, service).read_text())
        return ProcessRecord(
            int(data["pid"]), int(data["start_ticks"]), tuple(data["argv"]), tuple(data["cmdline"])
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def forget(cfg: LabConfig, service: str) -> None:
    cfg.pid_file(service).unlink(missing_ok=True)
    record_file(cfg, service).unlink(missing_ok=True)


def wait_for(
    check: Callable[[], bool], timeout: float, interval: float = 0.5, alive: Callable[[], bool] | None = None
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if alive is not None and not alive():
            return False
        time.sleep(interval)
    return check()


def port_owner(port: int) -> str:
    """Who listens on ``port`` (best effort, for error messages)."""
    try:
        out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown process"
    except (OSError, subprocess.SubprocessError):
        return "unknown process"


# ---------------------------------------------------------------------------------------------
# services
# ---------------------------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    ports: tuple[str, ...]  # keys of ports.env, e.g. ("kafka", "kafka_controller")
    start_timeout: float

    def address(self, cfg: LabConfig) -> str:
        raise NotImplementedError

    def healthy(self, cfg: LabConfig) -> bool:
        raise NotImplementedError

    def start(self, cfg: LabConfig) -> None:
        raise NotImplementedError

    def pid(self, cfg: LabConfig) -> int | None:
        """The pid of the lab's running process, or None.

        Only a process the launcher started counts: the pid file's record (:class:`ProcessRecord`) must
        match the live process's start time and command line. A pid file whose pid is now another
        program's (the lab's process died and the pid was reused), or that has no record, is removed;
        that process is never signalled."""
        path = cfg.pid_file(self.name)
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        record = read_record(cfg, self.name)
        if record is None or record.pid != pid or not record.is_running():
            why = (
                f"has no start record (a lab started by an older cdclab? then stop it yourself: kill {pid})"
                if record is None or record.pid != pid
                else "is another process now"
            )
            print(
                f"  ! {self.name}: {path} points at pid {pid}, which {why} (command line "
                f"{' '.join(proc_cmdline(pid) or [])!r}): removed the stale pid file, left the process alone",
                file=sys.stderr,
            )
            forget(cfg, self.name)
            return None
        return pid

    def instance(self, cfg: LabConfig) -> tuple[int, int | None] | None:
        """``(pid, start ticks)`` of the lab's running process: changes whenever it is restarted."""
        pid = self.pid(cfg)
        return None if pid is None else (pid, proc_start_ticks(pid))

    def stop(self, cfg: LabConfig, timeout: float = 30.0) -> None:
        pid = self.pid(cfg)
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not wait_for(lambda: not pid_alive(pid), timeout):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                wait_for(lambda: not pid_alive(pid), 10)
        forget(cfg, self.name)

    def check_ports_free(self, cfg: LabConfig) -> None:
        for key in self.ports:
            port = cfg.port(key)
            if port_open(cfg.host, port):
                raise ServiceError(
                    self.name,
                    f"port {port} ({key.upper()}_PORT in infra/ports.env) is already taken by "
                    f"{port_owner(port)}; stop that process or set {key.upper()}_PORT=<free port> "
                    f"for make up",
                    cfg.log_file(self.name),
                )

    def spawn(
        self, cfg: LabConfig, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        log = cfg.log_file(self.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        cfg.pid_file(self.name).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            fh.write(
                f"\n==== cdclab: starting {self.name} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
                f"\n==== {' '.join(argv)}\n".encode()
            )
            fh.flush()
            proc = subprocess.Popen(
                argv,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env or cfg.service_env(),
                cwd=cwd or cfg.root,
                start_new_session=True,
            )
        try:
            write_record(cfg, self.name, ProcessRecord.of(proc.pid, argv))
        except ProcessLookupError:
            pass  # it exited at once: wait_ready reports it with its log
        return proc.pid

    def wait_ready(self, cfg: LabConfig, pid: int | None = None) -> None:
        alive = (lambda: pid_alive(pid)) if pid is not None else None
        if not wait_for(lambda: self.healthy(cfg), self.start_timeout, alive=alive):
            state = (
                "exited"
                if pid is not None and not pid_alive(pid)
                else f"not ready after {self.start_timeout:.0f}s"
            )
            raise ServiceError(self.name, f"failed to start ({state})", cfg.log_file(self.name))


def _as_postgres_user() -> list[str]:
    """Postgres refuses to run as root: as root, run its tools as the ``postgres`` OS user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceError(
            "postgres", "running as root needs the 'postgres' OS user (apt-get install postgresql creates it)"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


class Postgres(Service):
    def __init__(self) -> None:
        super().__init__("postgres", ("postgres",), 60)

    def bin(self, cfg: LabConfig, tool: str) -> str:
        for pattern in PG_BIN_CANDIDATES:
            path = Path(pattern.format(major=cfg["POSTGRES_MAJOR"])) / tool
            if path.exists():
                return str(path)
        found = shutil.which(tool)
        if found:
            return found
        raise ServiceError(
            "postgres", f"{tool} not found: install postgresql-{cfg['POSTGRES_MAJOR']} (make bootstrap does)"
        )

    def address(self, cfg: LabConfig) -> str:
        return f"postgresql://{cfg.host}:{cfg.port('postgres')} (shop, warehouse, airflow)"

    def pid(self, cfg: LabConfig) -> int | None:
        try:
            pid = int((cfg.pg_data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        # postmaster.pid is Postgres' own lock file (it checks it at start): only a postgres server
        # on this data directory is ours, a reused pid is not
        cmdline = proc_cmdline(pid) or []
        ours = any(os.path.basename(p) == "postgres" for p in cmdline[:1]) and any(
            str(cfg.pg_data).rstrip("/") in part for part in cmdline
        )
        return pid if pid_alive(pid) and ours else None

    def healthy(self, cfg: LabConfig) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(cfg.pg_dsn("postgres", "postgres"), connect_timeout=2)
        except psycopg2.Error:
            return False
        conn.close()
        return True

    def _log(self, cfg: LabConfig) -> Path:
        return cfg.log_file("postgres")

    def start(self, cfg: LabConfig) -> None:
        data = cfg.pg_data
        runas = _as_postgres_user()
        log = self._log(cfg)
        log.parent.mkdir(parents=True, exist_ok=True)
        if runas:
            # the server writes its own log file: let the postgres user own it
            log.touch()
            shutil.chown(log, "postgres", "postgres")
            os.chmod(log.parent, 0o755)
            self._allow_traverse(log.parent)
        if not (data / "PG_VERSION").exists():
            progress(f"postgres: initdb into {data}")
            data.mkdir(parents=True, exist_ok=True)
            pwfile = data.parent / f".pw-{uuid.uuid4().hex}"
            pwfile.write_text(cfg["POSTGRES_SUPERUSER_PASSWORD"] + "\n")
            if runas:
                shutil.chown(data, "postgres", "postgres")
                shutil.chown(pwfile, "postgres", "postgres")
            os.chmod(data, 0o700)
            try:
                out = subprocess.run(
                    [
                        *runas,
                        self.bin(cfg, "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "postgres",
                        "--pwfile",
                        str(pwfile),
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ],
                    capture_output=True,
                    text=True,
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if out.returncode != 0:
                with open(log, "a") as fh:
                    fh.write(out.stdout + out.stderr)
                raise ServiceError("postgres", "initdb failed", log)
            conf = cfg.root / "infra" / "postgres" / "postgresql.conf"
            with open(data / "postgresql.conf", "a") as fh:
                fh.write(f"\n# cdclab\ninclude '{conf}'\nunix_socket_directories = '{data}'\n")
        self.check_ports_free(cfg)
        progress("postgres: starting")
        out = subprocess.run(
            [
                *runas,
                self.bin(cfg, "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {cfg.port('postgres')} -k {data}",
                "start",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise ServiceError(
                "postgres", f"pg_ctl start failed: {out.stderr.strip() or out.stdout.strip()}", log
            )
        self.wait_ready(cfg)
        self.initialise(cfg)

    @staticmethod
    def _allow_traverse(path: Path) -> None:
        """Let the postgres OS user reach the log folder (o+x on each parent it lacks)."""
        for parent in (path, *path.parents):
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)

    def initialise(self, cfg: LabConfig) -> None:
        env = cfg.service_env()
        env.update(
            PGHOST=cfg.host_of("postgres"),
            PGPORT=str(cfg.port("postgres")),
            PGUSER="postgres",
            PGPASSWORD=cfg["POSTGRES_SUPERUSER_PASSWORD"],
        )
        out = subprocess.run(
            ["bash", str(cfg.root / "infra" / "postgres" / "initdb.sh")],
            capture_output=True,
            text=True,
            env=env,
        )
        if out.returncode != 0:
            with open(self._log(cfg), "a") as fh:
                fh.write(out.stdout + out.stderr)
            raise ServiceError(
                "postgres", f"creating roles/databases failed: {out.stderr.strip()[-500:]}", self._log(cfg)
            )

    def stop(self, cfg: LabConfig, timeout: float = 60.0) -> None:
        if self.pid(cfg) is None:
            return
        subprocess.run(
            [
                *_as_postgres_user(),
                self.bin(cfg, "pg_ctl"),
                "-D",
                str(cfg.pg_data),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            capture_output=True,
        )


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


class MinIO(Service):
    def __init__(self) -> None:
        super().__init__("minio", ("minio", "minio_console"), 60)

    def address(self, cfg: LabConfig) -> str:
        return f"{cfg.minio_url} (console http://{cfg.host}:{cfg.port('minio_console')})"

    def healthy(self, cfg: LabConfig) -> bool:
        status, _ = http_get(f"{cfg.minio_url}/minio/health/ready")
        return status == 200

    def start(self, cfg: LabConfig) -> None:
        binary = cfg.minio_binary
        if not binary.exists():
            raise ServiceError("minio", f"{binary} missing: run make bootstrap")
        self.check_ports_free(cfg)
        data = cfg.state / "minio"
        data.mkdir(parents=True, exist_ok=True)
        env = cfg.service_env()
        env.update(
            MINIO_ROOT_USER=cfg["MINIO_ROOT_USER"],
            MINIO_ROOT_PASSWORD=cfg["MINIO_ROOT_PASSWORD"],
            MINIO_BROWSER="on",
            MINIO_UPDATE="off",
        )
        progress("minio: starting")
        pid = self.spawn(
            cfg,
            [
                str(binary),
                "server",
                str(data),
                "--address",
                f"{cfg.host}:{cfg.port('minio')}",
                "--console-address",
                f"{cfg.host}:{cfg.port('minio_console')}",
                "--quiet",
            ],
            env=env,
        )
        self.wait_ready(cfg, pid)
        create_buckets(cfg)


BUCKETS = ("landing", "archive", "quarantine", "manifests", "lab-tests")


def create_buckets(cfg: LabConfig) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=cfg.minio_url,
        aws_access_key_id=cfg["MINIO_ROOT_USER"],
        aws_secret_access_key=cfg["MINIO_ROOT_PASSWORD"],
        region_name="us-east-1",
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in BUCKETS:
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    progress(f"minio: buckets {', '.join(BUCKETS)}")


class MariaDB(Service):
    """The MySQL side of CDC: MariaDB from Debian packages with a row-based binlog."""

    def __init__(self) -> None:
        super().__init__("mariadb", ("mariadb",), 60)

    def address(self, cfg: LabConfig) -> str:
        return f"mysql://{cfg.host}:{cfg.port('mariadb')} (shop)"

    def socket(self, cfg: LabConfig) -> Path:
        return cfg.mariadb_data / "mariadb.sock"

    def healthy(self, cfg: LabConfig) -> bool:
        import pymysql

        try:
            conn = pymysql.connect(
                host=cfg.host_of("mariadb"),
                port=cfg.port("mariadb"),
                user="root",
                password=cfg["MARIADB_ROOT_PASSWORD"],
                connect_timeout=2,
            )
        except pymysql.MySQLError:
            return False
        conn.close()
        return True

    def start(self, cfg: LabConfig) -> None:
        data = cfg.mariadb_data
        runas: list[str] = []
        if os.geteuid() == 0:
            runas = ["runuser", "-u", "mysql", "--"]
        self.check_ports_free(cfg)
        log = cfg.log_file(self.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (data / "mysql").exists()
        if fresh:
            progress(f"mariadb: mariadb-install-db into {data}")
            data.mkdir(parents=True, exist_ok=True)
            if runas:
                shutil.chown(data, "mysql", "mysql")
            # as root, root@localhost logs in through the unix socket (no password to manage)
            auth = "socket" if runas else "normal"
            out = subprocess.run(
                [
                    *runas,
                    "mariadb-install-db",
                    f"--datadir={data}",
                    f"--auth-root-authentication-method={auth}",
                    "--skip-test-db",
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                with open(log, "a") as fh:
                    fh.write(out.stdout + out.stderr)
                raise ServiceError("mariadb", "mariadb-install-db failed", log)
        progress("mariadb: starting")
        pid = self.spawn(
            cfg,
            [
                *runas,
                "mariadbd",
                f"--defaults-file={cfg.root / 'infra' / 'mariadb' / 'my.cnf'}",
                f"--datadir={data}",
                f"--port={cfg.port('mariadb')}",
                f"--socket={self.socket(cfg)}",
                f"--pid-file={data / 'mariadb.pid'}",
                f"--log-bin={data / 'binlog'}",
            ],
        )
        if not wait_for(lambda: self.socket(cfg).exists(), self.start_timeout, alive=lambda: pid_alive(pid)):
            raise ServiceError("mariadb", "failed to start (no socket)", log)
        # the TCP login the lab uses: root@127.0.0.1 with the password from infra/credentials.env
        pw = cfg["MARIADB_ROOT_PASSWORD"].replace("'", "''")
        statements = (
            f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '{pw}'; "
            f"ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '{pw}'; "
            "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
        )
        for _ in range(20):
            out = subprocess.run(
                ["mariadb", "-uroot", f"--socket={self.socket(cfg)}", "-e", statements],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0:
                break
            time.sleep(0.5)
        else:
            raise ServiceError("mariadb", f"setting the root login failed: {out.stderr.strip()}", log)
        self.wait_ready(cfg, pid)
        self.initialise(cfg)

    def initialise(self, cfg: LabConfig) -> None:
        import pymysql

        text = (cfg.root / "infra" / "mariadb" / "init.sql").read_text()
        for key in ("SHOP_PASSWORD", "MAXWELL_PASSWORD"):
            text = text.replace("${" + key + "}", cfg[key])
        conn = pymysql.connect(
            host=cfg.host_of("mariadb"),
            port=cfg.port("mariadb"),
            user="root",
            password=cfg["MARIADB_ROOT_PASSWORD"],
            autocommit=True,
        )
        try:
            with conn.cursor() as cur:
                for statement in _sql_statements(text):
                    cur.execute(statement)
        finally:
            conn.close()


def _sql_statements(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


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
    """The partner HTTP API that 71_09_03 syncs from (``cdclab.partner_api``): cursor pagination,
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
        pid = self.spawn(cfg, [sys.executable, "-m", "cdclab.partner_api"], env=env)
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
    """Start every service that is not healthy yet; on failure stop what this call started."""
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
                continue
            if svc.pid(cfg) is not None:  # running but unhealthy: restart it
                progress(f"{svc.name}: running but not healthy, restarting")
                svc.stop(cfg)
            t = time.monotonic()
            svc.start(cfg)
            started.append(svc)
            progress(f"{svc.name}: ready in {time.monotonic() - t:.1f}s")
    except BaseException:
        # the failing service may have left a process behind before it raised: stop it only when this
        # call started it (a new instance), never a process that ran before or one that is not ours
        now = current.instance(cfg) if current is not None and current not in started else None
        failing = [current] if current is not None and now is not None and now != before else []
        for svc in reversed(started + failing):
            try:
                svc.stop(cfg)
            except Exception as exc:  # keep stopping the rest
                print(f"  ! stopping {svc.name}: {exc}", file=sys.stderr)
        raise
    progress(f"lab up in {time.monotonic() - t0:.1f}s")
    return status(cfg)


def down(cfg: LabConfig, only: Iterable[str] | None = None) -> None:
    for svc in reversed(select(only)):
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
