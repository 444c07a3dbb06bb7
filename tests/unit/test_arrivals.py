"""The arrivals ledger's pure parts: where its tables are declared and the reasons rejected arrivals get.
Against Postgres (the ledger, the late-events log, a rerun): tests/integration/test_71_02_event_time.py."""

from __future__ import annotations

import datetime as dt

import pendulum

from cdclab.time import arrivals
from cdclab.time.intervals import Window
from tests.unit._schema_helpers import declared

WINDOW = Window(pendulum.datetime(2026, 5, 4, 10, tz="UTC"), pendulum.datetime(2026, 5, 4, 11, tz="UTC"))
TEN = dt.datetime(2026, 5, 4, 10, tzinfo=dt.UTC)  # times as read from the ledger: datetime, not pendulum


def first(arrival, event_time, seen_at) -> arrivals.FirstArrival:
    return arrivals.FirstArrival(7, event_time, seen_at, WINDOW, arrival, "run")


def test_the_default_ledger_and_late_log_are_declared_by_the_versioned_schema():
    tables = declared()
    assert tables[arrivals.LEDGER] == tables[arrivals.LATE_LOG] == 7
    assert arrivals.SCHEMA_FILE.endswith("V007__arrivals_ledger.sql")


def test_a_too_late_arrival_says_how_long_after_its_window_it_came():
    a = first("too_late", TEN + dt.timedelta(minutes=5), TEN + dt.timedelta(hours=3, minutes=30))
    reason = arrivals.rejection_reason(a, dt.timedelta(hours=2), dt.timedelta(minutes=5))
    assert reason == "first arrived 2:30:00 after its window closed (allowed lateness 2:00:00)"


def test_a_reason_reads_the_same_whether_the_times_are_pendulum_or_datetime():
    a = first("too_late", WINDOW.start.add(minutes=5), WINDOW.end.add(hours=2, minutes=30))
    reason = arrivals.rejection_reason(a, dt.timedelta(hours=2), dt.timedelta(minutes=5))
    assert reason == "first arrived 2:30:00 after its window closed (allowed lateness 2:00:00)"


def test_a_future_event_says_how_far_ahead_of_its_arrival_it_was():
    a = first("future", TEN + dt.timedelta(minutes=40), TEN + dt.timedelta(minutes=10))
    reason = arrivals.rejection_reason(a, dt.timedelta(hours=2), dt.timedelta(minutes=5))
    assert reason == "event time 0:30:00 ahead of arrival (skew tolerance 0:05:00)"
