"""Pure parts of the lesson steps that the thinned 71.6-71.9 DAGs call: the dedup TTL cut-off, the
merge variants' target names and key partitions, the duplicate findings and their charge to load runs."""

from __future__ import annotations

import datetime as dt
import zlib

import pytest

from cdclab.lessons import antipattern_runs, api_sync, cdc_performance, investigations
from cdclab.lessons.antipatterns import UnknownVariantError
from cdclab.ops.diagnostics import DuplicateRow

END = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


def test_the_fixed_dedup_forgets_ids_first_seen_more_than_the_ttl_before_the_interval_end() -> None:
    assert antipattern_runs.expire_before("fixed", END, 60) == dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)


def test_the_anti_pattern_dedup_never_forgets_an_id() -> None:
    assert antipattern_runs.expire_before("anti_pattern", END, 60) is None


def test_an_unknown_variant_is_refused_before_anything_runs() -> None:
    with pytest.raises(UnknownVariantError, match="anti_pattern"):
        antipattern_runs.expire_before("fix", END, 60)


PARAMS = {
    "tables": ["public.customers"],
    "consumer_group": "g",
    "target_schema": "core",
    "target_prefix": "perf_",
    "batch_sizes": [20, 500],
    "experiment": "x",
}


def test_a_cdc_bench_is_built_from_the_dag_params_and_the_run() -> None:
    b = cdc_performance.CdcBench.from_params(PARAMS, "d", "run")
    assert (b.tables, b.consumer_group, b.target_schema, b.target_prefix) == (
        ["public.customers"],
        "g",
        "core",
        "perf_",
    )
    assert (b.batch_sizes, b.experiment, b.dag_id, b.run_id) == ([20, 500], "x", "d", "run")


def test_a_bench_replicates_under_its_group_schema_prefix_and_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    monkeypatch.setattr(
        cdc_performance, "replicate_with", lambda *a, **kw: calls.append((a, kw)) or "summary"
    )
    b = cdc_performance.CdcBench.from_params(PARAMS, "d", "run")
    apply = object()
    assert b.replicate(apply, "p1of2", who="/p1", batch_size=7) == "summary"  # type: ignore[arg-type]
    b.replicate(apply, "t20", "perf_t20_", stop_at={})  # type: ignore[arg-type]
    assert calls == [
        (
            (["public.customers"], apply),
            {
                "group": "g.p1of2",
                "topic_prefix": cdc_performance.TOPIC_PREFIX,
                "target_schema": "core",
                "target_prefix": "perf_",
                "who": "d/run/p1",
                "batch_size": 7,
            },
        ),
        (
            (["public.customers"], apply),
            {
                "group": "g.t20",
                "topic_prefix": cdc_performance.TOPIC_PREFIX,
                "target_schema": "core",
                "target_prefix": "perf_t20_",
                "who": "d/run",
                "stop_at": {},
            },
        ),
    ]


def test_each_batch_size_variant_writes_under_its_own_prefix() -> None:
    assert [cdc_performance.batch_prefix("perf_71_07_03_", s) for s in (10, 1000)] == [
        "perf_71_07_03_b10_",
        "perf_71_07_03_b1000_",
    ]


def test_every_merge_strategy_and_statement_size_has_its_own_target() -> None:
    assert cdc_performance.merge_targets("core.perf_customers", [20, 500]) == {
        ("mpk", 20): "core.perf_customers__mpk_b20",
        ("mpk", 500): "core.perf_customers__mpk_b500",
        ("mnx", 20): "core.perf_customers__mnx_b20",
        ("mnx", 500): "core.perf_customers__mnx_b500",
        ("upk", 20): "core.perf_customers__upk_b20",
        ("upk", 500): "core.perf_customers__upk_b500",
    }


def test_a_key_always_lands_in_the_same_partition_and_keys_spread_over_all_of_them() -> None:
    keys = [{"id": i, "other": "ignored"} for i in range(200)]
    parts = [cdc_performance.partition_of(k, ["id"], 4) for k in keys]
    assert parts == [cdc_performance.partition_of(k, ["id"], 4) for k in keys]
    assert set(parts) == {0, 1, 2, 3}
    assert cdc_performance.partition_of({"id": 7}, ["id"], 1) == 0


def test_the_partition_is_the_crc32_of_the_key_values_so_it_is_the_same_in_every_process() -> None:
    assert cdc_performance.partition_of({"a": 1, "b": "x"}, ["a", "b"], 16) == zlib.crc32(b"(1, 'x')") % 16


def test_each_tuning_setting_writes_its_own_targets() -> None:
    assert [cdc_performance.tune_prefix("perf_71_07_03_", s) for s in (1, 500)] == [
        "perf_71_07_03_t1_",
        "perf_71_07_03_t500_",
    ]


def _window(partition: int, start_s: int, end_s: int) -> cdc_performance.TaskWindow:
    return cdc_performance.TaskWindow(
        partition, END + dt.timedelta(seconds=start_s), END + dt.timedelta(seconds=end_s)
    )


def test_tasks_that_ran_one_after_the_other_have_a_wall_clock_of_at_least_their_sum() -> None:
    clock = cdc_performance.parallel_clock([_window(1, 5, 9), _window(0, 0, 4)])
    assert (clock.wall_ms, clock.sum_ms, clock.overlapping) == (9000.0, 8000.0, ())
    assert clock.as_details()["ran_in_parallel"] is False


