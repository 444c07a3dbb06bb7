"""Incremental debugging: find, explain, repair and prevent gaps, bad watermarks, duplicates and late rows.

Vocabulary:
- *finding*: one row a diagnostic DAG writes into its findings table (``state.findings_71_08_0N`` by
  default, :func:`ensure_findings`): the run, the *check* (``gap``, ``root_cause``, ``repair``,
  ``verify``...), the *subject* (a window, a key, a partition), a *verdict* (``ok``, ``gap``,
  ``interval_never_run``, ``ahead_of_data``...) and a JSON *detail*. Findings are the audit trail of an
  investigation: a test (and a human) reads them row by row.
- *processed-interval ledger*: ``state.processed_intervals`` (:func:`ensure_ledger`), one row per
  window a pipeline processed, with the rows it loaded, the run that did it and its *cutoff* (the
  processing time: rows that arrive later were not seen). Gaps, late data and reruns are all explained
  by comparing the data with this ledger and with ``state.watermark_history``.
- *gap*: source keys missing from the target, grouped by the grid window (``grain``) of their cursor.
  Its *root cause* is ``loaded_incompletely`` (the ledger covers the window, so rows committed after it
  was processed), ``watermark_jumped`` (a watermark move in the history spans the window but no load
  read it) or ``interval_never_run`` (neither).
- *duplicate*: more than one target row for one key. *Exact* duplicates have the same *row hash*
  (every column but the load metadata) and come from a rerun of a non-idempotent append; *version*
  duplicates differ and come from appending a later change instead of upserting it.
- *lateness*: arrival (ingest) time minus event time. A *late row* arrived after the cutoff at which
  its event-time window was processed; within ``allowed_lateness`` of the window end it is
  *reprocessed* (the window is recomputed), beyond it goes to a dead-letter table with the reason.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from psycopg2 import sql
from psycopg2.extras import Json

from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.common.ddl import like_declared
from cdclab.delta.detection import row_hash

log = logging.getLogger(__name__)

LEDGER = "state.processed_intervals"
GapCause = Literal["interval_never_run", "watermark_jumped", "loaded_incompletely"]
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class DiagnosticError(Exception):
    """Base class of the diagnostics' errors."""


class GapRemainsError(DiagnosticError):
    """Verification after a repair still finds source keys missing from the target."""


class WatermarkInconsistentError(DiagnosticError):
    """The watermark still disagrees with the loaded data after the reset and the rerun."""


class DuplicatesRemainError(DiagnosticError):
    """Deduplication left keys with more than one row."""


class ReplayMismatchError(DiagnosticError):
    """Replaying a topic range into a scratch target did not reproduce the real target."""


# ---------------------------------------------------------------------------------------------------
# findings and the ledger


