"""Drill: a Debezium connector's replication slot is dropped while the connector is stopped, and the source
changes meanwhile (inserts, updates, deletes). The loss is detected loudly (SlotLost, a CRITICAL health
check) before the connector runs again, and the recovery — re-snapshot through the connector with its
offsets reset, targets rebuilt from the snapshot — ends with the warehouse equal to the source, zero
duplicates, and streaming going on after it.

Everything is the test's own: a schema in ``shop`` outside the lab's publication (public only), its own
publication, connector, slot, topics, consumer group and targets. The lab's ``shop-postgres-source`` and its
slot ``cdclab_shop`` are not touched."""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient
from psycopg2 import sql

from cdclab.cdc import slots
from cdclab.cdc.connect import ConnectClient
from cdclab.cdc.events import parse_debezium
from cdclab.cdc.inspect import read_topic
from cdclab.cdc.offsets import end_offsets
from cdclab.cdc.pipeline import replicate
from cdclab.ops import health

LOG_SERVICES = ["connect", "postgres"]
LAB_CONNECTOR = "shop-postgres-source"
TABLES = ("items", "notes")


def execute(conn, statement, params=None):
    with conn.cursor() as cur:
        cur.execute(statement, params)


def write(shop_db, schema, table, inserts=(), updates=(), deletes=()):
    t = sql.Identifier(schema, table)
    with shop_db.cursor() as cur:
        for i in inserts:
            cur.execute(
                sql.SQL("INSERT INTO {} (id, amount, note) VALUES (%s, %s, %s)").format(t),
                (i, i % 1000 + 0.25, f"n{i}"),
            )
        for i in updates:
            cur.execute(
                sql.SQL("UPDATE {} SET amount = amount + 1, note = note || '+' WHERE id = %s").format(t), (i,)
            )
        for i in deletes:
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(t), (i,))


def row_count(conn, qualified):
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}").format(
                sql.Identifier(*qualified.split("."))
            )
        )
        return cur.fetchone()


def wait_topic(lab, topic, predicate, timeout=120):
    """Wait until the records of ``topic`` satisfy ``predicate``; returns them."""
    deadline = time.monotonic() + timeout
    records = []
    while time.monotonic() < deadline:
        records = read_topic(lab.kafka_bootstrap, topic)
        if predicate(records):
            return records
        time.sleep(1)
    raise AssertionError(f"{topic}: {len(records)} records after {timeout}s, condition not met")


def slot_state(admin, slot):
    with admin.cursor() as cur:
        return slots.slot_states(cur).get(slot)


@pytest.fixture
def drill(lab, names, shop_db):
    schema = names("slotdrill")
    d = {
        "schema": schema,
        "connector": schema.replace("_", "-"),
        "slot": schema,
        "publication": schema,
        "prefix": schema,
        "group": names("grp"),
        "topics": {t: f"{schema}.{schema}.{t}" for t in TABLES},
        "targets": {t: f"core.{schema}__{t}" for t in TABLES},
    }
    client = ConnectClient(lab.connect_url)
    admin = psycopg2.connect(lab.pg_dsn("shop", role="postgres"))
    admin.autocommit = True
    execute(shop_db, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for t in TABLES:
        ident = sql.Identifier(schema, t)
        execute(
            shop_db,
            sql.SQL(
                "CREATE TABLE {} (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, note text)"
            ).format(ident),
        )
        execute(shop_db, sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(ident))
    execute(shop_db, sql.SQL("GRANT USAGE ON SCHEMA {s} TO cdc_replicator").format(s=sql.Identifier(schema)))
    execute(
        shop_db,
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO cdc_replicator").format(
            s=sql.Identifier(schema)
        ),
    )
    execute(
        shop_db,
        sql.SQL("CREATE PUBLICATION {p} FOR TABLE {t}").format(
            p=sql.Identifier(d["publication"]),
            t=sql.SQL(", ").join(sql.Identifier(schema, t) for t in TABLES),
        ),
    )
    lab_config = client.config(LAB_CONNECTOR) or {}
    d["config"] = {
        **{k: v for k, v in lab_config.items() if k.startswith("database.")},  # the env placeholders
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "tasks.max": "1",
        "topic.prefix": d["prefix"],
        "plugin.name": "pgoutput",
        "slot.name": d["slot"],
        "publication.name": d["publication"],
        "publication.autocreate.mode": "disabled",
        "table.include.list": ",".join(f"{schema}.{t}" for t in TABLES),
        "snapshot.mode": "initial",
        "tombstones.on.delete": "true",
        "skipped.operations": "none",
        "decimal.handling.mode": "string",
        "topic.creation.default.replication.factor": "1",
        "topic.creation.default.partitions": "1",
        "exactly.once.support": "requested",
        "transaction.boundary": "poll",
    }
    d["client"], d["admin"] = client, admin
    yield d
    # teardown: connector (and its offsets), slot, publication, schema, topics, targets, state rows
    try:
        if client.status(d["connector"]) is not None:
            client.stop(d["connector"])
            client.wait_stopped(d["connector"])
            client.reset_offsets(d["connector"])
    finally:
        client.delete(d["connector"])
        for _ in range(30):
            state = slot_state(admin, d["slot"])
            if state is None or not state.active:
                break
            time.sleep(1)
        with admin.cursor() as cur:
            slots.drop_slot(cur, d["slot"])
            cur.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(d["publication"])))
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        admin.close()
        kafka = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})  # alive until the deletes finish
        for future in kafka.delete_topics(list(d["topics"].values()), operation_timeout=30).values():
            future.result(60)
        wh = psycopg2.connect(lab.pg_dsn("warehouse"))
        wh.autocommit = True
        for target in d["targets"].values():
            execute(wh, f"DROP TABLE IF EXISTS {target}, {target}__deleted")
        for table in ("state.kafka_offsets", "state.kafka_group_targets", "dlq.kafka_records"):
            execute(wh, f"DELETE FROM {table} WHERE consumer_group = %s", (d["group"],))
        wh.close()


