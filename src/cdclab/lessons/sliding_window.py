"""71.2.4 Sliding windows: the windows a run must recompute (the one its interval closes and every closed
window holding an order changed in it) and their recompute from panes, for
``dags/71_02_04_sliding_window.py``. The patterns are :func:`cdclab.time.window_aggregates.affected_windows` and
:func:`cdclab.time.window_aggregates.recompute_sliding`; this module opens the connections and carries windows
through XCom as ``[start, end]`` ISO strings.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from psycopg2 import sql

from cdclab.common import ddl
from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, transaction
from cdclab.time import window_aggregates as windowagg
from cdclab.time.intervals import Window, WindowSpec

log = logging.getLogger(__name__)


def affected_windows(source: str, interval: Any, size_hours: int, slide_hours: int) -> list[list[str]]:
    """The ``size_hours`` windows sliding by ``slide_hours`` that ``interval`` closes or whose orders
    changed in it, as ``[start, end]`` ISO strings, oldest first."""
    spec = WindowSpec.sliding(timedelta(hours=size_hours), timedelta(hours=slide_hours))
    with transaction(SHOP) as cur:
        windows, changed = windowagg.affected_windows(cur, source, interval, spec)
    log.info("%d changed event times -> %d windows to recompute", changed, len(windows))
    return [[w.start.isoformat(), w.end.isoformat()] for w in windows]


def recompute(
    source: str,
    panes: str,
    target: str,
    windows: list[list[str]],
    size_hours: int,
    slide_hours: int,
    run_id: str,
) -> int:
    """Recompute the panes of ``windows`` and the windows from them (idempotent upserts). Returns how many
    windows."""
    todo = [Window(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in windows]
    with transaction(SHOP) as src, transaction(WAREHOUSE) as dst:
        windowagg.recompute_sliding(
            src,
            dst,
            source,
            panes,
            target,
            todo,
            timedelta(hours=size_hours),
            timedelta(hours=slide_hours),
            run_id,
        )
    return len(todo)


# --------------------------------------------------------------------------- use cases (point 4)

USE_CASES_DDL = """CREATE TABLE IF NOT EXISTS {} (
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    orders          integer NOT NULL,
    revenue         numeric(14, 2) NOT NULL,
    hourly_avg      numeric(14, 2) NOT NULL,
    prev_revenue    numeric(14, 2),
    trend           text CHECK (trend IN ('up', 'down', 'flat')),
    baseline        numeric(14, 2),
    anomaly         boolean NOT NULL,
    alert           boolean NOT NULL,
    computed_by_run text,
    PRIMARY KEY (window_start, window_end)
)"""

# Every published window of the configured size, with what its use cases read off it:
# - rolling metrics for a dashboard: orders and revenue in the window (the window itself);
# - moving average: the window's revenue per hour (smooths one hour's noise over ``size`` hours);
# - trend: up/down/flat against the window one slide earlier (NULL when that one is not published);
# - anomaly: revenue above ``factor`` x the baseline, the mean revenue of the windows starting in the
#   ``baseline_windows`` slides before (NULL/false without any);
# - alert / rate limit: ``orders`` at or above a threshold ("orders in the last 3 hours").
USE_CASES_SQL = """INSERT INTO {uc} (window_start, window_end, orders, revenue, hourly_avg, prev_revenue, trend,
    baseline, anomaly, alert, computed_by_run)
WITH w AS (
    SELECT window_start, window_end, orders, revenue FROM {t}
    WHERE window_end - window_start = %(size)s
), x AS (
    SELECT w.*,
        (SELECT p.revenue FROM w p WHERE p.window_start = w.window_start - %(slide)s) AS prev_revenue,
        (SELECT avg(b.revenue) FROM w b
         WHERE b.window_start >= w.window_start - %(baseline_span)s AND b.window_start < w.window_start)
            AS baseline
    FROM w
)
SELECT window_start, window_end, orders, revenue, round(revenue / %(size_hours)s, 2), prev_revenue,
    CASE WHEN prev_revenue IS NULL THEN NULL WHEN revenue > prev_revenue THEN 'up'
         WHEN revenue < prev_revenue THEN 'down' ELSE 'flat' END,
    round(baseline, 2),
    coalesce(revenue > %(factor)s * baseline, false),
    orders >= %(alert_orders)s,
    %(run_id)s
FROM x"""

BASELINE_WINDOWS = 3


def use_cases_table(target: str) -> str:
    """Where the use cases of the windows in ``target`` go: ``<target>_use_cases``."""
    return f"{target}_use_cases"


def compute_use_cases(
    target: str,
    size_hours: int,
    slide_hours: int,
    anomaly_factor: float,
    alert_orders: int,
    run_id: str,
) -> int:
    """Recompute the use-case rows of every published window in ``target`` (a late correction changes a
    window, its trend and the baselines after it, so all are recomputed, in one transaction under a lock
    on the table: idempotent, and two runs at once do not collide). Returns the rows written."""
    table = use_cases_table(target)
    wh = connect(WAREHOUSE)
    try:
        ddl.ensure(wh, target, windowagg.create_window_table_sql(target))
        ddl.ensure(wh, table, sql.SQL(USE_CASES_DDL).format(ident(table)))
    finally:
        wh.close()
    slide = timedelta(hours=slide_hours)
    with transaction(WAREHOUSE) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cdclab.71_02_04:{table}",))
        cur.execute(sql.SQL("DELETE FROM {}").format(ident(table)))
        cur.execute(
            sql.SQL(USE_CASES_SQL).format(uc=ident(table), t=ident(target)),
            {
                "size": timedelta(hours=size_hours),
                "slide": slide,
                "baseline_span": slide * BASELINE_WINDOWS,
                "size_hours": size_hours,
                "factor": Decimal(str(anomaly_factor)),
                "alert_orders": alert_orders,
                "run_id": run_id,
            },
        )
        written = int(cur.rowcount)
    log.info("use cases: %d windows of %s -> %s", written, target, table)
    return written
