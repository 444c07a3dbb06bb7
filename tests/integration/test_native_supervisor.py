"""A lab service that dies is started again, as compose's ``restart: unless-stopped`` does.

The Airflow triggerer's process is SIGKILLed from outside the launcher (a crash, ``kill -9 <pid>``),
not through ``cdclab lab kill`` (which is on purpose and leaves the service down, as ``docker kill``
does). Natively the lab's supervisor (``cdclab lab supervise``, started by ``make up``) notices it and
starts the triggerer again, and says so in ``<state>/logs/supervisor.log``; under compose Docker's
restart policy restarts the container (its ``RestartCount`` goes up). Either way a new triggerer runs:
a new process (or container), a new ``TriggererJob`` in Airflow's metadata database heartbeating after
the kill, and the lab healthy.

Marked ``disruptive`` (it kills a lab service): tests/conftest.py orders it after every other test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime
from typing import Any

import psycopg2
import pytest

from cdclab.lab import native, supervisor
from cdclab.lab.backend import ComposeBackend, NativeBackend, all_healthy, backend, format_table

pytestmark = pytest.mark.disruptive
LOG_SERVICES = ["airflow-triggerer", "supervisor"]
SERVICE = "airflow-triggerer"
TIMEOUT = 240.0


def db_now(lab: Any) -> datetime:
    conn = psycopg2.connect(lab.pg_dsn("airflow"))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            return cur.fetchone()[0]
    finally:
        conn.close()


def triggerer_job_since(lab: Any, since: datetime) -> tuple[Any, ...] | None:
    """A running ``TriggererJob`` that started after ``since`` and has heartbeated since it started."""
    conn = psycopg2.connect(lab.pg_dsn("airflow"))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, hostname, start_date, latest_heartbeat FROM job WHERE job_type = 'TriggererJob' "
                "AND state = 'running' AND start_date > %s AND latest_heartbeat > start_date "
                "ORDER BY id DESC LIMIT 1",
                (since,),
            )
            return cur.fetchone()
    finally:
        conn.close()


def wait_until(what: str, check: Any, timeout: float = TIMEOUT, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def compose_state(lab_backend: ComposeBackend) -> tuple[int, int]:
    """The triggerer container's main process (as the host sees it) and Docker's restart count."""
    cid = str(lab_backend.containers()[SERVICE]["ID"])
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Pid}} {{.RestartCount}}", cid],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pid, count = out.stdout.split()
    return int(pid), int(count)


def test_a_triggerer_killed_from_outside_the_launcher_is_restarted_and_heartbeats_again(lab) -> None:
    lab_backend = backend(lab)
    rows = lab_backend.status()
    assert all_healthy(rows), format_table(rows)
    before = lab_backend.instances()[SERVICE]
    killed_at = db_now(lab)
    if isinstance(lab_backend, NativeBackend):
        assert supervisor.running_pid(lab) is not None, (
            "no supervisor runs for this lab: start it with this checkout's `make up` "
            f"({supervisor.describe(lab)})"
        )
        assert supervisor.is_wanted(lab, SERVICE), f"{supervisor.wanted_file(lab, SERVICE)} is missing"
        pid = native.service(SERVICE).pid(lab)
        assert pid is not None
        children = native.descendants(pid)
        log_before = supervisor.log_file(lab).read_text() if supervisor.log_file(lab).exists() else ""
        os.kill(pid, signal.SIGKILL)  # the process only: a crash, not `cdclab lab kill`
    else:
        pid, restarts = compose_state(lab_backend)
        children = []
        os.kill(pid, signal.SIGKILL)  # the container's main process, from the host: Docker sees it die

    new = wait_until(
        "no new triggerer instance",
        lambda: (now := lab_backend.instances().get(SERVICE)) and now != before and "None" not in now and now,
    )
    job = wait_until(
        "no TriggererJob heartbeating since the kill", lambda: triggerer_job_since(lab, killed_at)
    )
    wait_until("the lab is not healthy again", lambda: all_healthy(lab_backend.status()))

    if isinstance(lab_backend, NativeBackend):
        new_pid = native.service(SERVICE).pid(lab)
        assert new_pid is not None and new_pid != pid, (pid, new_pid)
        log = supervisor.log_file(lab).read_text()[len(log_before) :]
        assert f"exited (pid {pid} gone" in log, log
        assert f"restarted: pid {new_pid}" in log, log
        assert supervisor.is_wanted(lab, SERVICE)
        # the killed triggerer's own children (its trigger runner) leave with it: no second runner
        wait_until(
            "the killed triggerer's children are still running",
            lambda: not [c for c in children if not native.gone(c)],
            timeout=120,
        )
    else:
        _, restarts_after = compose_state(lab_backend)
        assert restarts_after > restarts, (restarts, restarts_after)
    print(f"restarted: {before} -> {new}; TriggererJob {job}")
