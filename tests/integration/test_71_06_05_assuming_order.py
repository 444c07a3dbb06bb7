"""71_06_05_assuming_order: applying a shuffled change stream in arrival order lets older versions
overwrite newer ones; the version-guarded upsert ends with the newest version of every row."""

from __future__ import annotations

import pytest

from tests.dagrun import run_dag
from tests.integration._71_06_helpers import at, create, drop, fetch, hour, insert, xcom

DAG_ID = "71_06_05_assuming_order"
STATUS = {1: "placed", 2: "paid", 3: "shipped"}
# (hour of arrival, id, version), in arrival order: deliberately out of version order
STREAM = [
    (1, 1, 1), (1, 1, 2), (1, 2, 2), (1, 2, 1), (1, 3, 1), (1, 4, 1), (1, 4, 2),
    (2, 3, 3), (2, 3, 2), (2, 5, 1), (2, 1, 3),
    (3, 4, 3), (3, 5, 2), (3, 2, 3), (3, 6, 1), (3, 1, 2),
]  # fmt: skip
EXPECTED = [(1, 3, "shipped"), (2, 3, "shipped"), (3, 3, "shipped"), (4, 3, "shipped"), (5, 2, "paid"),
            (6, 1, "placed")]  # fmt: skip


@pytest.fixture
def tables(warehouse_db, names):
    src, target = f"staging.{names('ord_src')}", f"core.{names('ord_tgt')}"
    create(warehouse_db, src, "changes")
    rows = [(seq, i, v, STATUS[v], at(h, seq)) for seq, (h, i, v) in enumerate(STREAM, start=1)]
    insert(warehouse_db, src, "seq, id, version, status, arrived_at", rows)
    yield src, target
    drop(warehouse_db, src, target)


def scenario(warehouse_db, src, target, variant):
    conf = {"variant": variant, "source_table": src, "target_table": target}
    regressed = [xcom(run_dag(DAG_ID, hour(h), conf), "apply")["regressed"] for h in (1, 2, 3)]
    return regressed, fetch(warehouse_db, f"SELECT id, version, status FROM {target} ORDER BY id")


def test_last_arrival_wins_so_older_versions_overwrite_newer_ones(warehouse_db, tables) -> None:
    src, target = tables
    regressed, rows = scenario(warehouse_db, src, target, "anti_pattern")
    assert regressed == [
        [[2, 1, 2]],  # hour 1: v1 of row 2 arrived after v2
        [[2, 1, 2], [3, 2, 3]],  # hour 2: v2 of row 3 arrived after v3
        [[1, 2, 3], [3, 2, 3]],  # hour 3: a retried v2 of row 1 arrived an hour after v3
    ]
    assert rows == [(1, 2, "paid"), (2, 3, "shipped"), (3, 2, "paid"), (4, 3, "shipped"), (5, 2, "paid"),
                    (6, 1, "placed")]  # fmt: skip
    assert rows != EXPECTED


def test_the_version_guard_keeps_the_newest_version_whatever_the_arrival_order(warehouse_db, tables) -> None:
    src, target = tables
    regressed, rows = scenario(warehouse_db, src, target, "fixed")
    assert regressed == [[], [], []]
    assert rows == EXPECTED
