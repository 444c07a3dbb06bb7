"""One lab interface, two backends: compose (Docker) and native (plain processes).

``backend(cfg)`` picks one: ``$LAB_BACKEND`` (``compose`` | ``native``) if set, else compose when a
Docker engine and its Compose plugin answer, else native. Both have the same operations, so the
Makefile, the CLI, the tests and the fault drills never ask which one runs:

- ``up(services)`` / ``down(services)`` / ``clean()``: start (idempotent), stop (keep data), wipe
- ``status()``: rows of (service, address, state), the same table under both backends
- ``start(s)`` / ``stop(s)`` / ``restart(s)`` / ``kill(s)``: one service; ``kill`` is SIGKILL
- ``logs(s, lines)``: the last lines of a service's log
- ``instances()``: which process or container runs each service now (changes when one restarts)

Service names are the native launcher's (``postgres``, ``kafka``, ``connect``, ``minio``, ``mariadb``,
``maxwell``, ``partner-api``, ``airflow-api-server`` ...), which are also the compose service names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from cdclab.lab import native, supervisor
from cdclab.lab.config import ENV_FILES, LabConfig
from cdclab.lab.container import AIRFLOW

Row = tuple[str, str, str]


class LabError(RuntimeError):
    """A backend operation failed; the message names the service and the command."""


class Backend(Protocol):
    name: str
    cfg: LabConfig

    def up(self, services: Sequence[str] | None = None) -> list[Row]: ...
    def down(self, services: Sequence[str] | None = None) -> None: ...
    def clean(self) -> None: ...
    def status(self) -> list[Row]: ...
    def start(self, service: str) -> None: ...
    def stop(self, service: str) -> None: ...
    def restart(self, service: str) -> None: ...
    def kill(self, service: str) -> None: ...
    def logs(self, service: str, lines: int = 100) -> str: ...
    def instances(self) -> dict[str, str]: ...


def service_names() -> list[str]:
    return [s.name for s in native.SERVICES]


def _check_name(service: str) -> str:
    if service not in service_names():
        raise LabError(f"unknown lab service {service!r}; one of {service_names()}")
    return service


def connector_rows(cfg: LabConfig) -> list[Row]:
    """One row per connectors/*.json: its state and its tasks' states (when Connect answers)."""
    rows: list[Row] = []
    for path in sorted((cfg.root / "connectors").glob("*.json")):
        name = json.loads(path.read_text())["name"]
        try:
            cstate, tasks, _ = native.connector_state(cfg, name)
        except Exception:  # Connect not answering: the connect row already says so
            continue
        rows.append((f"  connector {name}", "", f"{cstate} (tasks {','.join(tasks) or '-'})"))
    return rows


def all_healthy(rows: Iterable[Row]) -> bool:
    return native.all_healthy(list(rows))


format_table = native.format_table


# ---------------------------------------------------------------------------------------------
# native: plain processes with pid files (src/cdclab/lab/native.py)
# ---------------------------------------------------------------------------------------------
class NativeBackend:
    name = "native"

    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg

    def up(self, services: Sequence[str] | None = None) -> list[Row]:
        rows = native.up(self.cfg, services)
        self.supervise()
        return rows

    def supervise(self) -> None:
        """Start the supervisor (compose's ``restart: unless-stopped``) unless one runs already."""
        pid = supervisor.ensure(self.cfg)
        native.progress(
            f"supervisor: {'running, pid ' + str(pid) if pid else 'did not start'} "
            f"(restarts a service that dies; {supervisor.log_file(self.cfg)})"
        )

    def down(self, services: Sequence[str] | None = None) -> None:
        native.down(self.cfg, services)

    def clean(self) -> None:
        native.clean(self.cfg)

    def status(self) -> list[Row]:
        return native.status(self.cfg)

    def start(self, service: str) -> None:
        native.up(self.cfg, [_check_name(service)])
        self.supervise()

    def stop(self, service: str) -> None:
        """On purpose: the supervisor leaves the service down (``docker compose stop``)."""
        with supervisor.launcher_lock(self.cfg):
            supervisor.unwant(self.cfg, _check_name(service))
            native.service(service).stop(self.cfg)

    def restart(self, service: str) -> None:
        self.stop(service)
        self.start(service)

    def kill(self, service: str) -> None:
        """SIGKILL, on purpose: as ``docker kill`` disables a container's restart policy until its next
        start, the supervisor leaves a killed service down (a drill brings it back with ``up``/``start``).
        A process that dies otherwise (a crash, ``kill -9`` from elsewhere) is restarted."""
        with supervisor.launcher_lock(self.cfg):
            self._kill(service)

    def _kill(self, service: str) -> None:
        svc = native.service(_check_name(service))
        pid = svc.pid(self.cfg)
        if pid is None:
            raise LabError(f"[{service}] is not running: nothing to kill")
        supervisor.unwant(self.cfg, service)
        # the whole service, as `docker kill` kills a container: the process group and every descendant
        # (a Postgres backend is its own session leader and would outlive its postmaster for a moment,
        # holding its shared memory, so a start right after the kill would fail)
        pids = [pid, *native.descendants(pid)]
        os.killpg(pid, signal.SIGKILL)
        for child in pids[1:]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGKILL)
        if not native.wait_for(lambda: all(native.gone(p) for p in pids), 30):
            left = [p for p in pids if not native.gone(p)]
            raise LabError(f"[{service}] processes {left} still in the process table 30 s after SIGKILL")

    def instances(self) -> dict[str, str]:
        return {s.name: f"pid {s.pid(self.cfg)}" for s in native.SERVICES}

    def logs(self, service: str, lines: int = 100) -> str:
        """A service's log, or the supervisor's (``make logs S=supervisor``)."""
        path = self.cfg.log_file(service if service == supervisor.NAME else _check_name(service))
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------
# compose: the Compose CLI on compose.yaml with the env files (as `make up` runs it)
# ---------------------------------------------------------------------------------------------
class ComposeBackend:
    name = "compose"

    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg

    def command(self, *args: str) -> list[str]:
        env_files = [arg for name in ENV_FILES for arg in ("--env-file", str(self.cfg.root / "infra" / name))]
        return [
            "docker",
            "compose",
            "--project-directory",
            str(self.cfg.root),
            "-f",
            str(self.cfg.root / "compose.yaml"),
            *env_files,
            *args,
        ]

    def run(self, *args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        cmd = self.command(*args)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise LabError(
                f"`docker compose {' '.join(args)}` failed (exit {out.returncode}):\n"
                + "\n".join((out.stderr or out.stdout).strip().splitlines()[-30:])
            )
        return out

    def up(self, services: Sequence[str] | None = None) -> list[Row]:
        """``docker compose up -d --build --wait``: progress goes to the terminal as it comes (image
        builds take minutes the first time); on failure the error names the services that are not
        healthy, with compose's last lines and each one's log tail."""
        cmd = self.command("up", "-d", "--build", "--wait", *(services or []))
        tail: list[str] = []
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                print(line, end="", flush=True)
                tail = [*tail[-39:], line.rstrip()]
        if proc.returncode != 0:
            rows = self.status()
            wanted = set(services or service_names())
            bad = [r for r in rows if r[0] in wanted and not r[2].startswith("healthy")]
            logs = "\n".join(f"==> {r[0]} <==\n{self.logs(r[0], 20)}" for r in bad)
            who = ",".join(r[0] for r in bad) or ",".join(sorted(wanted))
            raise LabError(
                f"[{who}] `docker compose up` failed (exit {proc.returncode}):\n"
                + "\n".join(tail[-15:])
                + (f"\n{format_table(bad)}\n{logs}" if bad else "")
            )
        return self.status()

    def down(self, services: Sequence[str] | None = None) -> None:
        if services:
            self.run("stop", *services)
        else:
            self.run("down")

    def clean(self) -> None:
        self.run("down", "-v", "--remove-orphans")

    def containers(self) -> dict[str, dict[str, object]]:
        out = self.run("ps", "-a", "--format", "json", check=False)
        rows: dict[str, dict[str, object]] = {}
        text = out.stdout.strip()
        if not text:
            return rows
        # one JSON object a line (Compose v2.21+), or one JSON array (older)
        items = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines()]
        for item in items:
            rows[str(item["Service"])] = item
        return rows

    def status(self) -> list[Row]:
        found = self.containers()
        rows: list[Row] = []
        for svc in native.SERVICES:
            c = found.get(svc.name)
            if c is None:
                state = "stopped"
            else:
                health = str(c.get("Health") or "")
                running = c.get("State") == "running"
                if running and health in ("healthy", ""):
                    state = "healthy"
                elif running:
                    state = "unhealthy" if health == "unhealthy" else "starting"
                else:
                    state = f"stopped ({c.get('State')})"
                state += f" (container {c.get('Name')})"
            rows.append((svc.name, svc.address(self.cfg), state))
            if svc.name == "connect" and state.startswith("healthy"):
                rows += connector_rows(self.cfg)
        return rows

    def start(self, service: str) -> None:
        self.run("up", "-d", "--no-deps", "--wait", _check_name(service))

    def stop(self, service: str) -> None:
        self.run("stop", _check_name(service))

    def restart(self, service: str) -> None:
        self.run("restart", _check_name(service))
        self.run("up", "-d", "--no-deps", "--wait", service)

    def kill(self, service: str) -> None:
        self.run("kill", "-s", "KILL", _check_name(service))

    def instances(self) -> dict[str, str]:
        found = self.containers()
        ids = {name: str(c["ID"]) for name, c in found.items() if name in service_names()}
        if not ids:
            return {}
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.Id}} {{.State.StartedAt}}", *ids.values()],
            capture_output=True,
            text=True,
            timeout=60,
        )
        started = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
        return {
            name: f"container {cid[:12]} started {next((v for k, v in started.items() if k.startswith(cid)), '?')}"
            for name, cid in ids.items()
        }

    def logs(self, service: str, lines: int = 100) -> str:
        out = self.run("logs", "--no-color", "--tail", str(lines), _check_name(service), check=False)
        return out.stdout + out.stderr


def reload_airflow(lab: NativeBackend | ComposeBackend) -> None:
    """Stop, then start, the lab's Airflow components, so that they take the DAG settings of this
    process's environment (``CDCLAB_USER_DAGS``, ``CDCLAB_USER_PYTHONPATH``, ``CDCLAB_BUNDLED_DAGS``):
    natively new processes get the new environment; under compose ``up`` recreates the containers
    whose environment or mounts changed. The other services keep running (docs/harness.md). Compose
    stops the four in one command and starts them in one ``up --wait`` (their health checks are waited
    for together, not one after another)."""
    if isinstance(lab, ComposeBackend):
        lab.run("stop", *reversed(AIRFLOW))
        lab.run("up", "-d", "--no-deps", "--wait", *AIRFLOW)
        return
    for service in reversed(AIRFLOW):
        lab.stop(service)
    for service in AIRFLOW:
        lab.start(service)


def testcontainers_compose(cfg: LabConfig, echo: Callable[[str], None]) -> Any:
    """testcontainers' ``DockerCompose`` for the lab's compose.yaml and env files (``up --build
    --wait``), with the progress of ``up`` (image builds, containers created, healthy) sent line by
    line to ``echo`` as it comes: testcontainers itself captures the output until the command ends,
    which on a first start means minutes of silence."""
    from testcontainers.compose import DockerCompose

    class _Streaming(DockerCompose):
        def _run_command(self, cmd: Any, context: str | None = None) -> subprocess.CompletedProcess[bytes]:
            if not (isinstance(cmd, list) and "up" in cmd):
                return super()._run_command(cmd, context)
            lines: list[bytes] = []
            with subprocess.Popen(
                cmd, cwd=context or str(self.context), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            ) as proc:
                assert proc.stdout is not None
                for raw in proc.stdout:
                    lines.append(raw)
                    echo("  · " + raw.decode(errors="replace").rstrip())
            out = b"".join(lines)
            if proc.returncode != 0:
                raise subprocess.CalledProcessError(proc.returncode, cmd, output=out, stderr=b"")
            return subprocess.CompletedProcess(cmd, proc.returncode, out, b"")

    return _Streaming(
        context=str(cfg.root),
        compose_file_name="compose.yaml",
        build=True,
        wait=True,
        env_file=[f"infra/{name}" for name in ENV_FILES],
    )


def engine_answers() -> bool:
    """A Docker engine and its Compose plugin answer (what `make up` checks before choosing compose)."""
    if shutil.which("docker") is None:
        return False
    try:
        for cmd in (["docker", "info"], ["docker", "compose", "version"]):
            if subprocess.run(cmd, capture_output=True, timeout=20).returncode != 0:
                return False
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def native_lab_running(cfg: LabConfig | None = None) -> bool:
    """A process the native launcher started is alive (its pid record names a live process of ours)."""
    cfg = cfg or LabConfig.load()
    return any(svc.pid(cfg) is not None for svc in native.SERVICES)


def backend_name() -> str:
    """``$LAB_BACKEND``; else native when a native lab is running here (a user who installed Docker
    later keeps the lab they started), else compose when an engine answers, else native."""
    name = os.environ.get("LAB_BACKEND") or (
        "native" if native_lab_running() else "compose" if engine_answers() else "native"
    )
    if name not in ("compose", "native"):
        raise LabError(f"LAB_BACKEND={name!r}: use compose or native")
    return name


def backend(cfg: LabConfig | None = None, name: str | None = None) -> NativeBackend | ComposeBackend:
    cfg = cfg or LabConfig.load()
    chosen = name or backend_name()
    return ComposeBackend(cfg) if chosen == "compose" else NativeBackend(cfg)
