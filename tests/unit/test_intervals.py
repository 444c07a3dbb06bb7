"""Window arithmetic: half-open intervals, partitions, event-time windows, lateness, batches, SQL text."""

from __future__ import annotations

import datetime as dt
import itertools

import pendulum
import pytest

from cdclab.time.intervals import (
    EmptyIntervalError,
    InvertedIntervalError,
    MissingIntervalError,
    UnalignedIntervalError,
    UnknownPolicyError,
    Window,
    WindowSpec,
    classify_arrival,
    from_context,
    is_aligned,
    partition_of,
    partitions_for,
)
from cdclab.time.partitions import (
    BadTableNameError,
    create_parent_sql,
    create_partition_sql,
    partition_table,
)
from cdclab.time.timezones import NaiveDatetimeError
from tests.unit._sql_text import text

H = dt.timedelta(hours=1)


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


# --- Window -----------------------------------------------------------------------------------------


def test_a_window_is_half_open_so_its_end_belongs_to_the_next_window():
    first, second = Window(utc(2026, 1, 1), utc(2026, 1, 2)), Window(utc(2026, 1, 2), utc(2026, 1, 3))
    midnight = utc(2026, 1, 2)
    assert first.contains(utc(2026, 1, 1))
    assert not first.contains(midnight)
    assert second.contains(midnight)
    assert not first.overlaps(second)


def test_a_window_normalises_to_utc_and_compares_by_instant():
    berlin = Window(
        pendulum.datetime(2026, 1, 1, 1, tz="Europe/Berlin"),
        pendulum.datetime(2026, 1, 2, 1, tz="Europe/Berlin"),
    )
    assert berlin == Window(utc(2026, 1, 1), utc(2026, 1, 2))
    assert berlin.start.timezone_name == "UTC"


def test_an_empty_window_explains_the_cron_trigger_timetable_pitfall():
    with pytest.raises(EmptyIntervalError, match=r"CronTriggerTimetable.*CronDataIntervalTimetable"):
        Window(utc(2026, 1, 1), utc(2026, 1, 1))


def test_an_inverted_window_is_refused():
    with pytest.raises(InvertedIntervalError, match="after its end"):
        Window(utc(2026, 1, 2), utc(2026, 1, 1))


def test_a_window_refuses_naive_datetimes():
    with pytest.raises(NaiveDatetimeError, match="window start is a naive datetime"):
        Window(dt.datetime(2026, 1, 1), utc(2026, 1, 2))  # noqa: DTZ001 - the point of the test


def test_from_context_reads_the_data_interval():
    ctx = {"data_interval_start": utc(2026, 1, 1), "data_interval_end": utc(2026, 1, 2)}
    assert from_context(ctx) == Window(utc(2026, 1, 1), utc(2026, 1, 2))


def test_from_context_refuses_a_cron_trigger_run_with_start_equal_end():
    ctx = {"data_interval_start": utc(2026, 1, 1), "data_interval_end": utc(2026, 1, 1)}
    with pytest.raises(EmptyIntervalError):
        from_context(ctx)


def test_from_context_refuses_a_run_without_interval():
    with pytest.raises(MissingIntervalError, match="interval timetable"):
        from_context({"data_interval_start": None, "data_interval_end": None})


def test_split_covers_a_long_interval_exactly_with_a_shorter_last_batch():
    w = Window(utc(2026, 1, 1), utc(2026, 1, 1, 10))
    batches = w.split(dt.timedelta(hours=4))
    assert [(b.start.hour, b.end.hour) for b in batches] == [(0, 4), (4, 8), (8, 10)]
    assert all(a.end == b.start for a, b in itertools.pairwise(batches))


def test_split_refuses_a_non_positive_step():
    with pytest.raises(ValueError, match="positive"):
        Window(utc(2026, 1, 1), utc(2026, 1, 2)).split(dt.timedelta(0))


def test_widen_adds_a_lookback_overlap():
    w = Window(utc(2026, 1, 1, 10), utc(2026, 1, 1, 11)).widen(before=dt.timedelta(minutes=30))
    assert w == Window(utc(2026, 1, 1, 9, 30), utc(2026, 1, 1, 11))


def test_sql_predicate_is_half_open_with_bound_values():
    w = Window(utc(2026, 1, 1), utc(2026, 1, 2))
    where, params = w.sql_predicate("o.ordered_at")
    assert text(where) == '"o"."ordered_at" >= %(window_start)s AND "o"."ordered_at" < %(window_end)s'
    assert params == {"window_start": utc(2026, 1, 1), "window_end": utc(2026, 1, 2)}


# --- partitions ----------------------------------------------------------------------------------


