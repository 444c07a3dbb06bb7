"""Event stream processing: tumbling event-time windows with allowed lateness, exactly once.

A stream of click events is read from one Kafka topic and folded into per-window counts in the
warehouse. Everything a batch changes — the de-duplication ledger, the window counts, the too-late
records, the checkpoint and the consumer offsets — is written in ONE Postgres transaction
(:func:`cdclab.cdc.consumer.consume_into_postgres`), so a consumer killed at any point resumes from
a state that matches its offsets exactly: no event is lost and none is counted twice.

Vocabulary:
- *event time*: when the event happened (``event_time``, set by the client); windows are in event time.
- *ingest time*: when the pipeline got it (``ingest_time``); recorded, never used to place an event.
  Ingest order is the Kafka offset order, which is the order this module reads events in.
- *window*: a tumbling, half-open event-time interval ``[start, start + size)`` aligned to the Unix epoch
  (:class:`cdclab.time.intervals.WindowSpec`); each event belongs to exactly one window.
- *watermark*: ``max event time seen - allowed lateness``: the stream's claim that no event older than
  this will still be accepted. It only moves forward, and only when newer events arrive: a stream that
  goes quiet does not close its last windows.
- *allowed lateness*: how far behind the newest event an event may be and still count.
- *verdict* of one delivered event (:data:`Verdict`), decided in offset order:
  ``duplicate`` (its ``event_id`` was seen before: a producer retry; not counted again),
  ``too_late`` (its window ends at or before the watermark: the window is final; recorded with the
  reason, not counted), ``future`` (its event time is more than the skew tolerance ahead of its ingest
  time: a wrong client clock that would otherwise drag the watermark forward; recorded, not counted),
  ``late`` (its window already ended in event time, ``window end <= max event time``, but not beyond
  the allowed lateness: counted, and the window changes) or ``on_time`` (counted).
- *final*: a window whose end is at or before the watermark; its counts can no longer change.
- *checkpoint*: the window state (counts per window and event type, the ``final`` flags, the seen
  event ids, the max event time and the watermark) stored next to the consumer offsets, in the same
  transaction. Counts are *incremented* per batch; that is only correct because the increments and
  the offsets commit together — an increment outside that transaction double-counts after a crash.
- *de-duplication horizon* (``StreamConfig.dedup_horizon``): the seen-ids ledger would otherwise grow
  with every event ever read (the unbounded-state anti-pattern of 71.6.4). Each batch, in its
  transaction, deletes the ids whose event time is more than the horizon behind the watermark. The
  horizon must be at least one window, and that is the guarantee: a redelivery of a pruned id has an
  event time ``< watermark - horizon <= watermark - window``, so its window has ended before the
  watermark, is final, and the redelivery is ``too_late`` (recorded, never counted). Counts stay exactly
  once; what a pruned id loses is only its label: a duplicate later than the horizon is recorded as
  ``too_late``, not recognised as a ``duplicate``. ``None`` keeps every id (unbounded).

Ordering: the verdicts depend on the order events are read in, so the topic must have exactly one
partition (:class:`MultiPartitionTopicError` otherwise); a multi-partition stream needs one watermark per
partition and the minimum of them, which this lab leaves out.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common import db
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.common.tablenames import SchemaTables, Table
from cdclab.time.intervals import Window, WindowSpec
from cdclab.time.timezones import require_aware

log = logging.getLogger(__name__)

Verdict = Literal["on_time", "late", "duplicate", "too_late", "future"]
COUNTED: frozenset[str] = frozenset({"on_time", "late"})
RECORDED: frozenset[str] = frozenset({"too_late", "future"})
EVENT_FIELDS = ("event_id", "user_id", "event_type", "event_time")


class MalformedClickEventError(ValueError):
    """A record that is not a click event (bad JSON, a missing field, a naive timestamp)."""


class MultiPartitionTopicError(RuntimeError):
    """The topic has more than one partition, so offset order is not one order of the stream."""

    def __init__(self, topic: str, partitions: int) -> None:
        super().__init__(
            f"topic {topic!r} has {partitions} partitions; event-time verdicts here are decided in offset "
            f"order, which only exists for one partition. Use a topic with one partition "
            f"(streams.ensure_topic creates one) or a new topic name."
        )


class StateConfigMismatchError(RuntimeError):
    """The checkpoint was built with another window size or allowed lateness."""

    def __init__(self, group: str, stored: tuple[dt.timedelta, dt.timedelta], wanted: StreamConfig) -> None:
        super().__init__(
            f"consumer group {group!r} checkpointed its windows with size={stored[0]} "
            f"allowed_lateness={stored[1]}, but this run asks for size={wanted.window} "
            f"allowed_lateness={wanted.allowed_lateness}. Windows of two sizes cannot share state: use "
            f"a new table prefix and consumer group, or keep the old settings."
        )


class FinalWindowChangedError(RuntimeError):
    """A count was about to change in a window already marked final (a broken invariant: a bug)."""


@dataclass(frozen=True)
class StreamConfig:
    """How events become windows: tumbling ``window`` size, ``allowed_lateness``, ``skew_tolerance``, and
    how long seen ids are kept for de-duplication (``dedup_horizon``, behind the watermark; ``None``: forever)."""

    window: dt.timedelta = dt.timedelta(minutes=5)
    allowed_lateness: dt.timedelta = dt.timedelta(minutes=2)
    skew_tolerance: dt.timedelta = dt.timedelta(minutes=5)
    dedup_horizon: dt.timedelta | None = None

    def __post_init__(self) -> None:
        if self.window <= dt.timedelta(0):
            raise ValueError(f"window size must be positive, got {self.window}")
        if self.allowed_lateness < dt.timedelta(0) or self.skew_tolerance < dt.timedelta(0):
            raise ValueError(
                f"allowed lateness and skew tolerance must not be negative, got "
                f"{self.allowed_lateness} and {self.skew_tolerance}"
            )
        if self.dedup_horizon is not None and self.dedup_horizon < self.window:
            raise ValueError(
                f"dedup horizon {self.dedup_horizon} is shorter than a window ({self.window}): a redelivery "
                f"of a pruned id could land in a window that is still open and be counted twice. Use a "
                f"horizon of at least one window, or none to keep every id."
            )

    @property
    def spec(self) -> WindowSpec:
        return WindowSpec.tumbling(self.window)

    def window_of(self, event_time: dt.datetime) -> Window:
        return self.spec.window_for(event_time)


@dataclass(frozen=True)
class ClickEvent:
    """One delivered event; ``partition``/``offset`` say where it was read."""

    event_id: str
    user_id: int
    event_type: str
    event_time: dt.datetime
    ingest_time: dt.datetime | None = None
    partition: int = 0
    offset: int = -1


def _instant(value: Any, name: str) -> dt.datetime:
    if not isinstance(value, str):
        raise MalformedClickEventError(f"{name} must be an ISO 8601 string, got {value!r}")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedClickEventError(f"{name} is not ISO 8601: {value!r}") from exc
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise MalformedClickEventError(f"{name} {value!r} has no UTC offset; write e.g. 2026-03-01T00:00:00Z")
    return parsed.astimezone(dt.UTC)


def parse_event(value: bytes | str | None, partition: int = 0, offset: int = -1) -> ClickEvent:
    """A Kafka record value (JSON with ``event_id, user_id, event_type, event_time[, ingest_time]``)."""
    if value is None:
        raise MalformedClickEventError("record has no value (a tombstone is not a click event)")
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedClickEventError(f"value is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise MalformedClickEventError(f"value is JSON {type(doc).__name__}, expected an object")
    missing = [f for f in EVENT_FIELDS if doc.get(f) in (None, "")]
    if missing:
        raise MalformedClickEventError(f"missing field(s) {missing}")
    if not isinstance(doc["user_id"], int) or isinstance(doc["user_id"], bool):
        raise MalformedClickEventError(f"user_id must be an integer, got {doc['user_id']!r}")
    ingest = doc.get("ingest_time")
    return ClickEvent(
        event_id=str(doc["event_id"]),
        user_id=doc["user_id"],
        event_type=str(doc["event_type"]),
        event_time=_instant(doc["event_time"], "event_time"),
        ingest_time=None if ingest is None else _instant(ingest, "ingest_time"),
        partition=partition,
        offset=offset,
    )


def parse_records(
    records: Iterable[Any], label: str = "malformed click event"
) -> tuple[list[ClickEvent], list[tuple[Any, str]]]:
    """The click events of a batch of Kafka records (:func:`parse_event`), in order, and the records that
    are none, each with its reason ``<label>: <what is wrong>`` (a consumer's rejects: dead letters)."""
    events: list[ClickEvent] = []
    rejects: list[tuple[Any, str]] = []
    for msg in records:
        try:
            events.append(parse_event(msg.value(), msg.partition(), msg.offset()))
        except MalformedClickEventError as exc:
            rejects.append((msg, f"{label}: {exc}"))
    return events, rejects


@dataclass(frozen=True)
class Checkpoint:
    """The running state of one stream: max event time seen and what happened to every delivery."""

    max_event_time: dt.datetime | None = None
    deliveries: int = 0
    on_time: int = 0
    late: int = 0
    duplicates: int = 0
    too_late: int = 0
    future: int = 0

    def watermark(self, config: StreamConfig) -> dt.datetime | None:
        """``max event time - allowed lateness``; ``None`` before the first event."""
        return None if self.max_event_time is None else self.max_event_time - config.allowed_lateness


@dataclass(frozen=True)
class Decision:
    event: ClickEvent
    verdict: Verdict
    window: Window
    watermark: dt.datetime | None
    """The watermark when the event was read (before it could move it)."""

    @property
    def reason(self) -> str:
        if self.verdict == "too_late":
            return (
                f"too late: window [{self.window.start.isoformat()}, {self.window.end.isoformat()}) is final, "
                f"the watermark was {self.watermark.isoformat() if self.watermark else None}"
            )
        if self.verdict == "future":
            return (
                f"future: event time {self.event.event_time.isoformat()} is ahead of ingest time "
                f"{self.event.ingest_time.isoformat() if self.event.ingest_time else None} by more than "
                f"the skew tolerance"
            )
        return self.verdict


WindowKey = tuple[dt.datetime, dt.datetime, str]  # (window start, window end, event type)


@dataclass
class BatchOutcome:
    """What :func:`assign` decided for a batch: a verdict per event, count deltas, the next checkpoint."""

    decisions: list[Decision] = field(default_factory=list)
    counts: dict[WindowKey, tuple[int, int]] = field(default_factory=dict)  # -> (events, late events)
    checkpoint: Checkpoint = field(default_factory=Checkpoint)

    def by_verdict(self) -> Counter[str]:
        return Counter(d.verdict for d in self.decisions)


def assign(
    events: Iterable[ClickEvent],
    checkpoint: Checkpoint,
    config: StreamConfig,
    already_seen: Callable[[str], bool] | set[str] | frozenset[str] = frozenset(),
) -> BatchOutcome:
    """Decide every event in order (see *verdict*) and fold the counted ones into window counts.

    Pure: ``already_seen`` answers whether an ``event_id`` was seen in an earlier batch; ids seen
    earlier in this batch are tracked here. The result does not depend on how a stream is cut into
    batches, only on the order of the events.
    """
    seen_before = already_seen if callable(already_seen) else already_seen.__contains__
    seen_now: set[str] = set()
    counts: Counter[WindowKey] = Counter()
    late_counts: Counter[WindowKey] = Counter()
    state = checkpoint
    out = BatchOutcome()
    for event in events:
        require_aware(event.event_time, "event time")
        window = config.window_of(event.event_time)
        watermark = state.watermark(config)
        verdict: Verdict
        if event.event_id in seen_now or seen_before(event.event_id):
            verdict = "duplicate"
        elif event.ingest_time is not None and event.event_time > event.ingest_time + config.skew_tolerance:
            verdict = "future"
        elif watermark is not None and window.end <= watermark:
            verdict = "too_late"
        elif state.max_event_time is not None and window.end <= state.max_event_time:
            verdict = "late"
        else:
            verdict = "on_time"
        if verdict != "duplicate":
            seen_now.add(event.event_id)
        if verdict in COUNTED:
            key = (_py(window.start), _py(window.end), event.event_type)
            counts[key] += 1
            if verdict == "late":
                late_counts[key] += 1
            newest = state.max_event_time
            if newest is None or event.event_time > newest:
                state = replace(state, max_event_time=event.event_time)
        field_name = {"duplicate": "duplicates"}.get(verdict, verdict)
        state = replace(
            state, deliveries=state.deliveries + 1, **{field_name: getattr(state, field_name) + 1}
        )
        out.decisions.append(Decision(event, verdict, window, watermark))
    out.counts = {k: (n, late_counts[k]) for k, n in counts.items()}
    out.checkpoint = state
    return out


def _py(value: dt.datetime) -> dt.datetime:
    """A plain ``datetime`` in UTC (pendulum instances compare and hash the same, but print differently)."""
    return dt.datetime.fromtimestamp(value.timestamp(), tz=dt.UTC)


# --------------------------------------------------------------------------------------------------
# the checkpoint in the warehouse


@dataclass(frozen=True)
class StreamTables(SchemaTables):
    """``<schema>.<prefix>seen | windows | too_late | checkpoint``: one stream's state."""

    schema: str = "marts"
    prefix: str = "clickstream_"

    seen = Table()
    windows = Table()
    too_late = Table()
    checkpoint = Table()


_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {seen} (
    event_id        text PRIMARY KEY,
    event_type      text NOT NULL,
    event_time      timestamptz NOT NULL,
    ingest_time     timestamptz,
    verdict         text NOT NULL CHECK (verdict IN ('on_time', 'late', 'too_late', 'future')),
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS {seen_by_time} ON {seen} (event_time);
CREATE TABLE IF NOT EXISTS {windows} (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    event_type   text NOT NULL,
    events       bigint NOT NULL CHECK (events > 0),
    late_events  bigint NOT NULL DEFAULT 0,
    final        boolean NOT NULL DEFAULT false,
    finalized_at timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, event_type)
);
CREATE TABLE IF NOT EXISTS {too_late} (
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    event_time      timestamptz NOT NULL,
    ingest_time     timestamptz,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    watermark       timestamptz,
    verdict         text NOT NULL,
    reason          text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id)
);
CREATE TABLE IF NOT EXISTS {checkpoint} (
    consumer_group   text PRIMARY KEY,
    window_size      interval NOT NULL,
    allowed_lateness interval NOT NULL,
    max_event_time   timestamptz,
    watermark        timestamptz,
    deliveries       bigint NOT NULL DEFAULT 0,
    on_time          bigint NOT NULL DEFAULT 0,
    late             bigint NOT NULL DEFAULT 0,
    duplicates       bigint NOT NULL DEFAULT 0,
    too_late         bigint NOT NULL DEFAULT 0,
    future           bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text
);
"""


def ensure_tables(cur: Any, tables: StreamTables) -> None:
    ensure_ddl(
        cur,
        f"{tables.schema}.stream",
        sql.SQL(_DDL).format(
            **tables.identifiers(seen_by_time=sql.Identifier(f"{tables.prefix}seen_event_time_idx"))
        ),
    )


def load_checkpoint(cur: Any, tables: StreamTables, group: str, config: StreamConfig) -> Checkpoint:
    """The stored checkpoint of ``group`` (locked for this transaction); a fresh one on first use."""
    cur.execute(
        sql.SQL(
            "SELECT window_size, allowed_lateness, max_event_time, deliveries, on_time, late, duplicates, "
            "too_late, future FROM {} WHERE consumer_group = %s FOR UPDATE"
        ).format(tables.checkpoint),
        (group,),
    )
    row = cur.fetchone()
    if row is None:
        return Checkpoint()
    size, lateness, newest, *numbers = row
    if (size, lateness) != (config.window, config.allowed_lateness):
        raise StateConfigMismatchError(group, (size, lateness), config)
    return Checkpoint(newest, *(int(n) for n in numbers))


def save_checkpoint(
    cur: Any, tables: StreamTables, group: str, config: StreamConfig, cp: Checkpoint, who: str = ""
) -> None:
    cur.execute(
        sql.SQL("""INSERT INTO {t} AS t (consumer_group, window_size, allowed_lateness, max_event_time, watermark,
                       deliveries, on_time, late, duplicates, too_late, future, updated_by)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (consumer_group) DO UPDATE SET max_event_time = EXCLUDED.max_event_time,
                       watermark = EXCLUDED.watermark, deliveries = EXCLUDED.deliveries,
                       on_time = EXCLUDED.on_time, late = EXCLUDED.late, duplicates = EXCLUDED.duplicates,
                       too_late = EXCLUDED.too_late, future = EXCLUDED.future, updated_at = now(),
                       updated_by = EXCLUDED.updated_by""").format(t=tables.checkpoint),
        (
            group,
            config.window,
            config.allowed_lateness,
            cp.max_event_time,
            cp.watermark(config),
            cp.deliveries,
            cp.on_time,
            cp.late,
            cp.duplicates,
            cp.too_late,
            cp.future,
            who or None,
        ),
    )


def seen_ids(cur: Any, tables: StreamTables, event_ids: Sequence[str]) -> set[str]:
    if not event_ids:
        return set()
    cur.execute(
        sql.SQL("SELECT event_id FROM {} WHERE event_id = ANY(%s)").format(tables.seen), (list(event_ids),)
    )
    return {r[0] for r in cur.fetchall()}


def apply_outcome(
    cur: Any, tables: StreamTables, group: str, config: StreamConfig, outcome: BatchOutcome, who: str = ""
) -> int:
    """Write one batch's decisions, count deltas and checkpoint; mark windows final. Returns how many
    windows became final."""
    fresh = [d for d in outcome.decisions if d.verdict != "duplicate"]
    if fresh:
        execute_values(
            cur,
            sql.SQL(
                "INSERT INTO {} (event_id, event_type, event_time, ingest_time, verdict, kafka_partition, "
                "kafka_offset) VALUES %s"
            )
            .format(tables.seen)
            .as_string(cur),
            [
                (
                    d.event.event_id,
                    d.event.event_type,
                    d.event.event_time,
                    d.event.ingest_time,
                    d.verdict,
                    d.event.partition,
                    d.event.offset,
                )
                for d in fresh
            ],
        )
    rejected = [d for d in fresh if d.verdict in RECORDED]
    if rejected:
        execute_values(
            cur,
            sql.SQL(
                "INSERT INTO {} (event_id, event_type, event_time, ingest_time, window_start, window_end, "
                "watermark, verdict, reason, kafka_partition, kafka_offset) VALUES %s "
                "ON CONFLICT (event_id) DO NOTHING"  # a pruned id, rejected again when redelivered
            )
            .format(tables.too_late)
            .as_string(cur),
            [
                (
                    d.event.event_id,
                    d.event.event_type,
                    d.event.event_time,
                    d.event.ingest_time,
                    _py(d.window.start),
                    _py(d.window.end),
                    d.watermark,
                    d.verdict,
                    d.reason,
                    d.event.partition,
                    d.event.offset,
                )
                for d in rejected
            ],
        )
    if outcome.counts:
        rows = [(s, e, t, n, late) for (s, e, t), (n, late) in sorted(outcome.counts.items())]
        changed = execute_values(
            cur,
            sql.SQL("""INSERT INTO {w} AS w (window_start, window_end, event_type, events, late_events)
                       VALUES %s
                       ON CONFLICT (window_start, event_type) DO UPDATE
                       SET events = w.events + EXCLUDED.events, late_events = w.late_events + EXCLUDED.late_events,
                           updated_at = now()
                       WHERE NOT w.final
                       RETURNING 1""")
            .format(w=tables.windows)
            .as_string(cur),
            rows,
            fetch=True,
        )
        if len(changed) != len(rows):
            raise FinalWindowChangedError(
                f"{len(rows) - len(changed)} count(s) targeted a final window in {tables.windows.strings}; "
                f"a final window must never change. Is another consumer group writing to these tables?"
            )
    save_checkpoint(cur, tables, group, config, outcome.checkpoint, who)
    watermark = outcome.checkpoint.watermark(config)
    if watermark is None:
        return 0
    cur.execute(
        sql.SQL(
            "UPDATE {} SET final = true, finalized_at = now() WHERE NOT final AND window_end <= %s"
        ).format(tables.windows),
        (watermark,),
    )
    return int(cur.rowcount)


def prune_seen(cur: Any, tables: StreamTables, config: StreamConfig, cp: Checkpoint) -> int:
    """Delete the seen ids whose event time is more than ``config.dedup_horizon`` behind the watermark of
    ``cp`` (in the caller's transaction); returns how many. Nothing without a horizon or a watermark."""
    watermark = cp.watermark(config)
    if config.dedup_horizon is None or watermark is None:
        return 0
    cur.execute(
        sql.SQL("DELETE FROM {} WHERE event_time < %s").format(tables.seen),
        (watermark - config.dedup_horizon,),
    )
    return int(cur.rowcount)


def batch_handler(
    tables: StreamTables, group: str, config: StreamConfig, who: str = "", totals: Counter[str] | None = None
) -> Callable[[Any, list[Any]], list[tuple[Any, str]]]:
    """A :data:`cdclab.cdc.consumer.BatchHandler`: parse, decide, write — all in the consumer's transaction.
    Malformed records are returned as rejects (the consumer dead-letters them in ``dlq.kafka_records``)."""
    tally: Counter[str] = totals if totals is not None else Counter()

    def handle(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        events, rejects = parse_records(batch)
        checkpoint = load_checkpoint(cur, tables, group, config)
        known = seen_ids(cur, tables, [e.event_id for e in events])
        outcome = assign(events, checkpoint, config, known)
        tally["finalized_windows"] += apply_outcome(cur, tables, group, config, outcome, who)
        tally["pruned_seen_ids"] += prune_seen(cur, tables, config, outcome.checkpoint)
        tally.update(outcome.by_verdict())
        tally["malformed"] += len(rejects)
        return rejects

    return handle


# --------------------------------------------------------------------------------------------------
# Kafka: the topic, a producer and the bounded consumer run
#
# Where a client comes from: an Airflow task names a Kafka connection (``kafka_conn_id``) and gets its
# client from the official provider's hooks (KafkaProducerHook, KafkaAdminClientHook), so addresses,
# SASL/TLS settings and the provider's managed-OAuth callbacks come from the connection's extra. Code that
# runs outside Airflow (tests, bench, the CLI) passes ``bootstrap`` instead and imports no Airflow.

# What produce_events needs of its producer, whatever the connection says: an idempotent producer that
# waits for every in-sync replica. Idempotence stops a retry from writing an event twice *and* from
# reordering a partition (a retried batch behind a later one); the verdicts of this module are decided
# in offset order, so a reordered partition would change them.
PRODUCER_REQUIRED: dict[str, Any] = {"enable.idempotence": True, "acks": "all"}
PRODUCER_DEFAULTS: dict[str, Any] = {"linger.ms": 5}
CONSUMER_ONLY = ("group.id",)  # in the lab's kafka_default extra; a producer only warns about it


class ProducerConfigConflictError(ValueError):
    """The Kafka connection's extra sets a producer property to a value this module cannot work with."""


def _same_setting(key: str, a: Any, b: Any) -> bool:
    def norm(v: Any) -> str:
        s = str(v).strip().lower()
        return "all" if key == "acks" and s == "-1" else s

    return norm(a) == norm(b)


def producer_config(base: dict[str, Any], source: str) -> dict[str, Any]:
    """``base`` (a connection's extra, or just ``bootstrap.servers``) plus :data:`PRODUCER_DEFAULTS` where
    it says nothing and :data:`PRODUCER_REQUIRED`; a required key that ``base`` sets to another value is
    refused (:class:`ProducerConfigConflictError`), never silently overridden. ``source`` names the
    connection in that error."""
    for key, wanted in PRODUCER_REQUIRED.items():
        if key in base and not _same_setting(key, base[key], wanted):
            raise ProducerConfigConflictError(
                f"{source} sets {key}={base[key]!r}, but streams.produce_events needs {key}={wanted!r} "
                f"(an idempotent producer that waits for all replicas: no duplicate and no reordered "
                f"event on a retry). Remove {key!r} from the connection's extra, or give produce_events "
                f"a connection without it."
            )
    config = {**PRODUCER_DEFAULTS, **{k: v for k, v in base.items() if k not in CONSUMER_ONLY}}
    return {**config, **PRODUCER_REQUIRED}


def _check_source(kafka_conn_id: str | None, bootstrap: str | None) -> None:
    if (kafka_conn_id is None) == (bootstrap is None):
        raise ValueError(
            "give exactly one of kafka_conn_id (an Airflow Kafka connection: in tasks) and bootstrap "
            f"(host:port, outside Airflow); got kafka_conn_id={kafka_conn_id!r}, bootstrap={bootstrap!r}"
        )


def producer(*, kafka_conn_id: str | None = None, bootstrap: str | None = None) -> Any:
    """A confluent-kafka ``Producer`` with :func:`producer_config`'s settings.

    With ``kafka_conn_id`` it is the provider's ``KafkaProducerHook(kafka_conn_id).get_producer()``: the
    hook reads the connection's extra as the client config (resolving allow-listed callbacks, adding the
    Google/MSK OAuth callback) and hands the result to its ``_get_client(config)``, the one method each of
    the provider's Kafka hooks overrides to build its client. Our subclass overrides it once more to add
    the producer settings through :func:`producer_config`. Why not a second Airflow connection with those
    settings in its extra: they belong to this code, not to a deployment — a connection that forgot them
    would give duplicates and reordered events without any error, and every lab (native, compose, a
    user's own Airflow) would have to define it. This way the lab's one ``kafka_default`` stays the only
    Kafka connection, and a connection that *contradicts* the settings fails loudly.

    With ``bootstrap`` (tests, bench, the CLI) it is a plain ``Producer`` with the same settings."""
    _check_source(kafka_conn_id, bootstrap)
    if bootstrap is not None:
        from confluent_kafka import Producer

        return Producer(producer_config({"bootstrap.servers": bootstrap}, f"bootstrap {bootstrap!r}"))
    from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
    from confluent_kafka import Producer

    class _StreamProducerHook(KafkaProducerHook):
        def _get_client(self, config: dict[str, Any]) -> Producer:
            return Producer(producer_config(config, f"Airflow connection {self.kafka_config_id!r}"))

    return _StreamProducerHook(kafka_config_id=kafka_conn_id).get_producer()


def _admin(kafka_conn_id: str | None, bootstrap: str | None) -> Any:
    """An ``AdminClient``: the provider's ``KafkaAdminClientHook`` client for a connection, else a plain one."""
    _check_source(kafka_conn_id, bootstrap)
    if bootstrap is not None:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": bootstrap})
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    return KafkaAdminClientHook(kafka_config_id=kafka_conn_id).get_conn


def _partitions(admin: Any, topic: str, timeout: float) -> int | None:
    # all topics, not list_topics(topic=...): a metadata request naming a topic makes a broker with
    # auto.create.topics.enable (the lab's, for Connect) create it with its default partition count
    md = admin.list_topics(timeout=timeout)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None:
        return None
    return len(meta.partitions)


def topic_partitions(
    bootstrap: str | None, topic: str, timeout: float = 10.0, *, kafka_conn_id: str | None = None
) -> int | None:
    """How many partitions ``topic`` has; ``None`` when it does not exist. Give ``bootstrap`` or (with
    ``bootstrap=None``) ``kafka_conn_id``."""
    return _partitions(_admin(kafka_conn_id, bootstrap), topic, timeout)


def ensure_topic(
    topic: str, *, kafka_conn_id: str | None = None, bootstrap: str | None = None, timeout: float = 30.0
) -> None:
    """Create ``topic`` with one partition unless it exists; refuse one with more partitions
    (:class:`MultiPartitionTopicError`).

    With ``kafka_conn_id`` (an Airflow task) the topic is created by the provider's
    ``KafkaAdminClientHook.create_topic`` (which logs and accepts a topic that already exists: a
    concurrent run may create it first); with ``bootstrap`` (outside Airflow) by a plain ``AdminClient``.
    Either way the partition count is read back afterwards, so an existing multi-partition topic is refused."""
    _check_source(kafka_conn_id, bootstrap)
    if kafka_conn_id is not None:
        from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

        hook = KafkaAdminClientHook(kafka_config_id=kafka_conn_id)
        partitions = _partitions(hook.get_conn, topic, timeout)
        if partitions is None:
            hook.create_topic([(topic, 1, 1)])
            partitions = _partitions(hook.get_conn, topic, timeout) or 1
    else:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewTopic

        admin = _admin(None, bootstrap)  # keep a reference until the future resolves
        partitions = _partitions(admin, topic, timeout)
        if partitions is None:
            futures = admin.create_topics(
                [NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=timeout
            )
            try:
                futures[topic].result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            partitions = _partitions(admin, topic, timeout) or 1
    if partitions != 1:
        raise MultiPartitionTopicError(topic, partitions)


def produce_events(
    topic: str,
    events: Iterable[Mapping[str, Any]],
    *,
    kafka_conn_id: str | None = None,
    bootstrap: str | None = None,
    timeout: float = 60.0,
) -> int:
    """Write events (``ClickEvent`` dicts) to ``topic`` in order, keyed by user, through :func:`producer`
    (idempotent, acks=all): from an Airflow task with ``kafka_conn_id``, elsewhere with ``bootstrap``.
    Returns how many were acknowledged; raises when any delivery failed."""
    from confluent_kafka import KafkaException

    kafka = producer(kafka_conn_id=kafka_conn_id, bootstrap=bootstrap)
    errors: list[str] = []
    sent = 0

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for event in events:
        kafka.produce(
            topic,
            key=str(event.get("user_id", "")).encode(),
            value=json.dumps(event).encode(),
            on_delivery=delivered,
        )
        kafka.poll(0)
        sent += 1
    left = kafka.flush(timeout)
    if left or errors:
        raise KafkaException(
            f"{left} event(s) not delivered to {topic} within {timeout}s; errors: {errors[:3]}"
        )
    return sent


def produce_clickstream(
    topic: str,
    n: int,
    *,
    start: dt.datetime,
    seed: int | None = None,
    kafka_conn_id: str | None = None,
    bootstrap: str | None = None,
    **shape: Any,
) -> dict[str, Any]:
    """The producer step of the streaming lessons (71.5.1, 71.9.5): ``n`` generated clickstream events
    (:func:`cdclab.workload.clickstream_events`; ``shape``: its fractions, ``step`` and ``lateness``), the
    first at ``start``, written to ``topic`` (created first if missing, :func:`ensure_topic`) with
    :func:`produce_events`. ``seed`` defaults to ``start`` in whole seconds, so a rerun of the same run
    produces the same events. Returns the topic, the seed, ``start`` (ISO 8601) and the events sent."""
    from cdclab.workload import clickstream_events

    seed = seed if seed is not None else int(start.timestamp())
    events = clickstream_events(seed, n, start=start, **shape)
    ensure_topic(topic, kafka_conn_id=kafka_conn_id, bootstrap=bootstrap)
    sent = produce_events(topic, events, kafka_conn_id=kafka_conn_id, bootstrap=bootstrap)
    return {"topic": topic, "seed": seed, "start": start.isoformat(), "sent": sent}


def process_stream(
    *,
    bootstrap: str,
    topic: str,
    group: str,
    tables: StreamTables = StreamTables(),
    config: StreamConfig = StreamConfig(),
    conn_id: str = db.WAREHOUSE,
    application_name: str = "cdclab",
    batch_size: int = 200,
    max_seconds: float = 300.0,
    who: str = "",
) -> dict[str, Any]:
    """Catch the windows up with ``topic`` (to its end as of the start), exactly once; returns a summary.

    The stream's tables and checkpoint live in the database of the Airflow connection ``conn_id``; every
    connection the run opens carries ``application_name`` (``pg_stat_activity``)."""
    from cdclab.cdc.consumer import consume_into_postgres

    def connect() -> Any:
        return db.connect(conn_id, application_name)

    partitions = topic_partitions(bootstrap, topic)
    if partitions is not None and partitions != 1:
        raise MultiPartitionTopicError(topic, partitions)
    with db.transaction(conn_id, application_name) as cur:
        ensure_tables(cur, tables)
    tally: Counter[str] = Counter()
    result = consume_into_postgres(
        bootstrap=bootstrap,
        topics=[topic],
        group=group,
        connect=connect,
        handler=batch_handler(tables, group, config, who, tally),
        batch_size=batch_size,
        max_seconds=max_seconds,
        who=who,
    )
    with db.transaction(conn_id, application_name) as cur:
        cur.execute(
            sql.SQL("SELECT max_event_time, watermark FROM {} WHERE consumer_group = %s").format(
                tables.checkpoint
            ),
            (group,),
        )
        row = cur.fetchone()
    summary = {
        "records": result.records,
        "batches": result.batches,
        "dead_letters": result.dead_letters,
        "verdicts": {
            k: v for k, v in tally.items() if k not in {"finalized_windows", "malformed", "pruned_seen_ids"}
        },
        "finalized_windows": tally["finalized_windows"],
        "pruned_seen_ids": tally["pruned_seen_ids"],
        "max_event_time": row[0].isoformat() if row and row[0] else None,
        "watermark": row[1].isoformat() if row and row[1] else None,
        "positions": {f"{t}[{p}]": o for (t, p), o in result.positions.items()},
        "seconds": round(result.seconds, 3),
    }
    log.info("event stream %s -> %s: %s", topic, tables.windows.strings, summary)
    return summary
