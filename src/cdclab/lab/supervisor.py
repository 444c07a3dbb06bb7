"""The native launcher's supervisor: compose's ``restart: unless-stopped`` for plain processes.

Vocabulary:

- *wanted*: a service the launcher started (or found healthy) and nobody stopped on purpose since. A
  marker file ``<state>/run/<service>.wanted`` says so: ``lab up`` / ``lab start`` write it once the
  service is healthy; ``lab down``, ``lab stop`` and ``lab kill`` remove it *before* they touch the
  process. ``lab kill`` counts as on purpose, as ``docker kill`` does: Docker disables a container's
  restart policy until its next start, so the kill drills decide themselves when a service comes back.
- *died*: a wanted service whose process is gone (a crash, ``kill -9`` from outside the launcher, the
  Airflow triggerer leaving after its database heartbeat failed while Postgres was down).
- *policy*: compose.yaml's ``restart:`` of the service (:data:`POLICY`); every long-running lab service
  has ``unless-stopped`` (the one-shot ``*-init`` jobs are part of a native start).
- *depends on*: what must be healthy before a restart (:data:`DEPENDS`): the runtime needs of compose's
  ``depends_on`` (an Airflow component waits for the api-server, which waits for Postgres).

The supervisor (``cdclab lab supervise``, started in the background by ``lab up``/``lab start``, its pid
record ``<state>/run/supervisor.pid``) polls every few seconds; a died service whose dependencies are
healthy is started again through its own :meth:`Service.start`, with a backoff when it keeps dying
(5 s, doubling to 5 min; reset once it has run for a minute). Every exit and restart is a line in
``<state>/logs/supervisor.log``; restart counts are in ``<state>/run/supervisor.json`` (``lab status``).

Two launcher actions never overlap: ``up``, ``down``, ``stop``, ``kill`` and a supervisor restart take
one lock (``<state>/run/launcher.lock``, :func:`launcher_lock`); the supervisor only tries it (a busy
lock means somebody is operating the lab: it looks again at the next poll) and decides under it. A
second supervisor of the same state directory exits at once (``<state>/run/supervisor.lock``). It exits
by itself when no process of the lab is left (a lab downed by an older cdclab; a lab whose every
process is gone at once counts as stopped, not as crashed).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from cdclab.lab.config import LabConfig
from cdclab.lab.processes import ProcessRecord, forget, pid_alive, read_record, wait_for, write_record
from cdclab.lab.service import Service

NAME = "supervisor"
INTERVAL = 3.0  # seconds between polls
BACKOFF_FIRST = 5.0  # the wait before a restart after a quick death or a failed restart, doubling
BACKOFF_MAX = 300.0
STABLE = 60.0  # a service that ran this long since its restart starts again at once when it dies

Policy = Literal["unless-stopped", "no"]

# compose.yaml's restart: per service (tests/unit/test_supervisor.py checks it against the file)
POLICY: dict[str, Policy] = {
    "postgres": "unless-stopped",
    "kafka": "unless-stopped",
    "connect": "unless-stopped",
    "minio": "unless-stopped",
    "mariadb": "unless-stopped",
    "maxwell": "unless-stopped",
    "partner-api": "unless-stopped",
    "workload": "unless-stopped",
    "airflow-api-server": "unless-stopped",
    "airflow-scheduler": "unless-stopped",
    "airflow-dag-processor": "unless-stopped",
    "airflow-triggerer": "unless-stopped",
}

# what must be healthy before a restart: compose's depends_on, as the running services need it
DEPENDS: dict[str, tuple[str, ...]] = {
    "connect": ("kafka", "postgres"),
    "maxwell": ("mariadb", "kafka"),
    "workload": ("postgres",),
    "airflow-api-server": ("postgres",),
    "airflow-scheduler": ("airflow-api-server",),
    "airflow-dag-processor": ("airflow-api-server",),
    "airflow-triggerer": ("airflow-api-server",),
}


class Stopped(BaseException):
    """SIGTERM/SIGINT: the supervisor leaves at once (``lab down`` stops it before the services)."""


# ---------------------------------------------------------------------------------------------
# wanted markers and the launcher lock
# ---------------------------------------------------------------------------------------------
def wanted_file(cfg: LabConfig, service: str) -> Path:
    return cfg.pid_file(service).with_name(f"{service}.wanted")


def want(cfg: LabConfig, service: str, by: str) -> None:
    """``service`` should run: restart it when it dies (``lab up`` / ``lab start``)."""
    path = wanted_file(cfg, service)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"since": _now(), "by": by}) + "\n")


def unwant(cfg: LabConfig, service: str) -> None:
    """``service`` is stopped on purpose (``lab down`` / ``stop`` / ``kill``): leave it down."""
    wanted_file(cfg, service).unlink(missing_ok=True)


def is_wanted(cfg: LabConfig, service: str) -> bool:
    return wanted_file(cfg, service).exists()


_LOCKS: dict[Path, tuple[IO[str], int]] = {}  # lock file -> (open file, depth): re-entrant per process


@contextlib.contextmanager
def launcher_lock(cfg: LabConfig, blocking: bool = True) -> Iterator[bool]:
    """The lab's one launcher lock (flock on ``<state>/run/launcher.lock``); yields whether it is held.
    Re-entrant within a process (``restart`` = ``stop`` + ``start``, ``clean`` = ``down`` + ...)."""
    path = cfg.pid_file("launcher").with_name("launcher.lock")
    if path in _LOCKS:
        fh, depth = _LOCKS[path]
        _LOCKS[path] = (fh, depth + 1)
        try:
            yield True
        finally:
            fh, depth = _LOCKS[path]
            _LOCKS[path] = (fh, depth - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # held across the yield
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        _LOCKS[path] = (fh, 1)
        try:
            yield True
        finally:
            del _LOCKS[path]
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


# ---------------------------------------------------------------------------------------------
# the decision (pure)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    service: str
    action: Literal["restart", "wait", "backoff", "leave"]
    reason: str


def plan(
    order: Sequence[str],
    wanted: Iterable[str],
    running: Iterable[str],
    healthy: Callable[[str], bool],
    due: Mapping[str, float],
    now: float,
    policy: Mapping[str, Policy] = POLICY,
    depends: Mapping[str, tuple[str, ...]] = DEPENDS,
) -> list[Decision]:
    """What to do about each service that is wanted and not running, in ``order`` (the start order).

    - ``leave``: its policy is ``no`` (compose never restarts it either);
    - ``backoff``: it died again soon after a restart, or a restart failed: not before ``due``;
    - ``wait``: a dependency is down or unhealthy (a dependency restarted in this plan counts as down:
      its dependants are planned again after it);
    - ``restart``: start it now.

    A service that is not wanted (never started, or stopped on purpose) or is running is not listed:
    the supervisor leaves it alone. ``healthy`` is asked only about dependencies of a died service."""
    wanted_set, running_set = set(wanted), set(running)
    down = [s for s in order if s in wanted_set and s not in running_set]
    decisions: list[Decision] = []
    pending: set[str] = set()
    for service in down:
        if policy.get(service, "no") != "unless-stopped":
            decisions.append(Decision(service, "leave", f"restart: {policy.get(service, 'no')}"))
            continue
        if now < due.get(service, 0.0):
            decisions.append(Decision(service, "backoff", f"next try in {due[service] - now:.0f} s"))
            pending.add(service)
            continue
        blocked = [
            d for d in depends.get(service, ()) if d in pending or d not in running_set or not healthy(d)
        ]
        if blocked:
            decisions.append(Decision(service, "wait", f"waiting for {', '.join(blocked)}"))
        else:
            decisions.append(Decision(service, "restart", "its process is gone"))
        pending.add(service)
    return decisions


def should_exit(running_anywhere: Iterable[str]) -> str | None:
    """Why the supervisor should leave, or None: no process of the lab runs at all (every service
    stopped one by one, or the lab downed by a launcher that does not know the supervisor, which leaves
    the wanted markers behind). ``lab down`` stops it before that. While any service runs it stays,
    also when nothing is wanted at the moment: a ``lab kill`` of the last wanted service is followed by
    a ``start`` that wants it again, and a crash after that must be seen."""
    if not set(running_anywhere):
        return "no process of the lab is running: the lab is down"
    return None


@dataclass
class Track:
    """One service's restart history in this supervisor (monotonic times)."""

    restarts: int = 0
    failures: int = 0  # consecutive failed restarts or deaths within STABLE of a restart
    due: float = 0.0
    restarted_at: float | None = None
    down_since: float | None = None  # when its death was noticed (None while it runs)
    waiting: str = ""  # the last wait reason logged (logged once, not every poll)

    def died(self, now: float) -> None:
        """Its process was noticed gone: a death soon after our restart backs off."""
        self.down_since = now
        if self.restarted_at is not None and now - self.restarted_at < STABLE:
            self.failures += 1
            self.due = now + backoff(self.failures)

    def running(self, now: float) -> None:
        self.down_since, self.waiting = None, ""
        if self.restarted_at is not None and now - self.restarted_at >= STABLE:
            self.failures = 0

    def restarted(self, now: float) -> None:
        self.restarts += 1
        self.restarted_at, self.down_since, self.waiting = now, None, ""

    def failed(self, now: float) -> None:
        self.failures += 1
        self.due = now + backoff(self.failures)


