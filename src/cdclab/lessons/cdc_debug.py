"""71.8.3 CDC debugging: consumer offsets against the topic, one key's events traced to the target,
the topic's messages and dead letters inspected, and a replay into a scratch table compared with the
target, for ``dags/71_08_03_cdc_debug.py``.

Vocabulary:
- *debug run*: :class:`CdcDebugRun`, the source table, consumer group, target naming, Kafka connection
  and findings table one DAG run works on; its :attr:`~CdcDebugRun.topic` is ``shop.<source table>``,
  its :attr:`~CdcDebugRun.target` ``<schema>.<prefix><table>`` and :attr:`~CdcDebugRun.scratch` the
  target's name with ``__replay``.
- *offset verdict*: per partition ``caught_up``, ``lagging``, ``ahead_of_topic`` (the stored offset is
  past the topic's end) or ``below_retention`` (below the earliest offset still kept); ``no_offsets``
  when the group has none for the topic.
- *replay*: the events between ``replay_from_offset`` and the group's stored offsets applied to an empty
  scratch table with the same merge (:func:`cdclab.cdc.merge.apply_changes`); every key they touch must
  end equal in scratch and target (:class:`cdclab.ops.diagnostics.ReplayMismatchError` otherwise).

Every step writes findings (:func:`cdclab.ops.diagnostics.record_finding`) into the findings table.
"""

from __future__ import annotations

from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from cdclab.cdc import offsets
from cdclab.cdc.consumer import stored_offsets
from cdclab.cdc.inspect import read_topic
from cdclab.cdc.merge import apply_changes, ensure_target, primary_key, target_columns
from cdclab.cdc.pipeline import kafka_bootstrap, routes_for
from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, transaction
from cdclab.ops import diagnostics as d

CHANGE_OPS = ("c", "u", "r", "d")


@dataclass(frozen=True)
class CdcDebugRun:
    source_table: str
    consumer_group: str
    target_schema: str
    target_prefix: str
    findings_table: str
    kafka_conn_id: str
    dag_id: str
    run_id: str

    @property
    def topic(self) -> str:
        return f"shop.{self.source_table}"

    @property
    def target(self) -> str:
        return f"{self.target_schema}.{self.target_prefix}{self.source_table.split('.')[-1]}"

    @property
    def scratch(self) -> str:
        return self.target + "__replay"

    def finding(self, cur: Any, **kw: Any) -> None:
        """Append one finding of this run (no commit)."""
        d.record_finding(cur, self.findings_table, dag_id=self.dag_id, run_id=self.run_id, **kw)

    def records(self) -> list[Any]:
        """Every message of the topic, from the beginning."""
        return read_topic(kafka_bootstrap(self.kafka_conn_id), self.topic)


def _rows_by_key(cur: Any, table: str, key: str) -> dict[Any, dict[str, Any]]:
    cols = target_columns(cur, table)
    cur.execute(
        sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, cols)), ident(table))
    )
    return {r[cols.index(key)]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}


def check_offsets(r: CdcDebugRun, check: str) -> int:
    """Record one ``check`` finding per partition of the topic: the group's stored offset against the
    topic's retention and end. Returns the group's total lag."""
    bootstrap = kafka_bootstrap(r.kafka_conn_id)
    total = 0
    with transaction(WAREHOUSE) as cur:
        d.ensure_findings(cur, r.findings_table)
        ends = offsets.end_offsets(bootstrap, r.topic)
        rows = [o for o in offsets.report(cur, bootstrap, r.consumer_group) if o.topic == r.topic]
        if not rows:
            r.finding(cur, check=check, subject=r.topic, verdict="no_offsets")
        for o in rows:
            low = ends.get(o.partition, (0, 0))[0]
            if o.end_offset is not None and o.next_offset > o.end_offset:
                verdict = "ahead_of_topic"
            elif o.next_offset < low:
                verdict = "below_retention"
            else:
                verdict = "caught_up" if o.lag == 0 else "lagging"
            total += o.lag or 0
            r.finding(
                cur,
                check=check,
                subject=f"{r.topic}[{o.partition}]",
                verdict=verdict,
                detail={
                    "next_offset": o.next_offset,
                    "end_offset": o.end_offset,
                    "lag": o.lag,
                    "updated_by": o.updated_by,
                },
            )
    return total


