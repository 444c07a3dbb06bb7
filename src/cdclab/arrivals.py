"""First arrivals: when the pipeline first saw a row, a time that later updates do not move.

Vocabulary (windows, lateness and skew are defined in :mod:`cdclab.intervals`):
- *arrival*: a source row that a run reads because its processing-time column (``updated_at``) lies in the
  run's interval. Every UPDATE resets ``updated_at``, so a row *arrives again* with each change: an order
  placed and received at 10:05 whose status changes at 15:00 looks, by ``updated_at``, like an order that
  reached the shop five hours after its window closed.
- *first arrival*: the processing time at which the pipeline saw the row for the first time. The *arrivals
  ledger* keeps one row per key, written once (``ON CONFLICT DO NOTHING``): the event time, the first
  arrival, the event-time window and the classification of the two
  (:func:`cdclab.intervals.classify_arrival`).
- Runs classify **from the ledger**, never from the current ``updated_at``: an order that was on time stays
  on time however often and however late it is updated; a rerun of an old interval reads the same ledger
  rows and gives the same verdicts, so it cannot change a window that was already computed.
- *accepted*: ledger rows classified ``on_time`` or ``late``; a window's aggregate counts exactly those
  (:func:`cdclab.windowagg.recompute_accepted`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.db import ident
from cdclab.ddl import ensure as ensure_ddl
from cdclab.intervals import Arrival, Window, WindowSpec, classify_arrival

ACCEPTED: tuple[Arrival, ...] = ("on_time", "late")


@dataclass(frozen=True)
class FirstArrival:
    key: int
    event_time: dt.datetime
    first_seen_at: dt.datetime
    window: Window
    arrival: Arrival
    first_seen_by_run: str


def create_ledger_sql(ledger: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {t} (order_id bigint PRIMARY KEY, event_time timestamptz NOT NULL, "
        "first_seen_at timestamptz NOT NULL, window_start timestamptz NOT NULL, "
        "window_end timestamptz NOT NULL, arrival text NOT NULL, first_seen_by_run text)"
    ).format(t=ident(ledger))


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
    ensure_ddl(cur, ledger, create_ledger_sql(ledger))
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