def _aware(value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: attach a time zone")
    return value.astimezone(dt.UTC)


def ensure_findings(cur: Any, table: str) -> None:
    """Create the findings table ``table`` if missing (idempotent, serialised by an advisory lock)."""
    ensure_ddl(
        cur,
        table,
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {} (
                id          bigserial PRIMARY KEY,
                dag_id      text NOT NULL,
                run_id      text,
                check_name  text NOT NULL,
                subject     text NOT NULL,
                verdict     text NOT NULL,
                detail      jsonb NOT NULL DEFAULT '{{}}',
                recorded_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
        ).format(ident(table)),
    )


def record_finding(
    cur: Any,
    table: str,
    *,
    dag_id: str,
    run_id: str | None,
    check: str,
    subject: str,
    verdict: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append one finding (does not commit)."""
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (dag_id, run_id, check_name, subject, verdict, detail) VALUES (%s, %s, %s, %s, %s, %s)"
        ).format(ident(table)),
        (dag_id, run_id, check, subject, verdict, Json(detail or {}, dumps=_dumps)),
    )


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, dt.datetime) else str(v))


def ensure_ledger(cur: Any, table: str = LEDGER) -> None:
    """The processed-interval ledger: :data:`LEDGER` as infra/postgres/warehouse/V001__state.sql declares
    it, or ``table`` created on first use like it (a run's or a test's own ledger)."""
    like_declared(cur, table, LEDGER)


def record_interval(
    cur: Any,
    pipeline: str,
    start: dt.datetime,
    end: dt.datetime,
    rows_loaded: int,
    *,
    run_id: str | None,
    kind: str = "load",
    cutoff: dt.datetime | None = None,
    table: str = LEDGER,
) -> None:
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (pipeline, interval_start, interval_end, rows_loaded, cutoff, run_id, kind) "
            "VALUES (%s, %s, %s, %s, COALESCE(%s, clock_timestamp()), %s, %s)"
        ).format(ident(table)),
        (pipeline, _aware(start), _aware(end), rows_loaded, cutoff, run_id, kind),
    )


@dataclass(frozen=True)
class LedgerEntry:
    start: dt.datetime
    end: dt.datetime
    rows_loaded: int
    cutoff: dt.datetime
    run_id: str | None
    kind: str


def ledger(cur: Any, pipeline: str, table: str = LEDGER) -> list[LedgerEntry]:
    cur.execute(
        sql.SQL(
            "SELECT interval_start, interval_end, rows_loaded, cutoff, run_id, kind FROM {} "
            "WHERE pipeline = %s ORDER BY interval_start, id"
        ).format(ident(table)),
        (pipeline,),
    )
    return [LedgerEntry(*r) for r in cur.fetchall()]


def ledger_holes(entries: Sequence[LedgerEntry]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Stretches between the first and the last processed window that no ledger entry covers."""
    holes: list[tuple[dt.datetime, dt.datetime]] = []
    covered_to: dt.datetime | None = None
    for e in sorted(entries, key=lambda e: (e.start, e.end)):
        if covered_to is not None and e.start > covered_to:
            holes.append((covered_to, e.start))
        covered_to = e.end if covered_to is None else max(covered_to, e.end)
    return holes


# ---------------------------------------------------------------------------------------------------
# 71.8.1 gaps


def floor_to(instant: dt.datetime, grain: dt.timedelta) -> dt.datetime:
    """Start of the ``grain``-sized grid window (aligned to the Unix epoch) holding ``instant``."""
    u = _aware(instant)
    plain = dt.datetime(u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond, tzinfo=dt.UTC)
    return EPOCH + ((plain - EPOCH) // grain) * grain


@dataclass
class Gap:
    start: dt.datetime
    end: dt.datetime
    missing_keys: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "missing_keys": self.missing_keys,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Gap:
        return cls(
            dt.datetime.fromisoformat(d["start"]), dt.datetime.fromisoformat(d["end"]), d["missing_keys"]
        )


def keys_and_cursor(cur: Any, table: str, key: str, cursor_column: str | None) -> dict[Any, Any]:
    """``{key: cursor}`` of every row of ``table`` (``{key: None}`` without a cursor column)."""
    cols = [sql.Identifier(key)] + ([sql.Identifier(cursor_column)] if cursor_column else [])
    cur.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(cols), ident(table)))
    return {r[0]: (r[1] if cursor_column else None) for r in cur.fetchall()}


def find_gaps(
    source_cur: Any,
    target_cur: Any,
    source: str,
    target: str,
    key: str,
    cursor_column: str,
    grain: dt.timedelta,
) -> list[Gap]:
    """Source keys absent from the target, grouped by the grid window of their cursor value."""
    src = keys_and_cursor(source_cur, source, key, cursor_column)
    tgt = keys_and_cursor(target_cur, target, key, None)
    by_window: dict[dt.datetime, list[Any]] = defaultdict(list)
    for k, cursor in src.items():
        if k not in tgt:
            by_window[floor_to(cursor, grain)].append(k)
    return [Gap(s, s + grain, sorted(keys)) for s, keys in sorted(by_window.items())]


def classify_gap(
    gap: Gap, entries: Sequence[LedgerEntry], history: Sequence[Any]
) -> tuple[GapCause, dict[str, Any]]:
    """Explain one gap from the ledger and the watermark history (``state.HistoryEntry`` objects)."""
    for e in entries:
        if e.start <= gap.start and e.end >= gap.end:
            return "loaded_incompletely", {
                "ledger_run_id": e.run_id,
                "rows_loaded": e.rows_loaded,
                "cutoff": e.cutoff.isoformat(),
                "explanation": "the window was processed; these rows were committed after its cutoff",
            }
    for h in history:
        old, new = h.old_value, h.new_value
        if (
            isinstance(old, dt.datetime)
            and isinstance(new, dt.datetime)
            and old <= gap.start
            and new >= gap.end
        ):
            return "watermark_jumped", {
                "from": old.isoformat(),
                "to": new.isoformat(),
                "run_id": h.run_id,
                "reason": h.reason,
                "explanation": "the watermark moved over the window but no load read it",
            }
    return "interval_never_run", {"explanation": "no ledger entry and no watermark move covers the window"}


def load_window(
    source_conn: Any,
    target_conn: Any,
    source: str,
    target: str,
    key: str,
    cursor_column: str,
    start: dt.datetime,
    end: dt.datetime,
) -> int:
    """Upsert the source rows with ``start <= cursor < end`` into ``target`` (does not commit)."""
    from cdclab.merge.upsert import upsert_rows

    with source_conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT * FROM {} WHERE {c} >= %s AND {c} < %s ORDER BY {k}").format(
                ident(source), c=sql.Identifier(cursor_column), k=sql.Identifier(key)
            ),
            (_aware(start), _aware(end)),
        )
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    source_conn.rollback()
    return upsert_rows(target_conn, target, rows, [key]).written


