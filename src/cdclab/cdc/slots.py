"""Replication slots of Debezium connectors: retained WAL, a lost slot said loudly, and the recovery by
re-snapshot into a warehouse equal to the source.

Vocabulary:
- *slot*: the logical replication slot a Debezium Postgres connector streams from (its ``slot.name``,
  default ``debezium``). The slot keeps the WAL from its ``restart_lsn`` on until the connector confirms it.
- *retained WAL*: ``pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)`` bytes the slot holds on the
  server's disk. It grows while the connector is down or slow; ``max_slot_wal_keep_size`` caps it (lab:
  4GB) by *invalidating* the slot. :func:`cdclab.ops.health.replication_slots` grades it per slot.
- *lost slot*: *missing* (dropped by hand, a restored or upgraded cluster, ``slot.drop.on.stop``) or
  *invalidated* (``wal_status = 'lost'``: the WAL it needed is removed). The changes committed after the
  connector's last streamed position are then not in Kafka and never will be: only a snapshot repairs it.
- *why loud, and why not just restart*: the gap cannot be read from anywhere, so it must be said before
  anyone restarts the connector, with the remedy. A plain restart does not repair it: Debezium 3.6 in
  ``snapshot.mode=initial`` fails the task ("... no longer available on the server. Reconfigure the
  connector to use a snapshot mode when needed", seen in the drill); in ``when_needed`` it re-snapshots
  by itself, but a snapshot carries no deletes, so rows deleted during the gap stay in the warehouse and
  the consumer is not told to rebuild. :func:`check_connector` raises :class:`SlotLost` with the remedy.
- *re-snapshot* (:func:`resnapshot`): stop the connector (its task releases the slot), drop an
  invalidated slot, forget the connector's source offsets (Kafka Connect's ``DELETE .../offsets``), resume.
  With no offsets Debezium's ``initial`` and ``when_needed`` modes both do a first start: create the slot
  with an exported snapshot, read every row (``op = r``) at the slot's consistent point, then stream from
  that point, so nothing between the snapshot and the stream is lost or read twice.
- *snapshot start*: the topics' end offsets while the connector was stopped: every record from there on
  was written by the re-snapshot or after it.
- *rebuild* (:func:`rebuild_targets`): the snapshot brings every row that exists, not the deletes made
  during the gap. So the target (and its delete ledger) is emptied and the consumer group set to the
  snapshot start, in one warehouse transaction under the group's lock; the next replication run reads the
  snapshot and the stream after it, and the target equals the source. Readers of the target see it fill
  up again during that run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from cdclab.cdc import consumer as kc
from cdclab.cdc.connect import ConnectClient
from cdclab.common.db import ident

DEFAULT_SLOT = "debezium"  # Debezium's default slot.name


class SlotLost(RuntimeError):
    """A connector's replication slot is missing or invalidated: changes since its last position are gone
    from the WAL; the message names the slot, the connector and the remedy (a re-snapshot)."""


class SnapshotTimeout(RuntimeError):
    """The re-snapshot did not finish writing its rows into the topics in time."""


@dataclass(frozen=True)
class SlotState:
    name: str
    plugin: str | None
    database: str | None
    active: bool
    wal_status: str | None  # reserved | extended | unreserved | lost (PG 13+)
    restart_lsn: str | None
    confirmed_flush_lsn: str | None
    retained_bytes: int | None  # WAL held by the slot; None when the slot has no restart_lsn (lost)


SLOTS_SQL = """
SELECT slot_name, plugin, database, active, wal_status, restart_lsn::text, confirmed_flush_lsn::text,
       CASE WHEN restart_lsn IS NULL THEN NULL
            ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END
