"""Kafka -> Postgres with exactly-once effect: offsets live in the same transaction as the data.

Vocabulary:
- *offset store*: ``state.kafka_offsets`` in ``warehouse``: one row per (consumer group, topic,
  partition) holding the *next* offset to read. It is written in the same database transaction as
  the rows the batch produced, so either both the rows and the new offset are committed or neither.
- *batch*: the records read in one poll loop (at most ``batch_size``), applied in one transaction.
- *catch-up run*: a bounded run — a task reads until it reaches the partitions' end offsets as they
  were when it started (the *high watermarks*), then stops; the next run starts where it stopped.
- *follow run*: an unbounded run (``follow=`` a :class:`threading.Event`): it keeps polling, applies
  each non-empty poll as one batch (same transaction, guards, dead letters and poison isolation as a
  catch-up run) and stops cleanly when the event is set. For low latency a poll waits at most
  ``poll_timeout`` for the *first* record, then takes only what the client has already fetched (up to
  ``batch_size``): a quiet topic gives batches of one, a busy one gives full batches. A topic that does
  not exist yet (Debezium creates it with the table's first change) is looked up again every
  ``DISCOVER_SECONDS`` and assigned from its start when it appears.
- *dead letter*: a record that cannot be parsed or applied goes to ``dlq.kafka_records`` with the
  reason, in the same transaction, and its offset advances with the others: nothing is lost silently
  and one bad record does not block the partition.
- *poison record*: a record that parses but fails to *apply* (a bad cast, a constraint the target has
  and the source lacks): the batch is rolled back and applied again record by record, each under a
  ``SAVEPOINT``; the failing record is dead-lettered with the database error and its topic, partition
  and offset, the good ones land, exactly once. Schema drift, a TRUNCATE and connection errors are not
  poison: they stop the run with a clear error.

Guards (what keeps two runs, or a run and an operator, from losing or doubling a change):
- *group lock*: a run holds ``pg_advisory_lock`` for its consumer group for its whole duration, on the
  warehouse connection that applies the batches. A second run of the same group *waits* for it (up to
  ``lock_wait_seconds``) and then starts where the first stopped; if the wait times out it fails with
  :class:`GroupBusy`. Two groups never wait for each other.
- *compare-and-set offsets*: a batch moves a partition's stored offset only from the value this run read
  (or last wrote) and only forward; if someone else moved it (``cdclab offsets reset`` during the run),
  the batch is rolled back and the run stops with :class:`OffsetConflict`, leaving their value alone.
- *group binding*: ``state.kafka_group_targets`` records, on a group's first run, which target each
  topic of the group writes to; a run of the same group that writes a topic to another target is
  refused with :class:`GroupTargetMismatch` before it reads anything (a group's offsets only describe
  its own target).
- *no silent offset jump*: ``auto.offset.reset=error``; a stored offset below the topic's earliest offset
  (retention removed records) and a *new* group on a topic whose earliest offset is above 0 (the
  snapshot is gone) both stop with :class:`OffsetOutOfRange` and the remedy.

Why not Kafka's committed offsets: a consumer that commits to Kafka after writing to Postgres
duplicates on a crash between the two; one that commits before loses. Storing the offset with the
data and *seeking* to it on start (``assign`` at the stored offset, auto-commit off, isolation
``read_committed``) removes the window. Kafka's own commit is still done afterwards, for visibility
in tools like ``kafka-consumer-groups``, but nothing reads it back.

Why this module keeps its own poll loop instead of the official Kafka provider's consumer side
(``apache-airflow-providers-apache-kafka``, which the lab uses for producing and topic admin, see
:mod:`cdclab.streams.windows`): the provider's consumers keep their position in *Kafka*. ``AwaitMessageTrigger``
(behind ``AwaitMessageSensor``) subscribes with the connection's ``group.id`` and, with its default
``commit_offset=True``, commits a message's offset to Kafka *before* it yields the ``TriggerEvent``; the
task that writes the data runs afterwards, so a failure in between loses that message, and with
``commit_offset=False`` it is read again instead: at-least-once at best, never exactly once.
``ConsumeFromTopicOperator`` commits to Kafka per batch or per operator (``commit_cadence``), again in a
different system than the rows. Exactly once needs the offsets in the warehouse, in the same
transaction as the data, and a consumer that seeks to them (``assign``), which is this loop.

A follow run holds the group lock for its whole life: a catch-up run of the same group waits for it
(``lock_wait_seconds``) and then fails with :class:`GroupBusy`; stop the follower first.

Fault injection for tests: ``CDCLAB_FAIL_AFTER_BATCHES=N`` makes the process kill itself (SIGKILL,
no cleanup) after applying N batches but before committing the N+1th — a crash mid-stream.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from psycopg2.extras import Json

from cdclab.common.ddl import require

log = logging.getLogger(__name__)

DISCOVER_SECONDS = 2.0
"""How often a follow run looks for topics that did not exist yet."""

FETCH_KAFKA_CONFIG: dict[str, Any] = {"fetch.queue.backoff.ms": 10}
"""Every run's client settings (``kafka_config`` overrides them). librdkafka stops fetching a partition
whose local queue holds ``queued.max.messages.kbytes`` (64 MiB) or ``queued.min.messages`` and then waits
``fetch.queue.backoff.ms`` — 1 s by default — before it fetches again (librdkafka issue #2879). Debezium's
JSON with schemas is ~3.4 kB a record, so 64 MiB is ~20,000 records, which a batch loop drains in well
under a second and then waits for the rest of it: a read_committed consume + decode of 200,000 such
records ran at 27,000 records/s with the default and 72,000 with 10 ms on the lab's 2 cores."""

FOLLOW_KAFKA_CONFIG: dict[str, Any] = {"fetch.wait.max.ms": 100}
"""A follow run's client settings (``kafka_config`` overrides them): the broker answers an empty fetch
after at most 100 ms instead of librdkafka's 500, so a record committed meanwhile is not held back."""


def run_kafka_config(bootstrap: str, group: str) -> dict[str, Any]:
    """The client settings of a run that keeps its own checkpoint (:func:`consume_into_postgres`, and
    :func:`cdclab.streams.exactly_once.consume_at_least_once`): the client neither commits nor stores
    offsets by itself (the run commits once a batch is written), reads only committed records
    (``read_committed``), never jumps silently (``auto.offset.reset`` ``error``: a position outside the
    log is an error, not "start somewhere else"), and :data:`FETCH_KAFKA_CONFIG`."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "error",
        **FETCH_KAFKA_CONFIG,
    }


APPLY_SWITCH_INTERVAL = 0.0005
"""Seconds: the interpreter's thread switch interval while a run overlaps decoding and applying."""

TRANSIENT_CODES = frozenset({-195, -187, -185})  # _TRANSPORT, _ALL_BROKERS_DOWN, _TIMED_OUT
"""Client errors a follow run rides out (librdkafka reconnects by itself); a catch-up run stops on them."""

# the errors of one record's data, not of the run: 22xxx (bad cast, out of range) and 23xxx (constraints)
POISON_ERRORS: tuple[type[BaseException], ...] = (psycopg2.DataError, psycopg2.IntegrityError)

Record = Any  # confluent_kafka.Message
BatchHandler = Callable[[Any, list[Record]], list[tuple[Record, str]]]
"""Applies a batch inside the open transaction (given its cursor); returns (record, reason) rejects."""


class PreparedBatch(list[Record]):
    """A batch handed to the handler with what ``prepare`` made of it (``prepared``): see
    :func:`consume_into_postgres`. A handler that finds no ``prepared`` (a plain list, as in the
    record-by-record retry) does the work itself."""

    prepared: Any = None


class OffsetOutOfRange(RuntimeError):
    """A stored offset is outside what the topic still holds (retention deleted it, or it was reset),
    or a new group would start above offset 0 (the records before, the snapshot, are gone)."""


class OffsetConflict(RuntimeError):
    """A stored offset was moved by someone else during the run (an ``offsets reset``, another consumer)."""


class GroupBusy(RuntimeError):
    """Another run holds the consumer group's lock and did not release it in time."""


class GroupTargetMismatch(RuntimeError):
    """The consumer group is bound to another target for this topic."""


@dataclass
class ConsumeResult:
    records: int = 0
    batches: int = 0
    dead_letters: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    seconds: float = 0.0

    def summary(self, skipped: Mapping[str, int], **extra: Any) -> dict[str, Any]:
        """The counts a replication run returns for logs and XCom: records, batches, dead letters, the
        ``skipped`` counts and the seconds taken, then ``extra`` (what the run wrote)."""
        return {
            "records": self.records,
            "batches": self.batches,
            "dead_letters": self.dead_letters,
            "skipped": dict(skipped),
            "seconds": round(self.seconds, 3),
            **extra,
        }


def watermarks(
    consumer: Any, topic: str, partition: int, timeout: float = 10.0, attempts: int = 20
) -> tuple[int, int]:
    """(earliest, end) offsets of a partition, riding out a leader election (e.g. a broker restart)."""
    from confluent_kafka import KafkaException, TopicPartition

    for attempt in range(attempts):
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            if attempt == attempts - 1 or (
                not exc.args[0].retriable() and exc.args[0].code() not in (6, 3, 5)
            ):
                raise
            time.sleep(min(0.5 * (attempt + 1), 3))
    raise AssertionError("unreachable")


def end_offsets(bootstrap: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """The current end offset of every partition of ``topics`` (missing topics are left out): the
    ``stop_at`` that brings several groups to the same position."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cdclab-end-offsets"})
    try:
        md = consumer.list_topics(timeout=10)
        return {
            (t, p): watermarks(consumer, t, p)[1]
            for t in topics
            if t in md.topics and md.topics[t].error is None
            for p in md.topics[t].partitions
        }
    finally:
        consumer.close()


def past_stop(msg: Any, ends: Mapping[tuple[str, int], int]) -> bool:
    """Whether a record lies at or past its partition's end offset in ``ends``."""
    end = ends.get((msg.topic(), msg.partition()))
    return end is not None and msg.offset() >= end


def reached(consumer: Any, pending: dict[tuple[str, int], int]) -> None:
    """Drop from ``pending`` the partitions whose fetch position has reached their end offset."""
    from confluent_kafka import TopicPartition

    if not pending:
        return
    for tp in consumer.position([TopicPartition(t, p) for (t, p) in list(pending)]):
        key = (tp.topic, tp.partition)
        if key in pending and tp.offset >= 0 and tp.offset >= pending[key]:
            del pending[key]


def check_start(
    group: str,
    topic: str,
    partition: int,
    start: int | None,
    low: int,
    high: int,
    reset_hint: str = "",
    snapshotted: bool = False,
) -> None:
    """Refuse a start position that would skip records silently (see the module doc).

    ``snapshotted``: the caller has requested a snapshot of the topic's table (a Debezium incremental
    snapshot re-reads every row into the topic), so a new group starting at a log start above 0 misses
    nothing the snapshot does not bring back."""
    hint = reset_hint or f"cdclab offsets reset --group {group} --topic {topic} --to earliest"
    if start is None and low > 0 and snapshotted:
        log.info(
            "%s: new group starts %s[%d] at its log start %d; a snapshot was requested",
            group,
            topic,
            partition,
            low,
        )
    elif start is None and low > 0:
        raise OffsetOutOfRange(
            f"{group}: a new consumer group on {topic}[{partition}], whose earliest offset is {low}, not 0: "
            f"the records before it (the snapshot) are gone, starting there would miss them silently. "
            f"Remedy: re-snapshot the source into a fresh target (Debezium incremental snapshot), or, if "
            f"the target already holds those rows, accept the start explicitly: {hint}"
        )
    if start is not None and start < low:
        raise OffsetOutOfRange(
            f"{group}: stored offset {start} for {topic}[{partition}] is below the earliest offset {low} "
            f"still in Kafka (retention removed {low - start} record(s) this group never read). Remedy: "
            f"reload the target from a snapshot, then move the group explicitly: {hint}"
        )
    if start is not None and start > high:
        raise OffsetOutOfRange(
            f"{group}: stored offset {start} for {topic}[{partition}] is beyond the end {high}; "
            f"was the topic recreated? reload the target from a snapshot and reset the offsets: {hint}"
        )


def lock_group(conn: Any, group: str, wait_seconds: float) -> None:
    """Take the session-level advisory lock of ``group`` on ``conn`` (held until the connection closes
    or :func:`unlock_group`); wait up to ``wait_seconds`` for a run that holds it."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "SELECT set_config('lock_timeout', %s, true)", (f"{max(int(wait_seconds * 1000), 1)}ms",)
            )
            cur.execute("SELECT pg_advisory_lock(hashtext('cdclab.kafka_offsets'), hashtext(%s))", (group,))
    except psycopg2.errors.LockNotAvailable:
        raise GroupBusy(
            f"consumer group {group!r} is in use by another run, which still held its lock after "
            f"{wait_seconds:.0f}s; two runs of one group never consume at the same time. Wait for that run "
            "(see pg_stat_activity in warehouse) or use another consumer group"
        ) from None


def unlock_group(conn: Any, group: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_unlock(hashtext('cdclab.kafka_offsets'), hashtext(%s))", (group,))


def bind_targets(cur: Any, group: str, targets: dict[str, str], who: str = "") -> None:
    """Record (on first use) and check which target each topic of ``group`` writes to."""
    for topic, target in targets.items():
        cur.execute(
            "INSERT INTO state.kafka_group_targets (consumer_group, topic, target, bound_by) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (consumer_group, topic) DO NOTHING",
            (group, topic, target, who or None),
        )
        cur.execute(
            "SELECT target, bound_by, bound_at FROM state.kafka_group_targets "
            "WHERE consumer_group = %s AND topic = %s",
            (group, topic),
        )
        bound, by, at = cur.fetchone()
        if bound != target:
            raise GroupTargetMismatch(
                f"consumer group {group!r} replicates {topic} into {bound} (bound by {by or '?'} at {at}); "
                f"this run would write it into {target}. A group's offsets describe one target: use another "
                f"consumer group for {target} (or, to move the group on purpose, delete its row from "
                "state.kafka_group_targets and reload the new target from the beginning)"
            )


def ensure_schema(cur: Any) -> None:
    """Check ``state.kafka_offsets``, ``dlq.kafka_records`` and ``state.kafka_group_targets``: declared by
    infra/postgres/warehouse (V001, V002, V004), applied at lab start; nothing is created here."""
    require(cur, "state.kafka_offsets")


def stored_offsets(cur: Any, group: str, topic: str) -> dict[int, int]:
    cur.execute(
        "SELECT kafka_partition, next_offset FROM state.kafka_offsets "
        "WHERE consumer_group = %s AND topic = %s",
        (group, topic),
    )
    return {int(p): int(o) for p, o in cur.fetchall()}


def save_offsets(cur: Any, group: str, positions: dict[tuple[str, int], int], who: str = "") -> None:
    for (topic, partition), offset in positions.items():
        cur.execute(
            """INSERT INTO state.kafka_offsets (consumer_group, topic, kafka_partition, next_offset, updated_by)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (consumer_group, topic, kafka_partition)
               DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now(), updated_by = EXCLUDED.updated_by""",
            (group, topic, partition, offset, who or None),
        )


def advance_offsets(
    cur: Any,
    group: str,
    positions: dict[tuple[str, int], int],
    expected: dict[tuple[str, int], int | None],
    who: str = "",
) -> None:
    """Compare-and-set: move each partition's stored offset from ``expected`` (what this run read or last
    wrote; None = no row) to ``positions``, forward only. Raises :class:`OffsetConflict` when the stored
    value is not the expected one (the caller's transaction must then roll back)."""
    for (topic, partition), offset in positions.items():
        before = expected.get((topic, partition))
        if before == offset:
            continue
        if before is not None and offset < before:
            raise OffsetConflict(
                f"{group}: refusing to move {topic}[{partition}] backwards from {before} to {offset}"
            )
        if before is None:
            cur.execute(
                "INSERT INTO state.kafka_offsets (consumer_group, topic, kafka_partition, next_offset, "
                "updated_by) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (group, topic, partition, offset, who or None),
            )
        else:
            cur.execute(
                "UPDATE state.kafka_offsets SET next_offset = %s, updated_at = now(), updated_by = %s "
                "WHERE consumer_group = %s AND topic = %s AND kafka_partition = %s AND next_offset = %s",
                (offset, who or None, group, topic, partition, before),
            )
        if cur.rowcount != 1:
            cur.execute(
                "SELECT next_offset, updated_by, updated_at FROM state.kafka_offsets "
                "WHERE consumer_group = %s AND topic = %s AND kafka_partition = %s",
                (group, topic, partition),
            )
            now = cur.fetchone() or (None, None, None)
            raise OffsetConflict(
                f"{group}: the stored offset of {topic}[{partition}] is {now[0]} (written by {now[1] or '?'} "
                f"at {now[2]}), not {before} as this run read it: someone moved it during the run (an "
                "offsets reset, or a consumer outside the group lock). This batch is rolled back and their "
                "value kept; run again to continue from it"
            )


def reset_offsets(cur: Any, group: str, topic: str, offsets: dict[int, int], who: str = "reset") -> None:
    """Replay from chosen offsets: the next run of ``group`` starts there (the merge's position guard
    keeps a replay from regressing rows)."""
    save_offsets(cur, group, {(topic, p): o for p, o in offsets.items()}, who)


def dead_letter(cur: Any, group: str, record: Record, reason: str) -> None:
    def text(raw: bytes | None) -> str | None:
        return None if raw is None else raw.decode("utf-8", errors="replace")

    cur.execute(
        """INSERT INTO dlq.kafka_records (consumer_group, topic, kafka_partition, kafka_offset, record_key,
                                          record_value, reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (consumer_group, topic, kafka_partition, kafka_offset) DO UPDATE SET reason = EXCLUDED.reason""",
        (
            group,
            record.topic(),
            record.partition(),
            record.offset(),
            text(record.key()),
            text(record.value()),
            reason[:2000],
        ),
    )


def consume_into_postgres(
    *,
    bootstrap: str,
    topics: Sequence[str],
    group: str,
    connect: Callable[[], Any],
    handler: BatchHandler,
    batch_size: int = 500,
    poll_timeout: float = 0.5,
    max_seconds: float = 300.0,
    idle_polls: int = 20,
    who: str = "",
    kafka_config: dict[str, Any] | None = None,
    targets: dict[str, str] | None = None,
    lock_wait_seconds: float = 600.0,
    snapshotted: Collection[str] = (),
    stop_at: Mapping[tuple[str, int], int] | None = None,
    follow: threading.Event | None = None,
    prepare: Callable[[list[Record]], Any] | None = None,
) -> ConsumeResult:
    """Read ``topics`` from the offsets stored for ``group`` up to their current end, apply each batch
    with ``handler`` and store the next offsets in the same transaction. Returns what it did.

    ``prepare``: the part of the work that needs no database (decoding records into rows). With it the
    run overlaps two batches: while one batch's transaction runs on a second thread (the database
    works, the thread waits on the socket without the GIL), this thread polls the next batch and
    prepares it; the handler gets a :class:`PreparedBatch`. Transactions stay one at a time and in
    order: a batch is applied only after the one before it committed, with the offsets it advanced as
    the compare-and-set base, so exactly-once and every failure path are those of the serial run (a
    failure surfaces when the next batch is ready or at the end; a batch already prepared is then
    dropped unapplied, and the next run reads it again).

    ``follow``: run as a *follow run* (see the module doc) until the event is set (or ``max_seconds``
    pass); topics missing at the start are picked up when they appear. On a clean stop the stored
    offsets move over trailing transaction markers, as at the end of a catch-up run.

    ``targets`` (topic -> target table) binds the group to its targets on first use and refuses a run
    that writes a topic elsewhere. The run holds the group's lock throughout (see the module doc).
    ``snapshotted``: topics whose table has a requested snapshot (see :func:`check_start`).
    ``stop_at``: exclusive end offsets per (topic, partition), below the current end: the run applies no
    record at or past them (they stay for the next run), so several groups can be brought to exactly the
    same position (:func:`end_offsets` taken once, e.g. 71_07_03's batch-size variants)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    if follow is not None and stop_at is not None:
        raise ValueError(
            "stop_at bounds a catch-up run; a follow run has no end offsets: pass one or the other"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    t0 = time.monotonic()
    fail_after = int(os.environ.get("CDCLAB_FAIL_AFTER_BATCHES", "0") or 0)
    conn = connect()
    result = ConsumeResult()
    consumer = Consumer(
        {
            **run_kafka_config(bootstrap, group),
            **(FOLLOW_KAFKA_CONFIG if follow is not None else {}),
            **(kafka_config or {}),
        }
    )
    # prepare given: one thread applies batches while this one polls and prepares (see above). The apply
    # thread mostly waits on the database; each time a statement returns it needs the GIL back, and with
    # the default switch interval (5 ms) it waits that long behind the decoding thread, several times a
    # batch: for the run the interval is APPLY_SWITCH_INTERVAL (the process's own is restored after).
    workers = ThreadPoolExecutor(1, thread_name_prefix=f"apply-{group}"[:40]) if prepare is not None else None
    switch_interval = sys.getswitchinterval()
    if workers is not None:
        sys.setswitchinterval(min(switch_interval, APPLY_SWITCH_INTERVAL))
    inflight: tuple[list[Record], dict[tuple[str, int], int], Future[list[tuple[Record, str]]]] | None = None
    try:
        with conn, conn.cursor() as cur:
            ensure_schema(cur)
        lock_group(conn, group, lock_wait_seconds)
        with conn, conn.cursor() as cur:
            if targets:
                bind_targets(cur, group, targets, who)
            stored = {t: stored_offsets(cur, group, t) for t in topics}
        ends: dict[tuple[str, int], int] = {}
        # what the offset store holds as far as this run knows (None: no row): the compare-and-set base
        expected: dict[tuple[str, int], int | None] = {}
        missing: set[str] = set()  # topics that do not exist yet (a follow run looks again)

        def plan(md: Any) -> list[Any]:
            """The partitions of the ``missing`` topics that ``md`` knows, checked and positioned; a follow
            run assigns each topic's partitions at once (a later topic's failure cannot lose them)."""
            out: list[Any] = []
            for topic in sorted(missing):
                if topic not in md.topics or md.topics[topic].error is not None:
                    continue  # the topic does not exist yet: nothing to read
                tps: list[Any] = []
                for partition in md.topics[topic].partitions:
                    low, high = watermarks(consumer, topic, partition)
                    start = stored[topic].get(partition)
                    check_start(group, topic, partition, start, low, high, snapshotted=topic in snapshotted)
                    if stop_at is not None and (topic, partition) in stop_at:
                        high = min(high, stop_at[(topic, partition)])
                    expected[(topic, partition)] = start
                    first = OFFSET_BEGINNING if start is None else start
                    result.positions[(topic, partition)] = low if start is None else start
                    if follow is not None or (start if start is not None else low) < high:
                        tps.append(TopicPartition(topic, partition, first))
                        ends[(topic, partition)] = high
                if follow is not None and tps:
                    consumer.incremental_assign(tps)
                    log.info("%s: following %s from %s", group, topic, [tp.offset for tp in tps])
                out.extend(tps)
                missing.discard(topic)  # only once all its partitions are planned
            return out

        missing.update(topics)
        assignment = plan(consumer.list_topics(timeout=10))
        if follow is None:
            if not assignment:
                result.seconds = time.monotonic() - t0
                return result
            consumer.assign(assignment)
        # a catch-up run ends when every partition reached its end offset; a follow run when told to
        pending: dict[tuple[str, int], int] = dict(ends) if follow is None else {}
        idle = 0
        submitted = dict(result.positions)  # the positions of the last batch handed to apply

        def apply(batch: list[Record], positions: dict[tuple[str, int], int]) -> list[tuple[Record, str]]:
            """One batch, its dead letters and its offsets in one transaction; returns the rejects."""
            try:
                with conn, conn.cursor() as cur:
                    rejects = handler(cur, batch)
                    for record, reason in rejects:
                        dead_letter(cur, group, record, reason)
                    advance_offsets(cur, group, positions, expected, who)
            except POISON_ERRORS as exc:
                # the batch is rolled back; apply it again record by record to isolate the poison
                log.warning(
                    "%s: batch of %d failed to apply (%s); retrying record by record", group, len(batch), exc
                )
                with conn, conn.cursor() as cur:
                    rejects = apply_one_by_one(cur, handler, list(batch))
                    for record, reason in rejects:
                        dead_letter(cur, group, record, reason)
                    advance_offsets(cur, group, positions, expected, who)
            return rejects

        def book(batch: list[Record], positions: dict[tuple[str, int], int], rejects: list[Any]) -> None:
            """Account for a committed batch (this thread only)."""
            expected.update(positions)
            result.positions = positions
            result.records += len(batch)
            result.batches += 1
            result.dead_letters += len(rejects)
            for key, end in list(pending.items()):
                if positions.get(key, 0) >= end:
                    del pending[key]
            reached(consumer, pending)

        def settle() -> None:
            """Wait for the batch in flight, if any, and account for it (its error is raised here)."""
            nonlocal inflight
            if inflight is not None:
                batch, positions, done = inflight
                inflight = None
                book(batch, positions, done.result())

        look_again = time.monotonic() + DISCOVER_SECONDS
        while time.monotonic() - t0 < max_seconds:
            if follow is None and inflight is not None:
                ahead = dict(pending)
                reached(consumer, ahead)
                if not ahead:  # the batch in flight is the last: no poll (and its wait) is due
                    settle()
            if follow is None and not pending:
                break
            if follow is not None:
                if follow.is_set():
                    break
                if missing and time.monotonic() >= look_again:
                    look_again = time.monotonic() + DISCOVER_SECONDS
                    try:
                        plan(consumer.list_topics(timeout=10))
                    except KafkaException as exc:  # the broker is away: look again later
                        log.warning("%s: topic lookup failed (%s); trying again", group, exc)
                if not ends:
                    follow.wait(poll_timeout)  # nothing to read yet
                    continue
            batch: list[Any] = []
            polled = (
                consumer.consume(num_messages=batch_size, timeout=poll_timeout)
                if follow is None
                else poll_available(consumer, batch_size, poll_timeout)
            )
            for msg in polled:
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    if error.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                        raise OffsetOutOfRange(
                            f"{group}: {msg.topic()}[{msg.partition()}]: the next offset is no longer in "
                            f"Kafka ({error.str()}): retention removed records during the run. Nothing past "
                            f"the stored offset was skipped. Remedy: reload the target from a snapshot, then "
                            f"cdclab offsets reset --group {group} --topic {msg.topic()} --to earliest"
                        )
                    if follow is not None and (error.retriable() or error.code() in TRANSIENT_CODES):
                        # a broker restart, a lost connection: not a record, nothing to skip; the client
                        # reconnects and fetches again from its position
                        log.warning("%s: %s (the follow run goes on)", group, error.str())
                        continue
                    raise KafkaException(error)
                if stop_at is not None and past_stop(msg, ends):
                    continue  # past this run's stop offset: left for the next run
                batch.append(msg)
            if not batch:
                settle()  # nothing new: account for the batch in flight before judging the end
                if follow is not None:
                    continue  # a follow run waits for the next record, however long
                # Transaction markers occupy offsets but are never delivered: the consumer's position
                # (not the last record's offset) says whether a partition has reached its end offset.
                idle += 1
                reached(consumer, pending)
                if pending and idle >= idle_polls:
                    break  # records are due but none came for idle_polls polls: stop, the next run resumes
                continue
            idle = 0
            if fail_after:
                settle()
                if result.batches >= fail_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            positions = dict(submitted)
            for msg in batch:
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1
            submitted = positions
            if prepare is None:
                book(batch, positions, apply(batch, positions))
                continue
            work = PreparedBatch(batch)
            work.prepared = prepare(batch)  # this thread, while the batch before is being applied
            settle()  # that batch committed (or its error is raised here): its offsets are the base
            assert workers is not None
            inflight = (batch, positions, workers.submit(apply, work, positions))
        settle()
        # Past the last record there may only be transaction markers: move the stored offsets over them,
        # so the reported lag of a caught-up group is 0 (no data is involved, nothing can be lost).
        # (A follow run has no end offsets: every record before its position has been applied.)
        moved = {}
        for tp in consumer.position([TopicPartition(t, p) for (t, p) in ends]) if ends else []:
            key = (tp.topic, tp.partition)
            bound = ends[key] if follow is None else tp.offset
            if tp.offset >= 0 and tp.offset > result.positions.get(key, 0) and tp.offset <= bound:
                moved[key] = tp.offset
        if moved:
            with conn, conn.cursor() as cur:
                advance_offsets(cur, group, moved, expected, who)
            expected.update(moved)
            result.positions.update(moved)
        # informational only: lets kafka-consumer-groups show the group's progress
        commit = [TopicPartition(t, p, o) for (t, p), o in result.positions.items()]
        if commit:
            try:
                consumer.commit(offsets=commit, asynchronous=False)
            except KafkaException:
                pass
    finally:
        if workers is not None:
            if inflight is not None:  # an error on this thread: let the batch in flight finish first
                wait([inflight[2]])
            workers.shutdown()
            sys.setswitchinterval(switch_interval)
        consumer.close()
        conn.close()  # also releases the group lock
    result.seconds = time.monotonic() - t0
    return result


def poll_available(consumer: Any, batch_size: int, timeout: float) -> list[Any]:
    """A follow run's poll: wait up to ``timeout`` for one record, then take (without waiting) what the
    client has already fetched, up to ``batch_size`` in all. ``[]`` when nothing came."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    if batch_size == 1:
        return [first]
    return [first, *consumer.consume(num_messages=batch_size - 1, timeout=0)]


def apply_one_by_one(cur: Any, handler: BatchHandler, batch: list[Record]) -> list[tuple[Record, str]]:
    """Apply ``batch`` one record at a time, each under a SAVEPOINT; a record whose apply fails with a
    data error (:data:`POISON_ERRORS`) is rolled back alone and comes back as a reject with the error."""
    rejects: list[tuple[Record, str]] = []
    for msg in batch:
        cur.execute("SAVEPOINT cdclab_record")
        try:
            rejects.extend(handler(cur, [msg]))
        except POISON_ERRORS as exc:
            cur.execute("ROLLBACK TO SAVEPOINT cdclab_record")
            code = getattr(exc, "pgcode", None) or "?"
            text = " ".join(str(exc).split())
            rejects.append(
                (
                    msg,
                    f"apply failed at {msg.topic()}[{msg.partition()}]@{msg.offset()}: SQLSTATE {code}: {text}",
                )
            )
            log.warning("dead-lettered %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), text)
        cur.execute("RELEASE SAVEPOINT cdclab_record")
    return rejects


def payload_json(value: Any) -> Json:
    return Json(value)
