"""The native supervisor (compose's ``restart: unless-stopped``): the decision as pure logic, then the
restart path with real ``sleep`` processes on a state directory of its own (``tmp_path``). No lab
service is touched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cdclab.lab import native, supervisor
from cdclab.lab.backend import NativeBackend
from cdclab.lab.config import LabConfig
from cdclab.lab.supervisor import Decision, Track, plan, should_exit

ROOT = Path(__file__).resolve().parents[2]
ORDER = [s.name for s in native.SERVICES]
ALL = set(ORDER)


def healthy_except(*down: str):
    return lambda name: name not in down


# ---------------------------------------------------------------------------------------------
# the decision
# ---------------------------------------------------------------------------------------------
def test_a_wanted_service_whose_process_is_gone_is_restarted_and_nothing_else_is_listed() -> None:
    decisions = plan(ORDER, ALL, ALL - {"airflow-triggerer"}, healthy_except(), {}, now=100.0)
    assert decisions == [Decision("airflow-triggerer", "restart", "its process is gone")]


def test_a_healthy_lab_plans_nothing_and_probes_nothing() -> None:
    def never(name: str) -> bool:
        raise AssertionError(f"probed {name}")

    assert plan(ORDER, ALL, ALL, never, {}, now=0.0) == []


def test_a_service_stopped_on_purpose_is_left_down() -> None:
    # lab stop / lab kill / lab down removed its wanted marker: not listed at all
    assert plan(ORDER, ALL - {"minio"}, ALL - {"minio"}, healthy_except(), {}, now=0.0) == []


def test_postgres_comes_first_and_airflow_waits_for_its_api_server() -> None:
    """Postgres killed by a crash, the triggerer gone with its heartbeat, the api-server running but
    unhealthy (its metadata database is down): Postgres restarts, the triggerer waits."""
    running = ALL - {"postgres", "airflow-triggerer"}
    decisions = plan(ORDER, ALL, running, healthy_except("airflow-api-server"), {}, now=0.0)
    assert decisions == [
        Decision("postgres", "restart", "its process is gone"),
        Decision("airflow-triggerer", "wait", "waiting for airflow-api-server"),
    ]
    # planned again once Postgres is back and the api-server reports healthy: the triggerer's turn
    again = plan(ORDER, ALL, ALL - {"airflow-triggerer"}, healthy_except(), {}, now=30.0)
    assert again == [Decision("airflow-triggerer", "restart", "its process is gone")]


def test_a_dependency_restarted_in_the_same_plan_counts_as_down() -> None:
    running = ALL - {"kafka", "connect"}
    decisions = plan(ORDER, ALL, running, healthy_except(), {}, now=0.0)
    assert decisions == [
        Decision("kafka", "restart", "its process is gone"),
        Decision("connect", "wait", "waiting for kafka"),
    ]


def test_a_service_in_backoff_waits_and_its_dependants_wait_for_it() -> None:
    running = ALL - {"airflow-api-server", "airflow-scheduler"}
    decisions = plan(ORDER, ALL, running, healthy_except(), {"airflow-api-server": 20.0}, now=10.0)
    assert decisions == [
        Decision("airflow-api-server", "backoff", "next try in 10 s"),
        Decision("airflow-scheduler", "wait", "waiting for airflow-api-server"),
    ]
    assert plan(ORDER, ALL, running, healthy_except(), {"airflow-api-server": 20.0}, now=20.0)[0].action == (
        "restart"
    )


def test_a_service_whose_policy_is_no_is_left_alone() -> None:
    decisions = plan(["job"], {"job"}, set(), healthy_except(), {}, now=0.0, policy={"job": "no"})
    assert decisions == [Decision("job", "leave", "restart: no")]


def test_the_supervisor_leaves_when_no_process_of_the_lab_is_left() -> None:
    assert should_exit(set()) is not None  # stopped one by one, or downed by an older launcher
    assert should_exit({"kafka"}) is None  # postgres crashed or was killed: the lab runs on


def test_backoff_doubles_from_5_s_to_5_min_and_resets_once_a_service_ran_a_minute() -> None:
    assert [supervisor.backoff(n) for n in range(0, 9)] == [0, 5, 10, 20, 40, 80, 160, 300, 300]
    t = Track()
    t.died(0.0)  # never restarted by us: at once
    assert t.failures == 0 and t.due == 0.0
    t.restarted(1.0)
    t.died(11.0)  # dead 10 s after the restart: back off
    assert (t.failures, t.due) == (1, 16.0)
    t.failed(16.0)  # the restart failed too
    assert (t.failures, t.due) == (2, 26.0)
    t.restarted(26.0)
    t.running(100.0)  # ran 74 s: stable again
    assert t.failures == 0 and t.restarts == 2


def test_the_policies_are_compose_yamls_and_the_dependencies_follow_its_depends_on() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ORDER:
        assert supervisor.POLICY[name] == compose[name]["restart"], name
    assert set(supervisor.POLICY) == ALL

    def reachable(name: str) -> set[str]:
        seen: set[str] = set()
        todo = list(compose[name].get("depends_on", {}))
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(compose[dep].get("depends_on", {}))
        return seen

    for name, deps in supervisor.DEPENDS.items():
        assert set(deps) <= reachable(name), (name, deps)


def test_a_changed_dag_setting_changes_the_environment_fingerprint(tmp_path: Path) -> None:
    cfg = LabConfig.load(ROOT)
    base = {"PATH": "/usr/bin", "HOME": "/root"}
    same = supervisor.environment_fingerprint(cfg, {**base, "PATH": "/other", "CDCLAB_LAB_START": "never"})
    assert supervisor.environment_fingerprint(cfg, base) == same
    assert supervisor.environment_fingerprint(cfg, {**base, "CDCLAB_USER_DAGS": str(tmp_path)}) != same


# ---------------------------------------------------------------------------------------------
# real processes on a state directory of its own
# ---------------------------------------------------------------------------------------------
class Sleeper(native.Service):
    """A lab service whose process is ``sleep``, started through the launcher's own ``spawn``."""

    def __init__(self, name: str) -> None:
        super().__init__(name, (), 5)
        self.pids: list[int] = []
        self.broken = False

    def address(self, cfg: LabConfig) -> str:
        return "-"

    def healthy(self, cfg: LabConfig) -> bool:
        return self.pid(cfg) is not None

    def start(self, cfg: LabConfig) -> None:
        if self.broken:
            raise native.ServiceError(self.name, "failed to start (a test)")
        self.pids.append(self.spawn(cfg, ["sleep", "300"], env=dict(os.environ)))


