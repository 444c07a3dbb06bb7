"""71.7.3 CDC performance and 71.7.4 merge performance: the measurement steps of
``dags/71_07_03_cdc_performance.py`` and ``dags/71_07_04_merge_performance.py``. Both consume the
source tables' Debezium topics (``shop.<table>``) several ways into separate targets, record each way
in ``state.perf_runs`` and prove the targets equal (:class:`cdclab.cdc.merge_variants.VariantsDiverged`
otherwise). Kept apart from :mod:`cdclab.lessons.load_performance` (71.7.1/71.7.2, SQL reads of a
benchmark table): these steps need Kafka and the CDC sink.

Vocabulary:
- *bench*: :class:`CdcBench`, what one DAG run consumes (tables, base consumer group), where it writes
  (target schema and prefix), the batch sizes it compares, its experiment name and the run recording it.
- *batch variant* (71.7.3): the exactly-once sink run with one batch size, consumer group
  ``<group>.b<size>``, targets ``<schema>.<prefix>b<size>_<table>`` (:func:`batch_prefix`).
- *tuning setting* (71.7.3): the same sink (consumer batches of the largest setting) applying its changes
  ``s`` at a time (``1`` = row at a time, ``500`` = set-based), consumer group ``<group>.t<s>``, targets
  ``<schema>.<prefix>t<s>_<table>`` (:func:`tune_prefix`); its round trips are counted by a
  :class:`CountingCursor` (every ``execute`` and ``COPY`` is one).
- *strategy* (71.7.4): ``mpk`` (MERGE into a target with a primary key), ``mnx`` (MERGE, no index on the
  join key), ``upk`` (``INSERT ... ON CONFLICT``); each strategy and statement size writes
  ``<route target>__<strategy>_b<size>`` (:func:`merge_targets`).
- *key partition* (71.7.4): partition ``i`` of ``n`` applies the changes whose key has
  ``crc32(repr(key values)) % n == i`` (:func:`partition_of`), consuming with group ``<group>.p<i>of<n>``.
- *task window* (71.7.4): :class:`TaskWindow`, when one mapped partition task worked, recorded by the
  task itself as ``task/p<i>``; the *parallel wall clock* (:func:`parallel_clock`) runs from the earliest
  window's start to the latest one's end, next to the sum of the windows (no metadata DB access).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import cursor as PgCursor

from cdclab.cdc.events import MalformedEvent, parse_debezium
from cdclab.cdc.inspect import read_topic
from cdclab.cdc.merge import apply_changes, ensure_target
from cdclab.cdc.merge_variants import (
    ApplyBatch,
    StreamSummary,
    VariantsDiverged,
    differing_keys,
    ensure_stage,
    merge_changes,
    replicate_with,
)
from cdclab.cdc.pipeline import end_offsets, kafka_bootstrap, routes_for
from cdclab.cdc.pipeline import replicate as run_sink
from cdclab.common.db import WAREHOUSE, connect, ident, transaction
from cdclab.ops import perf

log = logging.getLogger(__name__)

TOPIC_PREFIX = "shop"
KAFKA_CONN_ID = "kafka_default"
STRATEGIES = ("mpk", "mnx", "upk")


@dataclass(frozen=True)
class CdcBench:
    """One DAG run of a CDC benchmark: the source tables, the base consumer group, the target schema and
    prefix, the batch sizes, the experiment name in ``state.perf_runs`` and the run that records it."""

    tables: Sequence[str]
    consumer_group: str
    target_schema: str
    target_prefix: str
    batch_sizes: Sequence[int]
    experiment: str
    dag_id: str
    run_id: str

    @classmethod
    def from_params(cls, params: Mapping[str, Any], dag_id: str, run_id: str) -> CdcBench:
        """The bench of a DAG run from its params ``tables``, ``consumer_group``, ``target_schema``,
        ``target_prefix``, ``batch_sizes`` and ``experiment``."""
        return cls(
            list(params["tables"]),
            params["consumer_group"],
            params["target_schema"],
            params["target_prefix"],
            list(params["batch_sizes"]),
            params["experiment"],
            dag_id,
            run_id,
        )

    def routes(self, target_prefix: str | None = None) -> list[Any]:
        """The tables' routes (topic, target, key, types) with this bench's or another target prefix."""
        return routes_for(
            self.tables,
            topic_prefix=TOPIC_PREFIX,
            target_schema=self.target_schema,
            target_prefix=self.target_prefix if target_prefix is None else target_prefix,
        )

    def replicate(
        self, apply: ApplyBatch, group: str, target_prefix: str | None = None, who: str = "", **more: Any
    ) -> StreamSummary:
        """:func:`replicate_with` of the tables' topics through ``apply``: consumer group
        ``<consumer_group>.<group>``, into this bench's target schema with its or another target prefix,
        ``who`` = ``<dag_id>/<run_id><who>``; ``more`` goes to :func:`replicate_with` as is."""
        return replicate_with(
            self.tables,
            apply,
            group=f"{self.consumer_group}.{group}",
            topic_prefix=TOPIC_PREFIX,
            target_schema=self.target_schema,
            target_prefix=self.target_prefix if target_prefix is None else target_prefix,
            who=f"{self.dag_id}/{self.run_id}{who}",
            **more,
        )

    def record(self, wh: Any, m: perf.Measurement) -> None:
        """Record one measurement of this run (no commit)."""
        perf.record(wh, m, dag_id=self.dag_id, run_id=self.run_id)


# ----------------------------------------------------------------------------------- 71.7.3


def batch_prefix(target_prefix: str, batch_size: int) -> str:
    """The target prefix of one batch variant: ``<prefix>b<size>_``."""
    return f"{target_prefix}b{batch_size}_"


@dataclass(frozen=True)
class ParseRun:
    """The parse measurement: records parsed, milliseconds, and ``{"bytes", "malformed", "records_per_s"}``."""

    records: int
    ms: float
    details: dict[str, Any]


def measure_parse(bench: CdcBench) -> ParseRun:
    """Read every record of the tables' topics, time :func:`cdclab.cdc.events.parse_debezium` alone over
    them (malformed records counted), record the ``parse`` measurement in ``state.perf_runs``."""
    bootstrap = kafka_bootstrap(KAFKA_CONN_ID)
    records = [m for t in bench.tables for m in read_topic(bootstrap, f"{TOPIC_PREFIX}.{t}")]
    malformed = 0
    with perf.Stopwatch() as sw:
        for m in records:
            try:
                parse_debezium(m.key(), m.value(), m.topic())
            except MalformedEvent:
                malformed += 1
    size = sum(len(m.value() or b"") + len(m.key() or b"") for m in records)
    details = {
        "bytes": size,
        "malformed": malformed,
        "records_per_s": round(len(records) / (sw.ms / 1000), 1) if sw.ms else None,
    }
    with closing(connect(WAREHOUSE)) as wh:
        perf.ensure_schema(wh)
        with wh:
            bench.record(wh, perf.Measurement(bench.experiment, "parse", len(records), None, sw.ms, details))
    return ParseRun(len(records), sw.ms, details)


def replicate_batch_sizes(bench: CdcBench, echo: Callable[[str], Any] = log.info) -> list[dict[str, Any]]:
    """Run the exactly-once sink once per batch size, one after the other (parallel variants would share
    the CPU), each up to the same end offsets taken once before the first (the live workload keeps
    writing meanwhile); record each as the measurement ``b<size>`` and ``echo`` one line about it.
    Returns ``{"variant", "records", **details}`` per batch size."""
    out = []
    stop_at = end_offsets(bench.tables, topic_prefix=TOPIC_PREFIX)
    with closing(connect(WAREHOUSE)) as wh:
        for size in bench.batch_sizes:
            result = run_sink(
                bench.tables,
                group=f"{bench.consumer_group}.b{size}",
                topic_prefix=TOPIC_PREFIX,
                target_schema=bench.target_schema,
                target_prefix=batch_prefix(bench.target_prefix, size),
                batch_size=size,
                who=f"{bench.dag_id}/{bench.run_id}",
                stop_at=stop_at,
            )
            written = sum(t["upserted"] + t["deleted"] for t in result["targets"].values())
            seconds = result["seconds"]
            details = {
                "batch_size": size,
                "batches": result["batches"],
                "dead_letters": result["dead_letters"],
                "skipped": result["skipped"],
                "records_per_s": round(result["records"] / seconds, 1) if seconds else None,
                "records_per_batch": round(result["records"] / result["batches"], 2)
                if result["batches"]
                else None,
            }
            m = perf.Measurement(
                bench.experiment, f"b{size}", result["records"], written, seconds * 1000, details
            )
            with wh:
                bench.record(wh, m)
            echo(f"batch size {size}: {result['records']} records, {details}")
            out.append({"variant": m.variant, "records": m.rows_read, **details})
    return out


def tune_prefix(target_prefix: str, statement_size: int) -> str:
    """The target prefix of one tuning setting: ``<prefix>t<size>_``."""
    return f"{target_prefix}t{statement_size}_"


class CountingCursor(PgCursor):
    """A psycopg2 cursor that counts its round trips: every ``execute`` (``execute_values`` pages
    included), each row of an ``executemany`` and every ``COPY``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.statements = 0

    def execute(self, query: Any, vars: Any = None) -> Any:
        self.statements += 1
        return super().execute(query, vars)

    def executemany(self, query: Any, vars_list: Any) -> Any:
        rows = list(vars_list)
        self.statements += len(rows)
        return super().executemany(query, rows)

    def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
        self.statements += 1
        return super().copy_expert(sql, file, size)


