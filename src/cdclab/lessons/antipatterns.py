"""Incremental anti-patterns (curriculum 71.6) next to their fixes, each small enough to read in one go.

Every pattern here exists twice: the *anti-pattern* (what pipelines really do and why it bites) and the
*fix*. The DAGs ``dags/71_06_0N_*.py`` choose with the param ``variant`` (:data:`Variant`); the tests run
both on the same input and show the failure happening in one and not in the other.

Vocabulary:
- *source table*: a small table in ``shop`` with explicit time columns (``updated_at``, ``event_time``,
  ``arrived_at``) so a test controls exactly which interval a row belongs to. :func:`ensure_source`
  creates the shape each lesson needs.
- *gap*: keys present in the source (up to the interval end) and missing in the target after a run.
  :func:`missing_keys` lists them; a gap is the silent failure of a lost watermark.
- *late row*: a row whose ``event_time`` falls in an interval that has already been processed; it
  *arrived* (``arrived_at``) after that run. *Lookback*: how many intervals before the current one are
  recomputed on every run (the reprocessing window).
- *full-load fallback*: "when in doubt, reload everything" — recovery that is correct but reads the
  whole source on every run once it is triggered. *Bounded recovery*: rebuild the watermark from the
  data already loaded (``max(updated_at)`` in the target) and read only the delta after it.
- *seen-state*: the keys a deduplicating pipeline remembers. *Unbounded*: kept forever (grows with
  total input). *TTL-bounded*: kept for ``ttl`` after first sighting, then deleted; dedup is exact for
  re-deliveries that arrive within the TTL.
- *arrival order* vs *version order*: a change stream can deliver an older version after a newer one
  (retries, parallel producers, partition rebalances). *Regressed row*: a target row whose version is
  lower than the newest version the stream delivered for its key.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import astuple, dataclass
from decimal import Decimal
from typing import Any, Literal, get_args

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, insert_rows
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.merge import upsert
from cdclab.state import watermarks as state

Variant = Literal["anti_pattern", "fixed"]
VARIANTS: frozenset[str] = frozenset(get_args(Variant))


class UnknownVariantError(ValueError):
    def __init__(self, variant: str) -> None:
        super().__init__(f"unknown variant {variant!r}; use one of {sorted(VARIANTS)}")


def check_variant(variant: str) -> Variant:
    if variant not in VARIANTS:
        raise UnknownVariantError(variant)
    return variant  # type: ignore[return-value]


def for_variant(name: str, variant: str) -> str:
    """A table name param with ``{variant}`` in it (the DAG defaults) made concrete, so the two variants
    never share a target: ``core.rows_{variant}`` -> ``core.rows_fixed``. Names without it stay as given."""
    return name.replace("{variant}", check_variant(variant))


# ---------------------------------------------------------------------------------------------------
# shared: tables


SOURCE_SHAPES: dict[str, str] = {
    # 71.6.1 / 71.6.3: a mutable table read by updated_at
    "rows": "id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL",
    # 71.6.2: events with an event time and an arrival time
    "events": (
        "id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, event_time timestamptz NOT NULL, "
        "arrived_at timestamptz NOT NULL"
    ),
    # 71.6.4: a delivery log: the same event_id can be delivered more than once
    "deliveries": (
        "seq bigint PRIMARY KEY, event_id text NOT NULL, event_time timestamptz NOT NULL, "
        "arrived_at timestamptz NOT NULL, payload text NOT NULL"
    ),
    # 71.6.5: a change stream landed in staging; arrival order is seq, version order is version
    "changes": (
        "seq bigint PRIMARY KEY, id bigint NOT NULL, version bigint NOT NULL, status text NOT NULL, "
        "arrived_at timestamptz NOT NULL"
    ),
}


def ensure_source(conn: Any, table: str, shape: str) -> None:
    """Create ``table`` with one of :data:`SOURCE_SHAPES` (and an index on its time column); commits."""
    if shape not in SOURCE_SHAPES:
        raise ValueError(f"unknown source shape {shape!r}; use one of {sorted(SOURCE_SHAPES)}")
    with conn.cursor() as cur:
        ensure_ddl(
            cur,
            table,
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident(table), sql.SQL(SOURCE_SHAPES[shape])),
        )
    conn.commit()


def _create(conn: Any, table: str, columns: str) -> None:
    with conn.cursor() as cur:
        schema = table.split(".")[0]
        ensure_ddl(cur, table, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        ensure_ddl(
            cur, table, sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident(table), sql.SQL(columns))
        )


def _fetch(conn: Any, statement: sql.Composable, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return list(cur.fetchall())


def keys_of(conn: Any, table: str, column: str = "id") -> list[Any]:
    """Every value of ``column`` in ``table`` (small lab tables only)."""
    return [
        r[0] for r in _fetch(conn, sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), ident(table)))
    ]


def missing_keys(source_keys: Sequence[Any], target_keys: Sequence[Any]) -> list[Any]:
    """Keys in the source and not in the target, sorted: the gap."""
    return sorted(set(source_keys) - set(target_keys))


# ---------------------------------------------------------------------------------------------------
# 71.6.1 lost watermarks and 71.6.3 full-load fallback: a mutable table read by updated_at

ROWS_TARGET_COLUMNS = "id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, updated_at timestamptz NOT NULL"


def ensure_rows_target(conn: Any, table: str) -> None:
    _create(conn, table, ROWS_TARGET_COLUMNS)
    conn.commit()


def read_rows_after(
    shop: Any, source: str, since: dt.datetime | None, until: dt.datetime
) -> list[dict[str, Any]]:
    """Rows with ``since < updated_at < until`` (``since=None``: everything before ``until``)."""
    statement = sql.SQL(
        "SELECT id, amount, updated_at FROM {} WHERE updated_at < %s AND (%s::timestamptz IS NULL "
        "OR updated_at > %s) ORDER BY updated_at, id"
    ).format(ident(source))
    return [
        {"id": i, "amount": a, "updated_at": u} for i, a, u in _fetch(shop, statement, (until, since, since))
    ]


def max_updated_at(conn: Any, table: str) -> dt.datetime | None:
    """The newest ``updated_at`` already in ``table``: the watermark rebuilt from the loaded data."""
    return _fetch(conn, sql.SQL("SELECT max(updated_at) FROM {}").format(ident(table)))[0][0]


def upsert_by_updated_at(wh: Any, target: str, rows: Sequence[dict[str, Any]]) -> int:
    """Upsert guarded by ``updated_at`` (an older row never overwrites a newer one); no commit."""
    return upsert.upsert_rows(wh, target, rows, ["id"], "updated_at").written


def replace_all(wh: Any, target: str, rows: Sequence[dict[str, Any]]) -> int:
    """Full reload: ``TRUNCATE`` and insert every row (one transaction with the caller's commit)."""
    with wh.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {}").format(ident(target)))
    return upsert.upsert_rows(wh, target, rows, ["id"]).written


@dataclass(frozen=True)
class VariantRun:
    """What a run of a watermark lesson (71.6.1, 71.6.3) reports: the variant and strategy, the watermark
    read from (``since``) and after it (``new``) and the rows read; each lesson adds its own outcome."""

    variant: str
    strategy: str
    since: Any
    new: Any
    rows_read: int

    def xcom(self) -> dict[str, Any]:
        return {"variant": self.variant, "strategy": self.strategy, "rows_read": self.rows_read}

    def summary(self) -> str:
        """The run in one log line; a lesson adds its own outcome."""
        return f"{self.variant}/{self.strategy}: read {self.rows_read} rows; watermark {self.since} -> {self.new}"


@dataclass(frozen=True)
class RowsRun:
    """The opened run of a watermark lesson (71.6.1, 71.6.3): the checked variant, the source and the
    target for it, the watermark key, both connections, the run's start (``time.monotonic()``) and the
    Airflow run it belongs to (for the audit of watermark changes and the run metrics)."""

    variant: Variant
    source: str
    target: str
    key: str
    shop: Any
    wh: Any
    started: float
    dag_id: str
    run_id: str


@contextmanager
def rows_run(
    source: str,
    target_table: str,
    variant_param: str,
    watermark_key: Callable[[str, str], str],
    *,
    dag_id: str,
    run_id: str,
) -> Iterator[RowsRun]:
    """Check ``variant_param``, name the target (``target_table`` may hold ``{variant}``) and its watermark
    (``watermark_key(source, target)``), open the shop and the warehouse and create the state schema, the
    ``rows`` source and the target; both connections close on exit."""
    variant = check_variant(variant_param)
    target = for_variant(target_table, variant)
    key = watermark_key(source, target)
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        started = time.monotonic()
        state.ensure_schema(wh)
        ensure_source(shop, source, "rows")
        ensure_rows_target(wh, target)
        yield RowsRun(variant, source, target, key, shop, wh, started, dag_id, run_id)


def recover_watermark(run: RowsRun, store: state.TableWatermarkStore) -> dt.datetime | None:
    """The fix's bounded recovery: rebuild the run's lost or unreadable watermark from ``max(updated_at)``
    of its target and store it with an audited ``reset`` (``state.watermark_history`` says why), committed
    on its own before the load. None when the target is empty too (nothing stored)."""
    with run.wh:
        value = max_updated_at(run.wh, run.target)
        if value is not None:
            store.reset(
                run.key,
                value,
                "recovered from max(updated_at) of the target after the watermark was lost",
                value_type="timestamptz",
                dag_id=run.dag_id,
                run_id=run.run_id,
            )
    return value


@dataclass(frozen=True)
class DeltaLoad:
    """What :func:`load_after` did: rows read, rows written and the watermark after the run (``new``:
    the newest ``updated_at`` read, else the watermark read from)."""

    rows_read: int
    rows_written: int
    new: Any


def load_after(
    run: RowsRun,
    since: dt.datetime | None,
    *,
    strategy: str,
    store: state.TableWatermarkStore | None,
    full: bool = False,
    interval_start: dt.datetime,
    interval_end: dt.datetime,
) -> DeltaLoad:
    """The one load step of the watermark lessons (71.6.1, 71.6.3): read the run's source rows after
    ``since`` up to ``interval_end``, write them to its target — upserted by ``updated_at``, or with
    ``full`` the whole target replaced (the full reload, which leaves the watermark as it is) — and, in
    the same transaction, advance the run's key in ``store`` (when given; compare-and-set from ``since``)
    to the newest ``updated_at`` read and record the run's metrics (``state.run_metrics``, strategy
    ``<variant>:<strategy>``, duration since the run's start). Commits the warehouse, rolls the shop back."""
    shop, wh = run.shop, run.wh
    rows = read_rows_after(shop, run.source, since, interval_end)
    shop.rollback()
    new = max((r["updated_at"] for r in rows), default=since)
    with wh:
        if full:
            written = replace_all(wh, run.target, rows)
        else:
            written = upsert_by_updated_at(wh, run.target, rows)
            if store is not None and new is not None and new != since:
                store.advance(
                    run.key, since, new, value_type="timestamptz", dag_id=run.dag_id, run_id=run.run_id
                )
        state.record_run_metrics(
            wh,
            pipeline=run.key,
            strategy=f"{run.variant}:{strategy}",
            rows_read=len(rows),
            rows_written=written,
            duration_ms=(time.monotonic() - run.started) * 1000,
            dag_id=run.dag_id,
            run_id=run.run_id,
            interval_start=interval_start,
            interval_end=interval_end,
        )
    return DeltaLoad(len(rows), written, new)


def corrupt_watermark(wh: Any, key: str, table: str = state.WATERMARKS) -> None:
    """Overwrite ``key`` with a wrongly typed value (``bigint 42``), bypassing the store's checks, as a
    bad manual edit or a buggy deploy would; the next ``read`` raises ``WatermarkTypeError``. No commit."""
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL("UPDATE {} SET value = '42', value_type = 'bigint' WHERE key = %s").format(ident(table)),
            (key,),
        )


