"""71_07_04_merge_performance: MERGE (with and without a key index) and INSERT ... ON CONFLICT, at two statement
sizes, applied by parallel key partitions, all end equal to the source; each partition applies exactly the
changes of its keys; per-partition and per-variant measurements are recorded, and the parallel wall clock
is what the mapped tasks' own windows say (under dag.test they run one at a time: no overlap, wall clock
>= sum of task times). Nothing here asserts a speed."""

from __future__ import annotations

import math
from datetime import datetime

import pendulum

from cdclab.lessons.cdc_performance import partition_of
from cdclab.ops import perf
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, made, make_source_table, published, write_changes

__all__ = ["made"]  # the fixture that drops what the test created

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
    lab, names, shop_db, warehouse_db, assert_tables_equal, made
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
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    made.warehouse += [
        f"DELETE FROM state.perf_runs WHERE experiment = '{exp}'",
        f"DELETE FROM state.kafka_offsets WHERE consumer_group LIKE '{group}.%'",
        *(f'DROP TABLE IF EXISTS core."{table}__{s}_b{b}"' for s in STRATEGIES for b in SIZES),
        *(f'DROP TABLE IF EXISTS core."{table}__{s}_b{b}__stage"' for s in STRATEGIES for b in SIZES),
    ]
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
        # every change event's key, and so the partition that must apply it
        ids = [
            *range(step["start"], step["start"] + step["inserts"]),
            *step["update_ids"],
            *step["delete_ids"],
        ]
        per_partition = [sum(1 for i in ids if partition_of({"id": i}, ["id"], 2) == p) for p in (0, 1)]
        assert len(ids) == changes and all(per_partition), per_partition
        published(lab, topic, total)
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
        # two partitions + one summary per variant; one window per mapped task; the parallel clock
        assert len(recorded) == len(STRATEGIES) * len(SIZES) * 3 + 2 + 1
        for strategy in STRATEGIES:
            for size in SIZES:
                p0, p1 = recorded[f"{strategy}/b{size}/p0"], recorded[f"{strategy}/b{size}/p1"]
                total_row = recorded[f"{strategy}/b{size}"]
                # each change is applied by exactly one partition: the one its key hashes to
                assert [p0["rows_read"], p1["rows_read"]] == per_partition
                assert total_row["rows_read"] == changes
                assert total_row["details"]["partitions"] == 2
                assert total_row["details"]["statements"] >= sum(
                    math.ceil(p["rows_read"] / size) for p in (p0, p1)
                )
                assert total_row["duration_ms"] >= total_row["details"]["slowest_partition_ms"]
        assert recorded["mpk/b7"]["details"]["statements"] > recorded["mpk/b500"]["details"]["statements"]

        # the parallel wall clock, from the windows the mapped tasks recorded themselves
        windows = {}
        for p in (0, 1):
            d = recorded[f"task/p{p}"]["details"]
            windows[p] = (datetime.fromisoformat(d["started_at"]), datetime.fromisoformat(d["ended_at"]))
            assert windows[p][0] <= windows[p][1]
            assert recorded[f"task/p{p}"]["rows_written"] == per_partition[p] * len(STRATEGIES) * len(SIZES)
        clock = recorded["parallel"]["details"]
        wall_ms = (
            max(e for _, e in windows.values()) - min(s for s, _ in windows.values())
        ).total_seconds() * 1000
        sum_ms = sum((e - s).total_seconds() * 1000 for s, e in windows.values())
        assert clock["tasks"] == 2
        assert math.isclose(clock["wall_clock_ms"], wall_ms, abs_tol=0.01)
        assert math.isclose(recorded["parallel"]["duration_ms"], wall_ms, abs_tol=0.01)
        assert math.isclose(clock["sum_task_ms"], sum_ms, abs_tol=0.01)
        # dag.test runs the mapped tasks one after the other: the windows are disjoint, so the wall
        # clock covers both (>= their sum) and the DAG says they did not run in parallel
        (s0, e0), (s1, e1) = windows[0], windows[1]
        assert e0 <= s1 or e1 <= s0, windows
        assert clock["overlapping_pairs"] == [] and clock["ran_in_parallel"] is False
        assert clock["wall_clock_ms"] >= clock["sum_task_ms"] - 0.01