# ---------------------------------------------------------------------------------------------------
# 71.8.2 watermarks


@dataclass(frozen=True)
class WatermarkCheck:
    verdict: Literal["ok", "missing", "wrong_type", "ahead_of_data", "behind_data"]
    stored: Any
    stored_type: str | None
    max_loaded: dt.datetime | None
    skipped_keys: list[Any]

    def as_dict(self) -> dict[str, Any]:
        stored = self.stored.isoformat() if isinstance(self.stored, dt.datetime) else self.stored
        return {
            "stored": stored,
            "stored_type": self.stored_type,
            "max_loaded": None if self.max_loaded is None else self.max_loaded.isoformat(),
            "skipped_keys": self.skipped_keys,
        }


def max_cursor(cur: Any, table: str, cursor_column: str) -> Any:
    cur.execute(sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(cursor_column), ident(table)))
    return cur.fetchone()[0]


def check_watermark(
    wm: Any,
    max_loaded: dt.datetime | None,
    source_rows: dict[Any, dt.datetime],
    target_rows: dict[Any, dt.datetime],
) -> WatermarkCheck:
    """Compare a stored watermark (``state.Watermark`` or None) with what the target holds.

    ``source_rows`` / ``target_rows`` map key -> cursor. A source row whose cursor is <= the watermark
    but which the target lacks (or holds with an older cursor) is a change the next read will skip."""
    if wm is None:
        return WatermarkCheck("missing", None, None, max_loaded, [])
    if wm.value_type != "timestamptz" or not isinstance(wm.value, dt.datetime):
        return WatermarkCheck("wrong_type", wm.value, wm.value_type, max_loaded, [])
    skipped = sorted(
        k for k, c in source_rows.items() if c <= wm.value and (k not in target_rows or target_rows[k] < c)
    )
    if skipped and (max_loaded is None or wm.value > max_loaded):
        return WatermarkCheck("ahead_of_data", wm.value, wm.value_type, max_loaded, skipped)
    if max_loaded is not None and wm.value < max_loaded:
        return WatermarkCheck("behind_data", wm.value, wm.value_type, max_loaded, [])
    return WatermarkCheck("ok", wm.value, wm.value_type, max_loaded, skipped)


def _decode_any(text: str | None, value_type: str) -> Any:
    from cdclab.state.watermarks import VALUE_TYPES, WatermarkTypeError, decode

    if text is None or text == "":
        return None
    for vt in [value_type, *sorted(VALUE_TYPES - {value_type, "text"}), "text"]:
        try:
            return decode(text, vt)
        except WatermarkTypeError:
            continue
    return text


