"""The timing helpers that the files and breakeven benchmarks share (no timing is asserted)."""

from __future__ import annotations

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
