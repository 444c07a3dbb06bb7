"""The change generator against the real shop database: the rows it leaves are the rows the model predicts.

Each test owns an id range (the plugin's ``workload`` fixture, which deletes the range at teardown) or
its own copies of the tables, which it drops.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

import psycopg2
import pytest

from cdclab import workload as wk
from cdclab.testing import assert_tables_equal
from cdclab.workload import Workload

LOG_SERVICES = ["postgres"]


def _assert_state(conn: Any, workload: Workload, upto: int | None = None) -> None:
    """The model's rows (source) against Postgres's (target), table by table, as a readable diff."""
    expected = wk.expected_state(workload, upto)
    for table in workload.touched:
        assert_tables_equal(
            expected[table], wk.actual_state(conn, workload, table), key=wk.KEY_COLUMNS[table]
        )


def test_the_shop_tables_hold_exactly_the_rows_the_model_expects(shop_db: Any, workload: Any) -> None:
    wl = workload(seed=71, ops=400, soft_deletes=0.5, restores=0.2, duplicates=0.05, dst=0.2).spec

    first = wk.run_workload(shop_db, wl, stop=200)
    assert first.applied == 200
    _assert_state(shop_db, wl, upto=200)

    second = wk.run_workload(shop_db, wl, start=200, batch_size=10)
    assert second.applied == 200
    _assert_state(shop_db, wl)
    counts = {k: first.counts.get(k, 0) + second.counts.get(k, 0) for k in {*first.counts, *second.counts}}
    assert counts["duplicate"] > 0
    assert counts.get("customers.soft_delete", 0) + counts.get("products.soft_delete", 0) > 0
    assert shop_db.autocommit  # the connection is handed back as it was


def test_a_workload_can_write_to_copies_of_the_shop_tables(shop_db: Any, names: Any) -> None:
    customers, orders = f"public.{names('customers')}", f"public.{names('orders')}"
    wl = Workload(
        seed=5,
        ops=300,
        id_base=wk.id_base_for(names("wl")),
        tables={"customers": customers, "orders": orders},
        soft_deletes=0.3,
        duplicates=0.1,
    )
    try:
        wk.create_table_copy(shop_db, "customers", customers)
        wk.create_table_copy(shop_db, "orders", orders)
        wk.create_table_copy(shop_db, "orders", orders)  # idempotent
        with shop_db.cursor() as cur:
            for physical in (customers, orders):
                cur.execute("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", [physical])
                assert cur.fetchone() == ("f",), f"{physical} must keep REPLICA IDENTITY FULL"
                cur.execute(
                    "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname = 'touch_row'",
                    [physical],
                )
                assert cur.fetchone() == (1,)

        report = wk.run_workload(shop_db, wl)
        assert report.counts["orders.insert"] > 0
        _assert_state(shop_db, wl)
        with shop_db.cursor() as cur:
            first, last = wl.id_range
            cur.execute("SELECT count(*) FROM public.customers WHERE id BETWEEN %s AND %s", [first, last])
            assert cur.fetchone() == (0,), "the shop's own customers table must not be touched"
    finally:
        wk.drop_table_copy(shop_db, orders)
        wk.drop_table_copy(shop_db, customers)
    with pytest.raises(wk.ProtectedTableError):
        wk.drop_table_copy(shop_db, "public.customers")


LONG_TX = {"ops": 60, "only": ("customers",), "long_tx": 0.03, "long_tx_seconds": 2.5}


def _long_transaction_seed() -> int:
    """The first seed whose plan has one long transaction, early, on a row nothing touches later (a plan
    does not depend on the id range: keys are offsets from it)."""
    for seed in range(1, 500):
        ops = wk.plan(Workload(seed=seed, **LONG_TX))
        long = [op for op in ops if op.hold_seconds]
        if (
            len(long) == 1
            and long[0].seq <= 30
            and all(op.key != long[0].key for op in ops[long[0].seq + 1 :])
        ):
            return seed
    raise AssertionError("no seed below 500 gives a single early long transaction")


def test_a_long_transaction_commits_a_row_whose_updated_at_is_older_than_rows_committed_before_it(
    shop_db: Any, lab: Any, workload: Any
) -> None:
    wl = workload(seed=_long_transaction_seed(), **LONG_TX).spec
    (long_op,) = [op for op in wk.plan(wl) if op.hold_seconds]
    first, last = wl.id_range
    seen: dict[str, Any] = {}

    def watermark_reader(done: int, total: int) -> None:
        # An incremental reader polling while the long transaction is still open.
        if done == total:
            with closing(psycopg2.connect(lab.pg_dsn("shop"))) as reader, reader.cursor() as cur:
                cur.execute(
                    "SELECT max(updated_at) FROM public.customers WHERE id BETWEEN %s AND %s", [first, last]
                )
                seen["watermark"] = cur.fetchone()[0]
                cur.execute("SELECT version FROM public.customers WHERE id = %s", [long_op.key[0]])
                seen["version"] = cur.fetchone()[0]

    report = wk.run_workload(shop_db, wl, on_progress=watermark_reader)

    _assert_state(shop_db, wl)
    (lt,) = report.long_transactions
    assert (lt.seq, lt.key) == (long_op.seq, long_op.key)
    assert lt.overtaken >= 60 - 30 - 1
    row = {r["id"]: r for r in wk.expected_state(wl)["customers"]}[long_op.key[0]]
    assert seen["version"] == row["version"] - 1, (
        "the reader must have polled before the long transaction committed"
    )
    with shop_db.cursor() as cur:
        cur.execute("SELECT updated_at FROM public.customers WHERE id = %s", [long_op.key[0]])
        (updated_at,) = cur.fetchone()
        # The row committed after the reader's poll, yet its updated_at is below the watermark the poll saw:
        assert updated_at == lt.started_at
        assert updated_at < seen["watermark"] < lt.committed_at
        # so the next incremental read (updated_at > watermark) never returns it.
        cur.execute(
            "SELECT id FROM public.customers WHERE id BETWEEN %s AND %s AND updated_at > %s",
            [first, last, seen["watermark"]],
        )
        assert long_op.key[0] not in {r[0] for r in cur.fetchall()}


def test_a_fresh_run_refuses_an_id_range_that_already_has_rows(shop_db: Any, workload: Any) -> None:
    wl = workload(seed=3, ops=30, only=("customers", "products")).spec
    paced = wk.run_workload(shop_db, wl, rate=100)
    assert paced.elapsed >= 29 / 100

    with pytest.raises(wk.IdRangeInUseError, match="reset=True"):
        wk.run_workload(shop_db, wl)
    _assert_state(shop_db, wl)

    wk.run_workload(shop_db, wl, reset=True)
    _assert_state(shop_db, wl)