def run_replication(d):
    return replicate(
        [f"{d['schema']}.{t}" for t in TABLES],
        group=d["group"],
        topic_prefix=d["prefix"],
        target_schema="core",
        target_prefix=f"{d['schema']}__",
        batch_size=200,
        max_seconds=120,
        who="test_cdc_slot_drill",
    )


def assert_equal_without_duplicates(d, shop_db, warehouse_db, assert_tables_equal):
    for t in TABLES:
        assert_tables_equal(f"shop:{d['schema']}.{t}", f"warehouse:{d['targets'][t]}", key="id")
        total, distinct = row_count(warehouse_db, d["targets"][t])
        assert total == distinct == row_count(shop_db, f"{d['schema']}.{t}")[0]


def replicate_a_first_time(lab, d, shop_db, warehouse_db, assert_tables_equal):
    schema, items, notes = d["schema"], d["topics"]["items"], d["topics"]["notes"]
    write(shop_db, schema, "items", inserts=range(1, 61))
    write(shop_db, schema, "notes", inserts=range(1, 31))
    d["client"].register(d["connector"], d["config"], timeout=180)
    write(shop_db, schema, "items", inserts=range(61, 71), updates=(1, 2, 3), deletes=(4, 5))
    write(shop_db, schema, "notes", updates=(7,), deletes=(8,))
    wait_topic(lab, items, lambda rs: len(rs) >= 60 + 10 + 3 + 2 * 2)
    wait_topic(lab, notes, lambda rs: len(rs) >= 30 + 1 + 2)
    run_replication(d)
    assert_equal_without_duplicates(d, shop_db, warehouse_db, assert_tables_equal)


def lose_the_slot_and_write_on(d, shop_db):
    """Stop the connector, wait until its slot is inactive, drop it; then change the source."""
    client, admin, slot, schema = d["client"], d["admin"], d["slot"], d["schema"]
    client.stop(d["connector"])
    client.wait_stopped(d["connector"])
    deadline = time.monotonic() + 60
    while (state := slot_state(admin, slot)) is not None and state.active and time.monotonic() < deadline:
        time.sleep(1)
    with admin.cursor() as cur:
        assert slots.drop_slot(cur, slot)
    write(shop_db, schema, "items", inserts=range(71, 91), updates=(1, 61, 62), deletes=(6, 7, 63))
    write(shop_db, schema, "notes", inserts=range(31, 36), deletes=(9, 10))


def test_release_slot_leaves_an_active_slot_and_drops_it_once_its_consumer_lets_go(lab, names):
    """The cleanup helper of the benchmarks: a slot still streamed from is not dropped within the wait;
    one whose consumer disconnects during the wait is; a missing slot is no error."""
    from psycopg2.extras import LogicalReplicationConnection

    slot = names("release")
    admin = psycopg2.connect(lab.pg_dsn("shop", role="postgres"))
    admin.autocommit = True
    stream = None
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
            stream = psycopg2.connect(
                lab.pg_dsn("shop", role="postgres"), connection_factory=LogicalReplicationConnection
            )
            stream.cursor().start_replication(slot_name=slot, decode=True)
            deadline = time.monotonic() + 30
            while not slot_state(admin, slot).active and time.monotonic() < deadline:
                time.sleep(0.2)
            assert slot_state(admin, slot).active

            assert slots.release_slot(cur, slot, timeout=1) is False
            assert slot_state(admin, slot) is not None  # still streamed from: left alone

            letting_go = threading.Timer(1.5, stream.close)
            letting_go.start()
            started = time.monotonic()
            assert slots.release_slot(cur, slot, timeout=30) is True
            letting_go.join()
            assert time.monotonic() - started >= 1.0  # it waited for the consumer
            assert slot_state(admin, slot) is None

            assert slots.release_slot(cur, slot, timeout=1) is False  # missing: nothing to drop
    finally:
        if stream is not None and not stream.closed:
            stream.close()
        admin.close()  # an inactive slot left by a failure goes with the names teardown


