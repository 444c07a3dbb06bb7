"""Pure parts of the one-lesson helpers that the thinned DAGs call: names derived from params, the
watermark history verdict, the kv values and the kv DDL."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from cdclab.lessons import cdc_debug, delta_detection, state_performance, watermark_debug

T0 = dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)


def test_a_cdc_debug_run_names_the_topic_target_and_scratch_table_from_its_params() -> None:
    r = cdc_debug.CdcDebugRun(
        "public.customers", "g", "core", "dbg_", "state.findings_71_08_03", "kafka_default", "d", "run"
    )
    assert (r.topic, r.target, r.scratch) == (
        "shop.public.customers",
        "core.dbg_customers",
        "core.dbg_customers__replay",
    )


def test_each_delta_detector_writes_its_own_target() -> None:
    assert [delta_detection.target_of("core.c", m) for m in delta_detection.METHODS] == [
        "core.c_timestamp",
        "core.c_version",
        "core.c_hash",
    ]


def _move(old: object, new: object, value_type: str) -> SimpleNamespace:
    return SimpleNamespace(old_value=old, new_value=new, value_type=value_type, reason="r", run_id="x")


@pytest.mark.parametrize(
    ("history", "verdict"),
    [
        ([], "empty"),
        ([_move(None, T0, "timestamptz"), _move(T0, T0 + dt.timedelta(hours=1), "timestamptz")], "ok"),
        (
            [
                _move(None, T0 + dt.timedelta(hours=1), "timestamptz"),
                _move(T0 + dt.timedelta(hours=1), T0, "timestamptz"),
            ],
            "regressed",
        ),
        ([_move(None, T0, "timestamptz"), _move(T0, 42, "bigint")], "type_changed"),
    ],
)
def test_the_history_verdict_names_what_the_latest_watermark_move_did(history: list, verdict: str) -> None:
    assert watermark_debug._history_verdict(history) == verdict


def test_kv_values_differ_per_key_and_per_run() -> None:
    end = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)
    assert state_performance.kv_value(end, 7) == int(end.timestamp()) * 1000 + 7
    assert state_performance.kv_value(end + dt.timedelta(hours=1), 7) != state_performance.kv_value(end, 7)


def test_the_kv_ddl_quotes_the_table_and_its_history() -> None:
    texts = [repr(s) for s in state_performance.kv_ddl("state.kv")]
    assert "Identifier('state'), SQL('.'), Identifier('kv')])" in texts[0]
    assert "Identifier('state'), SQL('.'), Identifier('kv_history')])" in texts[1]
