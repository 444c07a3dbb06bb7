"""Measuring incremental pipelines: what was read, written, how the database did it, how long it took.

Vocabulary:
- *experiment*: a name for one comparison (``"71_07_01/public.perf_71_07_01"``); every measurement of
  it carries the name so runs can be compared over time.
- *variant*: one way of doing the same work inside an experiment (``"full"``, ``"incremental"``,
  ``"merge_pk/b100"``...). Variants of one experiment must end in the same data; only their costs differ.
- *measurement*: one row of ``state.perf_runs``: experiment, variant, the DAG run, ``rows_read``,
  ``rows_written``, ``duration_ms`` (wall clock of the measured block, :class:`Stopwatch`) and
  ``details`` (JSON: the parameters of the variant and anything else worth keeping, such as a plan).
  Durations are noisy on a shared 2-core machine: compare them within one run, never assert them in
  tests; rows and plan shapes are deterministic and are what tests check.
- *plan stats* (:class:`PlanStats`): an ``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` plan reduced to
  its node types, the scans and indexes used, estimated vs actual rows of the top node, and shared
  buffer *hits* (pages found in Postgres' cache) and *reads* (pages fetched from the OS/disk).
- *break-even ratio* (:func:`break_even`): the change ratio (changed rows / table rows) at which an
  incremental load costs as much as a full load, found by linear interpolation between measured
  points. ``None`` when the curves do not cross inside the measured range (the *side* then says which
  strategy won everywhere).
- *retention* (:func:`prune_history`): keep the newest ``keep`` history rows per key, delete the rest in
  one statement; state history grows with every run otherwise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident, insert_row
from cdclab.common.ddl import like_declared

PERF_RUNS = "state.perf_runs"
INDEX_SCANS: frozenset[str] = frozenset({"Index Scan", "Index Only Scan", "Bitmap Index Scan"})


class PerfError(Exception):
    """Base class of measurement errors."""


class NotAPlanError(PerfError, ValueError):
    """The value given to :func:`plan_stats` is not ``EXPLAIN (FORMAT JSON)`` output."""


def ensure_schema(conn: Any, table: str = PERF_RUNS) -> None:
    """``state.perf_runs`` as infra/postgres/warehouse/V001__state.sql declares it, or ``table`` created
    on first use like it (a test's own table); commits on ``conn``."""
    with conn.cursor() as cur:
        like_declared(cur, table, PERF_RUNS)
    conn.commit()


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.ms`` (monotonic wall clock, milliseconds)."""

    def __init__(self) -> None:
        self.ms = 0.0
        self._t0 = 0.0

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ms = (time.perf_counter() - self._t0) * 1000.0


@dataclass
class Measurement:
    experiment: str
    variant: str
    rows_read: int | None = None
    rows_written: int | None = None
    duration_ms: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


def record(
    conn: Any, m: Measurement, *, dag_id: str | None = None, run_id: str | None = None, table: str = PERF_RUNS
) -> int:
    """Append one measurement; returns its id (does not commit)."""
    row = {
        "experiment": m.experiment,
        "variant": m.variant,
        "dag_id": dag_id,
        "run_id": run_id,
        "rows_read": m.rows_read,
        "rows_written": m.rows_written,
        "duration_ms": m.duration_ms,
        "details": json.dumps(m.details, default=str, sort_keys=True),
    }
    with conn.cursor() as cur:
        return int(insert_row(cur, table, row, returning="id"))


def measurements(
    conn: Any, experiment: str, run_id: str | None = None, table: str = PERF_RUNS
) -> list[dict[str, Any]]:
    """The measurements of ``experiment`` (of one DAG run when ``run_id`` is given), oldest first."""
    where = sql.SQL("experiment = %s") + (sql.SQL(" AND run_id = %s") if run_id else sql.SQL(""))
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, experiment, variant, dag_id, run_id, rows_read, rows_written, duration_ms, details "
                "FROM {} WHERE {} ORDER BY id"
            ).format(ident(table), where),
            (experiment, run_id) if run_id else (experiment,),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --------------------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class PlanStats:
    node_types: tuple[str, ...]
    scan_nodes: tuple[str, ...]
    index_names: tuple[str, ...]
    plan_rows: float
    actual_rows: float | None
    shared_hit: int | None
    shared_read: int | None
    execution_ms: float | None

    @property
    def uses_index(self) -> bool:
        return any(n in INDEX_SCANS for n in self.scan_nodes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uses_index": self.uses_index}


def explain(
    cur: Any, statement: sql.Composable | str, params: Any = None, *, analyze: bool = True
) -> list[Any]:
    """``EXPLAIN (FORMAT JSON[, ANALYZE, BUFFERS])`` of ``statement``; ANALYZE executes it, so only use it
    on reads or inside a transaction that is rolled back."""
    options = "ANALYZE, BUFFERS, FORMAT JSON" if analyze else "FORMAT JSON"
    body = sql.SQL(statement) if isinstance(statement, str) else statement
    cur.execute(sql.SQL("EXPLAIN ({}) ").format(sql.SQL(options)) + body, params)
    plan = cur.fetchone()[0]
    return json.loads(plan) if isinstance(plan, str) else plan


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The nodes of an ``EXPLAIN (FORMAT JSON)`` plan tree, ``node`` first, then its ``Plans`` in order."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def plan_stats(plan: Any) -> PlanStats:
    """Reduce ``EXPLAIN (FORMAT JSON)`` output (with or without ANALYZE/BUFFERS) to :class:`PlanStats`."""
    try:
        top = plan[0] if isinstance(plan, list) else plan
        root = top["Plan"]
    except (KeyError, IndexError, TypeError) as exc:
        raise NotAPlanError(f"not EXPLAIN (FORMAT JSON) output: {str(plan)[:200]!r}") from exc
    nodes = [n.get("Node Type", "") for n in plan_nodes(root)]
    scans = [name for name in nodes if "Scan" in name]
    indexes = [n["Index Name"] for n in plan_nodes(root) if "Index Name" in n]
    return PlanStats(
        node_types=tuple(nodes),
        scan_nodes=tuple(scans),
        index_names=tuple(dict.fromkeys(indexes)),
        plan_rows=float(root.get("Plan Rows", 0)),
        actual_rows=root.get("Actual Rows"),
        shared_hit=root.get("Shared Hit Blocks"),
        shared_read=root.get("Shared Read Blocks"),
        execution_ms=top.get("Execution Time"),
    )


def rows_scanned(plan: Any) -> int:
    """Rows the scan nodes of an ``EXPLAIN (ANALYZE, FORMAT JSON)`` plan looked at: per scan node, the
    rows it returned plus those its filter (or index recheck) removed, times its loops. A keyed lookup
    scans 1; a sequential scan of a table with a filter scans every row of it."""
    try:
        root = (plan[0] if isinstance(plan, list) else plan)["Plan"]
    except (KeyError, IndexError, TypeError) as exc:
        raise NotAPlanError(f"not EXPLAIN (FORMAT JSON) output: {str(plan)[:200]!r}") from exc
    total = 0.0
    for n in plan_nodes(root):
        if "Scan" in n.get("Node Type", "") and n.get("Node Type") != "Bitmap Index Scan":
            seen = n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)
            seen += n.get("Rows Removed by Index Recheck", 0)
            total += seen * n.get("Actual Loops", 1)
    return round(total)


# --------------------------------------------------------------------------------------- analysis


@dataclass(frozen=True)
class BreakEven:
    """Where the incremental cost curve crosses the full cost curve (``ratio``), or which side won."""

    ratio: float | None
    side: str  # "crosses" | "incremental_cheaper" | "full_cheaper"
    points: tuple[tuple[float, float, float], ...]

    def as_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "side": self.side, "points": [list(p) for p in self.points]}


def break_even(points: Sequence[tuple[float, float, float]]) -> BreakEven:
    """``points``: ``(change_ratio, full_cost, incremental_cost)``; cost is any measure (ms, rows, bytes).

    Returns the first ratio where ``incremental - full`` changes sign (linear interpolation between the
    two neighbouring points), else which strategy was cheaper at every measured ratio."""
    pts = tuple(sorted((float(r), float(f), float(i)) for r, f, i in points))
    if not pts:
        raise PerfError("break_even needs at least one (ratio, full, incremental) point")
    diffs = [i - f for _, f, i in pts]
    for (r0, _, _), d0, (r1, _, _), d1 in zip(pts, diffs, pts[1:], diffs[1:], strict=False):
        if (d0 < 0) != (d1 < 0):  # the sign of incremental - full changes between r0 and r1
            ratio = r0 + (r1 - r0) * (-d0) / (d1 - d0)
            return BreakEven(round(ratio, 6), "crosses", pts)
    if diffs[0] >= 0:
        return BreakEven(None, "full_cheaper", pts)
    return BreakEven(None, "incremental_cheaper", pts)


# --------------------------------------------------------------------------------------- retention


def prune_history(
    cur: Any, table: str, *, key_column: str, order_column: str, keep: int, key_prefix: str = ""
) -> int:
    """Delete all but the newest ``keep`` rows per ``key_column`` (newest by ``order_column``), only among
    keys starting with ``key_prefix`` (a shared history table holds other pipelines' rows too); returns the
    number of rows deleted. One statement, so a crash cannot leave half a cleanup."""
    if keep < 1:
        raise PerfError(f"keep={keep}: retention must keep at least the newest row per key")
    cur.execute(
        sql.SQL(
            "DELETE FROM {t} h USING (SELECT ctid AS c, row_number() OVER (PARTITION BY {k} ORDER BY {o} DESC) "
            "AS rn FROM {t} WHERE left({k}, length(%(p)s)) = %(p)s) r WHERE h.ctid = r.c AND r.rn > %(keep)s"
        ).format(t=ident(table), k=sql.Identifier(key_column), o=sql.Identifier(order_column)),
        {"p": key_prefix, "keep": keep},
    )
    return int(cur.rowcount)
