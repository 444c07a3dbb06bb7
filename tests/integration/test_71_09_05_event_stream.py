"""71_09_05_event_stream: windows over a clickstream with late, duplicate and out-of-order events, equal
to an independent count after every run, and exactly once through a kill -9 of the consumer."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC

import pendulum
import pytest
from psycopg2 import sql

from cdclab.streams.windows import produce_events
from cdclab.workload import clickstream_events
from tests.dagrun import run_dag

LOG_SERVICES = ["kafka", "postgres"]
DAG_ID = "71_09_05_event_stream"
WINDOW, LATENESS, LATE_BY = 60, 30, 60  # seconds: window size, allowed lateness, how late late events are
PART = 150  # events per produced part (one part per run)
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FRACTIONS = {"late_fraction": 0.08, "duplicate_fraction": 0.1, "out_of_order_fraction": 0.15}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def part(k: int) -> list[dict]:
    """The events the DAG's producer writes for ``produce_seed=100+k`` and ``produce_start=T0 + k*PART s``."""
    return clickstream_events(
        100 + k,
        PART,
        start=T0 + dt.timedelta(seconds=PART * k),
        lateness=dt.timedelta(seconds=LATE_BY),
        **FRACTIONS,
    )


def produce_conf(k: int) -> dict:
    return {
        "produce_events": PART,
        "produce_seed": 100 + k,
        "produce_start": (T0 + dt.timedelta(seconds=PART * k)).isoformat(),
        "produce_late_fraction": FRACTIONS["late_fraction"],
        "produce_duplicate_fraction": FRACTIONS["duplicate_fraction"],
        "produce_out_of_order_fraction": FRACTIONS["out_of_order_fraction"],
        "produce_late_by_seconds": LATE_BY,
    }


def expected(events: list[dict]) -> dict:
    """An independent count: integer seconds since the epoch, first delivery wins, lateness from the
    newest event time read so far."""
    seen: set[str] = set()
    newest: int | None = None
    counts: Counter = Counter()
    late: Counter = Counter()
    too_late: set[str] = set()
    duplicates = 0
    for e in events:
        t = dt.datetime.fromisoformat(e["event_time"])
        sec = (t - EPOCH) // dt.timedelta(microseconds=1) / 1e6
        start = int(sec // WINDOW) * WINDOW
        end = start + WINDOW
        if e["event_id"] in seen:
            duplicates += 1
            continue
        seen.add(e["event_id"])
        if newest is not None and end <= newest - LATENESS:
            too_late.add(e["event_id"])
            continue
        counts[(start, e["event_type"])] += 1
        if newest is not None and end <= newest:
            late[(start, e["event_type"])] += 1
        newest = sec if newest is None else max(newest, sec)
    watermark = None if newest is None else newest - LATENESS
    stamp = lambda s: EPOCH + dt.timedelta(seconds=s)  # noqa: E731
    rows = [
        (
            stamp(s),
            stamp(s + WINDOW),
            etype,
            n,
            late[(s, etype)],
            watermark is not None and s + WINDOW <= watermark,
        )
        for (s, etype), n in sorted(counts.items())
    ]
    return {
        "windows": rows,
        "too_late": too_late,
        "seen": seen,
        "duplicates": duplicates,
        "max_event_time": None if newest is None else stamp(newest),
    }


def windows(db, prefix: str) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT window_start, window_end, event_type, events, late_events, final FROM {} "
                "ORDER BY window_start, event_type"
            ).format(sql.Identifier("marts", f"{prefix}windows"))
        )
        return [tuple(r) for r in cur.fetchall()]


def scalar_set(db, query: sql.Composable, *args) -> set:
    with db.cursor() as cur:
        cur.execute(query, args)
        return {r[0] for r in cur.fetchall()}


def checkpoint(db, prefix: str, group: str) -> dict:
    with db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT max_event_time, watermark, deliveries, on_time, late, duplicates, too_late, "
                "future FROM {} WHERE consumer_group = %s"
            ).format(sql.Identifier("marts", f"{prefix}checkpoint")),
            (group,),
        )
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
    assert row is not None, "no checkpoint row"
    return dict(zip(names, row, strict=True))