def test_tasks_that_ran_at_once_overlap_and_their_wall_clock_is_less_than_their_sum() -> None:
    clock = cdc_performance.parallel_clock([_window(0, 0, 4), _window(1, 1, 5), _window(2, 4, 6)])
    assert (clock.wall_ms, clock.sum_ms) == (6000.0, 10000.0)
    assert clock.overlapping == ((0, 1), (1, 2))  # 0 ends as 2 starts: touching is not overlapping
    assert clock.speedup == round(10 / 6, 3)


def test_a_task_window_survives_its_json_round_trip() -> None:
    w = _window(3, 0, 2)
    assert cdc_performance.TaskWindow.from_details(w.as_details()) == w
    assert cdc_performance.parallel_clock([]).wall_ms == 0.0


GAP_PARAMS = {
    "source_table": "public.e",
    "target_table": "core.e",
    "key_column": "id",
    "cursor_column": "event_at",
    "pipeline": "p",
    "watermark_key": "",
    "grain_minutes": 15,
    "findings_table": "state.f",
    "ledger_table": "state.l",
}


def test_a_gap_run_takes_its_grain_in_minutes_from_the_params() -> None:
    r = investigations.GapRun.from_params(GAP_PARAMS, "d", "run")
    assert r.grain == dt.timedelta(minutes=15)
    assert (r.source, r.target, r.pipeline, r.ledger_table, r.run_id) == (
        "public.e",
        "core.e",
        "p",
        "state.l",
        "run",
    )
    assert (r.findings_table, r.dag_id, r.key_column, r.cursor_column) == ("state.f", "d", "id", "event_at")


def test_a_duplicate_run_takes_its_target_key_order_and_findings_from_the_params() -> None:
    params = {
        "target_table": "core.t",
        "key_column": "id",
        "order_columns": ("v",),
        "findings_table": "state.f",
    }
    r = investigations.DuplicateRun.from_params(params, "d", None)
    assert r == investigations.DuplicateRun(
        "core.t", "id", ["v"], findings_table="state.f", dag_id="d", run_id=None
    )


def test_a_gap_is_named_by_its_half_open_window() -> None:
    assert investigations.window_subject(END, END + dt.timedelta(hours=1)) == (
        "[2026-01-01T10:00:00+00:00, 2026-01-01T11:00:00+00:00)"
    )


def _row(key: int, h: str, run: str | None, *, first: bool = False, exact: bool = False) -> DuplicateRow:
    return DuplicateRow(key, h, run, END, kept=False, first_load=first, exact=exact)


DUPS = [
    _row(1, "a", "load-1", first=True),
    _row(1, "a", "retry", exact=True),
    _row(2, "b", "load-1", first=True),
    _row(2, "b", "retry", exact=True),
    _row(2, "c", "load-2"),
    _row(3, "d", None, first=True),
    _row(3, "e", None),
]


def test_duplicate_rows_are_grouped_by_key_in_load_order() -> None:
    keys = investigations.by_key(DUPS)
    assert list(keys) == [1, 2, 3]
    assert [r.load_run_id for r in keys[2]] == ["load-1", "retry", "load-2"]


def test_a_key_whose_rows_are_all_equal_is_an_exact_duplicate_else_a_version_duplicate() -> None:
    keys = investigations.by_key(DUPS)
    assert [investigations.key_verdict(keys[k]) for k in (1, 2, 3)] == [
        "exact_duplicate",
        "version_duplicate",
        "version_duplicate",
    ]


def test_every_duplicate_but_the_first_loaded_row_is_charged_to_the_run_that_wrote_it() -> None:
    xcom = [{"load_run_id": r.load_run_id, "first_load": r.first_load, "exact": r.exact} for r in DUPS]
    charges = investigations.charge_to_load_runs(xcom)
    assert charges == {
        "retry": {"exact": 2, "changed": 0},
        "load-2": {"exact": 0, "changed": 1},
        "<untagged>": {"exact": 0, "changed": 1},
    }
    assert {run: investigations.load_run_verdict(c) for run, c in charges.items()} == {
        "retry": "rerun_append",
        "load-2": "append_of_changes",
        "<untagged>": "append_of_changes",
    }


def test_the_api_sync_rereads_the_overlap_before_its_watermark_and_everything_without_one() -> None:
    assert api_sync.modified_since(END, 60) == dt.datetime(2026, 1, 1, 9, 59, tzinfo=dt.UTC)
    assert api_sync.modified_since(None, 60) is None


@pytest.mark.parametrize(
    ("old", "newest", "new"),
    [
        (None, None, None),
        (None, END, END),
        (END, None, END),  # nothing read: the watermark stays
        (END, END - dt.timedelta(hours=1), END),  # only re-read older records: never backwards
        (END, END + dt.timedelta(hours=1), END + dt.timedelta(hours=1)),
    ],
)
def test_the_api_sync_watermark_only_moves_forward(old: object, newest: object, new: object) -> None:
    assert api_sync.next_watermark(old, newest) == new  # type: ignore[arg-type]


def test_a_given_base_url_is_used_without_its_trailing_slash() -> None:
    assert api_sync.base_url("http://127.0.0.1:8099/") == "http://127.0.0.1:8099"
    assert api_sync.watermark_key("partner_accounts") == "71_09_03/partner_accounts"