@pytest.fixture
def cfg(tmp_path: Path) -> LabConfig:
    base = LabConfig.load(ROOT)
    return LabConfig(root=base.root, state=tmp_path / "state", cache=tmp_path / "cache", values=base.values)


@pytest.fixture
def sleepers(monkeypatch) -> Iterator[list[Sleeper]]:
    """Three services (``db``, ``app`` which depends on it, ``other``) as the lab's; every sleep killed
    at the end."""
    services = [Sleeper("db"), Sleeper("app"), Sleeper("other")]
    monkeypatch.setattr(native, "SERVICES", services)
    monkeypatch.setitem(supervisor.POLICY, "db", "unless-stopped")
    monkeypatch.setitem(supervisor.POLICY, "app", "unless-stopped")
    monkeypatch.setitem(supervisor.POLICY, "other", "unless-stopped")
    monkeypatch.setitem(supervisor.DEPENDS, "app", ("db",))
    yield services
    for svc in services:
        for pid in svc.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def crash(cfg: LabConfig, svc: native.Service) -> int:
    """SIGKILL from outside the launcher (what a crash or `kill -9 <pid>` is); reap it if ours."""
    pid = svc.pid(cfg)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert native.wait_for(lambda: native.gone(pid), 10)
    return pid


def log_text(cfg: LabConfig) -> str:
    return supervisor.log_file(cfg).read_text()


