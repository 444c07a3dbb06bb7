"""Error recovery for interval loads: retries with backoff, dead letters, a ledger that drives gap filling,
and validation against the source.

Vocabulary:
- *transient error*: a failure worth retrying unchanged (:class:`TransientSourceError`, a dropped
  connection). :func:`retry` retries it with exponential backoff (``base_delay * factor**n``) and gives up
  after ``attempts``; any other error fails at once.
- *poison row*: a row that will never load (an unparseable or negative amount). It goes to
  ``dlq.rejected_rows`` with its reason and the rest of the interval loads. When the source row is fixed
  and its interval re-runs, the dead letter gets ``resolved_at`` (kept as the audit trail).
- *ledger*: ``state.interval_ledger``, one row per (pipeline, interval) with status
  ``succeeded | failed``, attempts, rows loaded and rejected, last error.
- *gap*: an interval between the pipeline's first ledger interval and the current one that is missing
  from the ledger (a run that never happened) or ``failed``. Every run re-runs its gaps first
  (:func:`plan`), oldest first, before its own interval.
- *reprocessing*: an interval load replaces the interval in the target (delete + insert in one
  transaction), so re-running a loaded interval is idempotent.
- *validation*: per interval, source rows == target rows + dead letters, and the checksum of the valid
  source rows equals the target's (``state.validation_results``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import psycopg2
from psycopg2 import sql
from psycopg2.extras import Json

from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.common.ddl import require

T = TypeVar("T")


class RecoveryError(Exception):
    """Base class of this module's errors."""


class TransientSourceError(RecoveryError):
    """A failure that may pass when retried (timeouts, dropped connections)."""


class IntervalsFailedError(RecoveryError):
    """Some intervals failed after every retry; they are ``failed`` in the ledger and the next run re-runs them."""


class ValidationError(RecoveryError):
    """Target and source disagree for an interval; see ``state.validation_results`` and re-run it."""


RETRYABLE: tuple[type[BaseException], ...] = (TransientSourceError, psycopg2.OperationalError)


def retry(
    fn: Callable[[int], T],
    *,
    attempts: int = 3,
    base_delay: float = 0.2,
    factor: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Call ``fn(attempt)`` until it succeeds; retry :data:`RETRYABLE` errors with backoff.

    Returns the result and the number of attempts used; re-raises the last error after ``attempts``."""
    for attempt in range(1, attempts + 1):
        try:
            return fn(attempt), attempt
        except RETRYABLE as exc:
            if attempt == attempts:
                raise
            delay = base_delay * factor ** (attempt - 1)
            print(f"attempt {attempt} failed ({exc}); retrying in {delay:.2f}s")
            sleep(delay)
    raise AssertionError("unreachable")


def ensure_schema(conn: Any, target: str | None = None) -> None:
    """Check the ledger, dead-letter and validation tables (declared by the versioned warehouse files,
    :func:`cdclab.common.ddl.require`) and create the target if given; commits."""
    require(conn, "state.interval_ledger")
    if target is not None:
        with conn.cursor() as cur:
            ensure_ddl(
                cur,
                target,
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (id integer PRIMARY KEY, event_time timestamptz NOT NULL, "
                    "amount numeric(12, 2) NOT NULL, interval_start timestamptz NOT NULL)"
                ).format(ident(target)),
            )
    conn.commit()


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime


def plan(conn: Any, pipeline: str, current: Interval) -> list[Interval]:
    """Failed and missing intervals since the pipeline's first ledger interval, then ``current``."""
    step = current.end - current.start
    with conn.cursor() as cur:
        cur.execute(
            "SELECT interval_start, interval_end, status FROM state.interval_ledger WHERE pipeline = %s "
            "AND interval_start < %s ORDER BY interval_start",
            (pipeline, current.start),
        )
        ledger = cur.fetchall()
    conn.rollback()
    todo = [Interval(s, e) for s, e, status in ledger if status == "failed"]
    if ledger:
        seen = {s for s, _, _ in ledger}
        at = ledger[0][0]
        while at < current.start:
            if at not in seen:
                todo.append(Interval(at, at + step))
            at += step
    return [*sorted(set(todo), key=lambda i: i.start), current]


def classify(row: dict[str, Any]) -> tuple[Decimal | None, str | None]:
    """The parsed amount, or the reason the row is poison."""
    raw = row.get("amount")
    if raw is None:
        return None, "amount is NULL"
    try:
        amount = Decimal(str(raw).strip())
    except InvalidOperation:
        return None, f"amount {raw!r} is not a number"
    if not amount.is_finite():
        return None, f"amount {raw!r} is not finite"
    if amount < 0:
        return None, f"amount {raw} is negative"
    return amount, None


def _source_rows(shop: Any, source: str, interval: Interval) -> list[dict[str, Any]]:
    with shop.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT id, event_time, amount FROM {} WHERE event_time >= %s AND event_time < %s ORDER BY id"
            ).format(ident(source)),
            (interval.start, interval.end),
        )
        out = [{"id": i, "event_time": t, "amount": a} for i, t, a in cur.fetchall()]
    shop.rollback()
    return out


def checksum(pairs: list[tuple[int, Decimal]]) -> str:
    text = "|".join(f"{i}:{a:.2f}" for i, a in sorted(pairs))
    return hashlib.md5(text.encode()).hexdigest()