FROM pg_replication_slots ORDER BY slot_name
"""


def slot_states(cur: Any) -> dict[str, SlotState]:
    """Every replication slot of the server (``pg_replication_slots``) with the WAL it retains."""
    cur.execute(SLOTS_SQL)
    return {
        r[0]: SlotState(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6], None if r[7] is None else int(r[7]))
        for r in cur.fetchall()
    }


def lost_reason(slot: str, state: SlotState | None) -> str | None:
    """Why ``slot`` can no longer deliver every change (missing, invalidated), or None if it can."""
    if state is None:
        return f"replication slot {slot} does not exist"
    if state.wal_status == "lost":
        return (
            f"replication slot {slot} is invalidated (wal_status = 'lost'): the WAL it needed was removed "
            "(max_slot_wal_keep_size)"
        )
    return None


def remedy(connector: str) -> str:
    return (
        f"Remedy: re-snapshot the connector and rebuild its targets — cdclab.cdc.slots.recover(...) "
        f"(stops {connector}, drops an invalidated slot, resets its source offsets, resumes it with a "
        "snapshot, empties the targets and points the consumer group at the snapshot), then run the "
        "replication. Do NOT just restart the connector: with snapshot.mode=initial its task fails, with "
        "when_needed it re-snapshots by itself but the rows deleted during the gap stay in the targets."
    )


def connector_slot(config: Mapping[str, Any]) -> str:
    """The slot name a Debezium Postgres connector config uses."""
    return str(config.get("slot.name") or DEFAULT_SLOT)


def require_slot(cur: Any, slot: str, connector: str = "") -> SlotState:
    """The slot's state; :class:`SlotLost` when it is missing or invalidated."""
    state = slot_states(cur).get(slot)
    reason = lost_reason(slot, state)
    if reason is not None:
        who = f" (connector {connector})" if connector else ""
        raise SlotLost(
            f"{reason}{who}: changes committed since the connector last streamed are not in Kafka and "
            f"cannot be read from the WAL any more. {remedy(connector or '<connector>')}"
        )
    assert state is not None
    return state


def check_connector(client: ConnectClient, shop_cur: Any, connector: str) -> SlotState:
    """Look up ``connector``'s slot and require it (see :func:`require_slot`)."""
    config = client.config(connector)
    if config is None:
        raise SlotLost(f"connector {connector} is not registered in {client.url}; cannot check its slot")
    return require_slot(shop_cur, connector_slot(config), connector)


def drop_slot(cur: Any, slot: str) -> bool:
    """Drop an *inactive* slot; True if it existed. Needs a role with REPLICATION (or a superuser)."""
    cur.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    return cur.rowcount == 1


def release_slot(cur: Any, slot: str, timeout: float = 10.0, poll: float = 0.5) -> bool:
    """Drop ``slot`` once it is inactive: wait up to ``timeout`` seconds for its consumer to let go (a
    deleted or stopped connector's task releases its slot within seconds), then drop it if it is inactive.
    True if it was dropped; False if it does not exist or is still active (then it is left alone). For
    cleanups (benchmarks, tests) of a connector the caller has just deleted; see :func:`drop_slot` for
    the drop that fails on an active slot."""
    deadline = time.monotonic() + timeout
    while True:
        cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
        if row is None or not row[0] or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    cur.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s AND NOT active",
        (slot,),
    )
    return cur.rowcount == 1


def topic_ends(bootstrap: str, topics: Sequence[str]) -> dict[str, dict[int, int]]:
    """topic -> partition -> end offset (0 for a partition of a topic that does not exist yet)."""
    from cdclab.cdc.offsets import end_offsets

    out: dict[str, dict[int, int]] = {}
    for topic in topics:
        bounds = end_offsets(bootstrap, topic)
        out[topic] = {p: high for p, (_low, high) in bounds.items()} or {0: 0}
    return out


def snapshot_marker(value: bytes | str | None) -> str | None:
    """How a Debezium record tells where the snapshot is: ``"last"`` (the snapshot's last record),
    ``"last_in_data_collection"`` (a table's last snapshot record), ``"stream"`` (a streamed change: the
    snapshot is over), or None (any other record)."""
    if not value:
        return None
    try:
        payload = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(payload, dict) and "payload" in payload and "schema" in payload:
        payload = payload["payload"]
    if not isinstance(payload, dict) or not isinstance(payload.get("source"), dict):
        return None
    snap = str(payload["source"].get("snapshot", "false")).lower()
    if snap in ("last", "last_in_data_collection"):
        return snap
    if snap in ("false", "") and payload.get("op") in ("c", "u", "d", "t"):
        return "stream"
    return None


