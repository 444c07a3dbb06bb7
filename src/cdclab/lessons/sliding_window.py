"""71.2.4 Sliding windows: the windows a run must recompute (the one its interval closes and every closed
window holding an order changed in it) and their recompute from panes, for
``dags/71_02_04_sliding_window.py``. The patterns are :func:`cdclab.time.window_aggregates.affected_windows` and
:func:`cdclab.time.window_aggregates.recompute_sliding`; this module opens the connections and carries windows
through XCom as ``[start, end]`` ISO strings.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from cdclab.common.db import SHOP, WAREHOUSE, transaction
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
