"""Pure parts of :mod:`cdclab.lessons.operations` (71_10_01, 71_10_03, 71_10_04, 71_10_05): the strategy
watermark key, the injected faults, the status counts and the document's location."""

from __future__ import annotations

import datetime as dt

import pytest

from cdclab.lessons import operations
from cdclab.ops import health, recovery

T0 = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
HOUR = recovery.Interval(T0, T0 + dt.timedelta(hours=1))
NEXT = recovery.Interval(T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2))


def test_each_strategy_keeps_its_own_watermark_per_table_and_target() -> None:
    assert (
        operations.strategy_watermark_key("71_10_01", "public.products", "core.s", "timestamp")
        == "71_10_01/public.products->core.s/timestamp"
    )


def test_a_transient_fault_fails_the_first_n_attempts_of_its_interval_only() -> None:
    fault = operations.injected_faults({"2026-01-01T10:00:00+00:00": 2}, [])
    for attempt in (1, 2):
        with pytest.raises(recovery.TransientSourceError, match="2026-01-01T10:00:00\\+00:00, attempt"):
            fault(HOUR, attempt)
    fault(HOUR, 3)
    fault(NEXT, 1)


def test_a_hard_fault_fails_every_attempt_of_its_interval() -> None:
    fault = operations.injected_faults({}, ["2026-01-01T10:00:00Z"])
    for attempt in (1, 5, 50):
        with pytest.raises(recovery.TransientSourceError):
            fault(HOUR, attempt)
    fault(NEXT, 1)


def test_a_fault_keyed_with_another_offset_names_the_same_instant() -> None:
    fault = operations.injected_faults({"2026-01-01T12:00:00+02:00": 1}, ["2026-01-01T07:00:00-04:00"])
    with pytest.raises(recovery.TransientSourceError, match="attempt 1"):
        fault(HOUR, 1)  # 10:00 UTC
    fault(HOUR, 2)
    with pytest.raises(recovery.TransientSourceError):
        fault(NEXT, 7)  # 07:00-04:00 is NEXT's start, 11:00 UTC


def test_a_fault_that_names_no_instant_is_refused_with_the_expected_form() -> None:
    with pytest.raises(ValueError, match="is not an instant"):
        operations.injected_faults({"P1D": 1}, [])


def _check(status: health.Status) -> health.Check:
    return health.Check("m", "s", 1.0, 1.0, 2.0, status, "")


def test_the_status_counts_name_every_status_even_when_none_has_it() -> None:
    checks = [_check("ok"), _check("alert"), _check("ok")]
    assert operations.status_counts(checks) == {"ok": 2, "warn": 0, "alert": 1}
    assert operations.status_counts([]) == {"ok": 0, "warn": 0, "alert": 0}


def test_the_document_key_strips_the_prefix_slashes() -> None:
    assert operations.doc_location("lab-tests", "/docs/", "ops.md") == (
        "docs/ops.md",
        "s3://lab-tests/docs/ops.md",
    )
