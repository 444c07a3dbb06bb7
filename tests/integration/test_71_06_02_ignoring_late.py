"""71_06_02_ignoring_late: hourly totals computed once miss the late events (by exactly their amount);
recomputing a lookback window counts them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.dagrun import run_dag
from tests.integration._71_06_helpers import at, create, drop, fetch, hour, insert, xcom

DAG_ID = "71_06_02_ignoring_late"
COLUMNS = "id, amount, event_time, arrived_at"


@pytest.fixture
def tables(shop_db, warehouse_db, names):
    src, target = f"public.{names('late_src')}", f"marts.{names('late_tot')}"
    create(shop_db, src, "events")
    yield src, target
    drop(shop_db, src)
    drop(warehouse_db, target, f"{target}__reconciliation")


def scenario(shop_db, warehouse_db, src, target, variant):
    """Four hourly runs; after the runs of hours 1 and 2, events of those hours arrive late."""
    conf = {"variant": variant, "source_table": src, "target_table": target, "lookback_intervals": 2}
    insert(shop_db, src, COLUMNS, [(1, 10, at(1, 10), at(1, 10)), (2, 20, at(1, 40), at(1, 41))])
    run_dag(DAG_ID, hour(1), conf)
    # late: an event of hour 1 arrives during hour 2, after hour 1 was computed
    insert(shop_db, src, COLUMNS, [(3, 5, at(1, 50), at(2, 20)), (4, 7, at(2, 15), at(2, 15))])
    run_dag(DAG_ID, hour(2), conf)
    insert(shop_db, src, COLUMNS, [(5, 3, at(2, 30), at(3, 10)), (6, 1, at(3, 20), at(3, 20))])
    run_dag(DAG_ID, hour(3), conf)
    insert(shop_db, src, COLUMNS, [(7, 2, at(4, 5), at(4, 5))])
    last = run_dag(DAG_ID, hour(4), conf)
    source = fetch(
        shop_db,
        f"SELECT date_trunc('hour', event_time), count(*), sum(amount) FROM {src} GROUP BY 1 ORDER BY 1",
    )
    totals = fetch(warehouse_db, f"SELECT bucket_start, events, total FROM {target} ORDER BY bucket_start")
    return source, totals, xcom(last, "reconcile")


def test_totals_computed_once_miss_exactly_the_late_amounts_and_reconciliation_shows_it(
    shop_db, warehouse_db, tables
) -> None:
    src, target = tables
    source, totals, diffs = scenario(shop_db, warehouse_db, src, target, "anti_pattern")
    assert source == [
        (at(1), 3, Decimal("35.00")),
        (at(2), 2, Decimal("10.00")),
        (at(3), 1, Decimal("1.00")),
        (at(4), 1, Decimal("2.00")),
    ]
    assert totals == [
        (at(1), 2, Decimal("30.00")),
        (at(2), 1, Decimal("7.00")),
        (at(3), 1, Decimal("1.00")),
        (at(4), 1, Decimal("2.00")),
    ]
    missing = {b: s - t for (b, _, s), (_, _, t) in zip(source, totals, strict=True) if s != t}
    assert missing == {at(1): Decimal("5.00"), at(2): Decimal("3.00")}  # the late events 3 and 5
    assert diffs == [[at(1).isoformat(), "30.00", "35.00"], [at(2).isoformat(), "7.00", "10.00"]]
    recorded = fetch(warehouse_db, f"SELECT DISTINCT bucket_start, difference FROM {target}__reconciliation")
    assert sorted(recorded) == [(at(1), Decimal("5.00")), (at(2), Decimal("3.00"))]


def test_a_lookback_window_recounts_late_events_and_totals_equal_the_source(
    shop_db, warehouse_db, tables
) -> None:
    src, target = tables
    source, totals, diffs = scenario(shop_db, warehouse_db, src, target, "fixed")
    assert totals == source
    assert diffs == []
    assert fetch(warehouse_db, f"SELECT count(*) FROM {target}__reconciliation") == [(0,)]
