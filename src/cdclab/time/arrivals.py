"""First arrivals: when the pipeline first saw a row, a time that later updates do not move.

Vocabulary (windows, lateness and skew are defined in :mod:`cdclab.time.intervals`):
- *arrival*: a source row that a run reads because its processing-time column (``updated_at``) lies in the
  run's interval. Every UPDATE resets ``updated_at``, so a row *arrives again* with each change: an order
  placed and received at 10:05 whose status changes at 15:00 looks, by ``updated_at``, like an order that
  reached the shop five hours after its window closed.
- *first arrival*: the processing time at which the pipeline saw the row for the first time. The *arrivals
  ledger* keeps one row per key, written once (``ON CONFLICT DO NOTHING``): the event time, the first
  arrival, the event-time window and the classification of the two
  (:func:`cdclab.time.intervals.classify_arrival`).
- Runs classify **from the ledger**, never from the current ``updated_at``: an order that was on time stays
  on time however often and however late it is updated; a rerun of an old interval reads the same ledger
  rows and gives the same verdicts, so it cannot change a window that was already computed.
- *accepted*: ledger rows classified ``on_time`` or ``late``; a window's aggregate counts exactly those
  (:func:`cdclab.time.window_aggregates.recompute_accepted`).
- *rejected*: ``too_late`` and ``future`` first arrivals. They are not applied and not dropped: the
  *late-events log* keeps each with its reason (:func:`log_rejected`).

The ledger (:data:`LEDGER`) and the late-events log (:data:`LATE_LOG`) are declared once, by
``infra/postgres/warehouse/V007__arrivals_ledger.sql``, which the lab applies at start; no task creates
them. A ledger or log that a run's params name instead (a test's own table) is created on first use
``LIKE`` the declared one (:func:`ensure_ledger`, :func:`ensure_late_log`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.common.ddl import NotMigratedError, like_declared
from cdclab.time.intervals import Arrival, Window, WindowSpec, classify_arrival

ACCEPTED: tuple[Arrival, ...] = ("on_time", "late")
LEDGER = "state.orders_arrivals_71_02_03"
LATE_LOG = "dlq.orders_late_events"
SCHEMA_FILE = "infra/postgres/warehouse/V007__arrivals_ledger.sql"


SchemaNotMigrated = NotMigratedError  # what ensure_ledger/ensure_late_log raise when V007 is not applied


@dataclass(frozen=True)
class FirstArrival:
    key: int
    event_time: dt.datetime
    first_seen_at: dt.datetime
    window: Window
    arrival: Arrival
    first_seen_by_run: str


def ensure_ledger(cur: Any, ledger: str = LEDGER) -> None:
    """The arrivals ledger ``ledger``: :data:`LEDGER` as V007 declares it, or a table of the same shape
    created on first use (a ledger named by a run's params)."""
    like_declared(cur, ledger, LEDGER)


def ensure_late_log(cur: Any, late_log: str = LATE_LOG) -> None:
    """The late-events log ``late_log``: :data:`LATE_LOG` as V007 declares it, or a table of the same
    shape created on first use."""
    like_declared(cur, late_log, LATE_LOG)


def arrived_in(cur: Any, source: str, window: Window) -> list[tuple[int, dt.datetime, dt.datetime]]:
    """``(id, ordered_at, updated_at)`` of the ``source`` orders whose processing time (``updated_at``)
    lies in ``window``, in arrival order."""
    where, bounds = window.sql_predicate("updated_at")
    cur.execute(
        sql.SQL("SELECT id, ordered_at, updated_at FROM {src} WHERE {w} ORDER BY updated_at, id").format(
            src=ident(source), w=where
        ),
        bounds,
    )
    return [(r[0], r[1], r[2]) for r in cur.fetchall()]


def record(
    cur: Any,
    ledger: str,
    arrivals: Sequence[tuple[int, dt.datetime, dt.datetime]],
    spec: WindowSpec,
    lateness: dt.timedelta,
    skew: dt.timedelta,
    run_id: str,
) -> list[FirstArrival]:
    """Record the first arrival of each ``(key, event_time, seen_at)`` not in ``ledger`` yet; return the
    ledger's rows for all of them (first arrivals, whichever run recorded them), ordered by key."""
    ensure_ledger(cur, ledger)
    rows = []
    for key, event_time, seen_at in arrivals:
        window = spec.window_for(event_time)
        arrival = classify_arrival(event_time, seen_at, window, lateness, skew)
        rows.append((key, event_time, seen_at, window.start, window.end, arrival, run_id))
    if not rows:
        return []
    execute_values(
        cur,
        sql.SQL(
            "INSERT INTO {t} (order_id, event_time, first_seen_at, window_start, window_end, arrival, "
            "first_seen_by_run) VALUES %s ON CONFLICT (order_id) DO NOTHING"
        ).format(t=ident(ledger)),
        rows,
    )
    cur.execute(
        sql.SQL(
            "SELECT order_id, event_time, first_seen_at, window_start, window_end, arrival, first_seen_by_run "
            "FROM {t} WHERE order_id = ANY(%s) ORDER BY order_id"
        ).format(t=ident(ledger)),
        ([r[0] for r in rows],),
    )
    return [FirstArrival(k, et, fs, Window(ws, we), a, run) for k, et, fs, ws, we, a, run in cur.fetchall()]


def accepted_in(cur: Any, ledger: str, window: Window) -> dict[int, bool]:
    """The accepted keys of ``window`` in the ledger, each with whether it came late."""
    cur.execute(
        sql.SQL(
            "SELECT order_id, arrival = 'late' FROM {t} WHERE window_start = %s AND window_end = %s "
            "AND arrival = ANY(%s)"
        ).format(t=ident(ledger)),
        (window.start, window.end, list(ACCEPTED)),
    )
    return dict(cur.fetchall())


def _span(later: dt.datetime, earlier: dt.datetime) -> dt.timedelta:
    """``later - earlier`` as a plain timedelta (``2:30:00``): with a pendulum end (the window's) the
    difference is a pendulum ``Interval``, whose text is both end points."""
    return dt.timedelta(seconds=(later - earlier).total_seconds())


def rejection_reason(a: FirstArrival, lateness: dt.timedelta, skew: dt.timedelta) -> str:
    """Why a rejected first arrival was not applied, in words."""
    if a.arrival == "too_late":
        return (
            f"first arrived {_span(a.first_seen_at, a.window.end)} after its window closed "
            f"(allowed lateness {lateness})"
        )
    return f"event time {_span(a.event_time, a.first_seen_at)} ahead of arrival (skew tolerance {skew})"


def log_rejected(
    cur: Any,
    late_log: str,
    firsts: Sequence[FirstArrival],
    lateness: dt.timedelta,
    skew: dt.timedelta,
    interval_start: dt.datetime,
    run_id: str,
) -> list[FirstArrival]:
    """Write the first arrivals of ``firsts`` that were not accepted (too late, future) to the late-events
    log with their reason, the interval and the run that saw them; return them. One row per
    ``(order_id, seen_at)``: a rerun updates its verdict, reason and run, never adds a row."""
    ensure_late_log(cur, late_log)
    rejected = [a for a in firsts if a.arrival not in ACCEPTED]
    cur.executemany(
        sql.SQL(
            "INSERT INTO {t} (order_id, event_time, seen_at, window_start, window_end, arrival, reason, "
            "interval_start, seen_by_run) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (order_id, seen_at) DO UPDATE SET arrival = EXCLUDED.arrival, "
            "reason = EXCLUDED.reason, seen_by_run = EXCLUDED.seen_by_run"
        ).format(t=ident(late_log)),
        [
            (
                a.key,
                a.event_time,
                a.first_seen_at,
                a.window.start,
                a.window.end,
                a.arrival,
                rejection_reason(a, lateness, skew),
                interval_start,
                run_id,
            )
            for a in rejected
        ],
    )
    return rejected


# --------------------------------------------------------------------------- one run's classification


@dataclass(frozen=True)
class Classified:
    """What :func:`classify_interval` did for one run: how many arrivals it read, the first arrivals it
    logged as rejected and the windows (sorted) that received an accepted arrival."""

    seen: int
    rejected: list[FirstArrival]
    windows: list[Window]


def windows_to_recompute(firsts: Sequence[FirstArrival]) -> list[Window]:
    """The distinct windows of the accepted first arrivals in ``firsts``, oldest first."""
    return sorted({a.window for a in firsts if a.arrival in ACCEPTED})


def windows_xcom(windows: Sequence[Window]) -> list[list[str]]:
    """``windows`` as ``[start, end]`` ISO strings (JSON-safe, for XCom)."""
    return [[w.start.isoformat(), w.end.isoformat()] for w in windows]


def classify_interval(
    source: str,
    ledger: str,
    late_log: str,
    interval: Window,
    *,
    window_minutes: int,
    allowed_lateness_minutes: int,
    skew_tolerance_minutes: int,
    run_id: str,
) -> Classified:
    """One run's classification into tumbling windows of ``window_minutes``: read the ``source`` orders
    that arrived in ``interval`` (``shop``), record their first arrivals in ``ledger`` (one ``warehouse``
    transaction), then log the rejected ones (too late, future) in ``late_log`` (a second transaction)."""
    spec = WindowSpec.tumbling(dt.timedelta(minutes=window_minutes))
    lateness = dt.timedelta(minutes=allowed_lateness_minutes)
    skew = dt.timedelta(minutes=skew_tolerance_minutes)
    with transaction(SHOP) as cur:
        seen = arrived_in(cur, source, interval)
    with transaction(WAREHOUSE) as cur:
        # classify by the first arrival the ledger holds, not by updated_at (every UPDATE resets it)
        firsts = record(cur, ledger, seen, spec, lateness, skew, run_id)
    affected = windows_to_recompute(firsts)
    with transaction(WAREHOUSE) as cur:
        # too late / future: not applied and not dropped, logged with the reason
        rejected = log_rejected(cur, late_log, firsts, lateness, skew, interval.start, run_id)
    return Classified(len(seen), rejected, affected)