def test_up_wants_what_it_started_and_a_crashed_service_is_restarted_and_logged(cfg, sleepers) -> None:
    db, app, _ = sleepers
    native.up(cfg)
    assert supervisor.is_wanted(cfg, "db") and supervisor.is_wanted(cfg, "app")
    sup = supervisor.Supervisor(cfg, sleepers)
    assert sup.tick() is None and not supervisor.log_file(cfg).exists()  # healthy: nothing done
    old = crash(cfg, app)
    assert sup.tick() is None
    new = app.pid(cfg)
    assert new is not None and new != old and len(app.pids) == 2
    assert db.pids and db.pid(cfg) == db.pids[0], "a healthy service was restarted"
    text = log_text(cfg)
    assert re.search(rf"app +exited \(pid {old} gone", text), text
    assert f"restarted: pid {new}" in text and "(restarts 1)" in text
    sup.write_status("fp")
    assert supervisor.read_status(cfg)["restarts"] == {"app": 1}


def test_a_service_killed_or_stopped_through_the_launcher_stays_down(cfg, sleepers) -> None:
    db, app, _ = sleepers
    native.up(cfg)
    sup = supervisor.Supervisor(cfg, sleepers)
    NativeBackend(cfg).kill("app")  # a drill: on purpose, like docker kill
    NativeBackend(cfg).stop("db")
    assert not supervisor.is_wanted(cfg, "app") and not supervisor.is_wanted(cfg, "db")
    NativeBackend(cfg).kill("other")  # the last process of the lab
    assert sup.tick() is not None  # no process of the lab left: it leaves
    assert app.pid(cfg) is None and db.pid(cfg) is None and len(app.pids) == len(db.pids) == 1
    native.up(cfg, ["db", "app"])  # a start wants them again
    assert supervisor.is_wanted(cfg, "app") and supervisor.is_wanted(cfg, "db")


def test_with_nothing_wanted_the_supervisor_stays_and_sees_a_crash_after_the_next_start(
    cfg, sleepers
) -> None:
    """Seen in the end-to-end run: `lab kill` of the only wanted service, then `up` of it, then a crash.
    The supervisor must not have left in between."""
    _, app, _ = sleepers
    native.up(cfg)
    for name in ("db", "other"):
        supervisor.unwant(cfg, name)  # running, not wanted (started by a launcher without markers)
    sup = supervisor.Supervisor(cfg, sleepers)
    NativeBackend(cfg).kill("app")
    assert sup.tick() is None and app.pid(cfg) is None  # stays; the killed service stays down
    native.up(cfg, ["app"])
    crash(cfg, app)
    assert sup.tick() is None and app.pid(cfg) is not None and len(app.pids) == 3


def test_a_dependant_waits_for_its_dependency_and_follows_it_in_the_same_poll(cfg, sleepers) -> None:
    db, app, _ = sleepers
    native.up(cfg)
    crash(cfg, db)
    crash(cfg, app)
    supervisor.Supervisor(cfg, sleepers).tick()
    assert db.pid(cfg) is not None and app.pid(cfg) is not None
    text = log_text(cfg)
    db_back, app_starts = re.search(r"db +restarted", text), re.search(r"app +restarting", text)
    assert db_back and app_starts and db_back.start() < app_starts.start(), text


