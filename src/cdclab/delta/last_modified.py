"""Last-modified tracking: read rows by a modified timestamp, in keyset batches, with a lookback.

Vocabulary:
- *modified timestamp*: a column the database sets on every write (``updated_at``, kept by the shop's
  ``touch_row`` trigger as ``now()``, i.e. the writing transaction's *start* time).
- *read window*: the data interval widened by the *lookback*: ``[start - lookback, end)``. A transaction
  that started before ``start`` but committed after the previous run read its window carries an
  ``updated_at`` in the previous interval; the lookback re-reads that stretch so the row is not missed.
  Rows re-read by the overlap are harmless because the write is an upsert guarded by
  ``(updated_at, version)`` (:func:`upsert_sql`): an unchanged or older row changes nothing.
- *keyset cursor*: the position ``(updated_at, id)`` after the last row of a batch. The next batch reads
  ``(updated_at, id) > (last_ts, last_id)``; the key breaks ties, so rows sharing one timestamp across a
  batch boundary are neither lost nor read twice. The anti-pattern ``updated_at > last_ts``
  (*cursor mode* ``"timestamp_only"``) loses every row that shares the boundary timestamp with the batch's
  last row; it exists here only so a test can show the loss.
- *index requirement*: the batch query is a range scan ordered by ``(updated_at, id)``; without an
  index on ``updated_at`` Postgres reads the whole table (``Seq Scan``) on every batch of every run.
  :func:`plan_summary` reduces an ``EXPLAIN (FORMAT JSON)`` plan to the scan nodes used on the table.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.delta.detection import keyset_after
from cdclab.ops.perf import plan_nodes
from cdclab.time.intervals import Window

log = logging.getLogger(__name__)

CursorMode = Literal["keyset", "timestamp_only"]
CURSOR_MODES: frozenset[str] = frozenset({"keyset", "timestamp_only"})
MIN_KEY = -(2**63)
INDEX_SCANS: frozenset[str] = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})


class UnknownCursorModeError(ValueError):
    def __init__(self, mode: str) -> None:
        super().__init__(
            f"unknown cursor mode {mode!r}; use one of {sorted(CURSOR_MODES)} ('keyset' is correct)"
        )


def batch_sql(
    source: str,
    columns: Sequence[str],
    ts_col: str = "updated_at",
    key_col: str = "id",
    mode: CursorMode = "keyset",
) -> sql.Composed:
    """One batch: rows in the read window after the cursor, ordered by ``(ts, key)``, at most ``%(limit)s``.

    Parameters: ``lo``, ``hi`` (read window), ``after_ts``, ``after_key`` (cursor), ``limit``.
    """
    if mode not in CURSOR_MODES:
        raise UnknownCursorModeError(mode)
    ts, key = sql.Identifier(ts_col), sql.Identifier(key_col)
    after = (
        keyset_after(ts, [key], [sql.Placeholder("after_ts"), sql.Placeholder("after_key")])
        if mode == "keyset"
        else sql.SQL("{} > %(after_ts)s").format(ts)  # the anti-pattern
    )
    return sql.SQL(
        "SELECT {cols} FROM {src} WHERE {ts} >= %(lo)s AND {ts} < %(hi)s AND {after} ORDER BY {ts}, {key} LIMIT %(limit)s"
    ).format(
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        src=ident(source),
        ts=ts,
        key=key,
        after=after,
    )


def first_params(window: Window, limit: int, mode: CursorMode = "keyset") -> dict[str, Any]:
    """Parameters of the first batch: the cursor sits just before the read window's first row."""
    if limit < 1:
        raise ValueError(f"batch size must be at least 1, got {limit}")
    after_ts = window.start if mode == "keyset" else window.start - dt.timedelta(microseconds=1)
    return {"lo": window.start, "hi": window.end, "after_ts": after_ts, "after_key": MIN_KEY, "limit": limit}


@dataclass
class BatchRead:
    """What a batched read saw: the batches' sizes and the cursor after each batch."""

    batch_sizes: list[int] = field(default_factory=list)
    cursors: list[tuple[Any, Any]] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(self.batch_sizes)


def read_batches(
    cur: Any,
    source: str,
    columns: Sequence[str],
    window: Window,
    limit: int,
    ts_col: str = "updated_at",
    key_col: str = "id",
    mode: CursorMode = "keyset",
    log: BatchRead | None = None,
) -> Iterator[list[tuple[Any, ...]]]:
    """Yield batches of rows from ``source`` in ``window`` (``columns`` must include ts and key)."""
    query = batch_sql(source, columns, ts_col, key_col, mode)
    ts_i, key_i = list(columns).index(ts_col), list(columns).index(key_col)
    params = first_params(window, limit, mode)
    while True:
        cur.execute(query, params)
        rows = cur.fetchall()
        if not rows:
            return
        if log is not None:
            log.batch_sizes.append(len(rows))
            log.cursors.append((rows[-1][ts_i], rows[-1][key_i]))
        yield rows
        if len(rows) < limit:
            return
        params = {**params, "after_ts": rows[-1][ts_i], "after_key": rows[-1][key_i]}


def upsert_sql(
    target: str, columns: Sequence[str], key_col: str = "id", extra: Sequence[str] = ()
) -> sql.Composed:
    """``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE (t.updated_at, t.version) < (new)``, for execute_values.

    Newer wins: an overlap re-read or a replay of an older row updates nothing.
    """
    all_cols = [*columns, *extra]
    return sql.SQL(
        "INSERT INTO {tgt} AS t ({cols}) VALUES %s ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE (t.updated_at, t.version) < (EXCLUDED.updated_at, EXCLUDED.version)"
    ).format(
        tgt=ident(target),
        cols=sql.SQL(", ").join(map(sql.Identifier, all_cols)),
        key=sql.Identifier(key_col),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in all_cols if c != key_col
        ),
    )


