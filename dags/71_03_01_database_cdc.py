"""
# 71.3.1 Database CDC Integration — Debezium (log-based) into the warehouse

**Pattern.** Debezium reads Postgres' write-ahead log through a logical replication slot
(`pgoutput`, slot `cdclab_shop`, publication `cdclab_shop`) and writes one Kafka topic per table
(`shop.public.<table>`). This DAG consumes those topics and merges every change into a warehouse
table of the same shape (`core.<table>`), so the warehouse equals the source — inserts, updates
*and deletes*, which query-based polling never sees.

**Guarantee.** Exactly-once effect: the consumer's offsets are stored in `warehouse.state.kafka_offsets`
in the same transaction as the merged rows and read back on start (`cdclab.cdc.consumer`). A killed
run is re-run from the last committed batch: nothing is lost, nothing applied twice. Changes are
applied by log position (LSN): a replayed or late older change can never overwrite a newer row
(`_source_position` guard), and a hard delete is remembered in `core.<table>__deleted` so a late
insert cannot resurrect the row.

**Change log processing / event handling.** Each Kafka record is parsed into one typed change
(`cdclab.cdc.events`): op `c/u/d/r/t`, before/after images, LSN, transaction id; tombstones and
heartbeats are skipped; malformed records, unknown ops and NULL keys go to `warehouse.dlq.kafka_records`
with the reason, and the pipeline goes on. A column that appears in the source (schema drift) fails
the run loudly unless `schema_policy` is `evolve`.

**Maxwell integration.** The MySQL side: MariaDB (row-based binlog, `infra/mariadb/my.cnf`) is read by
the lab's `maxwell` service, which writes Maxwell's JSON (`type`, `data`, `old`, `xid`, `xoffset`,
`commit`, `position`) to `maxwell.<database>.<table>` in Kafka transactions together with its binlog
checkpoint (`cdclab.cdc.maxwell`; the Maxwell daemon itself, `com.zendesk:maxwell` 1.22.6 on Maven
Central, needs Nashorn, which Java 15+ lacks). `apply_maxwell_changes` parses those records into the
same change record (`parse_maxwell`, position = binlog file/offset/xoffset) and merges them into
`core.mysql_<table>`, a table of the same warehouse model as the Debezium path.

**Observe it in the lab.**
- Connector: `curl -s 127.0.0.1:8083/connectors/shop-postgres-source/status`
- Slot: `SELECT slot_name, active, confirmed_flush_lsn FROM pg_replication_slots;` (database `shop`)
- Topic: `make logs S=connect`, or consume `shop.public.customers` with any Kafka client.
- Offsets: `SELECT * FROM state.kafka_offsets;` and dead letters `SELECT * FROM dlq.kafka_records;`
  in `warehouse`.
- MySQL side: `mysql -h127.0.0.1 -P13306 -ushop -pshop shop`, change `customers`, then compare with
  `warehouse.core.mysql_customers`; the producer's state: `.lab/maxwell/status.json`.
- Trigger the DAG, then compare `shop.public.customers` with `warehouse.core.customers`.
"""

from __future__ import annotations

from airflow.sdk import Param, get_current_context, task

from cdclab.cdc.pipeline import replicate
from cdclab.dagkit import from_params, lesson_dag

DEFAULT_TABLES = [
    "public.customers",
    "public.products",
    "public.orders",
    "public.order_items",
    "public.payments",
]

PARAMS = {
    "tables": Param(DEFAULT_TABLES, type="array", description="source tables (schema.table) to replicate"),
    "consumer_group": Param("71_03_01_database_cdc", type="string"),
    "topic_prefix": Param("shop", type="string"),
    "target_schema": Param("core", type="string"),
    "target_prefix": Param("", type="string"),
    "delete_mode": Param("hard", enum=["hard", "soft"]),
    "schema_policy": Param("fail", enum=["fail", "evolve"]),
    "connector": Param("shop-postgres-source", type="string"),
    "batch_size": Param(500, type="integer", minimum=1),
    "maxwell_tables": Param(["shop.customers"], type="array", description="MariaDB tables (database.table)"),
    "maxwell_group": Param("71_03_01_database_cdc_maxwell", type="string"),
    "maxwell_target_prefix": Param("mysql_", type="string"),
}


@lesson_dag(
    schedule="*/5 * * * *", tags=["71.3", "cdc", "debezium", "success", "reference", "patterns", "advanced"]
)
def database_cdc():
    @task
    def connector_running() -> str:
        """Fail fast with the connector's own error when Debezium is not streaming."""
        from airflow.sdk import Connection

        from cdclab.cdc.replication import require_running

        params = get_current_context()["params"]
        return require_running(Connection.get("kafka_connect").host, params["connector"])["connector"][
            "state"
        ]

    @task
    def apply_changes() -> dict:
        ctx = get_current_context()
        p = ctx["params"]
        return replicate(
            p["tables"],
            group=p["consumer_group"],
            **from_params(
                p,
                "topic_prefix",
                "target_schema",
                "target_prefix",
                "delete_mode",
                "schema_policy",
                "batch_size",
            ),
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )

    @task
    def apply_maxwell_changes() -> dict:
        from cdclab.cdc.pipeline import replicate_maxwell

        ctx = get_current_context()
        p = ctx["params"]
        return replicate_maxwell(
            p["maxwell_tables"],
            group=p["maxwell_group"],
            target_schema=p["target_schema"],
            target_prefix=p["maxwell_target_prefix"],
            delete_mode=p["delete_mode"],
            batch_size=p["batch_size"],
            who=f"{ctx['dag'].dag_id}/{ctx['run_id']}",
        )

    connector_running() >> apply_changes()
    apply_maxwell_changes()


database_cdc()