# ---------------------------------------------------------------------------------------------------
# 71.6.2 ignoring late data: hourly totals by event time


TOTALS_COLUMNS = (
    "bucket_start timestamptz PRIMARY KEY, events bigint NOT NULL, total numeric(14,2) NOT NULL, "
    "computed_at timestamptz NOT NULL DEFAULT clock_timestamp()"
)
RECONCILIATION_COLUMNS = (
    "id bigserial PRIMARY KEY, run_id text, bucket_start timestamptz NOT NULL, target_total numeric(14,2), "
    "source_total numeric(14,2), difference numeric(14,2) NOT NULL, "
    "checked_at timestamptz NOT NULL DEFAULT clock_timestamp()"
)


def ensure_totals(conn: Any, table: str) -> None:
    _create(conn, table, TOTALS_COLUMNS)
    _create(conn, f"{table}__reconciliation", RECONCILIATION_COLUMNS)
    conn.commit()


def source_totals(
    shop: Any, source: str, start: dt.datetime, end: dt.datetime, grain: dt.timedelta
) -> dict[dt.datetime, tuple[int, Decimal]]:
    """``{bucket_start: (events, total)}`` of events with ``start <= event_time < end`` as the source
    holds them *now* (late rows included), buckets of ``grain`` aligned to the epoch."""
    statement = sql.SQL(
        "SELECT to_timestamp(floor(extract(epoch FROM event_time) / %(g)s) * %(g)s) AS b, count(*), "
        "sum(amount) FROM {} WHERE event_time >= %(s)s AND event_time < %(e)s GROUP BY b"
    ).format(ident(source))
    rows = _fetch(shop, statement, {"g": grain.total_seconds(), "s": start, "e": end})
    return {b: (int(n), Decimal(t)) for b, n, t in rows}


