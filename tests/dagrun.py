"""Run a DAG from ``dags/`` with ``dag.test()`` against the lab's metadata database.

``run_dag`` here returns Airflow's ``DagRun`` (what the curriculum tests use); the plugin's ``run_dag``
fixture (src/cdclab/testing/plugin.py) returns a ``DagRunResult`` with task states and logs."""

from __future__ import annotations

from typing import Any

import pendulum

from cdclab.lab.config import LabConfig
from cdclab.testing.dags import dag_test, load_dag


def get_dag(dag_id: str) -> Any:
    """The lab's DAG ``dags/<dag_id>.py``, parsed anew for every run (the plugin's
    :func:`cdclab.testing.dags.load_dag`: only the DAG's own file, so a broken neighbour does not fail
    every test; a file that does not parse fails with the import error and the file)."""
    return load_dag(dag_id, cfg=LabConfig.load())


def run_dag(
    dag_id: str,
    logical_date: pendulum.DateTime | None = None,
    conf: dict[str, Any] | None = None,
    expect: str = "success",
) -> Any:
    """Run one DAG run in-process; fail with the task states when its state is not ``expect``."""
    dag = get_dag(dag_id)
    logical_date = logical_date or pendulum.now("UTC")
    dr = dag_test(dag, logical_date=logical_date, run_conf=conf or {})
    state = str(getattr(dr.state, "value", dr.state))
    tis = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    if state != expect:
        raise AssertionError(f"{dag_id} run {logical_date} ended {state}, expected {expect}; tasks: {tis}")
    if expect == "success" and not tis:
        raise AssertionError(f"{dag_id} run {dr.run_id} succeeded without any task instance")
    if expect == "success" and (ran := [t for t, s in tis.items() if s == "success"]) != list(tis):
        # a success with tasks that never ran (removed, skipped by a broken dependency) is not a pass
        # unless the DAG skips on purpose; say which, so a "succeeded but wrote nothing" reads clearly
        print(
            f"{dag_id} run {dr.run_id} ({dr.conf}): tasks that did not run: "
            f"{ {t: s for t, s in tis.items() if t not in ran} }"
        )
    return dr


def run_dag_without_logical_date(
    dag_id: str,
    run_after: pendulum.DateTime,
    conf: dict[str, Any] | None = None,
    expect: str = "success",
) -> Any:
    """Run one DAG run *without a logical date*, as the REST API (``"logical_date": null``) and
    ``airflow dags trigger <dag_id>`` without ``--logical-date`` create it: ``logical_date=None``,
    ``data_interval=None``, only ``run_after`` set. Its tasks get a context without ``logical_date``,
    ``ds`` and ``data_interval_*`` (the Task SDK leaves those keys out), exactly as under the scheduler.

    ``dag.test(logical_date=None, run_after=...)`` is Airflow's own way to make such a run (its source:
    "Allow users to explicitly pass None"; with ``logical_date=None`` it passes ``data_interval=None`` to
    ``create_dagrun``, like the REST route). Two of its test conveniences are not faithful for a run
    without a logical date, and both would touch runs that are not ours in the lab's shared metadata DB,
    so they are narrowed for this call only, not the run itself:

    - ``SerializedDAG.clear_dags(start_date=None, end_date=None)`` would clear the task instances of
      *every* run of the DAG (None means "no bound"); the new run has its own run_id, nothing to clear;
    - ``get_or_create_dagrun`` deletes "the existing run with this logical date", i.e. with ``IS NULL``
      *any* earlier run without a logical date (a user's REST-triggered run); here it replaces only an
      earlier run with the same run_id (``manual__<run_after>``, from a previous test session).
    """
    from unittest import mock

    from airflow.models import dagrun as dagrun_module
    from airflow.models.dagrun import DagRun
    from airflow.serialization.definitions.dag import SerializedDAG
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete

    original = dagrun_module.get_or_create_dagrun

    def replace_same_run_id(**kwargs: Any) -> Any:
        session, dag = kwargs["session"], kwargs["dag"]
        if kwargs["logical_date"] is not None:
            return original(**kwargs)
        session.execute(delete(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.run_id == kwargs["run_id"]))
        session.commit()
        return dag.create_dagrun(
            run_id=kwargs["run_id"],
            logical_date=None,
            data_interval=None,
            run_after=kwargs["run_after"],
            conf=kwargs["conf"],
            run_type=DagRunType.MANUAL,
            state=DagRunState.RUNNING,
            triggered_by=kwargs["triggered_by"],
            triggering_user_name=kwargs["triggering_user_name"],
            start_date=kwargs["start_date"],
            session=session,
        )

    dag = get_dag(dag_id)
    with (
        mock.patch.object(SerializedDAG, "clear_dags", return_value=0),
        mock.patch.object(dagrun_module, "get_or_create_dagrun", replace_same_run_id),
    ):
        dr = dag_test(dag, logical_date=None, run_after=run_after, run_conf=conf or {})
    assert dr.logical_date is None and dr.data_interval_start is None, "the run must carry no interval"
    state = str(getattr(dr.state, "value", dr.state))
    if state != expect:
        tis = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
        raise AssertionError(
            f"{dag_id} run without logical date ended {state}, expected {expect}; tasks: {tis}"
        )
    return dr
