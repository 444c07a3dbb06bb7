"""The CDC sink benchmark's fairness rules that can be checked without running it: the JDBC sink reads
committed records with our batch and poll sizes, a run that did not reproduce the source is no figure,
and the summary reports medians with their spread. (No timing is asserted anywhere.)"""

from __future__ import annotations

from bench.cdc_sink import _stats, jdbc_config, summarize


def test_the_jdbc_sink_reads_committed_records_with_our_batch_and_poll_sizes():
    config = jdbc_config(topic="t", target="core.x", batch=2000)
    assert config["consumer.override.isolation.level"] == "read_committed"
    assert config["batch.size"] == config["consumer.override.max.poll.records"] == "2000"
    assert config["topics"] == "t" and config["collection.name.format"] == "core.x"
    assert "_comment" not in config


def test_stats_are_median_and_spread():
    assert _stats([10.0, 30.0, 20.0]) == {
        "median": 20.0,
        "min": 10.0,
        "max": 30.0,
        "spread_pct": 100.0,
        "n": 3,
    }
    assert _stats([]) is None


def test_a_run_whose_target_differs_from_the_source_is_not_a_figure():
    runs = [
        {
            "sink": "ours",
            "batch": 500,
            "events_per_s": 100.0,
            "equal_to_source": True,
            "cpu_s_per_event": 2e-5,
        },
        {
            "sink": "ours",
            "batch": 500,
            "events_per_s": 900.0,
            "equal_to_source": False,
            "cpu_s_per_event": 1e-6,
        },
        {
            "sink": "jdbc",
            "batch": 500,
            "events_per_s": 50.0,
            "equal_to_source": True,
            "cpu_s_per_event": 4e-5,
        },
        {"sink": "bare", "batch": 500, "events_per_s": 400.0},
    ]
    row = summarize(runs, [500])["500"]
    assert row["ours"]["events_per_s"]["n"] == 1 and row["ours"]["events_per_s"]["median"] == 100.0
    assert row["ratio_events_per_s_ours_over_jdbc"] == 2.0
    assert row["ratio_cpu_per_event_ours_over_jdbc"] == 0.5
    assert row["ratio_events_per_s_ours_over_bare"] == 0.25
