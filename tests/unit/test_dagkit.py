"""cdclab.dagkit: the lab's DAG defaults, and every lesson DAG's contract as it was before they moved there.

``dag_contract.json`` (beside this file) holds, for every DAG in ``dags/``, what its runs and its tests
depend on: the timetable (the core class Airflow schedules with and its serialized form: expression,
time zone), start date, ``catchup``, ``max_active_runs``, tags, each param's default, schema and
description in declaration order, and the task graph (task ids and their upstream ids). It was written
from the DAG files before they used ``lesson_dag``; a change to a DAG's schedule or params is a change
to this file, made on purpose (``CDCLAB_WRITE_DAG_CONTRACT=1 pytest tests/unit/test_dagkit.py``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import Param

from cdclab import dagkit

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = Path(__file__).with_name("dag_contract.json")


def contract(dag: Any) -> dict[str, Any]:
    """What a DAG promises its runs and its tests (see the module docstring), JSON-ready."""
    from airflow.serialization.encoders import coerce_to_core_timetable

    timetable = coerce_to_core_timetable(dag.timetable)
    params = {}
    for name in dag.params:
        p = dag.params.get_param(name)
        params[name] = {"default": p.value, "schema": p.schema, "description": p.description}
    return {
        "timetable": {"class": type(timetable).__name__, **timetable.serialize()},
        "start_date": dag.start_date.isoformat() if dag.start_date else None,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "tags": sorted(dag.tags),
        "params": list(params.items()),
        "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in sorted(dag.tasks, key=lambda t: t.task_id)},
    }


def _dumps(contracts: dict[str, Any]) -> str:
    """The contract file: one DAG a block, one line a field, one line a param (easy to review in a diff)."""

    def line(value: Any) -> str:
        return json.dumps(value, default=str)

    blocks = []
    for dag_id, c in contracts.items():
        fields = [f'  "{k}": {line(v)}' for k, v in c.items() if k != "params"]
        params = ",\n".join(f"    {line(p)}" for p in c["params"])
        fields.insert(5, f'  "params": [\n{params}\n  ]' if params else '  "params": []')
        blocks.append(f"{line(dag_id)}: {{\n" + ",\n".join(fields) + "\n }")
    return "{\n " + ",\n ".join(blocks) + "\n}\n"


@pytest.fixture(scope="module")
def dags() -> dict[str, Any]:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return dict(bag.dags)


def test_every_dag_keeps_its_schedule_start_params_and_tasks(dags: dict[str, Any]) -> None:
    got = {dag_id: contract(dag) for dag_id, dag in sorted(dags.items())}
    if os.environ.get("CDCLAB_WRITE_DAG_CONTRACT"):
        CONTRACT.write_text(_dumps(got))
    want = json.loads(CONTRACT.read_text())
    got = json.loads(json.dumps(got, default=str))  # tuples -> lists, as the file holds them
    assert sorted(got) == sorted(want), "DAGs added or removed: update dag_contract.json on purpose"
    differing = {
        dag_id: {
            k: (want[dag_id][k], got[dag_id][k]) for k in want[dag_id] if want[dag_id][k] != got[dag_id][k]
        }
        for dag_id in want
        if got[dag_id] != want[dag_id]
    }
    assert differing == {}


def test_lesson_dags_carry_the_lab_defaults(dags: dict[str, Any]) -> None:
    lessons = {d: dag for d, dag in dags.items() if d[:3] == "71_"}
    assert len(lessons) == 50
    for dag_id, dag in lessons.items():
        assert (dag.catchup, dag.max_active_runs) == (False, 1), dag_id
        tz = getattr(dag.timetable, "timezone", "UTC")  # 71_02_05 starts at midnight of its business zone
        assert dag.start_date == pendulum.datetime(2026, 1, 1, tz=tz), dag_id
        assert dag.doc_md and dag.doc_md.strip(), dag_id


def _declare(**kwargs: Any) -> Any:
    @dagkit.lesson_dag(dag_id="t_dagkit", doc_md="Doc of the test DAG.", **kwargs)
    def t_dagkit() -> None:
        pass

    return t_dagkit()


def test_lesson_dag_applies_the_defaults_and_lets_a_lesson_override_them() -> None:
    dag = _declare(tags=["x", "success"], schedule=dagkit.data_intervals("@hourly"), params={"a": 1})
    assert dag.dag_id == "t_dagkit" and dag.doc_md == "Doc of the test DAG."
    assert (dag.catchup, dag.max_active_runs, dag.start_date) == (False, 1, dagkit.START_DATE)
    assert set(dag.tags) == {"x", "success"} and dag.params.dump() == {"a": 1}
    from airflow.serialization.encoders import coerce_to_core_timetable

    core = coerce_to_core_timetable(dag.timetable)
    assert type(core).__name__ == "CronDataIntervalTimetable"
    assert core.serialize() == {"expression": "0 * * * *", "timezone": "UTC"}

    berlin = pendulum.datetime(2026, 1, 1, tz="Europe/Berlin")
    dag = _declare(tags=["x"], schedule=None, start_date=berlin, max_active_runs=3)
    assert (dag.start_date, dag.max_active_runs, type(dag.timetable).__name__) == (berlin, 3, "NullTimetable")


def _from_module(module: dict[str, Any], tags: list[str]) -> Any:
    """Declare a DAG whose function lives in a module with the given globals (a DAG file's)."""
    namespace: dict[str, Any] = dict(module)
    exec("def lesson() -> None:\n    pass\n", namespace)
    return dagkit.lesson_dag(tags=tags, schedule=None)(namespace["lesson"])()


def test_lesson_dag_reads_the_dag_id_doc_and_params_from_its_file() -> None:
    file = {"__file__": "/somewhere/dags/71_99_01_example.py", "__doc__": "The lesson."}
    dag = _from_module({**file, "PARAMS": {"n": 3}, "DAG_ID": "71_99_01_example"}, ["x"])
    assert (dag.dag_id, dag.doc_md, dag.params.dump()) == ("71_99_01_example", "The lesson.", {"n": 3})
    assert _from_module(file, ["x"]).params.dump() == {}


@pytest.mark.parametrize(
    ("module", "tags", "error"),
    [
        ({"__doc__": "d"}, ["x"], "stem is the dag_id"),
        ({"__file__": "dags/t.py", "__doc__": "d", "DAG_ID": "other"}, ["x"], "differs from the file"),
        ({"__file__": "dags/t.py", "__doc__": "  "}, ["x"], "docstring"),
        ({"__file__": "dags/t.py", "__doc__": None}, ["x"], "docstring"),
        ({"__file__": "dags/t.py", "__doc__": "d"}, [], "tags"),
    ],
)
def test_lesson_dag_refuses_a_dag_without_id_doc_or_tags(
    module: dict[str, Any], tags: list[str], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        _from_module(module, tags)


def test_param_groups_build_fresh_params_with_the_shared_names_and_defaults() -> None:
    a, b = dagkit.variant_param(), dagkit.variant_param()
    assert a is not b and isinstance(a, Param)
    assert (a.value, a.schema) == ("anti_pattern", {"enum": ["anti_pattern", "fixed"]})
    t = dagkit.per_variant_table("core.x_{variant}")
    assert (t.value, t.schema, t.description) == (
        "core.x_{variant}",
        {"type": "string"},
        "{variant} is replaced by the variant",
    )
    with pytest.raises(ValueError, match="variant"):
        dagkit.per_variant_table("core.x")
    group = dagkit.variant_params("public.s", "core.t_{variant}", source_description="in the warehouse")
    assert list(group) == ["variant", "source_table", "target_table"]
    assert (group["source_table"].value, group["source_table"].description) == (
        "public.s",
        "in the warehouse",
    )
    assert group["target_table"].value == "core.t_{variant}"
    assert dagkit.landing_params("p") == {
        "pipeline": "p",
        "bucket": "landing",
        "prefix": "p/",
        "pattern": "*",
    }
    assert list(dagkit.landing_params("p", pattern=None)) == ["pipeline", "bucket", "prefix"]


def test_from_params_passes_the_named_params_through_as_keywords() -> None:
    params = {"target_schema": "core", "batch_size": 500, "other": 1}
    assert dagkit.from_params(params, "target_schema", "batch_size") == {
        "target_schema": "core",
        "batch_size": 500,
    }
    with pytest.raises(KeyError, match="tpyo"):
        dagkit.from_params(params, "tpyo")


def test_demo_setup_builds_only_on_the_demo_tables_and_keeps_the_builders_name_and_doc(
    capsys: pytest.CaptureFixture[str],
) -> None:
    demo = {"source_table": "public.demo_src", "target_table": "core.demo_tgt"}
    built: list[tuple[dict[str, Any], Any]] = []

    @dagkit.demo_setup(demo)
    def setup(params: dict[str, Any], dag_run: Any = None) -> str:
        """Default params: build the demo."""
        built.append((params, dag_run))
        return "demo: built"

    @dagkit.lesson_dag(dag_id="t_dagkit_setup", doc_md="Doc.", tags=["x"], schedule=None)
    def t_dagkit_setup() -> None:
        setup()

    dag = t_dagkit_setup()
    (op,) = dag.tasks
    assert (op.task_id, op.doc_md) == ("setup", "Default params: build the demo.")
    assert setup.function(dict(demo, grain=1), "run") is True
    assert built == [(dict(demo, grain=1), "run")] and "demo: built" in capsys.readouterr().out
    assert setup.function(dict(demo, target_table="core.mine")) is False
    assert len(built) == 1 and "setup leaves them as they are" in capsys.readouterr().out


def test_landing_sensor_waits_on_minio_and_skips_the_run_when_nothing_comes() -> None:
    def check(files: list[dict[str, Any]], **context: Any) -> bool:
        return bool(files)

    @dagkit.lesson_dag(dag_id="t_dagkit_sensor", doc_md="Doc.", tags=["x"], schedule=None)
    def t_dagkit_sensor() -> None:
        dagkit.landing_sensor("wait", "s3://b/p/*", check_fn=check, metadata_keys=["Key"])

    (s,) = t_dagkit_sensor().tasks
    assert (s.task_id, s.aws_conn_id, s.bucket_key, s.wildcard_match) == ("wait", "minio", "s3://b/p/*", True)
    assert (s.check_fn, s.metadata_keys, s.poke_interval, s.timeout, s.soft_fail) == (
        check,
        ["Key"],
        10,
        300,
        True,
    )
    assert s.mode == ("poke" if s.deferrable else "reschedule")


def test_the_watermark_lessons_summarise_a_run_in_one_line() -> None:
    from cdclab.lessons import full_fallback, lost_watermarks

    lost = lost_watermarks.Loaded("anti_pattern", "from_now", "t0", "t1", 2, [3, 4], ["state lost"])
    assert lost.summary() == "anti_pattern/from_now: read 2 rows since t0; watermark now t1; gap: [3, 4]"
    full = full_fallback.Loaded("fixed", "recovered", "t0", "t1", 5, 5)
    assert full.summary() == "fixed/recovered: read 5 rows, wrote 5; watermark t0 -> t1"
