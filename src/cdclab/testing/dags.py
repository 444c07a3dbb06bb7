"""Run a DAG in a test: in-process with ``dag.test()``, or through the lab's real scheduler.

Vocabulary:
- *DAG reference*: a DAG object, a path to a DAG file (``Path`` or a string ending in ``.py``), or a
  ``dag_id`` whose file is ``<lab root>/dags/<dag_id>.py`` (the lab's bundled DAGs).
- *via*: ``"test"`` runs the DAG with ``dag.test()`` in the test's own process against the lab's
  metadata database (your working copy of the file, no scheduler involved); ``"scheduler"`` triggers
  it through the api-server's REST API (what the UI's Trigger button does) and polls until the run
  ends, so the lab's dag-processor must know the DAG (it is in the lab's DAG folder).
- *result* (:class:`DagRunResult`): the run's state, each task's state and its log text.

A DAG file that does not parse fails with :class:`DagImportError` naming the file and the import error.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cdclab.lab.config import LabConfig

Via = Literal["test", "scheduler"]
VIA: tuple[Via, ...] = ("test", "scheduler")
FINISHED = ("success", "failed")
POLL_SECONDS = 0.5
"""How often a wait on the api-server asks again (a DAG registered, a run's state): one small GET, so
a short interval costs the lab little and a test learns of the end within half a second (it was 3 s,
1.5 s of waiting per wait on average)."""


class DagImportError(AssertionError):
    """A DAG file does not parse (the message names the file and the error), or holds no such DAG."""


class DagRunFailed(AssertionError):
    """A run ended in another state than expected; ``result`` holds task states and logs."""

    def __init__(self, message: str, result: DagRunResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class TaskResult:
    task_id: str
    state: str | None
    try_number: int
    log: str = ""


@dataclass
class DagRunResult:
    dag_id: str
    run_id: str
    state: str
    via: Via
    logical_date: Any = None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    dag_run: Any = None
    """The Airflow ``DagRun`` object (``via="test"`` only)."""

    @property
    def task_states(self) -> dict[str, str | None]:
        return {t.task_id: t.state for t in self.tasks.values()}

    def describe(self) -> str:
        lines = [
            f"{self.dag_id} run {self.run_id} ({self.via}) ended {self.state}; tasks: {self.task_states}"
        ]
        for task in self.tasks.values():
            if task.state in ("success", "skipped"):
                continue
            if task.log:
                tail = "\n".join(task.log.splitlines()[-30:])
                lines.append(f"--- log of {task.task_id} (try {task.try_number}), last lines ---\n{tail}")
            elif self.via == "test":
                lines.append(f"--- {task.task_id}: dag.test() logs to the test's captured stdout (above) ---")
        return "\n".join(lines)


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


# --------------------------------------------------------------------------------------------------
# parsing


def _is_path(ref: Any) -> bool:
    return isinstance(ref, Path) or str(ref).endswith(".py") or "/" in str(ref)


def load_dag(ref: Any, dag_id: str | None = None, cfg: LabConfig | None = None, *, sync: bool = False) -> Any:
    """The DAG object for a DAG reference, parsed anew (see the module docstring).

    A fresh parse per run matters: ``dag.test()`` resolves a run's conf into the DAG's own ``Param``
    objects, so a DAG object reused across runs would carry one run's conf into the next.

    ``sync``: write a DAG *file's* parse result to the metadata database, as the dag-processor does
    for the lab's own folder; ``dag.test()`` creates its run from the serialized DAG, which exists
    only for files the dag-processor has seen."""
    __tracebackhide__ = True
    if hasattr(ref, "dag_id") and hasattr(ref, "test"):
        return ref
    path = Path(ref)
    if _is_path(ref):
        if not path.exists():
            raise DagImportError(f"DAG file {path} does not exist")
        return _from_file(path, dag_id, sync=sync)
    folder = (cfg or LabConfig.load()).root / "dags"
    own = folder / f"{ref}.py"
    return _from_file(own if own.exists() else folder, dag_id or str(ref))


def _from_file(path: Path, dag_id: str | None, sync: bool = False) -> Any:
    __tracebackhide__ = True
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    bag = DagBag(dag_folder=str(path))
    if bag.import_errors:
        errors = "\n".join(f"{file}:\n{error}" for file, error in bag.import_errors.items())
        raise DagImportError(f"DAG file(s) under {path} do not parse:\n{errors}")
    if dag_id is None:
        if len(bag.dag_ids) != 1:
            raise DagImportError(
                f"{path} defines {len(bag.dag_ids)} DAGs {sorted(bag.dag_ids)}; pass dag_id= (a file without "
                "the words 'airflow' and 'dag' is skipped by Airflow's safe mode)"
            )
        dag_id = bag.dag_ids[0]
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise DagImportError(f"no DAG {dag_id!r} in {path}; it defines {sorted(bag.dag_ids)}")
    if sync:
        user = LabConfig.load().user_dags
        inside_user_dags = user is not None and path.resolve().is_relative_to(user)
        sync_bag_to_db(bag, "user-dags" if inside_user_dags else "dags-folder", None)
    return dag


def dag_id_of(ref: Any, dag_id: str | None = None) -> str:
    """The dag_id of a DAG reference without running it (a file is parsed)."""
    if dag_id:
        return dag_id
    if hasattr(ref, "dag_id"):
        return str(ref.dag_id)
    if _is_path(ref):
        return str(load_dag(ref).dag_id)
    return str(ref)


# --------------------------------------------------------------------------------------------------
# in-process: dag.test()


@contextmanager
def _sync_only_its_own_file(dag: Any) -> Iterator[None]:
    """While ``dag.test()`` runs, let its bundle re-sync parse only the DAG's own file.

    Airflow 3.3's ``DAG.test()`` re-parses and re-serializes *every* DAG of the DAG's bundle on each
    call (``BundleDagBag`` + ``sync_bag_to_db`` in ``airflow/sdk/definitions/dag.py``, so that
    sibling DAGs such as ``TriggerDagRunOperator`` targets exist: apache/airflow#64884). With the
    lab's fifty DAGs that was about 60% of every run's time in a profile of the suite (most of it
    validating every DAG's params with jsonschema). The run itself needs only its own DAG's row,
    which the dag-processor and this narrowed sync keep current; the lab's DAGs trigger no
    siblings. A file outside the bundle keeps Airflow's behaviour."""
    from airflow.dag_processing import dagbag as dagbag_module

    original = dagbag_module.BundleDagBag
    own = Path(dag.fileloc).resolve()

    def own_file_only(*args: Any, **kwargs: Any) -> Any:
        bundle_path = kwargs.get("bundle_path")
        if bundle_path is not None and own.is_file() and own.is_relative_to(Path(bundle_path).resolve()):
            kwargs["dag_folder"] = str(own)
            args = ()
        return original(*args, **kwargs)

    dagbag_module.BundleDagBag = own_file_only  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        dagbag_module.BundleDagBag = original  # type: ignore[misc]


def dag_test(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` with the bundle re-sync narrowed to the DAG's own file (see above)."""
    with _sync_only_its_own_file(dag):
        return dag.test(**kwargs)


def _local_log(cfg: LabConfig, ti: Any) -> str:
    folder = Path(cfg.airflow_env()["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
    run = folder / f"dag_id={ti.dag_id}" / f"run_id={ti.run_id}" / f"task_id={ti.task_id}"
    files = sorted(run.glob("**/*.log")) if run.exists() else []
    return "\n".join(f.read_text(errors="replace") for f in files)


def run_with_test(
    ref: Any,
    logical_date: Any = None,
    conf: dict[str, Any] | None = None,
    *,
    dag_id: str | None = None,
    cfg: LabConfig | None = None,
) -> DagRunResult:
    __tracebackhide__ = True
    import pendulum

    cfg = cfg or LabConfig.load()
    dag = load_dag(ref, dag_id, cfg, sync=_is_path(ref))
    logical_date = logical_date or pendulum.now("UTC")
    dr = dag_test(dag, logical_date=logical_date, run_conf=conf or {})
    result = DagRunResult(
        dag_id=dag.dag_id,
        run_id=dr.run_id,
        state=_state(dr.state) or "none",
        via="test",
        logical_date=dr.logical_date,
        dag_run=dr,
    )
    for ti in dr.get_task_instances():
        result.tasks[ti.task_id] = TaskResult(
            ti.task_id, _state(ti.state), ti.try_number, _local_log(cfg, ti)
        )
    return result


# --------------------------------------------------------------------------------------------------
# through the scheduler: the REST API


class AirflowAPI:
    """A small client of the lab's api-server (``/auth/token``, then bearer calls)."""

    def __init__(self, base: str, user: str, password: str) -> None:
        self.base = base.rstrip("/")
        token = self.call("POST", "/auth/token", {"username": user, "password": password}, auth=False)
        self.token = token["access_token"]

    @classmethod
    def for_lab(cls, cfg: LabConfig) -> AirflowAPI:
        return cls(cfg.airflow_public_url, cfg["AIRFLOW_ADMIN_USER"], cfg["AIRFLOW_ADMIN_PASSWORD"])

    def call(self, method: str, path: str, body: object | None = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        """Wait until the dag-processor has registered ``dag_id``; fail with its import errors if not."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call("GET", f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
                if time.monotonic() > deadline:
                    errors = self.call("GET", "/api/v2/importErrors").get("import_errors", [])
                    detail = "\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors) or "none"
                    raise DagImportError(
                        f"the lab's Airflow does not know DAG {dag_id!r} after {timeout:.0f} s; is its file "
                        f"in the lab's DAG folder? Import errors the dag-processor reports: {detail}"
                    ) from None
                time.sleep(POLL_SECONDS)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        if try_number < 1:
            return ""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            f"/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        )
        try:
            content = self.call("GET", path).get("content", [])
        except urllib.error.HTTPError as exc:
            return f"(could not read the log: HTTP {exc.code})"
        return "\n".join(log_line(line) for line in content)


def log_line(line: Any) -> str:
    """One structured task-log line as text: its event, and for a failure the exception (type, value and
    the innermost frame) that the API returns apart from the event."""
    if isinstance(line, str):
        return line
    text = str(line.get("event", ""))
    for err in line.get("error_detail") or []:
        frames = err.get("frames") or []
        where = f" ({frames[-1].get('filename')}:{frames[-1].get('lineno')})" if frames else ""
        text += f"\n{err.get('exc_type')}: {err.get('exc_value')}{where}"
    return text


def run_with_scheduler(
    cfg: LabConfig,
    ref: Any,
    logical_date: Any = None,
    conf: dict[str, Any] | None = None,
    *,
    dag_id: str | None = None,
    timeout: float = 600,
) -> DagRunResult:
    """Trigger a run through the REST API, unpausing the DAG for the run (paused again afterwards)."""
    import pendulum

    dag_id = dag_id_of(ref, dag_id)
    api = AirflowAPI.for_lab(cfg)
    api.wait_for_dag(dag_id)
    logical_date = logical_date or pendulum.now("UTC")
    was_paused = api.call("GET", f"/api/v2/dags/{dag_id}")["is_paused"]
    if was_paused:
        api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    try:
        run = api.call(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            {"logical_date": logical_date.isoformat(), "conf": conf or {}},
        )
        run_id = run["dag_run_id"]
        quoted = urllib.parse.quote(run_id, safe="")
        deadline = time.monotonic() + timeout
        state = run["state"]
        while state not in FINISHED and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            state = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"]
    finally:
        if was_paused:
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
    return _result(api, dag_id, run_id, state, logical_date, timeout)


def _result(
    api: AirflowAPI,
    dag_id: str,
    run_id: str,
    state: str,
    logical_date: Any,
    timeout: float,
    logs: bool = True,
) -> DagRunResult:
    """The run's :class:`DagRunResult` from the REST API: task states, and the logs of every task
    (``logs=False``: only of the tasks that did not succeed or skip)."""
    quoted = urllib.parse.quote(run_id, safe="")
    tasks = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]
    result = DagRunResult(
        dag_id=dag_id,
        run_id=run_id,
        state=state if state in FINISHED else f"{state} (still, after {timeout:.0f} s)",
        via="scheduler",
        logical_date=logical_date,
    )
    for t in tasks:
        tries = int(t.get("try_number") or 0)
        wanted = logs or t["state"] not in ("success", "skipped")
        log = api.task_log(dag_id, run_id, t["task_id"], tries) if wanted else ""
        result.tasks[t["task_id"]] = TaskResult(t["task_id"], t["state"], tries, log)
    return result


def _unfinished(api: AirflowAPI, dag_id: str) -> list[str]:
    """Run ids of the DAG's queued or running runs."""
    runs = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?state=queued&state=running")["dag_runs"]
    return [r["dag_run_id"] for r in runs]


def _listed_unfinished(api: AirflowAPI) -> set[tuple[str, str]]:
    """(dag_id, run_id) of the queued and running runs of every DAG, in pages of 100 (the api-server's
    page limit). A run that ends between two pages can shift another off the listing: callers confirm
    a run that is *missing* with :func:`_run_state`; a listed run is unfinished."""
    out: set[tuple[str, str]] = set()
    offset = 0
    while True:
        page = api.call("GET", f"/api/v2/dags/~/dagRuns?state=queued&state=running&limit=100&offset={offset}")
        runs = page["dag_runs"]
        out.update((r["dag_id"], r["dag_run_id"]) for r in runs)
        offset += len(runs)
        if not runs or offset >= int(page.get("total_entries") or 0):
            return out


def _run_state(api: AirflowAPI, dag_id: str, run_id: str) -> str:
    quoted = urllib.parse.quote(run_id, safe="")
    return str(api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"])


def _still_unfinished(api: AirflowAPI, runs: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of ``runs`` still queued or running: one listing of every unfinished run, and a GET only
    for a run the listing no longer shows (to confirm that it ended)."""
    listed = _listed_unfinished(api)
    return {run for run in runs if run in listed or _run_state(api, *run) not in FINISHED}


def trigger_many(
    cfg: LabConfig,
    dag_ids: list[str],
    conf: dict[str, Any] | None = None,
    *,
    timeout: float = 3600,
    poll: float = 2,
    keep_unpaused: bool = False,
    settle_timeout: float = 600,
) -> dict[str, DagRunResult]:
    """Trigger one run of each DAG at once, as a user pressing Trigger in the UI on each (unpaused first,
    logical date = now, ``conf`` or the DAG's default params), and wait until all have ended.

    Unpausing a scheduled DAG also lets the scheduler create its own latest-interval run, as it does
    for the user; only the triggered runs are returned. DAGs that were paused are paused again at the
    end unless ``keep_unpaused``, once the runs that were still going when the triggered ones ended have
    ended too, for at most ``settle_timeout`` seconds (a run left running on a paused DAG would stay so). Logs are fetched only for tasks that did not succeed or skip.
    Every ``poll`` seconds one listing of all unfinished runs (not a GET per DAG) tells which may have ended."""
    import pendulum

    api = AirflowAPI.for_lab(cfg)
    paused: list[str] = []
    runs: dict[str, tuple[str, Any]] = {}
    states: dict[str, str] = {}
    try:
        for dag_id in dag_ids:
            api.wait_for_dag(dag_id)
            if api.call("GET", f"/api/v2/dags/{dag_id}")["is_paused"]:
                api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                paused.append(dag_id)
        for dag_id in dag_ids:
            logical_date = pendulum.now("UTC")
            run = api.call(
                "POST",
                f"/api/v2/dags/{dag_id}/dagRuns",
                {"logical_date": logical_date.isoformat(), "conf": conf or {}},
            )
            runs[dag_id] = (run["dag_run_id"], logical_date)
            states[dag_id] = run["state"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(s not in FINISHED for s in states.values()):
            time.sleep(poll)
            waiting = {(d, runs[d][0]) for d, s in states.items() if s not in FINISHED}
            listed = _listed_unfinished(api)
            for dag_id, run_id in waiting - listed:  # not listed: ended (or shifted off a page)
                states[dag_id] = _run_state(api, dag_id, run_id)
        # the runs still going when ours have ended (the scheduler's own, started by the unpause) end
        # before the DAG is paused again: a run left running on a paused DAG stays so, and holds a
        # max_active_runs=1 DAG until someone unpauses it. Runs created later are not waited for.
        others = {(d, r) for d in ([] if keep_unpaused else paused) for r in _unfinished(api, d)}
        settle = min(deadline, time.monotonic() + settle_timeout)
        while time.monotonic() < settle and others:
            time.sleep(poll)
            others = _still_unfinished(api, others)
    finally:
        if not keep_unpaused:
            for dag_id in paused:
                try:
                    api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
                except (urllib.error.URLError, OSError) as exc:  # do not hide the error that got us here
                    print(f"cdclab: could not pause {dag_id} again ({exc}); it was paused before the test")
    return {
        dag_id: _result(api, dag_id, run_id, states[dag_id], logical_date, timeout, logs=False)
        for dag_id, (run_id, logical_date) in runs.items()
    }


def run_dag(
    cfg: LabConfig,
    ref: Any,
    logical_date: Any = None,
    conf: dict[str, Any] | None = None,
    *,
    via: Via = "test",
    expect: str | None = "success",
    dag_id: str | None = None,
    timeout: float = 600,
) -> DagRunResult:
    """Run one DAG run; fail with :class:`DagRunFailed` (task states, failed tasks' log tails) when
    its state is not ``expect`` (``expect=None``: return whatever happened)."""
    __tracebackhide__ = True
    if via not in VIA:
        raise ValueError(f"via must be one of {VIA}, got {via!r}")
    if via == "test":
        result = run_with_test(ref, logical_date, conf, dag_id=dag_id, cfg=cfg)
    else:
        result = run_with_scheduler(cfg, ref, logical_date, conf, dag_id=dag_id, timeout=timeout)
    if expect is not None and result.state != expect:
        raise DagRunFailed(f"expected {expect}: " + result.describe(), result)
    return result