def write_totals(
    wh: Any,
    target: str,
    totals: dict[dt.datetime, tuple[int, Decimal]],
    start: dt.datetime,
    end: dt.datetime,
) -> int:
    """Replace the buckets in ``[start, end)`` with ``totals`` (idempotent); no commit."""
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE bucket_start >= %s AND bucket_start < %s").format(ident(target)),
            (start, end),
        )
        if totals:
            execute_values(
                cur,
                sql.SQL("INSERT INTO {} (bucket_start, events, total) VALUES %s").format(ident(target)),
                [(b, n, t) for b, (n, t) in sorted(totals.items())],
            )
    return len(totals)


def reconcile_totals(
    shop: Any, wh: Any, source: str, target: str, grain: dt.timedelta, run_id: str
) -> list[tuple[dt.datetime, Decimal | None, Decimal | None]]:
    """Compare every bucket in the target with the source as it is now; record each difference in
    ``<target>__reconciliation`` (no commit) and return ``[(bucket, target_total, source_total)]``."""
    have = {
        b: t
        for b, _, t in _fetch(wh, sql.SQL("SELECT bucket_start, events, total FROM {}").format(ident(target)))
    }
    if not have:
        return []
    lo, hi = min(have), max(have) + grain
    truth = {b: t for b, (_, t) in source_totals(shop, source, lo, hi, grain).items()}
    diffs = [
        (b, have.get(b), truth.get(b))
        for b in sorted(set(have) | set(truth))
        if have.get(b, Decimal(0)) != truth.get(b, Decimal(0))
    ]
    if diffs:
        with wh.cursor() as cur:
            execute_values(
                cur,
                sql.SQL(
                    "INSERT INTO {} (run_id, bucket_start, target_total, source_total, difference) VALUES %s"
                ).format(ident(f"{target}__reconciliation")),
                [(run_id, b, t, s, (s or Decimal(0)) - (t or Decimal(0))) for b, t, s in diffs],
            )
    return diffs


