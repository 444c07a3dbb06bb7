"""The timing helpers that the files and breakeven benchmarks share (no timing is asserted)."""

from __future__ import annotations

import pytest
from bench.report import Stopwatch, timings


def test_timings_are_the_median_and_the_spread_with_every_run():
    assert timings([0.30004, 0.1, 0.2]) == {
        "runs_s": [0.3, 0.1, 0.2],
        "median_s": 0.2,
        "min_s": 0.1,
        "max_s": 0.3,
    }


def test_timings_can_leave_out_the_runs_and_round_finer():
    assert timings([1.23456, 1.00004, 2.5], digits=4, with_runs=False) == {
        "median_s": 1.2346,
        "min_s": 1.0,
        "max_s": 2.5,
    }


def test_an_even_number_of_runs_has_the_middle_two_for_its_median():
    assert timings([1.0, 4.0, 2.0, 3.0])["median_s"] == 2.5


def test_a_stopwatch_counts_up_from_when_it_was_made():
    clock = Stopwatch()
    first = clock.s
    assert 0 <= first <= clock.s


# ----------------------------------------------------------------------------- Markdown and charts


def _latency_doc() -> dict:
    upper = {
        "n": 4,
        "p50_ms": 400.0,
        "p90_ms": 700.0,
        "p99_ms": 900.0,
        "min_ms": 100.0,
        "max_ms": 950.0,
        "mean_ms": 450.0,
    }
    jdbc = {**upper, "p50_ms": 800.0, "p99_ms": 1800.0, "max_ms": 1900.0}
    return {
        "benchmark": "latency",
        "measured_at": "2026-12-01T17:01:00Z",
        "quick": False,
        "machine": {
            "cores": 2,
            "cpu_model": "AMD EPYC",
            "mem_total": "8388608 kB",
            "loadavg_at_start": [0.5, 0.4, 0.3],
            "git_commit": "abc1234def",
        },
        "settings": {"events": 4, "rate_per_s": 200.0, "observer_poll_s": 0.02, "follower_batch_size": 500},
        "writer": {"achieved_rate": 199.9},
        "latency_visible_upper_bound": upper,
        "latency_txn_start_lower_bound": {"n": 0},
        "jdbc": {"latency_visible_upper_bound": jdbc, "latency_txn_start_lower_bound": {"n": 0}},
        "ratios": {
            "visible_upper_bound": {
                "p50_ours_over_jdbc": 0.5,
                "p90_ours_over_jdbc": 1.0,
                "p99_ours_over_jdbc": 0.5,
                "max_ours_over_jdbc": 0.5,
            }
        },
        "checks": {"all_events_observed": True, "jdbc_target_equals_source": True},
        "goal_p99_ms": 2000,
        "latencies_s": [0.1, 0.2, 0.3, 0.4],
        "latencies_jdbc_s": [0.2, 0.4, 0.6, 0.8],
        "outputs_equal": True,
    }


def test_a_mermaid_xychart_has_one_value_per_label_and_names_its_series_under_it():
    from bench.markdown import xychart

    text = xychart('a "title"', ["ours 500", "JDBC 500"], "events/s", [("bar", "events/s", [1500.0, 1000.5])])
    lines = text.splitlines()
    assert lines[0] == "```mermaid" and lines[2] == "xychart-beta"
    assert "title \"a 'title'\"" in text
    assert '    x-axis ["ours 500", "JDBC 500"]' in lines
    assert '    y-axis "events/s" 0 --> 2000' in lines
    assert "    bar [1500, 1000]" in lines  # >= 100: whole numbers
    assert lines[-2] == "```" and lines[-1].startswith("*Series: events/s (bar, green)")


def test_a_chart_refuses_a_series_that_does_not_fit_its_labels():
    from bench.markdown import xychart

    with pytest.raises(ValueError, match="2 values for 3 x labels"):
        xychart("t", ["a", "b", "c"], "y", [("line", "s", [1.0, 2.0])])
    with pytest.raises(ValueError, match="bar or line"):
        xychart("t", ["a"], "y", [("pie", "s", [1.0])])


def test_chart_numbers_never_use_an_exponent():
    from bench.markdown import _num

    assert [_num(x) for x in (20687.4, 3, 2.0, 0.2413, 0.00001234, 99.95)] == [
        "20687",
        "3",
        "2",
        "0.2413",
        "0.000012",
        "99.95",
    ]


def test_the_memory_of_proc_meminfo_is_shown_in_gib():
    from bench.markdown import facts

    assert "memory 23.5 GiB" in facts({"machine": {"mem_total": "24684084 kB"}})


def test_the_axis_ends_at_a_round_number_above_the_largest_value():
    from bench.markdown import nice_max

    assert nice_max([17_441.0, 10_994.0]) == 20_000
    assert nice_max([0.03, 1.0]) == 1.0
    assert nice_max([1.2]) == 2.0
    assert nice_max([]) == 1.0


def test_the_latency_markdown_has_both_sinks_the_ratio_the_cdf_lines_and_the_machine():
    from bench.markdown import cdf_points, render

    text = render("latency", _latency_doc())
    assert text.startswith("### `latency`")
    assert (
        "measured 2026-12-01T17:01:00Z; 2 cores (AMD EPYC); memory 8.0 GiB; load at start 0.5 / 0.4 / 0.3"
        in text
    )
    assert "commit abc1234de" in text
    assert "| ours (follow run) | visible (upper bound) | 4 | 400.0 | 700.0 | 900.0 | 950.0 |" in text
    assert "| Debezium JDBC sink | visible (upper bound) | 4 | 800.0 | 700.0 | 1800.0 | 1900.0 |" in text
    assert "| **ours ÷ JDBC** | visible | - | 0.5 | 1.0 | 0.5 | 0.5 |" in text
    assert '    x-axis ["p10", "p25", "p50", "p75", "p90", "p95", "p99", "max"]' in text
    assert f"    line [{', '.join(f'{v:g}' for v in cdf_points([0.1, 0.2, 0.3, 0.4]))}]" in text
    assert "Debezium JDBC sink (line, orange)" in text
    assert cdf_points([0.1, 0.2, 0.3, 0.4])[2] == 250.0 and cdf_points([0.1, 0.2, 0.3, 0.4])[-1] == 400.0


