"""The lab's DAG defaults, written once: every lesson DAG is declared with :func:`lesson_dag`.

Vocabulary:

- **lesson DAG** — one file in ``dags/``, one pattern, declared by ``@lesson_dag(schedule=..., tags=[...])``.
  Its ``dag_id`` is the file stem, its tags are the curriculum's (written out at that call), its
  documentation is the file's docstring and its params the file's ``PARAMS``: the decorator reads the
  file's own name, docstring and constant instead of having them repeated; this module adds only what
  is the same for all fifty.
- **lab defaults** — every lesson starts on :data:`START_DATE` (2026-01-01 UTC), runs no catch-up
  (``catchup=False``: a lesson is triggered or scheduled from now on, never replayed for a year) and
  runs one at a time (``max_active_runs=1``: the state a lesson keeps — watermarks, offsets, ledgers —
  assumes runs do not overlap). A lesson that needs another value passes it as an override.
- **data-interval schedule** — :func:`data_intervals` is Airflow's ``CronDataIntervalTimetable``: each
  run covers ``[data_interval_start, data_interval_end)``, the interval the cron expression closes.
  A plain cron string (``schedule="*/5 * * * *"``) is a trigger timetable instead: runs at those times,
  with an empty data interval. The lessons that read the interval use the former.
- **param groups** — params that several lessons declare alike (the 71.6 anti-pattern switch, the
  landing-zone params of the 71.4 file pipelines) are built here, so their names and defaults cannot
  drift apart. Each builder returns fresh ``Param`` objects: Airflow keeps the objects it is given.
- **passing params through** — :func:`from_params` hands a task's params to a library step as keyword
  arguments of the same names, so a call lists the params it uses once.
- **task pieces** — what several lessons' tasks do alike, written once: :func:`run_variant_load` (one run
  of a 71.6 watermark lesson's load over the run's data interval), :func:`demo_setup` (the ``setup`` task
  that builds a debugging lesson's demo situation) and :func:`landing_sensor` (the 71.4 sensor that waits
  for files in the landing zone) and :func:`run_if_positive` (a task that runs only when a count param
  asks for work). The task ids, docstrings and wiring stay in the DAG file.

Nothing here opens a connection at parse time; what a task runs is imported when it runs.
"""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

TIMEZONE = "UTC"
START_DATE = pendulum.datetime(2026, 1, 1, tz=TIMEZONE)
DEFAULTS: Mapping[str, Any] = {"catchup": False, "max_active_runs": 1}

VARIANTS = ("anti_pattern", "fixed")
PER_VARIANT = "{variant} is replaced by the variant"


def lesson_dag(
    *, tags: Collection[str], schedule: Any, **overrides: Any
) -> Callable[[Callable[..., Any]], Any]:
    """``airflow.sdk.dag`` with the lab's defaults: the decorator of a lesson DAG.

    What a lesson file already says is not said twice: the ``dag_id`` is the file's stem (the curriculum's
    file name; a module constant ``DAG_ID``, which tasks use, must agree), ``doc_md`` is the file's
    docstring and ``params`` its module constant ``PARAMS`` when it has one — read from the decorated
    function's module when the DAG file is parsed. ``tags`` (the curriculum's, written out) and
    ``schedule`` are given at the call; ``overrides`` are any other ``dag()`` arguments and win over the
    defaults (``start_date=...``, ``user_defined_macros=...``, even ``dag_id=`` or ``params=``).
    """

    def declare(fn: Callable[..., Any]) -> Any:
        module = fn.__globals__
        file = module.get("__file__")
        dag_id = overrides.pop("dag_id", None) or (pathlib.Path(file).stem if file else None)
        if not dag_id:
            raise ValueError(f"{fn.__name__}: a lesson DAG is a file in dags/; its stem is the dag_id")
        declared = module.get("DAG_ID")
        if declared is not None and declared != dag_id:
            raise ValueError(f"{dag_id}: DAG_ID = {declared!r} differs from the file's name")
        doc = overrides.pop("doc_md", None) or module.get("__doc__")
        if not doc or not doc.strip():
            raise ValueError(f"{dag_id}: a lesson DAG documents itself in its module docstring")
        if not tags:
            raise ValueError(f"{dag_id}: a lesson DAG carries the curriculum's tags")
        kwargs: dict[str, Any] = {
            "dag_id": dag_id,
            "schedule": schedule,
            "start_date": START_DATE,
            **DEFAULTS,
            "tags": list(tags),
            "doc_md": doc,
        }
        params = module.get("PARAMS")
        if params is not None:
            kwargs["params"] = dict(params)
        kwargs.update(overrides)
        return dag(**kwargs)(fn)

    return declare


def data_intervals(cron: str, tz: str = TIMEZONE) -> CronDataIntervalTimetable:
    """A schedule whose runs each cover the data interval the cron expression closes, in ``tz``."""
    return CronDataIntervalTimetable(cron, timezone=tz)


def variant_param() -> Param:
    """The 71.6 switch: run the lesson's ``anti_pattern`` or its ``fixed`` version."""
    return Param(VARIANTS[0], enum=list(VARIANTS))


def per_variant_table(default: str) -> Param:
    """A table name param with ``{variant}`` in it, so each variant writes its own table."""
    if "{variant}" not in default:
        raise ValueError(f"{default!r}: a per-variant table name contains {{variant}}")
    return Param(default, type="string", description=PER_VARIANT)


