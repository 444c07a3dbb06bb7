"""Event-time window aggregates that are recomputed, not incremented.

Vocabulary (windows, lateness and skew are defined in :mod:`cdclab.time.intervals`):
- *source events*: rows with an *event time* column (``ordered_at``) and a *processing time* column
  (``updated_at``: when the row reached the database) and a *value* column (``total``).
- *recompute*: a window's aggregate is always computed again from all of its source events, never
  adjusted by adding the new ones (``count + 1``): a recomputed window gives the same answer on a
  rerun, after a late event, or after a duplicate delivery; an increment does not.
- *convergent*: a recompute counts every accepted event the source holds, whichever run does it, so a
  window's row depends on the source only: a rerun of an old interval cannot roll a window back to what
  that run saw first (bounding by the run's interval end would), and once ``window end + allowed lateness``
  has passed the row is final.
- *accepted*: an event counts in its window only if it was not too late
  (``processing time < window end + allowed lateness``) and not from the future
  (``event time <= processing time + skew tolerance``): the same rules as
  :func:`cdclab.time.intervals.classify_arrival`, applied in SQL.
- *accepted by the ledger*: with an arrivals ledger (:mod:`cdclab.time.arrivals`) acceptance is decided by the
  *first* arrival the ledger recorded, not by ``updated_at``, which every UPDATE resets
  (:func:`recompute_accepted`): an on-time order updated hours later still counts in its window, and a
  rerun of an old interval recomputes the window to the same row.
- *pane*: a tumbling window of the slide's size; a sliding window is the sum of its panes, so every event
  is aggregated once (in its pane) and never summed twice across overlapping windows.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.time import arrivals
from cdclab.time.intervals import Window, WindowSpec


def window_rows(source: str, event_col: str) -> sql.Composed:
    """``FROM source WHERE event_col >= %(w_start)s AND event_col < %(w_end)s``: the source events of one
    window, half-open (its parameters: :func:`window_params`)."""
    return sql.SQL("FROM {src} WHERE {e} >= %(w_start)s AND {e} < %(w_end)s").format(
        src=ident(source), e=sql.Identifier(event_col)
    )


def window_params(window: Window) -> dict[str, Any]:
    """The parameters ``w_start`` and ``w_end`` of the statements here for ``window``."""
    return {"w_start": window.start, "w_end": window.end}


def aggregate_sql(
    source: str,
    event_col: str = "ordered_at",
    proc_col: str = "updated_at",
    value_col: str = "total",
    accepted_only: bool = False,
) -> sql.Composed:
    """``count``, ``sum(value)`` and the late-but-accepted count of one window's events.

    Parameters: ``w_start``, ``w_end``; with ``accepted_only`` also ``lateness`` and ``skew`` (intervals).
    """
    accept = (
        sql.SQL(" AND {p} < %(w_end)s + %(lateness)s AND {e} <= {p} + %(skew)s")
        if accepted_only
        else sql.SQL("")
    )
    return sql.SQL(
        "SELECT count(*), coalesce(sum({v}), 0), count(*) FILTER (WHERE {p} >= %(w_end)s) {rows}{accept}"
    ).format(
        v=sql.Identifier(value_col),
        p=sql.Identifier(proc_col),
        rows=window_rows(source, event_col),
        accept=accept.format(p=sql.Identifier(proc_col), e=sql.Identifier(event_col)),
    )


def aggregate_params(
    window: Window,
    lateness: dt.timedelta | None = None,
    skew: dt.timedelta | None = None,
) -> dict[str, Any]:
    params = window_params(window)
    if lateness is not None:
        params["lateness"] = lateness
    if skew is not None:
        params["skew"] = skew
    return params


def create_window_table_sql(target: str) -> sql.Composed:
    """One row per window: ``(window_start, window_end)`` key, the aggregate and the run that computed it."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {t} (window_start timestamptz NOT NULL, window_end timestamptz NOT NULL, "
        "orders integer NOT NULL, revenue numeric(14, 2) NOT NULL, late_orders integer NOT NULL DEFAULT 0, "
        "computed_by_run text, PRIMARY KEY (window_start, window_end))"
    ).format(t=ident(target))


def upsert_window_sql(target: str) -> sql.Composed:
    """Replace one window's row (idempotent: a recompute writes the same values again)."""
    return sql.SQL(
        "INSERT INTO {t} (window_start, window_end, orders, revenue, late_orders, computed_by_run) "
        "VALUES (%(w_start)s, %(w_end)s, %(orders)s, %(revenue)s, %(late_orders)s, %(run_id)s) "
        "ON CONFLICT (window_start, window_end) DO UPDATE SET orders = EXCLUDED.orders, "
        "revenue = EXCLUDED.revenue, late_orders = EXCLUDED.late_orders, "
        "computed_by_run = EXCLUDED.computed_by_run"
    ).format(t=ident(target))


def write_window(
    cur_dst: Any, target: str, window: Window, orders: Any, revenue: Any, late_orders: Any, run_id: str
) -> dict[str, Any]:
    """Upsert ``window``'s aggregate into ``target`` (:func:`upsert_window_sql`); returns the row written
    (``w_start``, ``w_end``, ``orders``, ``revenue``, ``late_orders``, ``run_id``)."""
    row = {
        **window_params(window),
        "orders": orders,
        "revenue": revenue,
        "late_orders": late_orders,
        "run_id": run_id,
    }
    cur_dst.execute(upsert_window_sql(target), row)
    return row


