"""71_06_04_unbounded_state: a dedup state kept forever grows with the total input; a TTL-bounded one
stays the size of one TTL of traffic, and both emit every event exactly once. Measured in rows and in
bytes: on disk (``pg_total_relation_size``), live (``pg_column_size``) and held as a Python set."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from psycopg2.extras import execute_values

from tests.dagrun import run_dag
from tests.integration._71_06_helpers import (
    HOURS,
    PER_HOUR,
    at,
    create,
    deliveries,
    drop,
    fetch,
    hour,
    insert,
)

DAG_ID = "71_06_04_unbounded_state"


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src, target, seen = f"public.{names('dd_src')}", f"core.{names('dd_tgt')}", f"state.{names('dd_seen')}"
    create(shop_db, src, "deliveries")
    insert(shop_db, src, "seq, event_id, event_time, arrived_at, payload", deliveries())
    yield src, target, seen
    drop(shop_db, src)
    drop(warehouse_db, target, seen, f"{seen}__size")


def scenario(shop_db, warehouse_db, tables, variant):
    src, target, seen = tables
    conf = {
        "variant": variant,
        "source_table": src,
        "target_table": target,
        "seen_table": seen,
        "ttl_minutes": 60,
    }
    for h in HOURS:
        run_dag(DAG_ID, hour(h), conf)
    # correct output: every event exactly once, with its payload and event time
    expected = fetch(shop_db, f"SELECT DISTINCT event_id, event_time, payload FROM {src} ORDER BY event_id")
    assert len(expected) == PER_HOUR * len(HOURS)
    assert (
        fetch(warehouse_db, f"SELECT event_id, event_time, payload FROM {target} ORDER BY event_id")
        == expected
    )
    return fetch(
        warehouse_db, f"SELECT delivered, emitted, expired, state_rows FROM {seen}__size ORDER BY id"
    )


def test_the_unbounded_seen_state_grows_with_the_total_input(shop_db, warehouse_db, tables) -> None:
    sizes = scenario(shop_db, warehouse_db, tables, "anti_pattern")
    assert sizes == [(6, 5, 0, 5), (7, 5, 0, 10), (7, 5, 0, 15), (7, 5, 0, 20)]


def test_the_ttl_bounded_seen_state_stays_one_hour_of_traffic_and_still_deduplicates(
    shop_db, warehouse_db, tables
) -> None:
    sizes = scenario(shop_db, warehouse_db, tables, "fixed")
    # after each run only the ids first seen in the last 60 minutes remain
    assert sizes == [(6, 5, 0, 5), (7, 5, 5, 5), (7, 5, 5, 5), (7, 5, 5, 5)]
    assert max(rows for *_, rows in sizes) <= PER_HOUR


# six runs per variant (it was eight): four after the fix's early high-water mark (see below), and the
# anti-pattern six times its first size, so growing vs flat stays unmistakable in every unit
BULK_HOURS = (1, 2, 3, 4, 5, 6)
BULK_PER_HOUR = 1000


def bulk_deliveries() -> list[tuple]:
    """Per hour 1,000 new events spread evenly over the hour (ids wide enough to weigh something), and
    every tenth one re-delivered 20 minutes after its first delivery."""
    out, seq = [], 0
    for h in BULK_HOURS:
        for k in range(BULK_PER_HOUR):
            first = at(h) + dt.timedelta(seconds=k * 3600 // BULK_PER_HOUR)
            eid = f"order-created-{h:02d}-{k:06d}-0123456789abcdef"
            seq += 1
            out.append((seq, eid, first, first, f"payload {k}"))
            if k % 10 == 0:
                seq += 1
                out.append((seq, eid, first, first + dt.timedelta(minutes=20), f"payload {k}"))
    return out


def bulk_run(warehouse_db, src: str, target: str, seen: str, variant: str) -> list[tuple]:
    """Run ``variant`` over every bulk hour; check it emitted each event once; return its size log
    ``[(state_rows, state_bytes, live_bytes, memory_bytes)]``, one row per run."""
    conf = {
        "variant": variant,
        "source_table": src,
        "target_table": target,
        "seen_table": seen,
        "ttl_minutes": 60,
    }
    for h in BULK_HOURS:
        run_dag(DAG_ID, hour(h), conf)
    events = BULK_PER_HOUR * len(BULK_HOURS)
    emitted = target.replace("{variant}", variant)
    assert fetch(warehouse_db, f"SELECT count(*), count(DISTINCT event_id) FROM {emitted}") == [
        (events, events)
    ]
    return fetch(
        warehouse_db,
        "SELECT state_rows, state_bytes, live_bytes, memory_bytes FROM "
        f"{seen.replace('{variant}', variant)}__size ORDER BY id",
    )


def test_measured_bytes_grow_with_the_input_unbounded_and_stay_flat_with_a_ttl(
    shop_db, warehouse_db, tables
) -> None:
    """Six hours of 1,000 events each, both variants over the same deliveries. The anti-pattern's state
    grows by about one hour of ids per run in every unit; the fix's state is one hour of ids whatever
    the history, on disk too, because it gives back what it expired (VACUUM FULL)."""
    src, target, seen = tables
    target, seen = f"{target}_{{variant}}", f"{seen}_{{variant}}"  # one state per variant
    with shop_db.cursor() as cur:
        cur.execute(f"TRUNCATE {src}")
        execute_values(
            cur,
            f"INSERT INTO {src} (seq, event_id, event_time, arrived_at, payload) VALUES %s",
            bulk_deliveries(),
            page_size=2000,
        )
    try:
        sizes = {v: bulk_run(warehouse_db, src, target, seen, v) for v in ("anti_pattern", "fixed")}
    finally:
        for v in ("anti_pattern", "fixed"):
            t, s = target.replace("{variant}", v), seen.replace("{variant}", v)
            drop(warehouse_db, t, s, f"{s}__size")
    anti, fixed = sizes["anti_pattern"], sizes["fixed"]
    print("anti_pattern (rows, disk, live, memory):", anti)
    print("fixed        (rows, disk, live, memory):", fixed)
    n = len(BULK_HOURS)
    # rows: the anti-pattern keeps everything, the fix keeps the last hour
    assert [r[0] for r in anti] == [BULK_PER_HOUR * (i + 1) for i in range(n)]
    assert all(r[0] <= BULK_PER_HOUR for r in fixed)
    for unit, col in (("disk", 1), ("live", 2), ("memory", 3)):
        a, f = [r[col] for r in anti], [r[col] for r in fixed]
        # unbounded: every run adds bytes, and the last run holds about n times the first
        assert all(later > earlier for earlier, later in itertools.pairwise(a)), (unit, a)
        assert a[-1] >= 0.6 * n * a[0], (unit, a)
        # bounded: after the second run (one run's inserts before expiry set the high-water mark on
        # disk) the fix never grows past its early size, and ends far below the anti-pattern
        assert max(f[2:]) <= 1.25 * max(f[:2]), (unit, f)
        assert f[-1] * 2 <= a[-1], (unit, f[-1], a[-1])
    # the fix's live bytes are exact: the same 1,000 ids' worth after every run
    assert len({r[2] for r in fixed}) == 1, fixed