class ChunkedApply:
    """The batch work of one tuning setting: apply a batch's changes ``size`` at a time with
    :func:`cdclab.cdc.merge.apply_changes` in the batch's transaction, counting the calls, the changes
    and the round trips (a :class:`CountingCursor` on the same connection)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.calls = self.changes = self.statements = 0

    def __call__(self, cur: Any, route: Any, changes: list[Any]) -> dict[str, int]:
        with cur.connection.cursor(cursor_factory=CountingCursor) as counted:
            for i in range(0, len(changes), self.size):
                apply_changes(counted, route.target, route.key, changes[i : i + self.size])
                self.calls += 1
            self.statements += counted.statements
        self.changes += len(changes)
        return {"changes": len(changes)}


def _create_target(cur: Any, route: Any) -> None:
    ensure_target(cur, route.target, list(route.types.items()), route.key)


def replicated_ends(bench: CdcBench) -> dict[tuple[str, int], int]:
    """Where ``replicate``'s variants stopped: the offsets stored for the first batch size's group, per
    partition of the topics (:func:`end_offsets` taken again would include what the live workload wrote
    since, and the tuned targets would hold rows the batch variants do not)."""
    from cdclab.cdc.consumer import stored_offsets

    ends = end_offsets(bench.tables, topic_prefix=TOPIC_PREFIX)
    group = f"{bench.consumer_group}.b{bench.batch_sizes[0]}"
    with transaction(WAREHOUSE) as cur:
        stored = {topic: stored_offsets(cur, group, topic) for topic in {t for t, _ in ends}}
    return {(t, p): stored[t].get(p, 0) for (t, p) in ends}


def tune_statement_sizes(
    bench: CdcBench, statement_sizes: Sequence[int], echo: Callable[[str], Any] = log.info
) -> list[dict[str, Any]]:
    """Throughput tuning with one knob: run the same sink once per statement size, one after the other,
    each with its own group ``<group>.t<size>`` and targets (:func:`tune_prefix`), all up to where
    ``replicate``'s variants stopped (:func:`replicated_ends`) and in the same consumer batches (of the largest size), applying each batch's changes
    ``size`` at a time with :func:`cdclab.cdc.merge.apply_changes` on a :class:`CountingCursor`. Records
    ``t<size>`` per setting: ``rows_read`` = records, ``rows_written`` = changes applied, details
    ``apply_calls``, ``statements`` (round trips), ``statements_per_change``, ``batches`` and
    ``changes_per_s``. Returns ``{"variant", **details}`` per setting."""
    stop_at = replicated_ends(bench)
    consumer_batch = max(statement_sizes)
    out = []
    with closing(connect(WAREHOUSE)) as wh:
        perf.ensure_schema(wh)
        for size in statement_sizes:
            apply = ChunkedApply(size)
            summary = bench.replicate(
                apply,
                f"t{size}",
                tune_prefix(bench.target_prefix, size),
                prepare=_create_target,
                batch_size=consumer_batch,
                stop_at=stop_at,
            )
            changes = apply.changes
            details = {
                "statement_size": size,
                "consumer_batch": consumer_batch,
                "batches": summary.batches,
                "dead_letters": summary.dead_letters,
                "apply_calls": apply.calls,
                "statements": apply.statements,
                "statements_per_change": round(apply.statements / changes, 3) if changes else None,
                "changes_per_s": round(changes / summary.seconds, 1) if summary.seconds else None,
            }
            m = perf.Measurement(
                bench.experiment, f"t{size}", summary.records, changes, summary.seconds * 1000, details
            )
            with wh:
                bench.record(wh, m)
            echo(f"statement size {size}: {summary.records} records, {changes} changes, {details}")
            out.append({"variant": m.variant, "records": summary.records, "changes": changes, **details})
    return out


def compare_batch_sizes(bench: CdcBench, statement_sizes: Sequence[int] = ()) -> dict[str, Any]:
    """Every batch variant's and tuning setting's targets hold the same rows as the first batch size's;
    raises :class:`cdclab.cdc.merge_variants.VariantsDiverged` with up to 20 differing keys per target."""
    sizes = bench.batch_sizes
    prefixes = [batch_prefix(bench.target_prefix, s) for s in sizes[1:]]
    prefixes += [tune_prefix(bench.target_prefix, s) for s in statement_sizes]
    diverged = {}
    with transaction(WAREHOUSE) as cur:
        for prefix in prefixes:
            base = bench.routes(batch_prefix(bench.target_prefix, sizes[0]))
            other = bench.routes(prefix)
            for a, b in zip(base, other, strict=True):
                diff = differing_keys(cur, a.target, b.target, a.key)
                if diff:
                    diverged[b.target] = diff[:20]
    if diverged:
        raise VariantsDiverged(f"targets differ from the batch size {sizes[0]} variant for keys {diverged}")
    return {"compared": 1 + len(prefixes)}


# ----------------------------------------------------------------------------------- 71.7.4


def merge_targets(route_target: str, batch_sizes: Sequence[int]) -> dict[tuple[str, int], str]:
    """``{(strategy, statement size): <route target>__<strategy>_b<size>}``, strategies in
    :data:`STRATEGIES` order."""
    return {(s, b): f"{route_target}__{s}_b{b}" for s in STRATEGIES for b in batch_sizes}


def partition_of(key: Mapping[str, Any], key_columns: Sequence[str], partitions: int) -> int:
    """The key partition of a change's key: ``crc32(repr(key values)) % partitions``, stable across
    processes (unlike ``hash``), so every change of one key lands in the same partition."""
    return zlib.crc32(repr(tuple(key[k] for k in key_columns)).encode()) % partitions


def prepare_merge_targets(bench: CdcBench) -> None:
    """Check ``state.perf_runs`` and create every strategy's targets; drop the primary key of the ``mnx``
    targets (no index on the join key); create the MERGE staging tables up front (parallel partitions
    must not race on DDL)."""
    routes = bench.routes()
    with closing(connect(WAREHOUSE)) as wh:
        perf.ensure_schema(wh)
        with wh, wh.cursor() as cur:
            for r in routes:
                for (strategy, _), target in merge_targets(r.target, bench.batch_sizes).items():
                    ensure_target(cur, target, list(r.types.items()), r.key)
                    if strategy == "mnx":  # no index on the join key
                        cur.execute(
                            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
                            (target,),
                        )
                        for (name,) in cur.fetchall():
                            cur.execute(
                                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                                    ident(target), sql.Identifier(name)
                                )
                            )
                    if strategy != "upk":
                        ensure_stage(cur, target)


@dataclass(frozen=True)
class TaskWindow:
    """When one mapped partition task worked: from before it consumed its first record to after it
    applied its last batch (UTC, microseconds)."""

    partition: int
    started_at: datetime
    ended_at: datetime

    @property
    def ms(self) -> float:
        return (self.ended_at - self.started_at).total_seconds() * 1000

    def as_details(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat(),
        }

    @classmethod
    def from_details(cls, d: Mapping[str, Any]) -> TaskWindow:
        return cls(
            int(d["partition"]),
            datetime.fromisoformat(d["started_at"]),
            datetime.fromisoformat(d["ended_at"]),
        )


@dataclass(frozen=True)
class ParallelClock:
    """The parallel wall clock of mapped tasks, from their own windows: ``wall_ms`` from the earliest
    start to the latest end, ``sum_ms`` the sum of their durations (the work), ``overlapping`` the pairs
    of partitions whose windows overlap. ``sum_ms / wall_ms`` is the speed-up parallelism gave: 1.0
    when the tasks ran one after the other (``dag.test``, one executor slot), up to the number of
    tasks when they all ran at once."""

    wall_ms: float
    sum_ms: float
    overlapping: tuple[tuple[int, int], ...]

    @property
    def speedup(self) -> float | None:
        return round(self.sum_ms / self.wall_ms, 3) if self.wall_ms > 0 else None

    def as_details(self) -> dict[str, Any]:
        return {
            "wall_clock_ms": round(self.wall_ms, 3),
            "sum_task_ms": round(self.sum_ms, 3),
            "speedup": self.speedup,
            "overlapping_pairs": [list(p) for p in self.overlapping],
            "ran_in_parallel": bool(self.overlapping),
        }


def parallel_clock(windows: Sequence[TaskWindow]) -> ParallelClock:
    """The :class:`ParallelClock` of task windows (none: all zero). Two windows overlap when one starts
    before the other ends (touching ends do not count)."""
    if not windows:
        return ParallelClock(0.0, 0.0, ())
    start = min(w.started_at for w in windows)
    end = max(w.ended_at for w in windows)
    ordered = sorted(windows, key=lambda w: w.partition)
    pairs = tuple(
        (a.partition, b.partition)
        for i, a in enumerate(ordered)
        for b in ordered[i + 1 :]
        if a.started_at < b.ended_at and b.started_at < a.ended_at
    )
    return ParallelClock((end - start).total_seconds() * 1000, sum(w.ms for w in windows), pairs)


@dataclass(frozen=True)
class PartitionRun:
    """One key partition's work: records consumed, and changes applied and microseconds spent per
    variant ``<strategy>/b<size>``."""

    partition: int
    partitions: int
    records: int
    changes: dict[str, int]
    us: dict[str, float]


def apply_partition(bench: CdcBench, partition: int, partitions: int, consumer_batch: int) -> PartitionRun:
    """Consume the topics with the group ``<group>.p<partition>of<partitions>`` in batches of
    ``consumer_batch``; apply this partition's changes with every strategy, cut into statements of each
    batch size, timing each variant; record ``<strategy>/b<size>/p<partition>`` per variant."""
    n, sizes = partitions, bench.batch_sizes
    started_at = datetime.now(UTC)  # this task's window: what the parallel wall clock is made of
    us: dict[str, float] = defaultdict(float)
    rows: dict[str, int] = defaultdict(int)
    statements: dict[str, int] = defaultdict(int)

    def apply(cur: Any, route: Any, changes: list[Any]) -> dict[str, int]:
        mine = [c for c in changes if partition_of(c.key, route.key, n) == partition]
        for (strategy, size), target in merge_targets(route.target, sizes).items():
            variant = f"{strategy}/b{size}"
            t0 = time.perf_counter()
            for i in range(0, len(mine), size):
                chunk = mine[i : i + size]
                if strategy == "upk":
                    apply_changes(cur, target, route.key, chunk)
                else:
                    merge_changes(cur, target, route.key, chunk)
                statements[variant] += 1
            us[variant] += (time.perf_counter() - t0) * 1e6
            rows[variant] += len(mine)
        return {"changes": len(mine)}

    summary = bench.replicate(apply, f"p{partition}of{n}", who=f"/p{partition}", batch_size=consumer_batch)
    ended_at = datetime.now(UTC)
    with closing(connect(WAREHOUSE)) as wh:
        with wh:
            window = TaskWindow(partition, started_at, ended_at)
            bench.record(
                wh,
                perf.Measurement(
                    bench.experiment,
                    f"task/p{partition}",
                    summary.records,
                    sum(rows.values()),
                    window.ms,
                    {**window.as_details(), "partitions": n},
                ),
            )
            for strategy in STRATEGIES:
                for size in sizes:
                    variant = f"{strategy}/b{size}"
                    details = {
                        "strategy": strategy,
                        "batch_size": size,
                        "partition": partition,
                        "partitions": n,
                        "statements": statements[variant],
                        "records": summary.records,
                    }
                    bench.record(
                        wh,
                        perf.Measurement(
                            bench.experiment,
                            f"{variant}/p{partition}",
                            rows[variant],
                            rows[variant],
                            us[variant] / 1000,
                            details,
                        ),
                    )
    return PartitionRun(partition, n, summary.records, dict(rows), dict(us))


def summarize_partitions(bench: CdcBench) -> dict[str, Any]:
    """Read this run's partition measurements back. Per variant ``<strategy>/b<size>``, record the sum
    of its partitions' apply times (total work) and the slowest partition's as the measurement
    ``<strategy>/b<size>``. From the mapped tasks' own windows (``task/p<i>``), record the measurement
    ``parallel``: the wall clock from the earliest task start to the latest task end next to the sum
    of the task durations, and which windows overlapped (:func:`parallel_clock`). Returns
    ``{variant: {"rows", "total_ms", **details}, "parallel": {...}}``."""
    out: dict[str, Any] = {}
    with closing(connect(WAREHOUSE)) as wh:
        recorded = perf.measurements(wh, bench.experiment, bench.run_id)
        windows = [
            TaskWindow.from_details(m["details"]) for m in recorded if m["variant"].startswith("task/")
        ]
        parts = [
            m
            for m in recorded
            if m["details"].get("partition") is not None and not m["variant"].startswith("task/")
        ]
        with wh:
            clock = parallel_clock(windows)
            details = {**clock.as_details(), "tasks": len(windows)}
            bench.record(
                wh,
                perf.Measurement(
                    bench.experiment,
                    "parallel",
                    sum(m["rows_read"] or 0 for m in recorded if m["variant"].startswith("task/")),
                    None,
                    clock.wall_ms,
                    details,
                ),
            )
            out["parallel"] = details
            for strategy in STRATEGIES:
                for size in bench.batch_sizes:
                    mine = [p for p in parts if p["variant"].startswith(f"{strategy}/b{size}/")]
                    total = sum(p["duration_ms"] for p in mine)
                    details = {
                        "strategy": strategy,
                        "batch_size": size,
                        "partitions": len(mine),
                        "statements": sum(p["details"]["statements"] for p in mine),
                        "slowest_partition_ms": max((p["duration_ms"] for p in mine), default=0.0),
                        # not a wall clock: the apply times of one variant inside tasks that also
                        # applied the other variants; the wall clock is the ``parallel`` measurement
                    }
                    rows = sum(p["rows_read"] for p in mine)
                    bench.record(
                        wh,
                        perf.Measurement(bench.experiment, f"{strategy}/b{size}", rows, rows, total, details),
                    )
                    out[f"{strategy}/b{size}"] = {"rows": rows, "total_ms": round(total, 1), **details}
    return out


def compare_strategies(bench: CdcBench) -> dict[str, Any]:
    """Every strategy and statement size's target holds the same rows as the first one's; raises
    :class:`cdclab.cdc.merge_variants.VariantsDiverged` with up to 20 differing keys per target."""
    routes = bench.routes()
    diverged = {}
    with transaction(WAREHOUSE) as cur:
        for r in routes:
            targets = list(merge_targets(r.target, bench.batch_sizes).values())
            for other in targets[1:]:
                diff = differing_keys(cur, targets[0], other, r.key)
                if diff:
                    diverged[other] = diff[:20]
    if diverged:
        raise VariantsDiverged(f"targets differ from {targets[0]} for keys {diverged}")
    return {"compared": len(routes)}