def sliding_from_panes_sql(panes: str) -> sql.Composed:
    """A sliding window's aggregate as the sum of the panes inside it (parameters ``w_start``, ``w_end``)."""
    return sql.SQL(
        "SELECT coalesce(sum(orders), 0), coalesce(sum(revenue), 0), coalesce(sum(late_orders), 0) "
        "FROM {p} WHERE window_start >= %(w_start)s AND window_end <= %(w_end)s"
    ).format(p=ident(panes))


def recompute(
    cur_src: Any,
    cur_dst: Any,
    source: str,
    target: str,
    windows: list[Window],
    run_id: str,
    lateness: dt.timedelta | None = None,
    skew: dt.timedelta | None = None,
) -> list[dict[str, Any]]:
    """Recompute ``windows`` from ``source`` (read through ``cur_src``) into ``target`` (``cur_dst``)."""
    accepted = lateness is not None
    query = aggregate_sql(source, accepted_only=accepted)
    out = []
    for w in windows:
        params = aggregate_params(w, lateness if accepted else None, skew if accepted else None)
        cur_src.execute(query, params)
        orders, revenue, late = cur_src.fetchone()
        out.append(write_window(cur_dst, target, w, orders, revenue, late, run_id))
    return out


def recompute_accepted(
    cur_src: Any,
    cur_dst: Any,
    source: str,
    target: str,
    ledger: str,
    windows: list[Window],
    run_id: str,
    key_col: str = "id",
    event_col: str = "ordered_at",
    value_col: str = "total",
) -> list[dict[str, Any]]:
    """Recompute ``windows`` into ``target`` from the source events that the arrivals ``ledger`` (in the
    ``cur_dst`` database) accepted for each window; ``late_orders`` counts those whose first arrival was late.
    The source gives the current values (a changed total is picked up), the ledger decides membership."""
    query = sql.SQL("SELECT {k}, {v} {rows} AND {k} = ANY(%(keys)s)").format(
        k=sql.Identifier(key_col), v=sql.Identifier(value_col), rows=window_rows(source, event_col)
    )
    out = []
    for w in windows:
        accepted = arrivals.accepted_in(cur_dst, ledger, w)
        cur_src.execute(query, {**window_params(w), "keys": list(accepted)})
        events = cur_src.fetchall()
        revenue = sum((v for _, v in events), start=0)
        late = sum(1 for k, _ in events if accepted[k])
        out.append(write_window(cur_dst, target, w, len(events), revenue, late, run_id))
    return out


def affected_windows(
    cur_src: Any,
    source: str,
    span: Window,
    spec: WindowSpec,
    event_col: str = "ordered_at",
    changed_col: str = "updated_at",
) -> tuple[list[Window], int]:
    """The windows of ``spec`` that ``span`` closes plus every closed window (end <= ``span.end``) that
    holds an event of ``source`` changed during ``span`` (``changed_col`` in it). Returns them sorted and
    the number of distinct changed event times."""
    where, bounds = span.sql_predicate(changed_col)
    cur_src.execute(
        sql.SQL("SELECT DISTINCT {e} FROM {src} WHERE {w}").format(
            e=sql.Identifier(event_col), src=ident(source), w=where
        ),
        bounds,
    )
    changed = [row[0] for row in cur_src.fetchall()]
    windows = set(spec.windows_ending_in(span))
    windows.update(w for w in spec.windows_touching(changed) if w.end <= span.end)
    return sorted(windows), len(changed)


def recompute_sliding(
    cur_src: Any,
    cur_dst: Any,
    source: str,
    panes: str,
    target: str,
    windows: list[Window],
    size: dt.timedelta,
    slide: dt.timedelta,
    run_id: str,
) -> None:
    """Recompute the panes (tumbling windows of ``slide``) that make up ``windows`` (each ``size`` long) from ``source`` into
    ``panes``, then each window as the sum of its panes into ``target``; both tables are created when
    missing, both upserts are idempotent."""
    pane_spec = WindowSpec.tumbling(slide)
    pane_windows = sorted(
        {
            pane
            for w in windows
            for pane in pane_spec.windows_touching(
                [w.start + pane_spec.size * k for k in range(size // slide)]
            )
        }
    )
    for table in (panes, target):
        ensure_ddl(cur_dst, table, create_window_table_sql(table))
    recompute(cur_src, cur_dst, source, panes, pane_windows, run_id)
    combine = sliding_from_panes_sql(panes)
    for w in windows:
        cur_dst.execute(combine, window_params(w))
        orders, revenue, late = cur_dst.fetchone()
        write_window(cur_dst, target, w, orders, revenue, late, run_id)


# --------------------------------------------------------------------------- one run's recompute


def windows_from_xcom(windows: list[list[str]]) -> list[Window]:
    """``[start, end]`` ISO string pairs (:func:`cdclab.time.arrivals.windows_xcom`) back as windows."""
    return [Window(dt.datetime.fromisoformat(a), dt.datetime.fromisoformat(b)) for a, b in windows]


def recompute_accepted_windows(
    source: str, target: str, ledger: str, windows: list[list[str]], run_id: str
) -> int:
    """Create ``target`` if missing and recompute ``windows`` (``[start, end]`` ISO strings) into it from
    the ``source`` events the arrivals ``ledger`` accepted (:func:`recompute_accepted`): one ``shop``
    transaction reads, one ``warehouse`` transaction writes all of them. Returns how many windows."""
    todo = windows_from_xcom(windows)
    with transaction(SHOP) as src, transaction(WAREHOUSE) as dst:
        ensure_ddl(dst, target, create_window_table_sql(target))
        recompute_accepted(src, dst, source, target, ledger, todo, run_id)
    return len(todo)
