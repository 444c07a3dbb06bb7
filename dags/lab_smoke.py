"""Smoke DAG: one task that returns a value. Used to check that ``dag.test()`` runs against the lab."""

import pendulum
from airflow.sdk import dag, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["lab", "success"],
    doc_md=__doc__,
)
def lab_smoke():
    @task
    def hello() -> str:
        return "hello"

    hello()


lab_smoke()
