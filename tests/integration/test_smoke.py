import pendulum

from tests.dagrun import run_dag


def test_dag_test_runs_against_the_lab_metadata_db(lab):
    dr = run_dag("lab_smoke", pendulum.datetime(2026, 1, 2, tz="UTC"))
    assert [ti.state for ti in dr.get_task_instances()] == ["success"]
