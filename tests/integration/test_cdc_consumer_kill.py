"""Drill (issue 11, item 10): the consuming task SIGKILLed inside its batch transaction.

A first run commits part of the topic (it stops at chosen offsets). Then ``replicate`` runs in its own
process, as in an Airflow task, while the test holds a row lock on the group's stored offset: the
process writes its next batch's rows and waits, inside its batch transaction, to advance the offset.
The test sees that transaction in ``pg_stat_activity`` (rows written, waiting) and SIGKILLs the process.
(Polling for an open transaction without the lock missed it when the consumer drained 10,000 records
in under a second.) Postgres rolls the open transaction
back, together with the Kafka offsets stored in the same transaction. The next run starts from the
last committed offsets, and the end state equals the source, each row once."""

from __future__ import annotations

from cdclab.cdc.pipeline import replicate
from tests.integration._cdc_helpers import published
from tests.integration._drills import (
    count_rows,
    drop_tables,
    insert_batches,
    kill_inside_a_batch,
    make_source_table,
    offsets_held,
    start_replicate,
)


def test_a_consumer_killed_inside_its_batch_transaction_loses_and_doubles_nothing(
    lab, names, shop_db, assert_tables_equal
):
    table, group = names("ckill"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    try:
        rows = insert_batches(lab, table, 1, batches=40, per_batch=250)  # 10,000 rows, 40 transactions
        published(lab, topic, rows, timeout=240)

        # about half the topic committed first, so the rerun must resume from stored offsets
        replicate(
            [f"public.{table}"], group=group, target_schema="core", batch_size=500, stop_at={(topic, 0): 5000}
        )
        with offsets_held(lab, group, topic):
            proc = start_replicate(table, group, batch_size=500)
            seen = kill_inside_a_batch(lab, proc, table)
        assert proc.returncode == -9, f"the consumer was not SIGKILLed: {proc.returncode}"
        # the kill landed while data was moving: rows written in an open transaction, not all committed
        committed, _ = count_rows(lab, "warehouse", f"core.{table}")
        assert 0 < committed < rows, (
            f"the kill came after the last batch ({committed} of {rows} committed); seen {seen}"
        )

        first = replicate([f"public.{table}"], group=group, target_schema="core", batch_size=500)
        second = replicate([f"public.{table}"], group=group, target_schema="core", batch_size=500)

        # exactly once: the rerun reads precisely what the killed batch had not committed (its rows and
        # its offsets were rolled back together), and a further run reads nothing
        assert committed + first["records"] == rows, (committed, first)
        assert second["records"] == 0, second
        total, distinct = count_rows(lab, "warehouse", f"core.{table}")
        assert total == distinct == rows
        assert_tables_equal(
            f"shop:public.{table}", f"warehouse:core.{table}", key="id", columns=["amount", "note"]
        )
    finally:
        drop_tables(lab, table)