def test_an_aligned_day_maps_to_one_full_partition():
    (part,) = partitions_for(Window(utc(2026, 3, 29), utc(2026, 3, 30)), "day")
    assert (part.key, part.is_full, part.suffix) == ("2026-03-29", True, "p20260329")


def test_an_unaligned_interval_raises_under_the_raise_policy():
    with pytest.raises(UnalignedIntervalError, match="policy='split'"):
        partitions_for(Window(utc(2026, 1, 1, 5), utc(2026, 1, 2, 5)), "day", "raise")


def test_an_unaligned_interval_splits_into_clipped_pieces():
    parts = partitions_for(Window(utc(2026, 1, 1, 5), utc(2026, 1, 3, 7)), "day", "split")
    assert [p.key for p in parts] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert [p.is_full for p in parts] == [False, True, False]
    assert parts[0].piece == Window(utc(2026, 1, 1, 5), utc(2026, 1, 2))
    assert parts[2].piece == Window(utc(2026, 1, 3), utc(2026, 1, 3, 7))


def test_an_unaligned_interval_expands_to_whole_partitions():
    parts = partitions_for(Window(utc(2026, 1, 1, 5), utc(2026, 1, 1, 7)), "day", "expand")
    assert [(p.key, p.piece) for p in parts] == [("2026-01-01", Window(utc(2026, 1, 1), utc(2026, 1, 2)))]


def test_hourly_partitions_cover_a_day():
    parts = partitions_for(Window(utc(2026, 1, 1), utc(2026, 1, 2)), "hour")
    assert len(parts) == 24
    assert parts[5].key == "2026-01-01T05"
    assert parts[5].suffix == "p20260101t05"


def test_local_daily_partitions_are_23_and_25_hours_on_berlin_dst_days():
    spring = partition_of(utc(2026, 3, 29, 12), "day", tz="Europe/Berlin")
    autumn = partition_of(utc(2026, 10, 25, 12), "day", tz="Europe/Berlin")
    assert spring.bounds.duration == dt.timedelta(hours=23)
    assert autumn.bounds.duration == dt.timedelta(hours=25)
    assert spring.bounds == Window(utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))


def test_a_utc_day_is_not_aligned_to_berlin_days():
    assert is_aligned(Window(utc(2026, 1, 1), utc(2026, 1, 2)), "day", "UTC")
    assert not is_aligned(Window(utc(2026, 1, 1), utc(2026, 1, 2)), "day", "Europe/Berlin")


def test_unknown_policy_and_grain_are_refused():
    w = Window(utc(2026, 1, 1), utc(2026, 1, 2))
    with pytest.raises(UnknownPolicyError, match="alignment policy"):
        partitions_for(w, "day", "ignore")  # type: ignore[arg-type]
    with pytest.raises(UnknownPolicyError, match="grain"):
        partitions_for(w, "week")  # type: ignore[arg-type]


def test_partition_ddl_text_quotes_identifiers_and_binds_bounds():
    (part,) = partitions_for(Window(utc(2026, 2, 1), utc(2026, 2, 2)), "day")
    assert partition_table("core.orders_by_day", part) == "core.orders_by_day_p20260201"
    ddl, params = create_partition_sql("core.orders_by_day", part)
    assert text(ddl) == (
        'CREATE TABLE IF NOT EXISTS "core"."orders_by_day_p20260201" PARTITION OF '
        '"core"."orders_by_day" FOR VALUES FROM (%(p_start)s) TO (%(p_end)s)'
    )
    assert params == {"p_start": utc(2026, 2, 1), "p_end": utc(2026, 2, 2)}
    parent = create_parent_sql(
        "core.t", [("id", "bigint"), ("ts", "timestamptz not null")], "ts", ["id", "ts"]
    )
    assert text(parent) == (
        'CREATE TABLE IF NOT EXISTS "core"."t" ("id" bigint, "ts" timestamptz not null, '
        'PRIMARY KEY ("id", "ts")) PARTITION BY RANGE ("ts")'
    )


def test_partition_names_are_validated_and_fit_postgres_limits():
    (part,) = partitions_for(Window(utc(2026, 2, 1), utc(2026, 2, 2)), "day")
    with pytest.raises(BadTableNameError):
        partition_table("core.x; DROP TABLE y", part)
    long = partition_table("core." + "t" * 63, part)
    assert len(long.split(".")[1]) == 63
    assert long.endswith("_p20260201")


def test_the_partitioned_primary_key_must_include_the_partition_column():
    with pytest.raises(ValueError, match="must include the partition column"):
        create_parent_sql("core.t", [("id", "bigint"), ("ts", "timestamptz")], "ts", ["id"])


# --- event-time windows ----------------------------------------------------------------------------


