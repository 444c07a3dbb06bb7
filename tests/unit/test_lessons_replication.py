"""Pure parts of :mod:`cdclab.lessons.replication` (71_03_02, 71_09_01): the target table a source table
replicates into, and the lag table's DDL."""

from __future__ import annotations

from cdclab.lessons import replication
from tests.unit._sql_text import text


def test_a_source_table_replicates_into_the_prefixed_table_of_the_target_schema() -> None:
    assert replication.target_table("public.customers", "core", "kcdc_") == "core.kcdc_customers"
    assert replication.target_table("orders", "core", "repl_") == "core.repl_orders"


def test_the_lag_table_is_created_only_when_missing_quoted_and_keyed_per_measurement() -> None:
    ddl = " ".join(text(replication.lag_ddl("state.lag_x")).split())
    assert ddl.startswith('CREATE TABLE IF NOT EXISTS "state"."lag_x" (')
    assert ddl.endswith("PRIMARY KEY (measured_at, consumer_group, topic, kafka_partition))")