def variant_params(
    source_table: str, target_table: str, *, source_description: str | None = None
) -> dict[str, Any]:
    """The params every 71.6 anti-pattern lesson starts with: ``variant`` (:func:`variant_param`), the
    ``source_table`` it reads and the per-variant ``target_table`` it writes (:func:`per_variant_table`)."""
    return {
        "variant": variant_param(),
        "source_table": Param(source_table, type="string", description=source_description),
        "target_table": per_variant_table(target_table),
    }


def landing_params(pipeline: str, *, pattern: str | None = "*") -> dict[str, Any]:
    """The 71.4 landing zone of a file pipeline: its name, bucket ``landing``, prefix ``<pipeline>/``
    and, unless ``pattern`` is None, the fnmatch pattern of its data files (relative to the prefix)."""
    params: dict[str, Any] = {"pipeline": pipeline, "bucket": "landing", "prefix": f"{pipeline}/"}
    if pattern is not None:
        params["pattern"] = pattern
    return params


def from_params(params: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The run's values of ``names``, as keyword arguments of the same names: a task passes its params
    through with ``step(..., **from_params(params, "target_schema", "batch_size"))``. A name the DAG
    does not declare is a ``KeyError`` naming it, as ``params["..."]`` is."""
    return {name: params[name] for name in names}


def run_variant_load(
    load: Callable[..., Any], params: Mapping[str, Any], dag_id: str, run_id: str, **options: Any
) -> dict[str, Any]:
    """One run of a 71.6 watermark lesson's ``load`` (71.6.1, 71.6.3), from inside its task: the run's
    ``source_table``, ``target_table`` and ``variant`` (:func:`variant_params`) over the run's data interval
    (derived from the timetable when the run has none: :func:`cdclab.time.intervals.run_interval`), with
    the lesson's own ``options``. Prints the run's notes, then its one-line summary; returns its XCom.

    ``load`` is ``load(source, target_table, variant, *, interval_start, interval_end, dag_id, run_id,
    **options)`` returning a :class:`cdclab.lessons.antipatterns.VariantRun` with ``notes``."""
    from airflow.sdk import get_current_context

    from cdclab.time.intervals import run_interval

    iv = run_interval(get_current_context())
    r = load(
        params["source_table"],
        params["target_table"],
        params["variant"],
        interval_start=iv.start,
        interval_end=iv.end,
        dag_id=dag_id,
        run_id=run_id,
        **options,
    )
    for note in r.notes:
        print(note)
    print(r.summary())
    return dict(r.xcom())


def demo_setup(demo: Mapping[str, Any]) -> Callable[[Callable[[dict[str, Any], Any], str]], Any]:
    """The ``setup`` task of a debugging lesson (71.8, 71.10.3), made from the function that builds its demo.

    ``demo`` holds the DAG's default values of the params that name its demo tables. With those defaults
    (:func:`cdclab.lessons.demos.uses_demo_tables`) the task calls the decorated builder with the run's
    ``params`` and ``dag_run``; the builder (re)builds the lesson's broken situation and returns a line
    saying what it built, which is printed. With any other tables (a user's pipeline, a test's own tables)
    the task leaves them as they are. The task returns whether it built. Its task id and documentation are
    the builder's name and docstring::

        @demo_setup(DEMO)
        def setup(params: dict[str, Any], dag_run: Any = None) -> str:
            lesson.build_gap_demo(...)
            return "demo: the 11:00 interval was never run"
    """
    names = sorted(demo)

    def decorate(build: Callable[[dict[str, Any], Any], str]) -> Any:
        def setup(params: dict[str, Any], dag_run: Any = None) -> bool:
            from cdclab.lessons import demos

            if not demos.uses_demo_tables(params, demo, names):
                print(f"custom tables (not the demo's {', '.join(names)}): setup leaves them as they are")
                return False
            print(build(params, dag_run))
            return True

        setup.__name__ = build.__name__
        setup.__qualname__ = build.__qualname__
        setup.__doc__ = build.__doc__
        return task(setup)

    return decorate


def landing_sensor(
    task_id: str, bucket_key: str, *, check_fn: Callable[..., bool], metadata_keys: list[str]
) -> Any:
    """The 71.4 file pipelines' wait: Amazon's ``S3KeySensor`` on the lab's MinIO (connection ``minio``)
    for ``bucket_key`` (a wildcard, templated with the params), true when ``check_fn(files, **context)``
    is, given the listed objects with ``metadata_keys``. It pokes every 10 s for at most 5 min and then
    skips the run (``soft_fail``): no new files is not a failure.

    Deferrable when ``aiobotocore`` (``apache-airflow-providers-amazon[aiobotocore]``) is installed (the
    triggerer then waits, not a worker slot), otherwise in ``reschedule`` mode. The check at parse time only
    asks whether the package is importable; it opens nothing."""
    from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor

    deferrable = importlib.util.find_spec("aiobotocore") is not None
    return S3KeySensor(
        task_id=task_id,
        aws_conn_id="minio",
        bucket_key=bucket_key,
        wildcard_match=True,
        check_fn=check_fn,
        metadata_keys=metadata_keys,
        deferrable=deferrable,
        mode="poke" if deferrable else "reschedule",
        poke_interval=10,
        timeout=300,
        soft_fail=True,
    )


def run_if_positive(param: str, what: str) -> Callable[[Any], Any]:
    """``task.run_if`` on a count param: the task runs only when ``params[param]`` is above 0, otherwise it
    is skipped with ``<param> is 0: nothing to <what>`` (and downstream tasks with ``trigger_rule=
    "none_failed"`` still run). Stack it above ``@task``."""

    def positive(context: Mapping[str, Any]) -> bool:
        return int(context["params"][param]) > 0

    return task.run_if(positive, skip_message=f"{param} is 0: nothing to {what}")
