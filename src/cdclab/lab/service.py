"""The native launcher's :class:`Service`: start as a plain process with a pid record and a log file,
wait until ready, stop, judge health (see :mod:`cdclab.lab.native`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab.config import LabConfig
from cdclab.lab.processes import (
    ProcessRecord,
    ServiceError,
    forget,
    pid_alive,
    port_open,
    port_owner,
    proc_cmdline,
    proc_start_ticks,
    read_record,
    wait_for,
    write_record,
)


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
        if (
            record is not None
            and record.pid == pid
            and not record.is_running()
            and proc_start_ticks(pid) == record.start_ticks
            and not proc_cmdline(pid)
        ):
            return None  # our process on its way out (a SIGKILL: its command line is already gone)
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