# ---------------------------------------------------------------------------------------------------
# 71.6.4 unbounded state: deduplication of re-delivered events


SEEN_COLUMNS = "event_id text PRIMARY KEY, first_seen timestamptz NOT NULL"
EVENTS_COLUMNS = (
    "event_id text NOT NULL, event_time timestamptz NOT NULL, payload text NOT NULL, "
    "loaded_at timestamptz NOT NULL DEFAULT clock_timestamp()"
)
STATE_SIZE_COLUMNS = (
    "id bigserial PRIMARY KEY, run_id text, variant text NOT NULL, interval_end timestamptz NOT NULL, "
    "delivered bigint NOT NULL, emitted bigint NOT NULL, expired bigint NOT NULL, state_rows bigint NOT NULL, "
    "state_bytes bigint NOT NULL, live_bytes bigint, memory_bytes bigint"
)
# columns added after the first release: a size log created earlier gets them on the next run
STATE_SIZE_ADDED = ("live_bytes", "memory_bytes")


def ensure_dedup_tables(conn: Any, target: str, seen: str) -> None:
    """The append-only target (no unique key: the dedup state is the only guard), the seen-state and
    ``<seen>__size`` (state rows and bytes after every run)."""
    _create(conn, target, EVENTS_COLUMNS)
    _create(conn, seen, SEEN_COLUMNS)
    _create(conn, f"{seen}__size", STATE_SIZE_COLUMNS)
    with conn.cursor() as cur:
        for column in STATE_SIZE_ADDED:
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} bigint").format(
                    ident(f"{seen}__size"), sql.Identifier(column)
                )
            )
    conn.commit()


