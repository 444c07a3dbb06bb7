"""71.6.4 unbounded state and 71.6.5 assuming order: one DAG run of each anti-pattern or its fix, for
``dags/71_06_04_unbounded_state.py`` and ``dags/71_06_05_assuming_order.py``. The patterns themselves
(tables, reads, dedup, the two ways to apply a change stream) are :mod:`cdclab.lessons.antipatterns`; the steps
here open the connections, choose the variant and commit.

Vocabulary:
- *variant*: ``anti_pattern`` or ``fixed`` (:data:`cdclab.lessons.antipatterns.Variant`); table name params
  carry ``{variant}`` so the two never share a table (:func:`cdclab.lessons.antipatterns.for_variant`).
- *interval*: the run's data interval ``[start, end)``; a row belongs to the run in whose interval it
  *arrived* (``arrived_at``).
- *TTL*: ``ttl_minutes`` of the fixed dedup variant; seen-state first seen before ``end - ttl`` is
  deleted after the run (:func:`expire_before`).
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from dataclasses import astuple, dataclass

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.lessons import antipatterns as ap

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ----------------------------------------------------------------------------------- 71.6.4


def expire_before(variant: str, end: dt.datetime, ttl_minutes: int) -> dt.datetime | None:
    """The TTL cut-off of a dedup run: ``end - ttl_minutes`` for the fixed variant, None (keep every id
    forever) for the anti-pattern."""
    return end - dt.timedelta(minutes=ttl_minutes) if ap.check_variant(variant) == "fixed" else None


@dataclass(frozen=True)
class DedupResult:
    """One dedup run: deliveries read, events emitted, seen-state rows expired, and the seen-state's
    rows and bytes afterwards (on disk, live, and held as a Python set: :class:`~cdclab.lessons.antipatterns.StateSize`)."""

    variant: str
    delivered: int
    emitted: int
    expired: int
    state_rows: int
    state_bytes: int
    live_bytes: int
    memory_bytes: int


def deduplicate_deliveries(
    *,
    variant: str,
    source: str,
    target: str,
    seen: str,
    ttl_minutes: int,
    start: dt.datetime,
    end: dt.datetime,
    run_id: str,
) -> DedupResult:
    """Create the deliveries source (shop), the target, the seen-state and its size log (warehouse) when
    missing; read the deliveries that arrived in ``[start, end)``, emit each unseen ``event_id`` once and
    expire state past the TTL (fixed variant only) in one warehouse transaction; the fixed variant then
    gives the expired rows' space back (``VACUUM FULL``, :func:`~cdclab.lessons.antipatterns.reclaim_expired`);
    last, measure the state and append its size
    (rows, bytes on disk, live bytes, bytes as a Python set) to ``<seen>__size``. ``target`` and ``seen``
    may carry ``{variant}``."""
    checked = ap.check_variant(variant)
    target, seen = ap.for_variant(target, checked), ap.for_variant(seen, checked)
    cut_off = expire_before(checked, end, ttl_minutes)
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        ap.ensure_source(shop, source, "deliveries")
        ap.ensure_dedup_tables(wh, target, seen)
        deliveries = ap.read_deliveries(shop, source, start, end)
        shop.rollback()
        with wh:
            emitted, expired = ap.dedupe_into(wh, target, seen, deliveries, expire_before=cut_off)
        if cut_off is not None:
            ap.reclaim_expired(wh, seen)
        with wh:
            size = ap.record_state_size(
                wh,
                seen,
                run_id=run_id,
                variant=checked,
                interval_end=end,
                delivered=len(deliveries),
                emitted=emitted,
                expired=expired,
            )
    return DedupResult(checked, len(deliveries), emitted, expired, *astuple(size))


# ----------------------------------------------------------------------------------- 71.6.5


@dataclass(frozen=True)
class ApplyResult:
    """One apply run: the changes applied and the regressed rows ``(id, version in target, newest
    version delivered)`` afterwards."""

    variant: str
    applied: int
    regressed: list[tuple[int, int, int]]


def apply_change_stream(
    *, variant: str, source: str, target: str, start: dt.datetime, end: dt.datetime
) -> ApplyResult:
    """Create the change stream ``source`` and the status ``target`` (warehouse) when missing; apply the
    changes that arrived in ``[start, end)`` in arrival order, by plain upsert (anti-pattern) or guarded
    by ``version`` (fixed), in one transaction; then compare the target with every change delivered up
    to ``end``. ``target`` may carry ``{variant}``."""
    checked = ap.check_variant(variant)
    target = ap.for_variant(target, checked)
    with closing(connect(WAREHOUSE)) as wh:
        ap.ensure_source(wh, source, "changes")
        ap.ensure_status_target(wh, target)
        changes = ap.read_changes(wh, source, start, end)
        with wh:
            if checked == "anti_pattern":
                ap.apply_in_arrival_order(wh, target, changes)
            else:
                ap.apply_version_guarded(wh, target, changes)
        delivered = ap.read_changes(wh, source, EPOCH, end)
        with wh.cursor() as cur:
            regressed = ap.regressed_rows(
                ap.id_versions(cur, target), [(c["id"], c["version"]) for c in delivered]
            )
        wh.rollback()
    return ApplyResult(checked, len(changes), regressed)
