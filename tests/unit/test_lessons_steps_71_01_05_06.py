"""Pure parts of the lesson steps that the thinned DAGs 71_01_03, 71_01_05, 71_05_0x and 71_06_0x call:
the watermark hand-over, derived names and decisions taken before any connection is opened."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cdclab.delta.detection import Comparison
from cdclab.lessons import (
    full_fallback,
    ignoring_late,
    incremental_testing,
    lost_watermarks,
    ml_features,
    out_of_order,
    state_storage,
    watermarks,
)
from cdclab.lessons.antipatterns import UnknownVariantError
from cdclab.merge.upsert import UpsertResult
from cdclab.state import watermarks as state

T0 = dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(hours=1)


def test_the_watermark_step_moves_only_what_the_load_left_behind() -> None:
    assert watermarks.needs_advance("after_commit", T0, T1)
    assert watermarks.needs_advance("after_commit", None, T1)  # the first load
    assert not watermarks.needs_advance("same_transaction", T0, T1)  # moved with the rows
    assert not watermarks.needs_advance("after_commit", T1, T1)  # nothing newer read
    assert not watermarks.needs_advance("after_commit", None, None)  # an empty source


def test_a_load_hands_its_watermarks_over_typed_and_its_counts_flat() -> None:
    loaded = watermarks.Loaded("k", "after_commit", T0, T1, T1, 3, 0, UpsertResult(1, 1, 1))
    payload = loaded.xcom()
    assert {k: payload[k] for k in ("key", "mode", "rows_read", "inserted", "updated", "skipped")} == {
        "key": "k",
        "mode": "after_commit",
        "rows_read": 3,
        "inserted": 1,
        "updated": 1,
        "skipped": 1,
    }
    assert state.from_xcom_payload(payload["old"], "timestamptz") == T0
    assert state.from_xcom_payload(payload["new"], "timestamptz") == T1
    first = watermarks.Loaded("k", "after_commit", None, None, T1, 0, 0, UpsertResult())
    assert (first.xcom()["old"], first.xcom()["new"]) == (None, None)


def test_an_unknown_watermark_mode_is_refused_before_any_connection() -> None:
    with pytest.raises(ValueError, match="same_transaction"):
        watermarks.load(
            "public.x",
            "core.x",
            "k",
            mode="later",
            lookback_seconds=0,
            batch_size=1,
            null_policy="raise",
            dag_id="d",
            run_id="r",
        )


def test_each_state_store_loads_its_own_target() -> None:
    assert [state_storage.target_of("core.c", s) for s in state_storage.STORES] == [
        "core.c_variable",
        "core.c_xcom",
        "core.c_table",
        "core.c_asset",
    ]
    with pytest.raises(ValueError, match="store 'disk'"):
        state_storage.target_of("core.c", "disk")


def test_each_source_table_of_the_out_of_order_lesson_has_its_own_watermark() -> None:
    assert out_of_order.watermark_key("71_05_02", "public.orders") == "71_05_02/public.orders"
    assert out_of_order.watermark_key("71_05_02", "public.payments") == "71_05_02/public.payments"


def test_the_features_watermark_defaults_to_the_lesson_and_the_orders_table() -> None:
    assert ml_features.watermark_key("", "public.orders") == "71_05_04/public.orders"
    assert ml_features.watermark_key("mine", "public.orders") == "mine"


def test_the_label_time_is_the_param_when_given_else_the_interval_end() -> None:
    assert ml_features.label_time("", T1) == T1
    assert ml_features.label_time("2026-01-01T09:00:00+00:00", T1) == T0
    assert ml_features.label_time("2026-01-01T10:00:00+01:00", T1) == T0  # an offset is kept
    with pytest.raises(ValueError, match="not a timestamp"):
        ml_features.label_time("P1D", T1)  # a duration


def test_the_end_to_end_check_fails_on_missing_or_different_rows_and_reports_extra_ones() -> None:
    loaded = {"read": 2, "inserted": 2, "updated": 0, "skipped": 0}
    ok, detail = incremental_testing.end_to_end_verdict(loaded, Comparison([], [(7,)], []))
    assert ok  # a row deleted at the source: a timestamp cursor cannot see it
    assert detail.startswith(f"{loaded}; missing [], different [], extra [(7,)]")
    assert not incremental_testing.end_to_end_verdict(loaded, Comparison([(1,)], [], []))[0]
    assert not incremental_testing.end_to_end_verdict(loaded, Comparison([], [], [(2,)]))[0]


def test_the_end_to_end_watermark_defaults_to_source_and_target() -> None:
    assert incremental_testing.watermark_key("", "public.c", "staging.c") == "71_05_05/public.c->staging.c"
    assert incremental_testing.watermark_key("k", "public.c", "staging.c") == "k"


def test_the_anti_pattern_guesses_where_to_start_when_its_watermark_is_gone() -> None:
    assert lost_watermarks.anti_pattern_since(T0, "interval_start", T1) == (T0, "incremental")
    since, strategy = lost_watermarks.anti_pattern_since(None, "interval_start", T1)
    assert (since, strategy) == (T1 - dt.timedelta(microseconds=1), "from_now")  # rows at T1 are read
    assert lost_watermarks.anti_pattern_since(None, "everything", T1) == (None, "everything")
    with pytest.raises(ValueError, match="anti_cold_start 'never'"):
        lost_watermarks.anti_pattern_since(None, "never", T1)


def test_each_variant_target_has_its_own_watermark_key() -> None:
    assert lost_watermarks.watermark_key("public.s", "core.t_fixed") == "71_06_01/public.s->core.t_fixed"
    assert full_fallback.watermark_key("public.s", "core.t_fixed") == "71_06_03/public.s->core.t_fixed"


def test_only_the_wrongly_typed_or_future_watermark_is_recovered() -> None:
    assert issubclass(state.WatermarkTypeError, full_fallback.RECOVERABLE)
    assert issubclass(state.WatermarkInFutureError, full_fallback.RECOVERABLE)
    assert not issubclass(state.WatermarkConflictError, full_fallback.RECOVERABLE)


def test_the_fix_reprocesses_the_lookback_and_the_anti_pattern_only_its_interval() -> None:
    hour = dt.timedelta(hours=1)
    anti = ignoring_late.reprocessing_window("anti_pattern", T0, T1, hour, 2)
    fixed = ignoring_late.reprocessing_window("fixed", T0, T1, hour, 2)
    assert (anti.start, anti.end) == (T0, T1)
    assert (fixed.start, fixed.end) == (T0 - 2 * hour, T1)
    with pytest.raises(UnknownVariantError):
        ignoring_late.reprocessing_window("fix", T0, T1, hour, 2)


def test_reconciliation_differences_are_handed_over_as_text() -> None:
    diffs = [(T0, Decimal("1.50"), Decimal("3.00")), (T1, None, Decimal("2.00")), (T1, Decimal("1"), None)]
    assert ignoring_late.diffs_xcom(diffs) == [
        ["2026-01-01T09:00:00+00:00", "1.50", "3.00"],
        ["2026-01-01T10:00:00+00:00", None, "2.00"],
        ["2026-01-01T10:00:00+00:00", "1", None],
    ]
