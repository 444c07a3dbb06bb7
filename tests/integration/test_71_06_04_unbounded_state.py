"""71_06_04_unbounded_state: a dedup state kept forever grows with the total input; a TTL-bounded one
stays the size of one TTL of traffic, and both emit every event exactly once."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_06_helpers import (
    HOURS,
    PER_HOUR,
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
