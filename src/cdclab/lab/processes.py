"""Process bookkeeping of the native launcher: pid files and records (a pid that was reused is
never signalled), ports, waiting, process trees, and :class:`ServiceError` (see :mod:`cdclab.lab.native`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cdclab.cdc.connect import http_json as http_json  # the launcher's and the tests' JSON requests
from cdclab.lab.config import LabConfig


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
