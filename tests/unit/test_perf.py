"""cdclab.ops.perf: break-even interpolation, plan reduction, SQL text of the retention step."""

from __future__ import annotations

import pytest

from cdclab.ops import perf

PLAN = [
    {
        "Plan": {
            "Node Type": "Sort",
            "Plan Rows": 12,
            "Actual Rows": 10,
            "Shared Hit Blocks": 5,
            "Shared Read Blocks": 1,
            "Plans": [
                {
                    "Node Type": "Bitmap Heap Scan",
                    "Relation Name": "t",
                    "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "t_updated_at_idx"}],
                }
            ],
        },
        "Execution Time": 0.42,
    }
]


def test_plan_stats_lists_every_node_the_scans_and_the_index() -> None:
    stats = perf.plan_stats(PLAN)
    assert stats.node_types == ("Sort", "Bitmap Heap Scan", "Bitmap Index Scan")
    assert stats.scan_nodes == ("Bitmap Heap Scan", "Bitmap Index Scan")
    assert stats.index_names == ("t_updated_at_idx",)
    assert stats.uses_index
    assert (stats.plan_rows, stats.actual_rows, stats.shared_hit, stats.shared_read) == (12, 10, 5, 1)
    assert stats.execution_ms == 0.42


def test_a_sequential_scan_does_not_use_an_index() -> None:
    stats = perf.plan_stats({"Plan": {"Node Type": "Seq Scan", "Relation Name": "t", "Plan Rows": 3}})
    assert not stats.uses_index and stats.actual_rows is None


def test_anything_else_than_a_plan_is_refused() -> None:
    with pytest.raises(perf.NotAPlanError):
        perf.plan_stats({"rows": 3})


def test_break_even_interpolates_where_incremental_becomes_dearer() -> None:
    result = perf.break_even([(0.5, 100, 150), (0.01, 100, 10), (0.1, 100, 50)])
    assert result.side == "crosses"
    assert result.ratio == pytest.approx(0.1 + 0.4 * 50 / 100)
    assert [p[0] for p in result.points] == [0.01, 0.1, 0.5]


def test_break_even_says_which_side_won_when_the_lines_do_not_cross() -> None:
    assert perf.break_even([(0.01, 100, 1), (0.5, 100, 60)]).side == "incremental_cheaper"
    assert perf.break_even([(0.01, 10, 11), (0.5, 10, 60)]).side == "full_cheaper"
    assert perf.break_even([(0.01, 10, 11)]).ratio is None
    with pytest.raises(perf.PerfError):
        perf.break_even([])


def test_retention_refuses_to_keep_nothing() -> None:
    with pytest.raises(perf.PerfError):
        perf.prune_history(None, "state.h", key_column="key", order_column="id", keep=0)


def test_stopwatch_measures_milliseconds() -> None:
    with perf.Stopwatch() as sw:
        sum(range(1000))
    assert sw.ms >= 0.0


def test_break_even_also_finds_a_crossing_in_the_other_direction() -> None:
    result = perf.break_even([(0.01, 10, 12), (0.5, 10, 8)])
    assert result.side == "crosses" and result.ratio == pytest.approx(0.01 + 0.49 * 2 / 4)


def test_a_filtered_sequential_scan_scanned_every_row_it_returned_or_removed() -> None:
    plan = [
        {
            "Plan": {
                "Node Type": "Aggregate",
                "Actual Rows": 1,
                "Plans": [
                    {
                        "Node Type": "Seq Scan",
                        "Actual Rows": 10,
                        "Rows Removed by Filter": 9990,
                        "Actual Loops": 1,
                    }
                ],
            }
        }
    ]
    assert perf.rows_scanned(plan) == 10000


def test_a_keyed_lookup_scanned_one_row_and_a_bitmap_index_is_not_counted_twice() -> None:
    lookup = {
        "Plan": {"Node Type": "Index Scan", "Index Name": "t_pkey", "Actual Rows": 1, "Actual Loops": 1}
    }
    assert perf.rows_scanned(lookup) == 1
    bitmap = {
        "Plan": {
            "Node Type": "Bitmap Heap Scan",
            "Actual Rows": 4,
            "Rows Removed by Index Recheck": 2,
            "Plans": [{"Node Type": "Bitmap Index Scan", "Actual Rows": 6}],
        }
    }
    assert perf.rows_scanned(bitmap) == 6
    with pytest.raises(perf.NotAPlanError):
        perf.rows_scanned({"rows": 3})