def snapshot_finished(bootstrap: str, starts: Mapping[str, Mapping[int, int]], timeout: float = 10.0) -> bool:
    """Whether the records after ``starts`` show the snapshot is over: its last record, a streamed change
    (Debezium streams only after its whole snapshot), or each topic's last snapshot record."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdclab-slots-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "error",
        }
    )
    try:
        pending: dict[tuple[str, int], int] = {}
        assign = []
        for topic, parts in starts.items():
            md = consumer.list_topics(topic, timeout=timeout)
            if topic not in md.topics or md.topics[topic].error is not None:
                continue
            for p in md.topics[topic].partitions:
                _low, high = kc.watermarks(consumer, topic, p, timeout)
                start = parts.get(p, 0)
                if high > start:
                    pending[(topic, p)] = high
                    assign.append(TopicPartition(topic, p, start))
        if not assign:
            return False
        consumer.assign(assign)
        tables_done: set[str] = set()
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error() is not None:
                    continue
                marker = snapshot_marker(m.value())
                topic, partition, offset = str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)
                if marker in ("last", "stream"):
                    return True
                if marker == "last_in_data_collection":
                    tables_done.add(topic)
                    if tables_done >= set(starts):
                        return True
                if offset + 1 >= pending.get((topic, partition), 0):
                    pending.pop((topic, partition), None)
        return False
    finally:
        consumer.close()


def resnapshot(
    client: ConnectClient,
    admin_cur: Any,
    connector: str,
    bootstrap: str,
    topics: Sequence[str],
    timeout: float = 300,
) -> dict[str, dict[int, int]]:
    """Re-snapshot ``connector`` (see the module docstring); returns the *snapshot start* per topic.

    ``admin_cur``: a cursor on the connector's database as a role that may drop a slot (REPLICATION or
    superuser); used only when the slot exists but is invalidated. ``topics``: the connector's table
    topics that targets are built from."""
    config = client.config(connector)
    if config is None:
        raise SlotLost(f"connector {connector} is not registered in {client.url}")
    slot = connector_slot(config)
    client.stop(connector)
    client.wait_stopped(connector, timeout=min(timeout, 120))
    state = slot_states(admin_cur).get(slot)
    if state is not None and state.wal_status == "lost":
        drop_slot(admin_cur, slot)  # Debezium cannot stream from it; the resumed connector creates it anew
    starts = topic_ends(bootstrap, topics)  # the connector is stopped: nothing is written past these
    client.reset_offsets(connector)
    client.resume(connector)
    client.wait_running(connector, timeout=min(timeout, 120))
    deadline = time.monotonic() + timeout
    while not snapshot_finished(bootstrap, starts):
        if time.monotonic() > deadline:
            raise SnapshotTimeout(
                f"connector {connector} resumed without offsets but its snapshot did not finish within "
                f"{timeout:.0f}s (no last snapshot record, no streamed change after {starts}); see the "
                "Connect log (make logs S=connect)"
            )
        time.sleep(1)
    require_slot(admin_cur, slot, connector)  # Debezium created it before the snapshot
    return starts


def rebuild_targets(
    wh_conn: Any,
    group: str,
    targets: Mapping[str, str],
    starts: Mapping[str, Mapping[int, int]],
    who: str = "cdclab.cdc.slots.rebuild_targets",
    lock_wait_seconds: float = 60,
) -> None:
    """Empty each target (``topic -> target``) and its delete ledger and set ``group`` on each topic to the
    snapshot start, in one transaction, holding the group's lock (no run of the group is consuming)."""
    kc.lock_group(wh_conn, group, lock_wait_seconds)
    try:
        with wh_conn, wh_conn.cursor() as cur:
            kc.ensure_schema(cur)
            for topic, target in targets.items():
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (target,))
                if cur.fetchone()[0]:
                    cur.execute(sql.SQL("TRUNCATE {}").format(ident(target)))
                cur.execute("SELECT to_regclass(%s) IS NOT NULL", (target + "__deleted",))
                if cur.fetchone()[0]:
                    cur.execute(sql.SQL("TRUNCATE {}").format(ident(target + "__deleted")))
                kc.reset_offsets(cur, group, topic, dict(starts[topic]), who)
    finally:
        kc.unlock_group(wh_conn, group)


def recover(
    client: ConnectClient,
    admin_cur: Any,
    wh_conn: Any,
    connector: str,
    bootstrap: str,
    group: str,
    targets: Mapping[str, str],
    timeout: float = 300,
) -> dict[str, dict[int, int]]:
    """:func:`resnapshot` then :func:`rebuild_targets`; the caller's next replication run of ``group``
    (e.g. :func:`cdclab.cdc.pipeline.replicate`) rebuilds the targets from the snapshot."""
    starts = resnapshot(client, admin_cur, connector, bootstrap, list(targets), timeout)
    rebuild_targets(wh_conn, group, targets, starts)
    return starts
