"""The pure parts of the steps 71_02_03, 71_03_03/04/05 and 71_08_05 call (``cdclab.time.arrivals``,
``cdclab.time.window_aggregates``, ``cdclab.cdc.merge_variants``, ``cdclab.cdc.scd2``, ``cdclab.lessons.late_data``).
That the DAGs hold no database code: tests/unit/test_thin_dags.py."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from cdclab.cdc import merge_variants
from cdclab.lessons import late_data
from cdclab.ops import diagnostics
from cdclab.time import arrivals
from cdclab.time import window_aggregates as windowagg
from cdclab.time.intervals import Window

# ----------------------------------------------------------------------------------- 71_02_03

H = [pendulum.datetime(2026, 5, 4, h, tz="UTC") for h in range(24)]


def first(key: int, window: Window, arrival: arrivals.Arrival) -> arrivals.FirstArrival:
    return arrivals.FirstArrival(key, window.start, window.start, window, arrival, "run")


def test_only_windows_with_an_accepted_arrival_are_recomputed_each_once_oldest_first() -> None:
    nine, ten, eleven = Window(H[9], H[10]), Window(H[10], H[11]), Window(H[11], H[12])
    firsts = [
        first(1, eleven, "on_time"),
        first(2, nine, "late"),
        first(3, eleven, "late"),
        first(4, ten, "too_late"),
        first(5, ten, "future"),
    ]
    assert arrivals.windows_to_recompute(firsts) == [nine, eleven]
    assert arrivals.windows_to_recompute([]) == []


def test_windows_survive_the_trip_through_xcom() -> None:
    windows = [Window(H[9], H[10]), Window(H[10], H[11])]
    pairs = arrivals.windows_xcom(windows)
    assert pairs == [
        ["2026-05-04T09:00:00+00:00", "2026-05-04T10:00:00+00:00"],
        ["2026-05-04T10:00:00+00:00", "2026-05-04T11:00:00+00:00"],
    ]
    assert windowagg.windows_from_xcom(pairs) == windows


def test_windows_from_xcom_normalise_any_offset_to_utc() -> None:
    (w,) = windowagg.windows_from_xcom([["2026-05-04T11:00:00+02:00", "2026-05-04T12:00:00+02:00"]])
    assert (w.start, w.end) == (H[9], H[10])
    assert w.start.tzinfo is not None and w.start.utcoffset() == dt.timedelta(0)


# ----------------------------------------------------------------------------------- 71_03_03


@pytest.mark.parametrize("variants", [["merge"], ["upsert"], []])
def test_one_variant_has_nothing_to_compare_with_and_reads_no_database(
    variants: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_database(*args: object, **kwargs: object) -> None:
        raise AssertionError("compare_variants touched the database")

    monkeypatch.setattr(merge_variants, "routes_for", no_database)
    monkeypatch.setattr(merge_variants, "transaction", no_database)
    assert merge_variants.compare_variants(["public.customers"], variants) == 0


# ----------------------------------------------------------------------------------- 71_03_05


def test_the_archive_cutoff_counts_days_back_from_the_interval_end() -> None:
    end = pendulum.datetime(2026, 3, 31, tz="UTC")
    assert merge_variants.archive_cutoff(end, 30) == pendulum.datetime(2026, 3, 1, tz="UTC")
    assert merge_variants.archive_cutoff(end, 0) == end
    assert merge_variants.archive_cutoff(end, 30).isoformat() == "2026-03-01T00:00:00+00:00"


# ----------------------------------------------------------------------------------- 71_08_05

LATE_PARAMS = {
    "events_table": "staging.ev",
    "target_table": "marts.hourly",
    "dead_letter_table": "dlq.late",
    "findings_table": "state.findings",
    "ledger_table": "state.ledger",
    "pipeline": "p/events",
    "grace_minutes": 10,
    "allowed_lateness_minutes": 60,
}


def test_a_late_run_names_its_tables_from_the_params() -> None:
    assert late_data.late_tables(LATE_PARAMS) == diagnostics.LateDataTables(
        events="staging.ev",
        target="marts.hourly",
        dead_letter="dlq.late",
        findings="state.findings",
        ledger="state.ledger",
        pipeline="p/events",
    )


def test_a_late_runs_cutoff_is_the_window_end_plus_the_grace_period() -> None:
    r = late_data.LateRun.from_params(LATE_PARAMS, Window(H[10], H[11]), "dag", "run-1")
    assert (r.start, r.end, r.cutoff) == (H[10], H[11], H[11].add(minutes=10))
    assert r.allowed == dt.timedelta(hours=1) and r.allowed_lateness_minutes == 60
    assert (r.dag_id, r.run_id) == ("dag", "run-1")
    no_grace = late_data.LateRun.from_params(
        {**LATE_PARAMS, "grace_minutes": 0}, Window(H[10], H[11]), "dag", None
    )
    assert no_grace.cutoff == H[11]
