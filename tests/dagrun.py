"""Run a DAG from ``dags/`` with ``dag.test()`` against the lab's metadata database."""

from __future__ import annotations

from typing import Any

import pendulum

from cdclab.lab.config import LabConfig


def _bag(path: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=path)
    if bag.import_errors:
        raise AssertionError(f"DAG import errors: {bag.import_errors}")
    return bag


def get_dag(dag_id: str) -> Any:
    """Parse only the DAG's own file (``dags/<dag_id>.py``) when there is one, the whole folder otherwise,
    so a broken neighbour does not fail every test (the integrity test reports it).

    The file is parsed anew for every run: ``dag.test()`` resolves a run's conf into the DAG's own
    ``Param`` objects, so a DAG object reused across runs would carry one run's conf into the next."""
    folder = LabConfig.load().root / "dags"
    own = folder / f"{dag_id}.py"
    dag = _bag(str(own if own.exists() else folder)).get_dag(dag_id)
    assert dag is not None, f"no DAG {dag_id!r} in dags/"
    return dag


def run_dag(
    dag_id: str,
    logical_date: pendulum.DateTime | None = None,
    conf: dict[str, Any] | None = None,
    expect: str = "success",
) -> Any:
    """Run one DAG run in-process; fail with the task states when its state is not ``expect``."""
    dag = get_dag(dag_id)
    logical_date = logical_date or pendulum.now("UTC")
    dr = dag.test(logical_date=logical_date, run_conf=conf or {})
    state = str(getattr(dr.state, "value", dr.state))
    if state != expect:
        tis = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        raise AssertionError(f"{dag_id} run {logical_date} ended {state}, expected {expect}; tasks: {tis}")
    return dr
