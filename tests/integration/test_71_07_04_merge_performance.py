"""71_07_04_merge_performance: MERGE (with and without a key index) and INSERT ... ON CONFLICT, at two statement
sizes, applied by parallel key partitions, all end equal to the source; per-partition and per-variant
measurements are recorded."""

from __future__ import annotations

import math

import pendulum

from cdclab.cdc.inspect import wait_for_records
from cdclab.ops import perf
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, make_source_table, write_changes

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_07_04_merge_performance"
SIZES = [7, 500]
STRATEGIES = ["mpk", "mnx", "upk"]


def has_primary_key(warehouse_db, table: str) -> bool:
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
            (f"core.{table}",),
        )
        return cur.fetchone()[0] == 1


def test_all_strategies_and_partitions_end_equal_to_the_source_with_metrics(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group, exp = names("mp"), names("grp"), names("exp")
    topic = f"shop.public.{table}"
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "",
        "batch_sizes": SIZES,
        "partitions": 2,
        "consumer_batch": 500,
        "experiment": exp,
    }
    make_source_table(shop_db, table)
    steps = [
        dict(start=1, inserts=50, update_ids=[2, 4, 6, 4, 8], delete_ids=[9, 10]),
        dict(start=51, inserts=15, update_ids=[1, 51, 52, 51], delete_ids=[3, 52]),
        dict(start=66, inserts=4, update_ids=list(range(20, 35)), delete_ids=[66]),
    ]
    total = 0
    for run, step in enumerate(steps, start=1):
        n = write_changes(shop_db, table, **step)
        total += n
        changes = n - len(step["delete_ids"])  # tombstones carry no change
        wait_for_records(lab.kafka_bootstrap, topic, total, timeout=120)
        dr = run_dag(DAG_ID, pendulum.datetime(2026, 6, 2, run, tz="UTC"), conf)

        for strategy in STRATEGIES:
            for size in SIZES:
                assert_tables_equal(
                    f"shop:public.{table}",
                    f"warehouse:core.{table}__{strategy}_b{size}",
                    key="id",
                    columns=COLUMNS,
                )
        assert has_primary_key(warehouse_db, f"{table}__mpk_b7")
        assert not has_primary_key(warehouse_db, f"{table}__mnx_b7")

        recorded = {m["variant"]: m for m in perf.measurements(warehouse_db, exp, dr.run_id)}
        assert len(recorded) == len(STRATEGIES) * len(SIZES) * 3  # two partitions + one summary each
        for strategy in STRATEGIES:
            for size in SIZES:
                p0, p1 = recorded[f"{strategy}/b{size}/p0"], recorded[f"{strategy}/b{size}/p1"]
                total_row = recorded[f"{strategy}/b{size}"]
                # each change is applied by exactly one partition
                assert p0["rows_read"] + p1["rows_read"] == total_row["rows_read"] == changes
                assert p0["rows_read"] > 0 and p1["rows_read"] > 0
                assert total_row["details"]["partitions"] == 2
                assert total_row["details"]["statements"] >= sum(
                    math.ceil(p["rows_read"] / size) for p in (p0, p1)
                )
                assert total_row["duration_ms"] >= total_row["details"]["slowest_partition_ms"]
        assert recorded["mpk/b7"]["details"]["statements"] > recorded["mpk/b500"]["details"]["statements"]