def assert_state(db, prefix: str, group: str, delivered: list[dict]) -> dict:
    want = expected(delivered)
    assert windows(db, prefix) == want["windows"]
    assert (
        scalar_set(
            db, sql.SQL("SELECT event_id FROM {}").format(sql.Identifier("marts", f"{prefix}too_late"))
        )
        == want["too_late"]
    )
    assert (
        scalar_set(db, sql.SQL("SELECT event_id FROM {}").format(sql.Identifier("marts", f"{prefix}seen")))
        == want["seen"]
    )
    cp = checkpoint(db, prefix, group)
    assert cp["max_event_time"] == want["max_event_time"]
    assert cp["watermark"] == want["max_event_time"] - dt.timedelta(seconds=LATENESS)
    assert cp["deliveries"] == len(delivered)
    assert cp["duplicates"] == want["duplicates"]
    assert cp["too_late"] == len(want["too_late"])
    assert cp["on_time"] + cp["late"] == sum(r[3] for r in want["windows"])
    assert cp["late"] == sum(r[4] for r in want["windows"])
    return want


@pytest.fixture
def stream(lab, names, warehouse_db):
    topic, group, prefix = names("clicks"), names("grp"), names("es") + "_"
    # every param, every run: dag.test() in one process keeps the previous run's conf in the DAG's Params
    conf = {
        "topic": topic,
        "consumer_group": group,
        "schema": "marts",
        "table_prefix": prefix,
        "window_seconds": WINDOW,
        "allowed_lateness_seconds": LATENESS,
        "skew_tolerance_seconds": 300,
        "batch_size": 40,
        **produce_conf(0),
        "produce_events": 0,
        "produce_seed": None,
        "produce_start": None,
    }
    yield topic, group, prefix, conf
    with warehouse_db.cursor() as cur:
        for what in ("seen", "windows", "too_late", "checkpoint"):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("marts", f"{prefix}{what}")))


def test_window_counts_equal_an_independent_count_after_each_of_three_runs(lab, stream, warehouse_db):
    topic, group, prefix, conf = stream
    delivered: list[dict] = []
    for k in range(3):
        if k == 1:  # a record that is not a click event: dead-lettered, the stream goes on
            produce_events(topic, [{"event_id": "broken", "user_id": 1}], bootstrap=lab.kafka_bootstrap)
        run_dag(DAG_ID, pendulum.datetime(2026, 3, 2, 10, 5 * k, tz="UTC"), {**conf, **produce_conf(k)})
        delivered += part(k)
        want = assert_state(warehouse_db, prefix, group, delivered)

    verdicts = Counter()
    for r in want["windows"]:
        verdicts["final"] += r[5]
        verdicts["late"] += r[4]
    assert want["duplicates"] == 3 * round(PART * FRACTIONS["duplicate_fraction"])
    assert len(want["too_late"]) > 0, "the data must exercise too-late events"
    assert verdicts["late"] > 0, "the data must exercise late-but-accepted events"
    assert 0 < verdicts["final"] < len(want["windows"]), "some windows final, the newest still open"
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT reason FROM {} LIMIT 1").format(sql.Identifier("marts", f"{prefix}too_late"))
        )
        assert "is final" in cur.fetchone()[0]
        cur.execute(
            "SELECT reason FROM dlq.kafka_records WHERE consumer_group = %s AND topic = %s", (group, topic)
        )
        assert [r[0] for r in cur.fetchall()] == [
            "malformed click event: missing field(s) ['event_type', 'event_time']"
        ]
        cur.execute(
            "SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s AND topic = %s",
            (group, topic),
        )
        assert cur.fetchone()[0] == len(delivered) + 1

    # a run with nothing new changes nothing
    before = windows(warehouse_db, prefix)
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 3, 2, 10, 20, tz="UTC"), conf)
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states == {"produce": "skipped", "consume": "success"}
    assert windows(warehouse_db, prefix) == before
    assert checkpoint(warehouse_db, prefix, group)["deliveries"] == len(delivered)


KILL_SCRIPT = """
import datetime as dt, sys
from cdclab.streams.windows import StreamConfig, StreamTables, process_stream
bootstrap, topic, group, prefix = sys.argv[1:5]
process_stream(bootstrap=bootstrap, topic=topic, group=group, conn_id="warehouse",
               tables=StreamTables("marts", prefix),
               config=StreamConfig(window=dt.timedelta(seconds=60), allowed_lateness=dt.timedelta(seconds=30)),
               batch_size=20)
"""