def test_tumbling_windows_put_each_event_in_exactly_one_window():
    spec = WindowSpec.tumbling(H)
    assert spec.windows_for(utc(2026, 1, 1, 5, 59)) == [Window(utc(2026, 1, 1, 5), utc(2026, 1, 1, 6))]
    assert spec.window_for(utc(2026, 1, 1, 6)) == Window(utc(2026, 1, 1, 6), utc(2026, 1, 1, 7))


def test_sliding_windows_put_each_event_in_size_over_slide_windows():
    spec = WindowSpec.sliding(3 * H, H)
    got = spec.windows_for(utc(2026, 1, 1, 5, 30))
    assert got == [Window(utc(2026, 1, 1, h), utc(2026, 1, 1, h + 3)) for h in (3, 4, 5)]
    assert spec.windows_per_event == 3


def test_sliding_windows_respect_their_origin():
    spec = WindowSpec.sliding(2 * H, H, origin=utc(2026, 1, 1, 0, 15))
    assert spec.windows_for(utc(2026, 1, 1, 1, 0)) == [
        Window(utc(2025, 12, 31, 23, 15), utc(2026, 1, 1, 1, 15)),
        Window(utc(2026, 1, 1, 0, 15), utc(2026, 1, 1, 2, 15)),
    ]


def test_windows_ending_in_a_run_interval_are_the_ones_that_close_during_it():
    spec = WindowSpec.sliding(3 * H, H)
    got = spec.windows_ending_in(Window(utc(2026, 1, 1, 5), utc(2026, 1, 1, 7)))
    assert got == [
        Window(utc(2026, 1, 1, 3), utc(2026, 1, 1, 6)),
        Window(utc(2026, 1, 1, 4), utc(2026, 1, 1, 7)),
    ]


def test_consecutive_run_intervals_close_every_window_exactly_once():
    spec = WindowSpec.sliding(3 * H, H)
    runs = Window(utc(2026, 1, 1), utc(2026, 1, 2)).split(H)
    closed = [w for run in runs for w in spec.windows_ending_in(run)]
    assert len(closed) == len(set(closed)) == 24
    assert closed[0] == Window(utc(2025, 12, 31, 22), utc(2026, 1, 1, 1))


def test_windows_touching_changed_events_are_distinct_and_sorted():
    spec = WindowSpec.sliding(3 * H, H)
    got = spec.windows_touching([utc(2026, 1, 1, 5, 10), utc(2026, 1, 1, 5, 50), utc(2026, 1, 1, 6, 1)])
    assert [w.start.hour for w in got] == [3, 4, 5, 6]


def test_a_window_spec_refuses_gaps_and_fractions():
    with pytest.raises(ValueError, match="gaps"):
        WindowSpec.sliding(H, 2 * H)
    with pytest.raises(ValueError, match="multiple"):
        WindowSpec.sliding(3 * H, dt.timedelta(minutes=40))
    with pytest.raises(ValueError, match="tumbling"):
        WindowSpec.sliding(3 * H, H).window_for(utc(2026, 1, 1))


# --- lateness --------------------------------------------------------------------------------------

W5 = Window(utc(2026, 1, 1, 5), utc(2026, 1, 1, 6))
LATENESS, SKEW = 2 * H, dt.timedelta(minutes=5)


@pytest.mark.parametrize(
    ("event", "seen", "expected"),
    [
        (utc(2026, 1, 1, 5, 10), utc(2026, 1, 1, 5, 20), "on_time"),
        (utc(2026, 1, 1, 5, 10), utc(2026, 1, 1, 5, 59, 59), "on_time"),
        (utc(2026, 1, 1, 5, 10), utc(2026, 1, 1, 6), "late"),  # window end is exclusive
        (utc(2026, 1, 1, 5, 10), utc(2026, 1, 1, 7, 59), "late"),
        (utc(2026, 1, 1, 5, 10), utc(2026, 1, 1, 8), "too_late"),  # end + lateness is exclusive too
        (utc(2026, 1, 1, 5, 24), utc(2026, 1, 1, 5, 20), "on_time"),  # 4 min ahead: within skew tolerance
        (utc(2026, 1, 1, 5, 26), utc(2026, 1, 1, 5, 20), "future"),  # 6 min ahead: a wrong clock
    ],
)
def test_arrivals_are_on_time_late_too_late_or_from_the_future(event, seen, expected):
    assert classify_arrival(event, seen, W5, LATENESS, SKEW) == expected


def test_classification_refuses_negative_lateness():
    with pytest.raises(ValueError, match="negative"):
        classify_arrival(utc(2026, 1, 1, 5), utc(2026, 1, 1, 5), W5, -H, SKEW)