def watermark_history(cur: Any, key: str, table: str = "state.watermark_history") -> list[Any]:
    """``state.HistoryEntry`` rows of ``key``, tolerant of type changes.

    A row records one ``value_type`` (the new value's); when a reset changed the type, the old value is
    of the previous type, so it is decoded with whichever type parses it (``TableWatermarkStore.history``
    decodes both with the new type and raises on exactly the rows a debugger needs to read)."""
    from cdclab.state.watermarks import HistoryEntry

    cur.execute(
        sql.SQL(
            "SELECT old_value, new_value, value_type, changed_at, dag_id, run_id, reason FROM {} "
            "WHERE key = %s ORDER BY id"
        ).format(ident(table)),
        (key,),
    )
    return [
        HistoryEntry(key, _decode_any(old, vt), _decode_any(new, vt), vt, at, d, r, why)
        for old, new, vt, at, d, r, why in cur.fetchall()
    ]


def regressions(history: Sequence[Any]) -> list[Any]:
    """History entries that moved an ordered watermark backwards (only ``reset`` can)."""
    out = []
    for h in history:
        old, new = h.old_value, h.new_value
        if type(old) is type(new) and isinstance(new, (dt.datetime, int)) and new < old:
            out.append(h)
    return out


def type_changes(history: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Consecutive history entries whose value type differs."""
    return [(a, b) for a, b in itertools.pairwise(history) if a.value_type != b.value_type]


# ---------------------------------------------------------------------------------------------------
# 71.8.4 duplicates

LOAD_RUN = "_load_run_id"
LOADED_AT = "_loaded_at"


def data_columns(cur: Any, table: str) -> list[str]:
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        (table,),
    )
    return [c for (c,) in cur.fetchall() if c not in (LOAD_RUN, LOADED_AT)]


@dataclass(frozen=True)
class DuplicateRow:
    key: Any
    row_hash: str
    load_run_id: str | None
    loaded_at: dt.datetime
    kept: bool  # the row deduplication keeps: latest by the order columns, then by load time
    first_load: bool  # the earliest loaded row of the key (the original; the others are duplicates)
    exact: bool  # equals an earlier loaded row of the key in every data column (a rerun's copy)


def _latest_first(order_columns: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(
        [sql.SQL("{} DESC").format(sql.Identifier(c)) for c in order_columns]
        + [sql.SQL("{} DESC").format(sql.Identifier(LOADED_AT)), sql.SQL("ctid DESC")]
    )


def duplicate_rows(cur: Any, table: str, key: str, order_columns: Sequence[str]) -> list[DuplicateRow]:
    """Every row of a key that occurs more than once, in load order, with its row hash and attribution."""
    cols = data_columns(cur, table)
    cur.execute(
        sql.SQL(
            "SELECT {k}, {load}, {at}, row_number() OVER (PARTITION BY {k} ORDER BY {o}) = 1, {cols} FROM {t} "
            "WHERE {k} IN (SELECT {k} FROM {t} GROUP BY {k} HAVING count(*) > 1) ORDER BY {k}, {at}, ctid"
        ).format(
            k=sql.Identifier(key),
            load=sql.Identifier(LOAD_RUN),
            at=sql.Identifier(LOADED_AT),
            o=_latest_first(order_columns),
            cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
            t=ident(table),
        )
    )
    out: list[DuplicateRow] = []
    seen: dict[Any, set[str]] = defaultdict(set)
    for k, run, at, kept, *values in cur.fetchall():
        h = row_hash(values)
        out.append(DuplicateRow(k, h, run, at, kept, not seen[k], h in seen[k]))
        seen[k].add(h)
    return out


def deduplicate(cur: Any, table: str, key: str, order_columns: Sequence[str]) -> int:
    """Delete every row but the latest of each key (same ranking as :func:`duplicate_rows`)."""
    cur.execute(
        sql.SQL(
            "DELETE FROM {t} WHERE ctid IN (SELECT ctid FROM (SELECT ctid, row_number() OVER "
            "(PARTITION BY {k} ORDER BY {o}) AS rn FROM {t}) r WHERE rn > 1)"
        ).format(t=ident(table), k=sql.Identifier(key), o=_latest_first(order_columns))
    )
    return int(cur.rowcount)


def add_unique_key(cur: Any, table: str, key: str) -> bool:
    """Add ``UNIQUE (key)`` to ``table`` unless it already has one; True when added."""
    name = f"{table.split('.')[-1][:40]}_{key}_uniq"
    cur.execute("SELECT 1 FROM pg_constraint WHERE conrelid = %s::regclass AND conname = %s", (table, name))
    if cur.fetchone():
        return False
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})").format(
            ident(table), sql.Identifier(name), sql.Identifier(key)
        )
    )
    return True


def append_rows(cur: Any, table: str, rows: Sequence[dict[str, Any]], load_run_id: str) -> int:
    """The non-idempotent loader under investigation: plain INSERT, tagged with the load run."""
    for r in rows:
        cols = [*r.keys(), LOAD_RUN]
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                ident(table),
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.SQL(", ").join(sql.Placeholder() * len(cols)),
            ),
            [*r.values(), load_run_id],
        )
    return len(rows)


# ---------------------------------------------------------------------------------------------------
# 71.8.5 late data

Handling = Literal["on_time", "reprocess", "dead_letter"]


def handle_late(
    window_end: dt.datetime, ingested_at: dt.datetime, allowed_lateness: dt.timedelta
) -> Handling:
    """Policy for a row that arrived after its window was processed."""
    return "reprocess" if ingested_at - window_end <= allowed_lateness else "dead_letter"


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (same as Postgres ``percentile_cont``)."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class LateDataTables:
    """The tables of a late-data pipeline: its ``events`` (``event_id, source, event_time, ingested_at,
    amount``), the hourly event-time aggregate ``target``, the ``dead_letter`` table of rows too late to
    change a final window, the ``findings`` table, the ``ledger`` and the ``pipeline``'s name in it."""

    events: str
    target: str
    dead_letter: str
    findings: str
    ledger: str = LEDGER
    pipeline: str = ""


LATE_WINDOW = dt.timedelta(hours=1)


def _late_findings(
    cur: Any, t: LateDataTables, check: str, dag_id: str, run_id: str | None
) -> Callable[[str, str, dict[str, Any]], None]:
    """``finding(subject, verdict, detail)``: records one ``check`` finding of this run in ``t.findings``."""

    def finding(subject: str, verdict: str, detail: dict[str, Any]) -> None:
        record_finding(
            cur,
            t.findings,
            dag_id=dag_id,
            run_id=run_id,
            check=check,
            subject=subject,
            verdict=verdict,
            detail=detail,
        )

    return finding


def prepare_late_data(cur: Any, t: LateDataTables) -> None:
    """Create the findings table, the ledger, the dead-letter table and the hourly target if missing."""
    ensure_findings(cur, t.findings)
    ensure_ledger(cur, t.ledger)
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (event_id text PRIMARY KEY, source text, event_time timestamptz, "
            "ingested_at timestamptz, window_start timestamptz, reason text NOT NULL, "
            "dead_lettered_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident(t.dead_letter))
    )
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (window_start timestamptz PRIMARY KEY, window_end timestamptz "
            "NOT NULL, events bigint NOT NULL, amount bigint NOT NULL, computed_at_cutoff timestamptz NOT NULL)"
        ).format(ident(t.target))
    )