@dataclass(frozen=True)
class PlanSummary:
    """The scan nodes Postgres chose for one table in a plan."""

    scan_nodes: tuple[str, ...]
    index_names: tuple[str, ...]

    @property
    def uses_index(self) -> bool:
        return any(n in INDEX_SCANS for n in self.scan_nodes)

    @property
    def text(self) -> str:
        idx = f" using {', '.join(self.index_names)}" if self.index_names else ""
        return " + ".join(self.scan_nodes) + idx


def plan_summary(plan: Any, table: str) -> PlanSummary:
    """Reduce ``EXPLAIN (FORMAT JSON)`` output to the scans of ``table`` (unqualified name)."""
    root = plan[0]["Plan"] if isinstance(plan, list) else plan["Plan"]
    nodes: list[str] = []
    indexes: list[str] = []
    for node in plan_nodes(root):
        name = node.get("Node Type", "")
        if node.get("Relation Name") == table or (name == "Bitmap Index Scan" and "Index Name" in node):
            nodes.append(name)
            if "Index Name" in node:
                indexes.append(node["Index Name"])
    return PlanSummary(scan_nodes=tuple(nodes), index_names=tuple(dict.fromkeys(indexes)))


# ---------------------------------------------------------------------------------------------------
# the steps of a last-modified load (dags/71_02_02_last_modified.py): explain, load, log the run

ORDERS_COLUMNS = ("id", "customer_id", "status", "ordered_at", "total", "updated_at", "version")
"""The columns of ``shop.orders`` a last-modified load copies (the target adds ``loaded_by_run``)."""

ORDERS_TARGET_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, customer_id bigint, status text, "
    "ordered_at timestamptz, total numeric(12, 2), updated_at timestamptz NOT NULL, "
    "version integer NOT NULL, loaded_by_run text)"
)

RUN_LOG_DDL = (
    "CREATE TABLE IF NOT EXISTS {} (run_id text PRIMARY KEY, interval_start timestamptz, "
    "interval_end timestamptz, read_from timestamptz, rows_read integer, rows_written integer, "
    "batches integer, uses_index boolean, scan_nodes text[], index_names text[], plan jsonb, "
    "logged_at timestamptz NOT NULL DEFAULT now())"
)


def explain_first_batch(
    source: str, columns: Sequence[str], window: Window, batch_size: int, mode: CursorMode = "keyset"
) -> dict[str, Any]:
    """``EXPLAIN (FORMAT JSON)`` the first batch query on the source (``shop``): which scan does the
    cursor get? Returns ``scan_nodes``, ``index_names``, ``uses_index`` and the ``plan``."""
    query = batch_sql(source, columns, mode=mode)
    with transaction(SHOP) as cur:
        cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query), first_params(window, batch_size, mode))
        plan = cur.fetchone()[0]
    summary = plan_summary(plan, source.split(".")[-1])
    log.info("cursor query plan: %s", summary.text)
    return {
        "scan_nodes": list(summary.scan_nodes),
        "index_names": list(summary.index_names),
        "uses_index": summary.uses_index,
        "plan": plan,
    }


def load_orders_changes(
    source: str, target: str, window: Window, batch_size: int, run_id: str, mode: CursorMode = "keyset"
) -> dict[str, Any]:
    """Create the orders target if missing, then read the changed rows of ``source`` in ``window`` in
    keyset batches and upsert each batch, guarded by ``(updated_at, version)``, in its own warehouse
    transaction. Returns ``read_from`` (ISO), ``rows_read``, ``rows_written`` and ``batches``."""
    from psycopg2.extras import execute_values

    with transaction(WAREHOUSE) as cur:
        cur.execute(sql.SQL(ORDERS_TARGET_DDL).format(ident(target)))
    upsert = upsert_sql(target, ORDERS_COLUMNS, extra=["loaded_by_run"])
    read = BatchRead()
    written = 0
    with transaction(SHOP) as scur:
        for rows in read_batches(scur, source, ORDERS_COLUMNS, window, batch_size, mode=mode, log=read):
            with transaction(WAREHOUSE) as cur:
                execute_values(cur, upsert.as_string(cur), [(*r, run_id) for r in rows])
                written += cur.rowcount
    return {
        "read_from": window.start.isoformat(),
        "rows_read": read.rows,
        "rows_written": written,
        "batches": len(read.batch_sizes),
    }


def record_run(run_log: str, run_id: str, window: Window, load: dict[str, Any], plan: dict[str, Any]) -> None:
    """One row per run in ``run_log`` (created if missing): the window, the load's counts (what
    :func:`load_orders_changes` returns) and the plan summary (what :func:`explain_first_batch` returns)."""
    from psycopg2.extras import Json

    with transaction(WAREHOUSE) as cur:
        cur.execute(sql.SQL(RUN_LOG_DDL).format(ident(run_log)))
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, interval_start, interval_end, read_from, rows_read, rows_written, "
                "batches, uses_index, scan_nodes, index_names, plan) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, "
                "%s, %s) ON CONFLICT (run_id) DO NOTHING"
            ).format(ident(run_log)),
            (
                run_id,
                window.start,
                window.end,
                load["read_from"],
                load["rows_read"],
                load["rows_written"],
                load["batches"],
                plan["uses_index"],
                plan["scan_nodes"],
                plan["index_names"],
                Json(plan["plan"]),
            ),
        )