def test_a_dropped_slot_is_detected_loudly_and_recovered_by_a_resnapshot(
    lab, drill, shop_db, warehouse_db, assert_tables_equal
):
    d, client, admin = drill, drill["client"], drill["admin"]
    schema, slot, connector = d["schema"], d["slot"], d["connector"]
    items, notes = d["topics"]["items"], d["topics"]["notes"]

    # 1. rows before the connector exists: its initial snapshot brings them; then streamed changes
    replicate_a_first_time(lab, d, shop_db, warehouse_db, assert_tables_equal)
    assert slots.check_connector(client, admin.cursor(), connector).name == slot

    # 2. the connector stops (its task releases the slot) and the slot is dropped; the source goes on:
    #    inserts, updates and deletes that no slot records
    lose_the_slot_and_write_on(d, shop_db)

    # 3. detected loudly, before anything restarts the connector: the check and the health metric
    with pytest.raises(
        slots.SlotLost, match=rf"replication slot {slot} does not exist \(connector {connector}\)"
    ):
        slots.check_connector(client, admin.cursor(), connector)
    (graded,) = health.replication_slots(shop_db, [slot], warn=1e6, alert=1e9, all_slots=False)
    assert graded.status == "alert" and graded.value is None and graded.detail.startswith("CRITICAL")
    ends_before = {
        t: {p: high for p, (_low, high) in end_offsets(lab.kafka_bootstrap, t).items()}
        for t in (items, notes)
    }

    # 4. recovery: re-snapshot through the connector (offsets reset: a first start with snapshot.mode
    #    initial creates the slot with an exported snapshot), targets emptied, group at the snapshot start
    wh = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        starts = slots.recover(
            client,
            admin.cursor(),
            wh,
            connector,
            lab.kafka_bootstrap,
            d["group"],
            {d["topics"][t]: d["targets"][t] for t in TABLES},
            timeout=240,
        )
    finally:
        wh.close()
    assert starts == ends_before  # the topics' ends while the connector was stopped
    state = slots.check_connector(client, admin.cursor(), connector)
    assert state.wal_status != "lost"
    snapshot = [
        parse_debezium(m.key(), m.value(), items)
        for m in read_topic(lab.kafka_bootstrap, items)
        if m.offset() >= starts[items][0]
    ]
    reads = sorted(c.key["id"] for c in snapshot if getattr(c, "op", None) == "r")
    with shop_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "items")))
        assert reads == [r[0] for r in cur.fetchall()]  # every row, once, deleted ones absent
    run_replication(d)
    assert_equal_without_duplicates(d, shop_db, warehouse_db, assert_tables_equal)
    for t in ("items", "notes"):
        with warehouse_db.cursor() as cur:
            cur.execute(
                "SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s AND topic = %s",
                (d["group"], d["topics"][t]),
            )
            (next_offset,) = cur.fetchone()
        assert next_offset > starts[d["topics"][t]][0]

    # 5. streaming goes on from the new slot: later changes arrive once
    n_items = len(read_topic(lab.kafka_bootstrap, items))
    write(shop_db, schema, "items", inserts=range(91, 96), updates=(90,), deletes=(1,))
    wait_topic(lab, items, lambda rs: len(rs) >= n_items + 5 + 1 + 2)
    run_replication(d)
    assert_equal_without_duplicates(d, shop_db, warehouse_db, assert_tables_equal)


def test_a_plain_restart_after_a_lost_slot_fails_and_recover_still_repairs_it(
    lab, drill, shop_db, warehouse_db, assert_tables_equal
):
    """Why the loss is said before anyone restarts the connector, and why a restart is no remedy: resumed
    with its stored offset and no slot, Debezium (snapshot.mode=initial) fails the task — the position is
    no longer available. :func:`cdclab.cdc.slots.recover` repairs the connector from that failed state
    too (stopped, offsets reset, snapshot), and the warehouse ends equal to the source."""
    d, client, admin = drill, drill["client"], drill["admin"]
    connector = d["connector"]
    replicate_a_first_time(lab, d, shop_db, warehouse_db, assert_tables_equal)
    lose_the_slot_and_write_on(d, shop_db)

    client.resume(connector)  # the anti-pattern: restart without looking at the slot
    deadline, trace = time.monotonic() + 120, ""
    while time.monotonic() < deadline:
        _state, tasks, trace = client.state(connector)
        if "FAILED" in tasks:
            break
        time.sleep(1)
    assert "no longer available on the server" in trace, trace[:500]

    wh = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        slots.recover(
            client,
            admin.cursor(),
            wh,
            connector,
            lab.kafka_bootstrap,
            d["group"],
            {d["topics"][t]: d["targets"][t] for t in TABLES},
            timeout=240,
        )
    finally:
        wh.close()
    run_replication(d)
    assert_equal_without_duplicates(d, shop_db, warehouse_db, assert_tables_equal)
    with warehouse_db.cursor() as cur:  # the gap's inserts and the gap's deletes are both there
        cur.execute(f"SELECT id FROM {d['targets']['items']} WHERE id IN (6, 7, 63, 71, 90) ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == [71, 90]