def last_cutoff(entries: Sequence[LedgerEntry]) -> dt.datetime | None:
    """The latest cutoff in the ledger: arrivals after it are the ones not looked at yet."""
    return max((e.cutoff for e in entries), default=None)


def _arrivals_clause() -> sql.Composable:
    return sql.SQL("ingested_at <= %s AND (%s::timestamptz IS NULL OR ingested_at > %s)")


def identify_late(
    cur: Any,
    t: LateDataTables,
    cutoff: dt.datetime,
    allowed: dt.timedelta,
    *,
    dag_id: str,
    run_id: str | None,
) -> list[dict[str, Any]]:
    """Every row that arrived in ``(last cutoff, cutoff]`` after its window was computed (its ingest time
    is past the latest cutoff the ledger holds for its window) becomes a ``late_identification`` finding
    with its lateness, how far past its window end it arrived and its handling (:func:`handle_late`).
    Returns the late rows, each ``{"event_id", **detail}``."""
    entries = ledger(cur, t.pipeline, t.ledger)
    since = last_cutoff(entries)
    cur.execute(
        sql.SQL("SELECT event_id, source, event_time, ingested_at FROM {} WHERE {} ORDER BY event_id").format(
            ident(t.events), _arrivals_clause()
        ),
        (cutoff, since, since),
    )
    arrivals = cur.fetchall()
    processed: dict[dt.datetime, dt.datetime] = {}
    for e in entries:  # window start -> latest cutoff it was computed at
        processed[e.start] = max(processed.get(e.start, e.cutoff), e.cutoff)
    finding = _late_findings(cur, t, "late_identification", dag_id, run_id)
    late = []
    for event_id, source, event_time, ingested_at in arrivals:
        start = floor_to(event_time, LATE_WINDOW)
        if start in processed and ingested_at > processed[start]:
            end = start + LATE_WINDOW
            detail = {
                "source": source,
                "window_start": start.isoformat(),
                "lateness_s": (ingested_at - event_time).total_seconds(),
                "after_window_end_s": (ingested_at - end).total_seconds(),
                "window_cutoff": processed[start].astimezone(dt.UTC).isoformat(),
                "handling": handle_late(end, ingested_at, allowed),
            }
            finding(event_id, "late", detail)
            late.append({"event_id": event_id, **detail})
    log.info("%s arrivals since %s, %s late", len(arrivals), since, len(late))
    return late