def read_deliveries(shop: Any, source: str, start: dt.datetime, end: dt.datetime) -> list[tuple[Any, ...]]:
    """``[(seq, event_id, event_time, arrived_at, payload)]`` delivered in ``[start, end)``, in order."""
    return _fetch(
        shop,
        sql.SQL(
            "SELECT seq, event_id, event_time, arrived_at, payload FROM {} "
            "WHERE arrived_at >= %s AND arrived_at < %s ORDER BY seq"
        ).format(ident(source)),
        (start, end),
    )


def dedupe_into(
    wh: Any,
    target: str,
    seen: str,
    deliveries: Sequence[tuple[Any, ...]],
    *,
    expire_before: dt.datetime | None,
) -> tuple[int, int]:
    """Emit each delivery whose ``event_id`` is not in ``seen`` and remember it; then, when
    ``expire_before`` is set, delete state first seen before it (TTL). Returns ``(emitted, expired)``;
    no commit. ``expire_before=None`` is the unbounded anti-pattern."""
    emitted = 0
    with wh.cursor() as cur:
        for _seq, event_id, event_time, arrived_at, payload in deliveries:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (event_id, first_seen) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING 1"
                ).format(ident(seen)),
                (event_id, arrived_at),
            )
            if cur.fetchone() is None:
                continue  # a re-delivery of an event already emitted
            cur.execute(
                sql.SQL("INSERT INTO {} (event_id, event_time, payload) VALUES (%s, %s, %s)").format(
                    ident(target)
                ),
                (event_id, event_time, payload),
            )
            emitted += 1
        expired = 0
        if expire_before is not None:
            cur.execute(sql.SQL("DELETE FROM {} WHERE first_seen < %s").format(ident(seen)), (expire_before,))
            expired = int(cur.rowcount)
    return emitted, expired


@dataclass(frozen=True)
class StateSize:
    """The seen-state measured after a run, in four units.

    - ``rows``: ``count(*)``.
    - ``disk_bytes``: ``pg_total_relation_size`` (heap + primary key index + TOAST): what the table costs
      on disk and in the buffer cache. It grows and shrinks in whole 8 kB pages, and deleted rows keep
      their space until a VACUUM marks it reusable.
    - ``live_bytes``: ``sum(pg_column_size(row))``: the bytes of the rows that are live now, without page
      overhead or dead space; exact and deterministic for the same rows.
    - ``memory_bytes``: the same ids held in process as a Python ``set`` (what a task or a stream
      processor keeping its seen-keys in memory would hold): the memory allocated while the set is
      built from the state rows and still held once it is built, measured with ``tracemalloc``.
    """

    rows: int
    disk_bytes: int
    live_bytes: int
    memory_bytes: int


def in_memory_set_bytes(wh: Any, seen: str) -> int:
    """Bytes the seen ids take as a Python ``set`` of ``str``: ``tracemalloc``'s traced memory held after
    reading them into the set (set table + strings), relative to before."""
    import tracemalloc

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        with wh.cursor() as cur:
            cur.execute(sql.SQL("SELECT event_id FROM {}").format(ident(seen)))
            ids = {row[0] for row in cur}
        held, _ = tracemalloc.get_traced_memory()
        del ids
        return max(0, held - before)
    finally:
        if started:
            tracemalloc.stop()


def measure_state(wh: Any, seen: str) -> StateSize:
    """:class:`StateSize` of ``seen`` now (reads only)."""
    rows, live = _fetch(
        wh, sql.SQL("SELECT count(*), coalesce(sum(pg_column_size(s.*)), 0) FROM {} s").format(ident(seen))
    )[0]
    disk = _fetch(wh, sql.SQL("SELECT pg_total_relation_size(%s::regclass)"), (ident(seen).as_string(wh),))[
        0
    ][0]
    return StateSize(int(rows), int(disk), int(live), in_memory_set_bytes(wh, seen))