def test_a_consumer_killed_mid_stream_counts_every_event_exactly_once(lab, stream, warehouse_db):
    topic, group, prefix, conf = stream
    run_dag(DAG_ID, pendulum.datetime(2026, 3, 2, 11, 0, tz="UTC"), {**conf, **produce_conf(0)})
    produce_events(topic, part(1), bootstrap=lab.kafka_bootstrap)

    env = {**os.environ, "CDCLAB_FAIL_AFTER_BATCHES": "3"}
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, lab.kafka_bootstrap, topic, group, prefix],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s AND topic = %s",
            (group, topic),
        )
        (mid,) = cur.fetchone()
    first, second = part(0), part(1)
    assert len(first) < mid < len(first) + len(second), "the kill must land mid-stream"
    # the state holds exactly the records before the stored offset (offset i = event i: no other records)
    assert_state(warehouse_db, prefix, group, (first + second)[:mid])

    run_dag(DAG_ID, pendulum.datetime(2026, 3, 2, 11, 5, tz="UTC"), {**conf, **produce_conf(2)})
    want = assert_state(warehouse_db, prefix, group, part(0) + part(1) + part(2))
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), count(DISTINCT event_id) FROM {}").format(
                sql.Identifier("marts", f"{prefix}seen")
            )
        )
        assert cur.fetchone() == (len(want["seen"]), len(want["seen"]))


HORIZON = 120  # seconds behind the watermark that seen ids are kept (two windows)


def seen(db, prefix: str) -> set:
    return scalar_set(db, sql.SQL("SELECT event_id FROM {}").format(sql.Identifier("marts", f"{prefix}seen")))


def test_seen_ids_beyond_the_horizon_are_pruned_and_duplicates_within_it_are_still_caught(
    lab, stream, warehouse_db
):
    """The de-duplication ledger keeps only the ids within ``dedup_horizon_seconds`` of the watermark; the
    windows still equal the independent count (no duplicate counted), and a late redelivery of a pruned id
    is rejected as too late, not counted."""
    topic, group, prefix, conf = stream
    conf = {**conf, "dedup_horizon_seconds": HORIZON}
    delivered: list[dict] = []
    for k in range(3):
        run_dag(DAG_ID, pendulum.datetime(2026, 3, 2, 12, 5 * k, tz="UTC"), {**conf, **produce_conf(k)})
        delivered += part(k)
    want = expected(delivered)
    assert windows(warehouse_db, prefix) == want["windows"]  # every duplicate recognised, none counted
    cp = checkpoint(warehouse_db, prefix, group)
    assert cp["watermark"] == want["max_event_time"] - dt.timedelta(seconds=LATENESS)
    horizon_start = cp["watermark"] - dt.timedelta(seconds=HORIZON)
    when = {e["event_id"]: dt.datetime.fromisoformat(e["event_time"]) for e in delivered}
    kept = {i for i, t in when.items() if t >= horizon_start}
    assert seen(warehouse_db, prefix) == kept
    assert 0 < len(kept) < len(want["seen"]) / 2, "most ids must have been pruned"
    assert cp["duplicates"] + cp["too_late"] + cp["future"] == want["duplicates"] + len(want["too_late"])

    # redeliver one counted event from before the horizon and one from within it
    counted = [e for e in delivered if e["event_id"] not in want["too_late"]]
    old = next(e for e in counted if when[e["event_id"]] < horizon_start - dt.timedelta(seconds=WINDOW))
    recent = next(e for e in reversed(counted) if when[e["event_id"]] >= horizon_start)
    produce_events(topic, [old, recent], bootstrap=lab.kafka_bootstrap)
    before = windows(warehouse_db, prefix)
    run_dag(DAG_ID, pendulum.datetime(2026, 3, 2, 12, 15, tz="UTC"), conf)
    assert windows(warehouse_db, prefix) == before  # neither counted again
    after = checkpoint(warehouse_db, prefix, group)
    assert (after["duplicates"], after["too_late"]) == (cp["duplicates"] + 1, cp["too_late"] + 1)
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT reason FROM {} WHERE event_id = %s").format(
                sql.Identifier("marts", f"{prefix}too_late")
            ),
            (old["event_id"],),
        )
        assert "is final" in cur.fetchone()[0]
    assert seen(warehouse_db, prefix) == kept  # the old id, recorded again, was pruned again
