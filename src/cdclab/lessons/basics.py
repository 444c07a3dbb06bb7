"""71.1.1 Incremental vs full load: the same ``shop`` table loaded both ways into two warehouse targets,
each load measured in ``state.run_metrics``, for ``dags/71_01_01_basics.py``.

Vocabulary:
- *full load*: every source row, ``TRUNCATE`` + ``INSERT`` into the target (:func:`cdclab.merge.upsert.replace_from`).
- *incremental load*: the rows with ``updated_at`` at or after the stored watermark
  (:func:`cdclab.delta.pull.pull`, closed lower bound), upserted guarded by ``version``, the watermark advanced.
- *metrics*: ``{"rows_read", "rows_written", "duration_ms"}``, recorded in the load's own transaction
  (strategy ``full`` or ``incremental``) and returned.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import pull
from cdclab.merge import upsert
from cdclab.state import watermarks as state

KEY_COLUMNS = ["id"]


def prepare(source: str, targets: Sequence[str]) -> None:
    """The state schema and a mirror of ``source`` for each target in the warehouse."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        for target in targets:
            upsert.ensure_mirror_table(shop, source, wh, target, KEY_COLUMNS)


@dataclass(frozen=True)
class LoadRun:
    """Who loads: the metrics/watermark key ``pipeline`` and the DAG run with its data interval."""

    pipeline: str
    dag_id: str
    run_id: str
    interval_start: datetime
    interval_end: datetime


def _record(
    wh: Any, strategy: str, started: float, rows_read: int, rows_written: int, run: LoadRun
) -> dict[str, Any]:
    duration_ms = (time.perf_counter() - started) * 1000
    state.record_run_metrics(
        wh,
        pipeline=run.pipeline,
        strategy=strategy,
        rows_read=rows_read,
        rows_written=rows_written,
        duration_ms=duration_ms,
        dag_id=run.dag_id,
        run_id=run.run_id,
        interval_start=run.interval_start,
        interval_end=run.interval_end,
    )
    return {"rows_read": rows_read, "rows_written": rows_written, "duration_ms": duration_ms}


def full_load(source: str, target: str, run: LoadRun) -> dict[str, Any]:
    """Replace ``target`` with every row of ``source`` and record the metrics (strategy ``full``) in the
    same warehouse transaction. Returns the metrics."""
    started = time.perf_counter()
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        with wh:
            n = upsert.replace_from(shop, source, wh, target)
            return _record(wh, "full", started, n, n, run)


def incremental_load(source: str, target: str, run: LoadRun) -> tuple[dict[str, Any], Any, int]:
    """Pull ``source`` from the watermark ``run.pipeline``, upsert guarded by ``version``, advance the
    watermark and record the metrics (strategy ``incremental``) in one warehouse transaction. Returns
    the metrics, the watermark read from, and the rows skipped as already loaded."""
    started = time.perf_counter()
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        p = pull.pull(shop, wh, source, run.pipeline, key_columns=tuple(KEY_COLUMNS))
        with wh:
            written = upsert.upsert_rows(wh, target, p.rows, KEY_COLUMNS, "version")
            pull.advance(wh, p, dag_id=run.dag_id, run_id=run.run_id)
            metrics = _record(wh, "incremental", started, len(p.rows), written.written, run)
    return metrics, p.old, written.skipped
