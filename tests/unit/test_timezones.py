"""UTC storage and business-time-zone days: DST change days in Berlin and New York (2026)."""

from __future__ import annotations

import datetime as dt
import itertools

import pendulum
import pytest

from cdclab.time.timezones import (
    NaiveDatetimeError,
    UnknownTimeZoneError,
    local_date_of,
    local_day_bounds,
    local_days_ending_in,
    local_hour_buckets,
    require_aware,
    to_utc,
    zone,
)


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


@pytest.mark.parametrize(
    ("tz", "day", "hours", "utc_start", "utc_end"),
    [
        ("America/New_York", dt.date(2026, 3, 8), 23, utc(2026, 3, 8, 5), utc(2026, 3, 9, 4)),
        ("America/New_York", dt.date(2026, 11, 1), 25, utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)),
        ("Europe/Berlin", dt.date(2026, 3, 29), 23, utc(2026, 3, 28, 23), utc(2026, 3, 29, 22)),
        ("Europe/Berlin", dt.date(2026, 10, 25), 25, utc(2026, 10, 24, 22), utc(2026, 10, 25, 23)),
        ("Europe/Berlin", dt.date(2026, 3, 30), 24, utc(2026, 3, 29, 22), utc(2026, 3, 30, 22)),
        ("UTC", dt.date(2026, 3, 29), 24, utc(2026, 3, 29), utc(2026, 3, 30)),
    ],
)
def test_local_day_bounds_are_23_or_25_hours_on_dst_change_days(tz, day, hours, utc_start, utc_end):
    bounds = local_day_bounds(day, tz)
    assert (bounds.utc_start, bounds.utc_end, bounds.hours) == (utc_start, utc_end, hours)


@pytest.mark.parametrize(
    ("tz", "day", "count", "skipped_or_repeated"),
    [
        ("Europe/Berlin", dt.date(2026, 3, 29), 23, "02"),
        ("Europe/Berlin", dt.date(2026, 10, 25), 25, "02"),
        ("America/New_York", dt.date(2026, 3, 8), 23, "02"),
        ("America/New_York", dt.date(2026, 11, 1), 25, "01"),
    ],
)
def test_hour_buckets_skip_or_repeat_the_changed_hour(tz, day, count, skipped_or_repeated):
    buckets = local_hour_buckets(day, tz)
    hours = [b.local_start.strftime("%H") for b in buckets]
    assert len(buckets) == count
    if count == 23:
        assert skipped_or_repeated not in hours
    else:
        assert hours.count(skipped_or_repeated) == 2
        repeated = [b.label for b in buckets if b.local_start.strftime("%H") == skipped_or_repeated]
        assert repeated[0] != repeated[1]  # told apart by their offsets
    assert all(a.utc_end == b.utc_start for a, b in itertools.pairwise(buckets))
    assert buckets[0].utc_start == local_day_bounds(day, tz).utc_start
    assert buckets[-1].utc_end == local_day_bounds(day, tz).utc_end


def test_the_berlin_fall_back_hour_buckets_are_labelled_with_both_offsets():
    labels = [b.label for b in local_hour_buckets(dt.date(2026, 10, 25), "Europe/Berlin")][:4]
    assert labels == ["00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100"]


def test_one_instant_belongs_to_different_local_days_in_different_zones():
    instant = utc(2026, 3, 8, 3, 30)
    assert local_date_of(instant, "Europe/Berlin") == dt.date(2026, 3, 8)
    assert local_date_of(instant, "America/New_York") == dt.date(2026, 3, 7)
    assert local_day_bounds(dt.date(2026, 3, 7), "America/New_York").contains(instant)


def test_local_days_ending_in_consecutive_intervals_are_each_reported_once():
    # Three Berlin-local day intervals around the Berlin spring change; report New York days.
    ends = [pendulum.datetime(2026, 3, d, tz="Europe/Berlin") for d in (28, 29, 30, 31)]
    got = [
        [d.date.day for d in local_days_ending_in(a, b, "America/New_York")]
        for a, b in itertools.pairwise(ends)
    ]
    assert got == [[27], [28], [29]]
    got_berlin = [
        [d.date.day for d in local_days_ending_in(a, b, "Europe/Berlin")] for a, b in itertools.pairwise(ends)
    ]
    assert got_berlin == [[28], [29], [30]]


def test_naive_datetimes_are_refused_with_a_fix():
    with pytest.raises(NaiveDatetimeError, match=r"naive datetime.*tz='UTC'"):
        require_aware(dt.datetime(2026, 3, 29, 2, 30), "ordered_at")  # noqa: DTZ001 - the point of the test
    with pytest.raises(NaiveDatetimeError):
        local_date_of(dt.datetime(2026, 3, 29), "Europe/Berlin")  # noqa: DTZ001


def test_non_datetimes_and_datetimes_as_days_are_refused():
    with pytest.raises(TypeError):
        require_aware("2026-03-29T00:00Z", "ordered_at")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a date"):
        local_day_bounds(utc(2026, 3, 29), "Europe/Berlin")


def test_aware_values_of_any_library_convert_to_the_same_utc_instant():
    from zoneinfo import ZoneInfo

    stdlib = dt.datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"), fold=1)  # the second 02:30
    assert to_utc(stdlib) == utc(2026, 10, 25, 1, 30)
    assert to_utc(pendulum.datetime(2026, 3, 8, 12, tz="America/New_York")) == utc(2026, 3, 8, 16)


@pytest.mark.parametrize("name", ["CET/Nowhere", "Mars/Olympus", "+02:00"])
def test_unknown_time_zones_are_refused(name):
    with pytest.raises(UnknownTimeZoneError, match="IANA"):
        zone(name)