def trace(r: CdcDebugRun, trace_key: Any) -> str:
    """Record an ``event_trace`` finding per message of ``trace_key`` and a ``trace_result``: ``match``
    (the target holds the last event's version), ``deleted``, ``mismatch`` or ``no_events``. Returns it."""
    records = r.records()
    with closing(connect(SHOP)) as shop, shop.cursor() as cur:
        (key,) = primary_key(cur, r.source_table)
    last_kind: str | None = None
    last_event: Any = None
    with transaction(WAREHOUSE) as cur:
        for msg in records:
            k = d.record_key(msg)
            if k is None or k.get(key) != trace_key:
                continue
            kind, event = d.classify_record(msg)
            detail: dict[str, Any] = {}
            if kind in CHANGE_OPS:
                row = event.after or event.before or {}
                detail = {"version": row.get("version"), "position": event.position, "tx_id": event.tx_id}
                last_kind, last_event = kind, event
            r.finding(
                cur,
                check="event_trace",
                subject=f"{r.topic}[{msg.partition()}]@{msg.offset()}",
                verdict=kind,
                detail=detail,
            )
        row = _rows_by_key(cur, r.target, key).get(trace_key)
        target_version = None if row is None else row.get("version")
        if last_kind is None:
            verdict = "no_events"
        elif last_kind == "d":
            verdict = "deleted" if row is None else "mismatch"
        else:
            event_version = (last_event.after or {}).get("version")
            verdict = "match" if row is not None and target_version == event_version else "mismatch"
        r.finding(
            cur,
            check="trace_result",
            subject=str(trace_key),
            verdict=verdict,
            detail={"last_op": last_kind, "target_version": target_version},
        )
    return verdict


def inspect(r: CdcDebugRun) -> dict[str, int]:
    """Count the topic's messages by kind (op or ``malformed``) into a ``message_inspection`` finding and
    record a ``dead_letter`` finding per dead letter of the group on the topic (``none`` without any).
    Returns the counts."""
    counts = Counter(d.classify_record(m)[0] for m in r.records())
    with transaction(WAREHOUSE) as cur:
        r.finding(
            cur,
            check="message_inspection",
            subject=r.topic,
            verdict="malformed_present" if counts["malformed"] else "ok",
            detail=dict(sorted(counts.items())),
        )
        cur.execute(
            "SELECT kafka_partition, kafka_offset, reason, left(record_value, 60) FROM dlq.kafka_records "
            "WHERE consumer_group = %s AND topic = %s ORDER BY kafka_partition, kafka_offset",
            (r.consumer_group, r.topic),
        )
        dead = cur.fetchall()
        for partition, offset, reason, value in dead:
            r.finding(
                cur,
                check="dead_letter",
                subject=f"{r.topic}[{partition}]@{offset}",
                verdict="dead_letter",
                detail={"reason": reason, "value_prefix": value},
            )
        if not dead:
            r.finding(cur, check="dead_letter", subject=r.topic, verdict="none")
    return dict(counts)


def replay(r: CdcDebugRun, from_offset: int) -> None:
    """Replay the events from ``from_offset`` up to the group's stored offsets into a fresh scratch table
    and record a ``replay_test`` finding (``identical`` or ``mismatch`` with the differing keys);
    :class:`cdclab.ops.diagnostics.ReplayMismatchError` on a mismatch."""
    (route,) = routes_for(
        [r.source_table], topic_prefix="shop", target_schema=r.target_schema, target_prefix=r.target_prefix
    )
    key = route.key[0]
    records = r.records()
    with transaction(WAREHOUSE) as cur:
        upto = stored_offsets(cur, r.consumer_group, r.topic)
        for t in (r.scratch, r.scratch + "__deleted"):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(t)))
        ensure_target(cur, r.scratch, list(route.types.items()), route.key)
        changes, touched, rejected = [], set(), 0
        for msg in records:
            if not from_offset <= msg.offset() < upto.get(msg.partition(), 0):
                continue
            kind, event = d.classify_record(msg)
            if kind == "malformed":
                rejected += 1
                continue
            k = d.record_key(msg)
            if k is not None and key in k:
                touched.add(k[key])
            if kind in CHANGE_OPS:
                changes.append(event)
        if changes:
            apply_changes(cur, r.scratch, route.key, changes, source_types=route.types)
        replayed, real = _rows_by_key(cur, r.scratch, key), _rows_by_key(cur, r.target, key)
        differ = sorted(k for k in touched if replayed.get(k) != real.get(k))
        r.finding(
            cur,
            check="replay_test",
            subject=f"{r.topic}[{from_offset}, {sorted(upto.values())})",
            verdict="mismatch" if differ else "identical",
            detail={"changes": len(changes), "keys": len(touched), "malformed": rejected, "differ": differ},
        )
    if differ:
        raise d.ReplayMismatchError(
            f"replaying {r.topic} from offset {from_offset} into {r.scratch} differs from {r.target} "
            f"for keys {differ}; compare both tables and the events of those keys (event_trace)"
        )