@dataclass
class IntervalResult:
    start: str
    end: str
    status: str
    attempts: int
    loaded: int = 0
    rejected: int = 0
    error: str | None = None


def load_interval(
    shop: Any,
    wh: Any,
    *,
    pipeline: str,
    source: str,
    target: str,
    interval: Interval,
    run_id: str | None,
    fault: Callable[[Interval, int], None] | None = None,
    attempts: int = 3,
    base_delay: float = 0.2,
) -> IntervalResult:
    """Load one interval (replace it in the target, poison rows to the DLQ), retrying transient errors,
    and record the outcome in the ledger. Never raises for a failed interval: it is ``failed`` in the ledger."""

    def attempt(n: int) -> tuple[int, int]:
        if fault is not None:
            fault(interval, n)
        rows = _source_rows(shop, source, interval)
        good, bad = [], []
        for r in rows:
            amount, reason = classify(r)
            if reason is None:
                good.append((r["id"], r["event_time"], amount, interval.start))
            else:
                bad.append((r, reason))
        with wh, wh.cursor() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE interval_start = %s").format(ident(target)), (interval.start,)
            )
            for row in good:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, event_time, amount, interval_start) VALUES (%s, %s, %s, %s)"
                    ).format(ident(target)),
                    row,
                )
            for r, reason in bad:
                cur.execute(
                    "INSERT INTO dlq.rejected_rows (pipeline, source_table, row_key, row_data, reason, "
                    "interval_start) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (pipeline, source_table, row_key) DO UPDATE SET row_data = EXCLUDED.row_data, "
                    "reason = EXCLUDED.reason, rejected_at = clock_timestamp(), resolved_at = NULL",
                    (
                        pipeline,
                        source,
                        str(r["id"]),
                        Json({**r, "event_time": r["event_time"].isoformat()}),
                        reason,
                        interval.start,
                    ),
                )
            # dead letters of this interval that now load (the source row was fixed) are resolved, not deleted
            cur.execute(
                "UPDATE dlq.rejected_rows SET resolved_at = clock_timestamp() WHERE pipeline = %s "
                "AND source_table = %s AND interval_start = %s AND resolved_at IS NULL AND NOT (row_key = ANY(%s))",
                (pipeline, source, interval.start, [str(r["id"]) for r, _ in bad]),
            )
            _ledger(cur, pipeline, interval, "succeeded", n, len(good), len(bad), None, run_id)
        return len(good), len(bad)

    try:
        (loaded, rejected), used = retry(attempt, attempts=attempts, base_delay=base_delay)
    except RETRYABLE as exc:
        wh.rollback()
        with wh, wh.cursor() as cur:
            _ledger(
                cur,
                pipeline,
                interval,
                "failed",
                attempts,
                None,
                None,
                f"{type(exc).__name__}: {exc}",
                run_id,
            )
        return IntervalResult(
            interval.start.isoformat(), interval.end.isoformat(), "failed", attempts, error=str(exc)
        )
    return IntervalResult(
        interval.start.isoformat(), interval.end.isoformat(), "succeeded", used, loaded, rejected
    )


def _ledger(
    cur: Any,
    pipeline: str,
    interval: Interval,
    status: str,
    attempts: int,
    loaded: int | None,
    rejected: int | None,
    error: str | None,
    run_id: str | None,
) -> None:
    cur.execute(
        "INSERT INTO state.interval_ledger (pipeline, interval_start, interval_end, status, attempts, "
        "rows_loaded, rows_rejected, error, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (pipeline, interval_start) DO UPDATE SET status = EXCLUDED.status, "
        "attempts = state.interval_ledger.attempts + EXCLUDED.attempts, rows_loaded = EXCLUDED.rows_loaded, "
        "rows_rejected = EXCLUDED.rows_rejected, error = EXCLUDED.error, run_id = EXCLUDED.run_id, "
        "updated_at = clock_timestamp()",
        (pipeline, interval.start, interval.end, status, attempts, loaded, rejected, error, run_id),
    )


def validate(shop: Any, wh: Any, *, pipeline: str, source: str, target: str, interval: Interval) -> bool:
    """Compare the interval in source and target (counts and checksum) and record the result."""
    rows = _source_rows(shop, source, interval)
    valid = [(r["id"], a) for r in rows for a, reason in [classify(r)] if reason is None and a is not None]
    with wh, wh.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, amount FROM {} WHERE interval_start = %s").format(ident(target)),
            (interval.start,),
        )
        in_target = [(i, a) for i, a in cur.fetchall()]
        cur.execute(
            "SELECT count(*) FROM dlq.rejected_rows WHERE pipeline = %s AND source_table = %s "
            "AND interval_start = %s AND resolved_at IS NULL",
            (pipeline, source, interval.start),
        )
        rejected = int(cur.fetchone()[0])
        src_sum, tgt_sum = checksum(valid), checksum(in_target)
        ok = len(rows) == len(in_target) + rejected and src_sum == tgt_sum
        cur.execute(
            "INSERT INTO state.validation_results (pipeline, interval_start, source_rows, target_rows, "
            "rejected_rows, source_checksum, target_checksum, ok) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (pipeline, interval.start, len(rows), len(in_target), rejected, src_sum, tgt_sum, ok),
        )
    return ok
