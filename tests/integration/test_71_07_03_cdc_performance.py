"""71_07_03_cdc_performance: the same Debezium topic replicated with different batch sizes (own groups, own
targets) ends equal to the source in every variant; records, batches and parse counts are recorded."""

from __future__ import annotations

import math
import uuid

import pendulum

from cdclab.cdc.inspect import wait_for_records
from cdclab.ops import perf
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, make_source_table, write_changes

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_07_03_cdc_performance"
SIZES = [5, 50, 1000]


def test_every_batch_size_variant_ends_equal_to_the_source_and_its_metrics_are_recorded(
    lab, names, shop_db, warehouse_db, assert_tables_equal
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
    }
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
        wait_for_records(lab.kafka_bootstrap, topic, total, timeout=120)
        dr = run_dag(DAG_ID, pendulum.datetime(2026, 6, 1, run, tz="UTC"), conf)

        for size in SIZES:
            assert_tables_equal(
                f"shop:public.{table}", f"warehouse:core.{prefix}b{size}_{table}", key="id", columns=COLUMNS
            )

        recorded = {m["variant"]: m for m in perf.measurements(warehouse_db, exp, dr.run_id)}
        assert sorted(recorded) == sorted(["parse"] + [f"b{s}" for s in SIZES])
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