def test_the_cdc_sink_markdown_has_the_ratio_table_and_bars_per_sink_and_batch():
    from bench.markdown import render

    def stats(m: float) -> dict:
        return {"median": m, "min": m * 0.9, "max": m * 1.1, "spread_pct": 20.0, "n": 3}

    row = {
        "ours": {"events_per_s": stats(17000.0), "cpu_s_per_event": stats(4e-5)},
        "jdbc": {"events_per_s": stats(11000.0), "cpu_s_per_event": stats(8e-5)},
        "bare": {"events_per_s": stats(21000.0), "cpu_s_per_event": None},
        "ratio_events_per_s_ours_over_jdbc": 1.545,
        "ratio_cpu_per_event_ours_over_jdbc": 0.5,
        "ratio_events_per_s_ours_over_bare": 0.81,
    }
    doc = {
        "measured_at": "2026-12-01T16:30:00Z",
        "machine": {"cores": 2, "mem_total_kb": 8 * 1024 * 1024, "postgres": "17.2"},
        "events": {"changes": 1000101},
        "summary": {"500": row},
        "failures": [],
    }
    text = render("cdc_sink", doc)
    assert "memory 8.0 GiB" in text and "PostgreSQL 17.2" in text
    assert "1,000,101 change events" in text
    assert "| 500 | 17,000 | 20 % | 11,000 | 20 % | 1.545 | 40.0 | 80.0 | 0.5 | 0.81 |" in text
    assert '    x-axis ["ours 500", "JDBC 500", "bare 500"]' in text
    assert "    bar [17000, 11000, 21000]" in text
    assert "Failed runs: 0." in text


def test_the_breakeven_markdown_draws_incremental_over_full_against_the_fraction():
    from bench.markdown import render

    def t(s: float) -> dict:
        return {"median_s": s, "min_s": s, "max_s": s}

    points = [
        {
            "fraction": f,
            "changed_rows": int(f * 1000),
            "full": t(2.0),
            "incremental": t(2.0 * r),
            "incremental_copy": t(r),
            "ratio_incremental_over_full": r,
            "ratio_incremental_copy_over_full": r / 2,
        }
        for f, r in ((0.001, 0.01), (0.01, 0.04), (0.5, 1.5))
    ]
    doc = {
        "measured_at": "x",
        "rows": 1000,
        "repeats": 3,
        "points": points,
        "ratio_at_1pct": {"incremental": 0.04},
        "break_even": {"incremental": 0.3},
        "outputs_equal": True,
    }
    text = render("breakeven", doc)
    assert '    x-axis ["0.1%", "1%", "50%"]' in text
    assert "    line [0.01, 0.04, 1.5]" in text and "    line [1, 1, 1]" in text
    assert '    y-axis "time ÷ full reload" 0 --> 2' in text
    assert "Drawn at 2" not in text
    points[-1]["ratio_incremental_over_full"] = 7.1  # off the axis: drawn at 2 and named
    text = render("breakeven", doc)
    assert "    line [0.01, 0.04, 2]" in text
    assert "*Drawn at 2 (off the axis): incremental (library upsert) ÷ full at 50%: 7.1.*" in text
    assert "| 1.0% | 10 | 2.000 | 0.080 | 0.04 | 0.040 | 0.02 |" in text


def test_the_merge_copy_markdown_has_both_cases_per_batch_size():
    from bench.markdown import render

    case = {
        "merge_rows_per_s": 30000.0,
        "copy_rows_per_s": 100000.0,
        "ratio_merge_over_copy": 0.3,
        "ratio_min": 0.28,
        "ratio_max": 0.33,
    }
    doc = {
        "measured_at": "x",
        "rows": 20000,
        "settings": {"repeats": 3},
        "goal_ratio": 0.5,
        "outputs_equal": True,
        "batches": {"2000": {"insert": case, "update": {**case, "ratio_merge_over_copy": 0.2}}},
    }
    text = render("merge_copy", doc)
    assert "| insert | 2000 | 30,000 | 100,000 | 0.3 | 0.28..0.33 |" in text
    assert "| update | 2000 | 30,000 | 100,000 | 0.2 | 0.28..0.33 |" in text
    assert (
        '    x-axis ["insert merge 2000", "insert COPY 2000", "update merge 2000", "update COPY 2000"]'
        in text
    )


def test_an_unknown_benchmark_has_no_layout():
    from bench.markdown import render

    with pytest.raises(ValueError, match="no Markdown layout"):
        render("nope", {})


def test_report_writes_the_markdown_again_from_the_latest_json(tmp_path):
    import json

    from bench.report import regenerate

    assert regenerate(tmp_path) == 1  # nothing to do
    (tmp_path / "latency-latest.json").write_text(json.dumps(_latency_doc()))
    (tmp_path / "latency-20261201T170100Z.json").write_text("{}")  # only the latest is read
    assert regenerate(tmp_path) == 0
    md = (tmp_path / "latency-latest.md").read_text()
    assert md.startswith("### `latency`") and "xychart-beta" in md
    assert not (tmp_path / "latency-20261201T170100Z.md").exists()