def test_while_another_launcher_holds_the_lock_the_supervisor_only_looks(cfg, sleepers) -> None:
    _, app, _ = sleepers
    native.up(cfg)
    crash(cfg, app)
    lock = cfg.pid_file("launcher").with_name("launcher.lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, sys, time; f = open({str(lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        sup = supervisor.Supervisor(cfg, sleepers)
        sup.tick()
        assert app.pid(cfg) is None and len(app.pids) == 1  # `lab up` or `lab kill` is at work
    finally:
        holder.kill()
        holder.wait()
    sup.tick()
    assert app.pid(cfg) is not None and len(app.pids) == 2


def test_a_failed_restart_backs_off_and_keeps_the_service_wanted(cfg, sleepers) -> None:
    _, app, _ = sleepers
    native.up(cfg)
    crash(cfg, app)
    app.broken = True
    sup = supervisor.Supervisor(cfg, sleepers)
    sup.tick()
    assert supervisor.is_wanted(cfg, "app") and sup.tracks["app"].failures == 1
    assert "restart failed: [app] failed to start (a test); next try in 5 s" in log_text(cfg)
    app.broken = False  # start works again, but not before the backoff is over
    sup.tick()
    assert app.pid(cfg) is None
    sup.tracks["app"].due = 0.0
    sup.tick()
    assert app.pid(cfg) is not None


def test_run_leaves_when_the_lab_is_down_and_a_second_supervisor_leaves_at_once(cfg, sleepers) -> None:
    native.up(cfg)
    native.down(cfg)
    assert supervisor.run(cfg, sleepers, interval=0.1) == 0
    assert "exits: no process of the lab is running" in log_text(cfg)
    assert supervisor.read_record(cfg, "supervisor") is None
    lock = cfg.pid_file("supervisor").with_name("supervisor.lock")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import fcntl, time; f = open({str(lock)!r}, 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = log_text(cfg)
        t0 = time.monotonic()
        assert supervisor.run(cfg, sleepers, interval=0.1) == 0
        assert time.monotonic() - t0 < 5 and log_text(cfg) == before  # it never started
    finally:
        holder.kill()
        holder.wait()


def test_ensure_starts_one_supervisor_in_the_background_and_down_stops_it(cfg, monkeypatch) -> None:
    """The real command (``python -m cdclab.cli lab supervise``) on this state directory: one marker
    of a service that is not running keeps it polling (a ``sleep`` stands for a live lab process); it
    restarts nothing: the wanted service waits for Postgres, which is not running here."""
    monkeypatch.setenv("CDCLAB_STATE", str(cfg.state))
    keep = Sleeper("partner-api")  # a real service name: the supervisor process uses native.SERVICES
    keep.start(cfg)
    try:
        supervisor.want(cfg, "workload", "test")  # wanted, not running, postgres (its dependency) down
        pid = supervisor.ensure(cfg)
        assert pid is not None and native.pid_alive(pid)
        assert supervisor.ensure(cfg) == pid  # idempotent: no second supervisor
        assert "supervisor: running (pid" in supervisor.describe(cfg)
        assert native.wait_for(
            lambda: "workload" in log_text(cfg) and "waiting for postgres" in log_text(cfg), 20
        )
        native.down(cfg)
        assert native.wait_for(lambda: not native.pid_alive(pid), 10)
        assert "exits: signal 15" in log_text(cfg)
        assert "not running" in supervisor.describe(cfg)
    finally:
        for p in keep.pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_service_process_on_its_way_out_is_not_taken_for_another_program(
    cfg, sleepers, monkeypatch, capsys
):
    """Just after a SIGKILL the process still holds its pid and start time but its command line reads
    empty (seen in the end-to-end run): not running, and its pid file is not removed as a stranger's."""
    from cdclab.lab import processes, service

    _, app, _ = sleepers
    native.up(cfg)
    pid = app.pid(cfg)
    assert pid is not None
    monkeypatch.setattr(processes, "proc_cmdline", lambda p: [] if p == pid else None)
    monkeypatch.setattr(service, "proc_cmdline", lambda p: [] if p == pid else None)
    assert app.pid(cfg) is None
    assert cfg.pid_file("app").exists() and native.read_record(cfg, "app") is not None
    assert "removed the stale pid file" not in capsys.readouterr().err