def record_source_delays(
    cur: Any, t: LateDataTables, cutoff: dt.datetime, *, dag_id: str, run_id: str | None
) -> None:
    """Per source, count / p50 / p95 / max of ``ingested_at - event_time`` over the rows that arrived in
    ``(last cutoff, cutoff]`` (Postgres ``percentile_cont``), one ``source_delay`` finding each."""
    since = last_cutoff(ledger(cur, t.pipeline, t.ledger))
    lag = sql.SQL("extract(epoch FROM ingested_at - event_time)")
    cur.execute(
        sql.SQL(
            "SELECT source, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY {lag}), "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY {lag}), max({lag}) FROM {e} WHERE {arrived} "
            "GROUP BY source ORDER BY source"
        ).format(lag=lag, e=ident(t.events), arrived=_arrivals_clause()),
        (cutoff, since, since),
    )
    finding = _late_findings(cur, t, "source_delay", dag_id, run_id)
    for source, n, p50, p95, worst in cur.fetchall():
        finding(
            source, "measured", {"rows": n, "p50_s": float(p50), "p95_s": float(p95), "max_s": float(worst)}
        )


def recompute_window(
    cur: Any, t: LateDataTables, start: dt.datetime, end: dt.datetime, cutoff: dt.datetime
) -> tuple[int, int]:
    """Recompute one window from the rows arrived by ``cutoff`` (dead letters excluded); upsert it into
    the target. Returns ``(events, amount)``."""
    cur.execute(
        sql.SQL(
            "SELECT count(*), COALESCE(sum(amount), 0) FROM {e} WHERE event_time >= %s AND event_time < %s "
            "AND ingested_at <= %s AND event_id NOT IN (SELECT event_id FROM {dl})"
        ).format(e=ident(t.events), dl=ident(t.dead_letter)),
        (start, end, cutoff),
    )
    events, amount = cur.fetchone()
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (window_start, window_end, events, amount, computed_at_cutoff) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (window_start) DO UPDATE SET events = EXCLUDED.events, amount = EXCLUDED.amount, "
            "computed_at_cutoff = EXCLUDED.computed_at_cutoff"
        ).format(ident(t.target)),
        (start, end, events, amount, cutoff),
    )
    return int(events), int(amount)


