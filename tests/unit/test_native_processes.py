"""The native launcher signals only processes it started (issue 11, item 7), with real processes.

Each test runs the launcher on its own state directory (``tmp_path``) with ``sleep`` processes: a
"foreign" one started here, outside the launcher, that a pid file points at, and ones the launcher's
own ``Service.spawn`` starts. No lab service is touched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cdclab.lab import native
from cdclab.lab.backend import LabError, NativeBackend
from cdclab.lab.config import LabConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path: Path) -> LabConfig:
    base = LabConfig.load(ROOT)
    return LabConfig(root=base.root, state=tmp_path / "state", cache=tmp_path / "cache", values=base.values)


@pytest.fixture
def processes() -> Iterator[list[int]]:
    """Pids to SIGKILL at the end, whatever the test did (only processes this test started)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def foreign_sleep(processes: list[int]) -> subprocess.Popen[bytes]:
    """A process the lab did not start, in its own process group (so a killpg on its pid would land)."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    processes.append(proc.pid)
    return proc


class Sleeper(native.Service):
    """A lab service whose process is ``sleep``, started through the launcher's own ``spawn``."""

    def __init__(self, name: str, is_healthy: bool = True, fail: bool = False) -> None:
        super().__init__(name, (), 5)
        self.is_healthy, self.fail = is_healthy, fail
        self.pids: list[int] = []

    def address(self, cfg: LabConfig) -> str:
        return "-"

    def healthy(self, cfg: LabConfig) -> bool:
        return self.is_healthy and self.pid(cfg) is not None

    def start(self, cfg: LabConfig) -> None:
        self.pids.append(self.spawn(cfg, ["sleep", "300"], env=dict(os.environ)))
        if self.fail:
            raise native.ServiceError(self.name, "failed to start (a test service)")


def alive(proc_or_pid: subprocess.Popen[bytes] | int) -> bool:
    if isinstance(proc_or_pid, subprocess.Popen):
        return proc_or_pid.poll() is None
    return native.pid_alive(proc_or_pid)


def test_the_start_time_is_field_22_of_proc_stat_and_names_one_process(processes) -> None:
    a, b = foreign_sleep(processes), foreign_sleep(processes)
    ta, tb = native.proc_start_ticks(a.pid), native.proc_start_ticks(b.pid)
    assert ta is not None and tb is not None and ta <= tb
    boot_ticks = time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK")
    assert 0 < ta <= boot_ticks + 1  # ticks since boot, not a wall-clock time
    assert native.proc_cmdline(a.pid) == ["sleep", "300"]
    a.kill()
    a.wait()
    assert native.proc_start_ticks(a.pid) is None


def test_a_pid_file_pointing_at_a_foreign_process_is_removed_and_the_process_survives_down_and_kill(
    cfg, processes
) -> None:
    svc = native.service("partner-api")
    pid_file = cfg.pid_file(svc.name)
    for record in ("none", "other start time", "other command line"):
        foreign = foreign_sleep(processes)
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        real = native.ProcessRecord.of(foreign.pid, ["sleep", "300"])
        if record == "other start time":  # the lab's process died and its pid was reused
            native.write_record(cfg, svc.name, replace(real, start_ticks=real.start_ticks - 1))
        elif record == "other command line":
            native.write_record(
                cfg, svc.name, replace(real, argv=("java", "kafka.Kafka"), cmdline=("java", "kafka.Kafka"))
            )
        else:  # a bare pid file (no record of what the lab started)
            pid_file.write_text(str(foreign.pid))

        native.down(cfg, [svc.name])
        assert alive(foreign), record
        assert not pid_file.exists() and not native.record_file(cfg, svc.name).exists(), record

        pid_file.write_text(str(foreign.pid))
        with pytest.raises(LabError, match="not running"):
            NativeBackend(cfg).kill(svc.name)
        assert alive(foreign), record
        assert svc.pid(cfg) is None
        foreign.kill()
        foreign.wait()


def test_a_process_the_launcher_spawned_is_recognised_and_stopped(cfg, processes) -> None:
    svc = Sleeper("h11-sleeper")
    pid = svc.spawn(cfg, ["sleep", "300"], env=dict(os.environ))
    processes.append(pid)
    record = native.read_record(cfg, svc.name)
    assert record is not None and record.pid == pid and record.is_running()
    assert record.start_ticks == native.proc_start_ticks(pid)
    assert record.cmdline == ("sleep", "300")
    assert svc.pid(cfg) == pid
    svc.stop(cfg, timeout=10)
    assert native.wait_for(lambda: not alive(pid), 10)
    assert not cfg.pid_file(svc.name).exists() and not native.record_file(cfg, svc.name).exists()


