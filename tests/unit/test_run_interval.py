"""The one rule for runs without a data interval: derive it from the DAG's timetable at ``run_after``.

A run triggered through the REST API or ``airflow dags trigger`` without a logical date carries no
``logical_date`` / ``data_interval_*`` in its task context (the Task SDK leaves those keys out). Its
interval is the one the UI's Trigger would have given a run started at the same moment: the last complete
interval of the timetable before ``run_after``."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import DAG, CronDataIntervalTimetable, DeltaDataIntervalTimetable

from cdclab.time.intervals import (
    EmptyIntervalError,
    MissingIntervalError,
    RunInterval,
    Window,
    from_context,
    interval_for_run,
    run_interval,
)


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def _dag(schedule: object) -> DAG:
    return DAG("71_test_interval", schedule=schedule, start_date=utc(2026, 1, 1))  # type: ignore[arg-type]


def _no_interval_context(schedule: object, run_after: dt.datetime) -> dict[str, object]:
    """What the Task SDK hands a task of a run without a logical date: no logical_date / interval keys."""
    dag_run = SimpleNamespace(
        dag_id="71_test_interval",
        logical_date=None,
        data_interval_start=None,
        data_interval_end=None,
        run_after=run_after,
    )
    return {"dag": _dag(schedule), "dag_run": dag_run, "run_id": "manual__x"}


def test_a_run_with_an_interval_keeps_it():
    ctx = {
        "logical_date": utc(2026, 3, 29, 5),
        "data_interval_start": utc(2026, 3, 29, 4),
        "data_interval_end": utc(2026, 3, 29, 5),
    }
    assert run_interval(ctx) == RunInterval(utc(2026, 3, 29, 5), utc(2026, 3, 29, 4), utc(2026, 3, 29, 5))
    assert from_context(ctx) == Window(utc(2026, 3, 29, 4), utc(2026, 3, 29, 5))


def test_hourly_interval_timetable_gives_the_last_complete_hour_before_the_run_started():
    ctx = _no_interval_context(CronDataIntervalTimetable("@hourly", timezone="UTC"), utc(2026, 3, 29, 5, 17))
    got = run_interval(ctx)
    assert (got.start, got.end, got.derived) == (utc(2026, 3, 29, 4), utc(2026, 3, 29, 5), True)
    assert got.logical_date == utc(2026, 3, 29, 5, 17)  # the UI's default logical date: the trigger moment
    assert from_context(ctx) == Window(utc(2026, 3, 29, 4), utc(2026, 3, 29, 5))


def test_a_run_exactly_on_a_boundary_gets_the_interval_that_just_closed():
    got = run_interval(
        _no_interval_context(CronDataIntervalTimetable("@hourly", timezone="UTC"), utc(2026, 3, 29, 5))
    )
    assert (got.start, got.end) == (utc(2026, 3, 29, 4), utc(2026, 3, 29, 5))


def test_daily_timetable_in_a_local_zone_gives_the_last_whole_local_day_across_dst():
    tt = CronDataIntervalTimetable("0 0 * * *", timezone="Europe/Berlin")
    got = run_interval(_no_interval_context(tt, utc(2026, 3, 29, 5, 17)))  # 07:17 CEST, DST began at 02:00
    assert (got.start, got.end) == (utc(2026, 3, 27, 23), utc(2026, 3, 28, 23))  # 28 March, 00:00-24:00 CET


def test_delta_timetable_gives_the_delta_before_the_run_started():
    tt = DeltaDataIntervalTimetable(dt.timedelta(hours=2))
    got = run_interval(_no_interval_context(tt, utc(2026, 3, 29, 5, 17)))
    assert (got.start, got.end) == (utc(2026, 3, 29, 3, 17), utc(2026, 3, 29, 5, 17))


def test_cron_string_and_unscheduled_dags_get_the_trigger_moment_as_a_point():
    for schedule in ("*/5 * * * *", "@hourly", None):
        got = run_interval(_no_interval_context(schedule, utc(2026, 3, 29, 5, 17)))
        assert got.start == got.end == got.logical_date == utc(2026, 3, 29, 5, 17)
        with pytest.raises(EmptyIntervalError):  # a point is not a window: loads nothing, so it says so
            _ = got.window


def test_interval_for_run_reads_a_carried_interval_from_the_dag_run():
    dag_run = SimpleNamespace(
        logical_date=utc(2026, 3, 29, 5),
        data_interval_start=utc(2026, 3, 29, 4),
        data_interval_end=utc(2026, 3, 29, 5),
        run_after=utc(2026, 3, 29, 5, 1),
    )
    got = interval_for_run(_dag(CronDataIntervalTimetable("@hourly", timezone="UTC")), dag_run)
    assert got == RunInterval(utc(2026, 3, 29, 5), utc(2026, 3, 29, 4), utc(2026, 3, 29, 5), derived=False)


def test_nothing_to_derive_from_says_how_to_trigger():
    with pytest.raises(MissingIntervalError, match=r"airflow dags trigger .* --logical-date") as err:
        run_interval({"data_interval_start": None, "data_interval_end": None})
    assert "Trigger" in str(err.value)
    dag_run = SimpleNamespace(
        dag_id="71_x", logical_date=None, data_interval_start=None, data_interval_end=None, run_after=None
    )
    with pytest.raises(MissingIntervalError, match="airflow dags trigger 71_x --logical-date"):
        interval_for_run(SimpleNamespace(dag_id="71_x", timetable=None), dag_run)
