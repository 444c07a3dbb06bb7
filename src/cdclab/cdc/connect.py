"""The one Kafka Connect REST client of the lab: the launcher, the replication DAGs and the tests use it.

Kafka Connect's REST API (https://kafka.apache.org/documentation/#connect_rest) is small; this client
covers what the lab does with it: read a connector's status and config, register (PUT) a config
idempotently, delete, restart, stop and resume, read and reset its source offsets, and wait until a
connector and all its tasks are ``RUNNING``.

It takes a base URL, not the launcher's configuration: inside Airflow the URL comes from the
``kafka_connect`` connection (:func:`from_airflow`), on the host from ``LabConfig.connect_url``.
Standard library only (``urllib``), so the launcher can use it before the virtual environment holds
anything else.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

RUNNING = "RUNNING"

T = TypeVar("T")


def wait_for(
    probe: Callable[[], T],
    done: Callable[[T], bool],
    timeout: float,
    poll: float,
    give_up: Callable[[T], bool] = lambda _: False,
) -> tuple[bool, T]:
    """Call ``probe`` every ``poll`` seconds until ``done`` holds for its answer (``(True, answer)``), or
    until ``timeout`` seconds have passed or ``give_up`` holds (``(False, last answer)``). Probes at least once."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if done(answer):
            return True, answer
        if give_up(answer) or time.monotonic() >= deadline:
            return False, answer
        time.sleep(poll)


