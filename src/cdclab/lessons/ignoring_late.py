"""71.6.2 Ignoring late data (anti-pattern): hourly totals by event time computed once per interval (the
anti-pattern) or over a reprocessing window that reaches back ``lookback_intervals`` (the fix), then
reconciled against the source, for ``dags/71_06_02_ignoring_late.py``. The SQL and the vocabulary
(*late row*, *lookback*) live in :mod:`cdclab.lessons.antipatterns`; these are the DAG's steps.

Vocabulary:
- *reprocessing window*: the data interval (anti-pattern) or the data interval widened by
  ``lookback_intervals`` grains before it (the fix), :func:`reprocessing_window`.
- *difference*: ``(bucket_start, target total, source total)`` of a bucket whose total in the target is
  not what the source holds now; :func:`diffs_xcom` makes the list JSON-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from datetime import datetime, timedelta
from decimal import Decimal

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.lessons import antipatterns as ap
from cdclab.time.intervals import Window


def reprocessing_window(
    variant: str, start: datetime, end: datetime, grain: timedelta, lookback_intervals: int
) -> Window:
    """``[start, end)`` for the anti-pattern; ``lookback_intervals`` grains earlier for the fix."""
    window = Window(start, end)
    if ap.check_variant(variant) == "fixed":
        window = window.widen(before=grain * lookback_intervals)
    return window


def aggregate(
    source: str,
    target_table: str,
    variant_param: str,
    *,
    start: datetime,
    end: datetime,
    grain: timedelta,
    lookback_intervals: int,
) -> tuple[str, Window, int]:
    """Recompute the totals of the reprocessing window from the source and replace those buckets in the
    variant's target (idempotent, one transaction). Returns (variant, window, buckets written)."""
    variant = ap.check_variant(variant_param)
    target = ap.for_variant(target_table, variant)
    window = reprocessing_window(variant, start, end, grain, lookback_intervals)
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        ap.ensure_source(shop, source, "events")
        ap.ensure_totals(wh, target)
        totals = ap.source_totals(shop, source, window.start, window.end, grain)
        shop.rollback()
        with wh:
            buckets = ap.write_totals(wh, target, totals, window.start, window.end)
    return variant, window, buckets


def reconcile(
    source: str, target_table: str, variant_param: str, grain: timedelta, run_id: str
) -> list[tuple[datetime, Decimal | None, Decimal | None]]:
    """Compare every bucket of the variant's target with the source as it is now and record each
    difference in ``<target>__reconciliation`` (:func:`cdclab.lessons.antipatterns.reconcile_totals`)."""
    target = ap.for_variant(target_table, variant_param)
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh, wh:
        return ap.reconcile_totals(shop, wh, source, target, grain, run_id)


def diffs_xcom(diffs: Sequence[tuple[datetime, Decimal | None, Decimal | None]]) -> list[list[str | None]]:
    """``[[bucket ISO, target total, source total]]`` with the totals as text (None stays None)."""
    return [
        [b.isoformat(), None if h is None else str(h), None if t is None else str(t)] for b, h, t in diffs
    ]
