"""71_07_03_cdc_performance: the same Debezium topic replicated with different batch sizes (own groups, own
targets) ends equal to the source in every variant; records, batches and parse counts are recorded. The
throughput knob (changes per apply call: row at a time vs set-based) leaves the same rows in every
setting, and its counters move as the knob predicts: one apply call per change at size 1, at most one per
consumer batch at size 500, the round trips with them. Counts are asserted, never timings."""

from __future__ import annotations

import math
import uuid

import pendulum

from cdclab.ops import perf
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, made, make_source_table, published, write_changes

__all__ = ["made"]  # the fixture that drops what the test created

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_07_03_cdc_performance"
SIZES = [5, 50, 1000]
TUNE = [1, 500]


def test_every_batch_size_variant_ends_equal_to_the_source_and_its_metrics_are_recorded(
    lab, names, shop_db, warehouse_db, assert_tables_equal, made
):
    table, group, exp = names("cp"), names("grp"), names("exp")
    prefix = f"p{uuid.uuid4().hex[:6]}_"
    topic = f"shop.public.{table}"
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": prefix,
        "batch_sizes": SIZES,
        "experiment": exp,
        "tune_statement_sizes": TUNE,
    }
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    made.warehouse += [
        f"DELETE FROM state.perf_runs WHERE experiment = '{exp}'",
        f"DELETE FROM state.kafka_offsets WHERE consumer_group LIKE '{group}.%'",
        *(f'DROP TABLE IF EXISTS core."{prefix}b{s}_{table}"' for s in SIZES),
        *(f'DROP TABLE IF EXISTS core."{prefix}t{s}_{table}"' for s in TUNE),
    ]
    make_source_table(shop_db, table)
    steps = [
        dict(start=1, inserts=60, update_ids=[2, 4, 6, 4, 8], delete_ids=[9, 10]),
        dict(start=61, inserts=20, update_ids=[1, 61, 62, 61], delete_ids=[3]),
        dict(start=81, inserts=5, update_ids=list(range(20, 40)), delete_ids=[80, 81]),
    ]
    total = 0
    for run, step in enumerate(steps, start=1):
        n = write_changes(shop_db, table, **step)
        total += n
        published(lab, topic, total)
        dr = run_dag(DAG_ID, pendulum.datetime(2026, 6, 1, run, tz="UTC"), conf)

        for target in [f"{prefix}b{s}_{table}" for s in SIZES] + [f"{prefix}t{s}_{table}" for s in TUNE]:
            assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{target}", key="id", columns=COLUMNS)

        recorded = {m["variant"]: m for m in perf.measurements(warehouse_db, exp, dr.run_id)}
        assert sorted(recorded) == sorted(["parse"] + [f"b{s}" for s in SIZES] + [f"t{s}" for s in TUNE])
        assert recorded["parse"]["rows_read"] == total  # parsing reads the whole topic
        assert recorded["parse"]["details"]["malformed"] == 0
        assert recorded["parse"]["details"]["bytes"] > 0
        for size in SIZES:
            m = recorded[f"b{size}"]
            assert m["rows_read"] == n  # each group catches up exactly this run's records
            assert m["details"]["batch_size"] == size
            assert m["details"]["batches"] >= math.ceil(n / size)
            assert m["details"]["dead_letters"] == 0
            assert m["duration_ms"] is not None
        # smaller batches mean more transactions for the same records
        assert recorded["b5"]["details"]["batches"] > recorded["b1000"]["details"]["batches"]

        # the tuning knob: the same records and changes at every setting, only the round trips differ
        changes = n - len(step["delete_ids"])  # a delete's tombstone is skipped, not applied
        row, bulk = recorded["t1"], recorded["t500"]
        for m in (row, bulk):
            assert (m["rows_read"], m["rows_written"]) == (n, changes)
            assert m["details"]["dead_letters"] == 0 and m["details"]["consumer_batch"] == 500
            # every apply call costs a bounded number of round trips, whatever its size
            assert (
                m["details"]["apply_calls"] <= m["details"]["statements"] <= 10 * m["details"]["apply_calls"]
            )
        assert row["details"]["apply_calls"] == changes  # row at a time: one call per change
        # set-based: one call per consumer batch (each holds at most 500 records of the one table)
        assert 1 <= bulk["details"]["apply_calls"] <= bulk["details"]["batches"]
        assert bulk["details"]["apply_calls"] < changes
        assert row["details"]["statements"] >= changes  # at least one round trip per change
        assert bulk["details"]["statements"] < row["details"]["statements"]
        print(
            f"run {run}: {changes} changes; round trips row-at-a-time {row['details']['statements']}, "
            f"set-based {bulk['details']['statements']} in {bulk['details']['batches']} batches"
        )