def http_json(method: str, url: str, body: object | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """One JSON request: (HTTP status, decoded body; text when the body is not JSON). An HTTP error
    status is returned, not raised; a server that does not answer raises ``URLError``/``OSError``."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


class ConnectError(RuntimeError):
    """Kafka Connect refused a request, did not answer, or a connector did not reach ``RUNNING``."""


class ConnectorNotRunning(ConnectError):
    """The connector (or one of its tasks) is not RUNNING; its change events are not flowing."""


class ConnectClient:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ConnectClient({self.url!r})"

    # -- transport -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body); status 0 when Connect does not answer at all."""
        try:
            return http_json(method, f"{self.url}{path}", body, self.timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return 0, f"Kafka Connect at {self.url} does not answer: {exc}"

    def _ok(self, method: str, path: str, body: object | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        status, answer = self.request(method, path, body)
        if status not in ok:
            raise ConnectError(f"{method} {self.url}{path}: HTTP {status}: {answer}")
        return answer

    # -- reads -----------------------------------------------------------------------------------
    def worker(self) -> dict[str, Any]:
        """The worker's own document (``GET /``): ``version``, ``commit``, ``kafka_cluster_id``."""
        return dict(self._ok("GET", "/") or {})

    def plugins(self) -> list[dict[str, Any]]:
        return list(self._ok("GET", "/connector-plugins"))

    def connectors(self) -> list[str]:
        return list(self._ok("GET", "/connectors"))

    def _document(self, path: str) -> dict[str, Any] | None:
        """A JSON object from ``GET path``, or None when Connect answers 404 (no such connector)."""
        status, body = self.request("GET", path)
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise ConnectError(f"GET {self.url}{path}: HTTP {status}: {body}")
        return body

    def status(self, name: str) -> dict[str, Any] | None:
        """The connector's status document, or None when no such connector is registered."""
        return self._document(f"/connectors/{name}/status")

    def config(self, name: str) -> dict[str, Any] | None:
        """The connector's config, or None when no such connector is registered."""
        return self._document(f"/connectors/{name}/config")

    def overall(self, name: str) -> str:
        """One word for the connector: ``FAILED`` if it or a task failed, else its state; ``MISSING``
        when it is not registered, ``UNKNOWN`` when Connect does not answer (:func:`overall_state`)."""
        try:
            body = self.status(name)
        except ConnectError:
            return "UNKNOWN"
        return "MISSING" if body is None else overall_state(body)

    def state(self, name: str) -> tuple[str, list[str], str]:
        """(connector state, task states, first trace); ``MISSING`` when not registered or not answering."""
        try:
            body = self.status(name)
        except ConnectError as exc:
            return "MISSING", [], str(exc)
        if body is None:
            return "MISSING", [], f"no connector {name} in {self.url}"
        return state_of(body)

    # -- writes ----------------------------------------------------------------------------------
    def put_config(self, name: str, config: dict[str, Any]) -> Any:
        return self._ok("PUT", f"/connectors/{name}/config", config, ok=(200, 201))

    def delete(self, name: str, missing_ok: bool = True) -> None:
        status, body = self.request("DELETE", f"/connectors/{name}")
        if status in (200, 204) or (missing_ok and status == 404):
            return
        raise ConnectError(f"DELETE {self.url}/connectors/{name}: HTTP {status}: {body}")

    def wait_deleted(self, name: str, timeout: float = 10, poll: float = 0.1) -> None:
        """Wait until Connect no longer knows the connector (its status answers 404)."""
        gone, (status, body) = wait_for(
            lambda: self.request("GET", f"/connectors/{name}/status"), lambda r: r[0] == 404, timeout, poll
        )
        if not gone:
            raise ConnectError(
                f"connector {name} still registered after {timeout:.0f}s: HTTP {status}: {body}"
            )

    def restart(self, name: str, include_tasks: bool = True, only_failed: bool = False) -> None:
        query = f"?includeTasks={str(include_tasks).lower()}&onlyFailed={str(only_failed).lower()}"
        self._ok("POST", f"/connectors/{name}/restart{query}", ok=(200, 202, 204))

    def stop(self, name: str) -> None:
        """Stop the connector and its tasks (``PUT /connectors/<name>/stop``, Kafka 3.5+): unlike a pause,
        the tasks shut down, so a Debezium task closes its replication connection and releases its slot."""
        self._ok("PUT", f"/connectors/{name}/stop", ok=(200, 202, 204))

    def resume(self, name: str) -> None:
        """Start a paused or stopped connector again (``PUT /connectors/<name>/resume``)."""
        self._ok("PUT", f"/connectors/{name}/resume", ok=(200, 202, 204))

    def offsets(self, name: str) -> list[dict[str, Any]]:
        """The connector's committed source offsets: ``[{"partition": {...}, "offset": {...}}, ...]``."""
        body = self._ok("GET", f"/connectors/{name}/offsets")
        return list((body or {}).get("offsets", []))

    def reset_offsets(self, name: str) -> None:
        """Forget the connector's source offsets (``DELETE /connectors/<name>/offsets``, Kafka 3.6+).
        Connect accepts it only for a STOPPED connector; the next start is a first start."""
        self._ok("DELETE", f"/connectors/{name}/offsets", ok=(200,))

    def wait_stopped(self, name: str, timeout: float = 60, poll: float = 1.0) -> None:
        """Wait until the connector reports ``STOPPED`` (its tasks are gone)."""
        stopped, (state, tasks, _) = wait_for(
            lambda: self.state(name), lambda s: s[0] == "STOPPED" and not s[1], timeout, poll
        )
        if not stopped:
            raise ConnectError(
                f"connector {name} did not stop within {timeout:.0f}s: {state} (tasks: {tasks})"
            )

    def wait_answering(self, timeout: float = 120, poll: float = 1.0) -> None:
        """Wait until the worker's herder answers (``GET /connectors``). Its REST server is up seconds
        before that: a worker restarted after a SIGKILL reads its config, offset and status topics
        first (48 s on a busy 2-core machine), and a request meanwhile hangs until it times out."""
        answering, (_, answer) = wait_for(
            lambda: self.request("GET", "/connectors"), lambda r: r[0] == 200, timeout, poll
        )
        if not answering:
            raise ConnectError(f"Kafka Connect at {self.url} did not answer within {timeout:.0f}s: {answer}")

    def register(self, name: str, config: dict[str, Any], timeout: float = 120) -> bool:
        """PUT ``config`` unless the running one equals it, then wait for RUNNING; True if it was (re)written.

        An unchanged config is not PUT again: a PUT restarts the connector through a rebalance.
        """
        self.wait_answering(timeout)
        if self.config(name) == {**config, "name": name}:
            self.wait_running(name, timeout)
            return False
        self.put_config(name, config)
        time.sleep(2)  # the PUT (re)starts the connector through a rebalance; do not read the old state
        self.wait_running(name, timeout)
        return True

    def wait_running(self, name: str, timeout: float = 120, poll: float = 1.0) -> dict[str, Any]:
        """Wait until the connector and every task are RUNNING; stop early on FAILED."""
        running, (state, tasks, trace) = wait_for(
            lambda: self.state(name),
            lambda s: s[0] == RUNNING and bool(s[1]) and all(t == RUNNING for t in s[1]),
            timeout,
            poll,
            give_up=lambda s: s[0] == "FAILED" or "FAILED" in s[1],
        )
        if running:
            return self.status(name) or {}
        first = trace.strip().splitlines()[0] if trace.strip() else ""
        raise ConnectorNotRunning(f"connector {name} is {state} (tasks: {tasks or 'none'}) {first}".rstrip())

    def require_running(self, name: str) -> dict[str, Any]:
        """The status document if connector and tasks are RUNNING, else :class:`ConnectorNotRunning`."""
        body = self.status(name)
        if body is None:
            raise ConnectorNotRunning(
                f"connector {name} is not registered in {self.url} — `make up` registers connectors/*.json"
            )
        state, tasks, trace = state_of(body)
        if state != RUNNING or not tasks or any(t != RUNNING for t in tasks):
            first = trace.strip().splitlines()[0] if trace.strip() else ""
            raise ConnectorNotRunning(
                f"connector {name} is {[state, *tasks]}; {first} "
                "— see `make logs S=connect`, then `make up` re-registers it"
            )
        return body


def state_of(status: dict[str, Any]) -> tuple[str, list[str], str]:
    """(connector state, task states, first trace) of a ``/connectors/<name>/status`` document."""
    tasks = [str(t.get("state", "?")) for t in status.get("tasks", [])]
    trace = "\n".join(t.get("trace", "") for t in status.get("tasks", []) if t.get("trace"))
    connector = status.get("connector", {})
    return str(connector.get("state", "?")), tasks, trace or str(connector.get("trace", ""))


def overall_state(status: dict[str, Any]) -> str:
    """One word for a ``/connectors/<name>/status`` document: ``FAILED`` when the connector or any task
    failed, else the connector's state (``?`` when the document has none)."""
    state, tasks, _ = state_of(status)
    return "FAILED" if "FAILED" in (state, *tasks) else state


def from_airflow(conn_id: str = "kafka_connect") -> ConnectClient:
    """The client for Airflow connection ``conn_id`` (an http connection whose host is the base URL)."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or ""
    if "://" not in host:
        host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
    return ConnectClient(host)