def test_a_retitled_process_still_counts_when_it_names_the_program_started(cfg, processes) -> None:
    """Airflow's api-server renames itself (setproctitle "airflow api_server -- ..."); the start time
    and the program's name still identify it."""
    proc = subprocess.Popen(["bash", "-c", "exec -a 'sleep retitled' sleep 300"], start_new_session=True)
    processes.append(proc.pid)
    assert native.wait_for(lambda: (native.proc_cmdline(proc.pid) or [""])[0] == "sleep retitled", 10)
    record = native.ProcessRecord(
        proc.pid, native.proc_start_ticks(proc.pid) or 0, ("sleep", "300"), ("sleep", "300")
    )
    assert record.is_running()
    assert not replace(record, argv=("java",)).is_running()


def test_a_failed_up_stops_only_what_it_started(cfg, processes, monkeypatch) -> None:
    """``up`` starts ``first``, finds ``connect`` already healthy (started by an earlier ``up``) and
    fails while registering connectors; then a second ``up`` starts ``broken``, which spawns and fails.
    Stopped: ``first`` and ``broken``'s new process. Left running: ``connect``, and a foreign process
    that a stale pid file of ``first`` pointed at before."""
    first, connect, broken = Sleeper("first"), Sleeper("connect"), Sleeper("broken", fail=True)
    connect.spawn(cfg, ["sleep", "300"], env=dict(os.environ))
    running = connect.pid(cfg)
    assert running is not None
    processes.append(running)
    foreign = foreign_sleep(processes)
    cfg.pid_file("first").write_text(str(foreign.pid))  # stale: no record

    def refused(*args: object, **kwargs: object) -> None:
        raise native.ServiceError("connect", "connector refused (a test)")

    monkeypatch.setattr(native, "register_connectors", refused)
    monkeypatch.setattr(native, "SERVICES", [first, connect])
    with pytest.raises(native.ServiceError, match="connector refused"):
        native.up(cfg)
    processes.extend(first.pids)
    assert len(first.pids) == 1 and native.wait_for(lambda: not alive(first.pids[0]), 10)
    assert native.read_record(cfg, "first") is None  # stopped, its files removed
    assert alive(running), "a failed up stopped a service it did not start"
    assert alive(foreign)

    monkeypatch.setattr(native, "SERVICES", [connect, broken])
    monkeypatch.setattr(native, "register_connectors", lambda *a, **k: None)
    with pytest.raises(native.ServiceError, match="a test service"):
        native.up(cfg)
    processes.extend(broken.pids)
    assert len(broken.pids) == 1 and native.wait_for(lambda: not alive(broken.pids[0]), 10)
    assert native.read_record(cfg, "broken") is None and not cfg.pid_file("broken").exists()
    assert alive(running) and alive(foreign)


def test_backend_choice_keeps_a_running_native_lab(tmp_path, monkeypatch):
    """With no LAB_BACKEND, a state folder without live native processes is not a running native lab."""
    from cdclab.lab import backend
    from cdclab.lab.config import LabConfig

    monkeypatch.setenv("CDCLAB_STATE", str(tmp_path))
    assert backend.native_lab_running(LabConfig.load()) is False
    monkeypatch.delenv("LAB_BACKEND", raising=False)
    monkeypatch.setattr(backend, "native_lab_running", lambda cfg=None: True)
    monkeypatch.setattr(backend, "engine_answers", lambda: True)
    assert backend.backend_name() == "native"
    monkeypatch.setattr(backend, "native_lab_running", lambda cfg=None: False)
    assert backend.backend_name() == "compose"


def test_descendants_finds_children_and_grandchildren_even_in_their_own_sessions() -> None:
    # a child that is its own session leader (as a Postgres backend is), with a child of its own
    proc = subprocess.Popen(["sh", "-c", "setsid sh -c 'sleep 30 & sleep 30' & sleep 30"])
    try:
        assert native.wait_for(lambda: len(native.descendants(proc.pid)) >= 4, 10)
        found = native.descendants(proc.pid)
        sessions = {os.getsid(p) for p in found if native.pid_alive(p)}
        assert len(sessions) >= 2  # the setsid'd branch has left the parent's session
    finally:
        for p in [proc.pid, *native.descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        proc.wait()


def test_gone_reaps_a_killed_child_of_this_process_so_its_pid_leaves_the_process_table() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    assert not native.gone(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    # dead at once, but a zombie (still holding its pid) until reaped: gone() reaps it
    assert native.wait_for(lambda: native.gone(proc.pid), 10)