def handle_late_rows(
    cur: Any,
    t: LateDataTables,
    late: Sequence[dict[str, Any]],
    cutoff: dt.datetime,
    allowed_minutes: int,
    *,
    dag_id: str,
    run_id: str | None,
) -> None:
    """Apply the policy to the rows :func:`identify_late` found: a ``dead_letter`` row goes to the
    dead-letter table with the reason (its window stays final); each window with a ``reprocess`` row is
    recomputed with everything arrived by ``cutoff`` and recorded in the ledger as ``reprocess``. Every
    action is a ``handling`` finding."""
    finding = _late_findings(cur, t, "handling", dag_id, run_id)
    for row in late:
        if row["handling"] != "dead_letter":
            continue
        cur.execute(
            sql.SQL(
                "INSERT INTO {dl} (event_id, source, event_time, ingested_at, window_start, reason) "
                "SELECT event_id, source, event_time, ingested_at, %s, %s FROM {e} WHERE event_id = %s "
                "ON CONFLICT (event_id) DO NOTHING"
            ).format(dl=ident(t.dead_letter), e=ident(t.events)),
            (
                row["window_start"],
                f"arrived {row['after_window_end_s']:.0f}s after its window ended; allowed lateness is "
                f"{allowed_minutes} min, the window stays final",
                row["event_id"],
            ),
        )
        finding(row["event_id"], "dead_letter", {"window_start": row["window_start"]})
    for ws in sorted({r["window_start"] for r in late if r["handling"] == "reprocess"}):
        start = dt.datetime.fromisoformat(ws)
        events, amount = recompute_window(cur, t, start, start + LATE_WINDOW, cutoff)
        record_interval(
            cur,
            t.pipeline,
            start,
            start + LATE_WINDOW,
            events,
            run_id=run_id,
            kind="reprocess",
            cutoff=cutoff,
            table=t.ledger,
        )
        late_rows = sum(1 for r in late if r["window_start"] == ws)
        finding(ws, "reprocessed", {"events": events, "amount": amount, "late_rows": late_rows})


def process_late_window(
    cur: Any,
    t: LateDataTables,
    start: dt.datetime,
    end: dt.datetime,
    cutoff: dt.datetime,
    *,
    dag_id: str,
    run_id: str | None,
) -> None:
    """Compute the run's own window from the rows arrived by ``cutoff``, record it in the ledger
    (``load``) with its cutoff and as a ``processing_window`` finding."""
    events, amount = recompute_window(cur, t, start, end, cutoff)
    record_interval(
        cur, t.pipeline, start, end, events, run_id=run_id, kind="load", cutoff=cutoff, table=t.ledger
    )
    finding = _late_findings(cur, t, "processing_window", dag_id, run_id)
    finding(
        start.isoformat(), "processed", {"events": events, "amount": amount, "cutoff": cutoff.isoformat()}
    )


# ---------------------------------------------------------------------------------------------------
# 71.8.3 CDC


def record_key(msg: Any) -> dict[str, Any] | None:
    """The decoded key of a Debezium record (schemas wrapper removed); None when it is not JSON."""
    from cdclab.cdc.events import json_document

    doc = json_document(msg.key())
    return doc if isinstance(doc, dict) else None


def classify_record(msg: Any) -> tuple[str, Any]:
    """``(kind, change_or_error)``: kind is the op (``c``/``u``/``d``/``r``/``t``), ``tombstone``,
    ``skipped`` or ``malformed`` (with the parser's message)."""
    from cdclab.cdc.events import MalformedEvent, Skipped, parse_debezium

    try:
        event = parse_debezium(msg.key(), msg.value(), msg.topic())
    except MalformedEvent as exc:
        return "malformed", str(exc)
    if isinstance(event, Skipped):
        return ("tombstone" if event.kind == "tombstone" else "skipped"), None
    return event.op, event