def backoff(failures: int) -> float:
    """The wait before the next restart after ``failures`` quick deaths or failed restarts in a row."""
    return 0.0 if failures <= 0 else min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def log_file(cfg: LabConfig) -> Path:
    return cfg.log_file(NAME)


def status_file(cfg: LabConfig) -> Path:
    return cfg.pid_file(NAME).with_name(f"{NAME}.json")


def log(cfg: LabConfig, service: str, message: str) -> None:
    path = log_file(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(f"{_now()}  {service:<22} {message}\n")


@dataclass
class Supervisor:
    cfg: LabConfig
    services: Sequence[Service]
    only: frozenset[str] | None = None  # restart only these (the others are watched, never touched)
    interval: float = INTERVAL
    tracks: dict[str, Track] = field(default_factory=dict)
    exits: dict[int, str] = field(default_factory=dict)  # pid -> how it ended (children reaped here)
    last_pid: dict[str, int] = field(default_factory=dict)

    def track(self, name: str) -> Track:
        return self.tracks.setdefault(name, Track())

    def reap(self) -> None:
        """Collect the exit status of services this supervisor started (its children)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if os.WIFSIGNALED(status):
                self.exits[pid] = f"killed by signal {os.WTERMSIG(status)}"
            else:
                self.exits[pid] = f"exit code {os.WEXITSTATUS(status)}"

    def observe(self) -> tuple[set[str], set[str]]:
        wanted, running = set(), set()
        for svc in self.services:
            pid = svc.pid(self.cfg)
            if pid is not None:
                running.add(svc.name)
                self.last_pid[svc.name] = pid
            if is_wanted(self.cfg, svc.name):
                wanted.add(svc.name)
        return wanted, running

    def how_it_ended(self, name: str) -> str:
        pid = self.last_pid.get(name)
        if pid is None:
            return "not running"
        return f"pid {pid} gone, {self.exits.pop(pid, 'exit status unknown (not started by the supervisor)')}"

    def tick(self) -> str | None:
        """One poll; returns why the supervisor should leave, or None."""
        self.reap()
        wanted, running = self.observe()
        reason = should_exit(running)
        if reason is not None:
            return reason
        now = time.monotonic()
        for name in running:
            self.track(name).running(now)
        for name in sorted(wanted - running):
            if self.track(name).down_since is None and (self.only is None or name in self.only):
                log(self.cfg, name, f"exited ({self.how_it_ended(name)})")
                self.track(name).died(now)
        if not wanted - running:
            return None
        with launcher_lock(self.cfg, blocking=False) as held:
            if held:
                self.restart_what_died()
        return None

    def restart_what_died(self) -> None:
        """Under the launcher lock: plan, restart the first service due, plan again (its dependants may
        be due now), until nothing more is to restart in this poll."""
        tried: set[str] = set()
        for _ in range(len(self.services)):
            wanted, running = self.observe()
            if self.only is not None:
                wanted &= self.only
            now = time.monotonic()
            due = {n: t.due for n, t in self.tracks.items()}
            decisions = plan([s.name for s in self.services], wanted, running, self.prober(), due, now)
            for d in decisions:
                if d.action in ("wait", "leave") and self.track(d.service).waiting != d.reason:
                    log(self.cfg, d.service, d.reason)
                    self.track(d.service).waiting = d.reason
            todo = [d for d in decisions if d.action == "restart" and d.service not in tried]
            if not todo:
                return
            tried.add(todo[0].service)
            self.restart(next(s for s in self.services if s.name == todo[0].service))

    def prober(self) -> Callable[[str], bool]:
        """``healthy(name)``, each service probed at most once per plan (only dependencies are asked)."""
        health: dict[str, bool] = {}
        by_name = {s.name: s for s in self.services}

        def healthy(name: str) -> bool:
            if name not in health:
                svc = by_name.get(name)
                health[name] = svc is not None and svc.healthy(self.cfg)
            return health[name]

        return healthy

    def restart(self, svc: Service) -> None:
        track = self.track(svc.name)
        log(self.cfg, svc.name, f"restarting (restart {track.restarts + 1})")
        t0 = time.monotonic()
        try:
            svc.start(self.cfg)
        except Stopped:
            raise
        except BaseException as exc:  # a failed start must not end the supervisor
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            track.failed(time.monotonic())
            log(self.cfg, svc.name, f"restart failed: {first}; next try in {backoff(track.failures):.0f} s")
            with contextlib.suppress(Exception):
                svc.stop(self.cfg)  # what the failed start left behind (stays wanted: tried again)
            return
        track.restarted(time.monotonic())
        pid = svc.pid(self.cfg)
        if pid is not None:
            self.last_pid[svc.name] = pid
        log(
            self.cfg,
            svc.name,
            f"restarted: pid {pid}, healthy in {time.monotonic() - t0:.1f} s (restarts {track.restarts})",
        )

    def write_status(self, fingerprint: str) -> None:
        data = {
            "pid": os.getpid(),
            "at": time.time(),
            "interval": self.interval,
            "only": sorted(self.only) if self.only is not None else None,
            "fingerprint": fingerprint,
            "restarts": {n: t.restarts for n, t in sorted(self.tracks.items()) if t.restarts},
        }
        path = status_file(self.cfg)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(path)


# the variables (besides infra/*.env's keys) that change what a service start does (config.py, apps.py)
SHAPING = (
    "CDCLAB_USER_DAGS",
    "CDCLAB_USER_PYTHONPATH",
    "CDCLAB_BUNDLED_DAGS",
    "CDCLAB_PG_DATA",
    "CDCLAB_MARIADB_DATA",
    "CDCLAB_CACHE",
    "CDCLAB_BIND_HOST",
    "CDCLAB_MAXWELL_START",
    "CDCLAB_WORKLOAD_RATE",
    "CDCLAB_WORKLOAD_FILES_EVERY",
    "PYTHONPATH",
    "JAVA_HOME",
)


def environment_fingerprint(cfg: LabConfig, environ: Mapping[str, str] | None = None) -> str:
    """A hash of the environment that shapes the services a restart starts (the DAG settings, ports,
    data folders): ``lab up`` replaces a supervisor started with another one (e.g. after
    ``CDCLAB_USER_DAGS=... make reload-airflow``)."""
    environ = os.environ if environ is None else environ
    keys = {*SHAPING, *cfg.values}
    picked = sorted((k, v) for k, v in environ.items() if k in keys)
    return hashlib.sha256(json.dumps(picked).encode()).hexdigest()[:16]


def run(
    cfg: LabConfig,
    services: Sequence[Service],
    only: Iterable[str] | None = None,
    interval: float = INTERVAL,
) -> int:
    """``cdclab lab supervise``: poll until the lab is down or SIGTERM; 0 when it left cleanly."""
    lock_path = cfg.pid_file(NAME).with_name(f"{NAME}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as single:
        try:
            fcntl.flock(single, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = read_record(cfg, NAME)
            print(
                f"cdclab: a supervisor already runs here (pid {other.pid if other else '?'})", file=sys.stderr
            )
            return 0

        def stop(signum: int, _frame: object) -> None:
            raise Stopped(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
        write_record(cfg, NAME, ProcessRecord.of(os.getpid(), sys.argv if sys.argv[0] else ["cdclab"]))
        sup = Supervisor(cfg, services, frozenset(only) if only else None, interval)
        fingerprint = environment_fingerprint(cfg)
        scope = f"only {', '.join(sorted(sup.only))}" if sup.only else "every service"
        log(cfg, NAME, f"started: pid {os.getpid()}, polls every {interval:g} s, restarts {scope}")
        reason = "stopped"
        try:
            while True:
                try:
                    left = sup.tick()
                except Stopped:
                    raise
                except Exception as exc:  # a poll that failed (a probe, the file system): try again
                    log(cfg, NAME, f"poll failed: {type(exc).__name__}: {exc}")
                    left = None
                sup.write_status(fingerprint)
                if left is not None:
                    reason = left
                    break
                time.sleep(interval)
        except Stopped as stopped:
            reason = f"signal {stopped.args[0] if stopped.args else '?'}"
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            record = read_record(cfg, NAME)
            if record is not None and record.pid == os.getpid():
                forget(cfg, NAME)
            log(cfg, NAME, f"exits: {reason}")
    return 0


# ---------------------------------------------------------------------------------------------
# starting, stopping and showing it (lab up / down / status)
# ---------------------------------------------------------------------------------------------
def running_pid(cfg: LabConfig) -> int | None:
    record = read_record(cfg, NAME)
    return record.pid if record is not None and record.is_running() else None


def read_status(cfg: LabConfig) -> dict[str, object]:
    try:
        return dict(json.loads(status_file(cfg).read_text()))
    except (OSError, ValueError):
        return {}


def ensure(cfg: LabConfig) -> int | None:
    """Start the supervisor unless one runs with this environment (``lab up`` is idempotent: never a
    second one); returns its pid."""
    pid = running_pid(cfg)
    if pid is not None:
        if read_status(cfg).get("fingerprint") in (None, environment_fingerprint(cfg)):
            return pid
        log(cfg, NAME, "the launcher's environment changed: replacing the supervisor")
        stop(cfg)
    log_path = log_file(cfg)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CDCLAB_STATE=str(cfg.state), CDCLAB_ROOT=str(cfg.root))
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cdclab.cli", "lab", "supervise"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cfg.root,
            start_new_session=True,
        )
    # it writes its record once it holds its lock; a second one (a race of two `up`s) exits at once
    wait_for(lambda: running_pid(cfg) is not None or proc.poll() is not None, 20, interval=0.1)
    return running_pid(cfg)


def stop(cfg: LabConfig, timeout: float = 30.0) -> None:
    """SIGTERM the supervisor (SIGKILL after ``timeout``); ``lab down`` does this before the services."""
    pid = running_pid(cfg)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not pid_alive(pid), timeout, interval=0.1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10, interval=0.1)
    forget(cfg, NAME)


def describe(cfg: LabConfig) -> str:
    """The line ``lab status`` prints under the table."""
    pid = running_pid(cfg)
    st = read_status(cfg)
    restarts = st.get("restarts") or {}
    counts = ", ".join(f"{n} {c}" for n, c in restarts.items()) if isinstance(restarts, dict) else ""
    where = f"log {log_file(cfg)}"
    if pid is None:
        return f"supervisor: not running (make up starts it; {where})"
    interval = st.get("interval", INTERVAL)
    return f"supervisor: running (pid {pid}, polls every {interval} s; restarts: {counts or 'none'}; {where})"