def reclaim_expired(wh: Any, seen: str) -> None:
    """Give back the space of the rows the TTL deleted: ``VACUUM FULL`` rewrites the seen-state and its
    index compactly. A plain ``VACUUM`` bounds the heap, but the index pages it empties become reusable
    only once no snapshot anywhere in the cluster predates them, and a logical replication slot that lags
    (the lab's Debezium slot) holds that horizon back: with plain VACUUM the *rows* stay bounded while the
    index *bytes* keep growing. The state is one TTL of ids, so the rewrite is small (it holds an
    exclusive lock for its few milliseconds; the DAG runs one run at a time). A large state would be
    partitioned by time and the expired partitions dropped instead. VACUUM cannot run in a transaction:
    autocommit for this one statement."""
    wh.commit()
    old = wh.autocommit
    wh.autocommit = True
    try:
        with wh.cursor() as cur:
            cur.execute(sql.SQL("VACUUM FULL {}").format(ident(seen)))
    finally:
        wh.autocommit = old


def record_state_size(
    wh: Any,
    seen: str,
    *,
    run_id: str,
    variant: str,
    interval_end: dt.datetime,
    delivered: int,
    emitted: int,
    expired: int,
) -> StateSize:
    """Measure the seen-state (:func:`measure_state`) and append it to ``<seen>__size``; no commit."""
    size = measure_state(wh, seen)
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, variant, interval_end, delivered, emitted, expired, state_rows, "
                "state_bytes, live_bytes, memory_bytes) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(ident(f"{seen}__size")),
            (run_id, variant, interval_end, delivered, emitted, expired, *astuple(size)),
        )
    return size


# ---------------------------------------------------------------------------------------------------
# 71.6.5 assuming order: applying a change stream


STATUS_TARGET_COLUMNS = "id bigint PRIMARY KEY, version bigint NOT NULL, status text NOT NULL"


def ensure_status_target(conn: Any, table: str) -> None:
    _create(conn, table, STATUS_TARGET_COLUMNS)
    conn.commit()


def read_changes(conn: Any, source: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Changes that arrived in ``[start, end)``, in arrival order (``seq``)."""
    rows = _fetch(
        conn,
        sql.SQL(
            "SELECT seq, id, version, status FROM {} WHERE arrived_at >= %s AND arrived_at < %s ORDER BY seq"
        ).format(ident(source)),
        (start, end),
    )
    return [{"seq": s, "id": i, "version": v, "status": st} for s, i, v, st in rows]


def apply_in_arrival_order(wh: Any, target: str, changes: Sequence[dict[str, Any]]) -> int:
    """The anti-pattern: every change overwrites the row, the last *arrival* wins; no commit."""
    with wh.cursor() as cur:
        return insert_rows(
            cur,
            target,
            ("id", "version", "status"),
            [(c["id"], c["version"], c["status"]) for c in changes],
            on_conflict="ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, status = EXCLUDED.status",
        )


def apply_version_guarded(wh: Any, target: str, changes: Sequence[dict[str, Any]]) -> upsert.UpsertResult:
    """The fix: the newest *version* wins whatever the arrival order (``cdclab.merge.upsert`` with a guard:
    inside the batch the newest version per key is kept, against the target ``WHERE t.version <
    EXCLUDED.version``); no commit."""
    rows = [{"id": c["id"], "version": c["version"], "status": c["status"]} for c in changes]
    return upsert.upsert_rows(wh, target, rows, ["id"], "version")


def id_versions(cur: Any, target: str) -> list[tuple[int, int]]:
    """``[(id, version)]`` of the target, by id."""
    cur.execute(sql.SQL("SELECT id, version FROM {} ORDER BY id").format(ident(target)))
    return [(int(i), int(v)) for i, v in cur.fetchall()]


def regressed_rows(
    target_rows: Sequence[tuple[int, int]], changes: Sequence[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """``[(id, target_version, newest_version)]`` where the target holds an older version than the newest
    the stream delivered; inputs are ``(id, version)`` pairs."""
    newest: dict[int, int] = {}
    for key, version in changes:
        newest[key] = max(version, newest.get(key, version))
    return sorted((k, v, newest[k]) for k, v in target_rows if k in newest and v < newest[k])
