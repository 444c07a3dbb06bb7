"""Watermarked pull: the one incremental read the 71.5 DAGs share.

Vocabulary:
- *pull*: one read of the rows of a source table whose cursor (``updated_at``) lies in
  ``[watermark, upper)``; ``watermark`` is the stored high watermark (``state.watermarks``, closed lower
  bound, so the rows stamped exactly at the watermark are read again and the consumer must be idempotent),
  ``upper`` is the source's clock capped at the start of the oldest transaction open in the source
  database (any table: :func:`cdclab.delta.detection.read_upper_bound`).
- *commit*: :func:`advance` moves the watermark by compare-and-set on the caller's warehouse connection,
  inside the transaction that writes the pulled rows, so data and watermark commit together or not at all.
  :func:`pull_upsert` is the whole step for a target upserted by ``version``.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import detection as delta
from cdclab.merge import upsert
from cdclab.state import watermarks as state


@dataclass
class Pull:
    key: str
    old: datetime | None
    new: datetime | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    upper: datetime | None = None
    """The read's exclusive upper bound: every row changed since (or committed late, stamped before an
    open transaction's start) has ``updated_at >= upper`` and is the next pull's."""
    null_cursor_rows: int = 0
    """Rows whose cursor is NULL (read or left out per the null policy, counted either way)."""


def pull(
    shop: Any,
    wh: Any,
    table: str,
    key: str,
    *,
    key_columns: tuple[str, ...] = ("id",),
    cursor_column: str = "updated_at",
    batch_size: int = 1000,
    null_policy: delta.NullPolicy = "raise",
    lookback: timedelta = timedelta(0),
) -> Pull:
    """Read the rows of ``table`` (on ``shop``) changed since the watermark ``key`` (on ``wh``), minus
    ``lookback`` (re-read rows committed late with an older stamp; the consumer must be idempotent)."""
    store = state.TableWatermarkStore(wh)
    old = store.read(key, "timestamptz")
    upper, result = delta.read_committed_delta(
        shop,
        table,
        cursor_column=cursor_column,
        key_columns=list(key_columns),
        since=old,
        lookback=lookback,
        batch_size=batch_size,
        null_policy=null_policy,
    )
    shop.rollback()
    return Pull(key, old, delta.next_watermark(old, result), result.rows, upper, result.null_cursor_rows)


def advance(wh: Any, p: Pull, *, dag_id: str, run_id: str | None) -> None:
    """Move the watermark of ``p`` (no commit: the caller's transaction decides)."""
    if p.new is not None and p.new != p.old:
        state.TableWatermarkStore(wh).advance(
            p.key, p.old, p.new, value_type="timestamptz", dag_id=dag_id, run_id=run_id
        )


def pull_upsert(
    source: str,
    target: str,
    key: str,
    *,
    key_columns: tuple[str, ...] = ("id",),
    batch_size: int = 1000,
    null_policy: delta.NullPolicy = "raise",
    lookback: timedelta = timedelta(0),
    advance_watermark: bool = True,
    dag_id: str,
    run_id: str | None,
) -> tuple[Pull, upsert.UpsertResult]:
    """:func:`pull` ``source`` (shop) since the watermark ``key`` (warehouse) and upsert the rows into
    ``target`` guarded by ``version`` in one warehouse transaction that, with ``advance_watermark``, also
    moves the watermark (:func:`advance`): rows and watermark commit together or not at all. Without it the
    watermark stays for the caller to move after the commit. Returns the pull and the upsert's counts."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        p = pull(
            shop,
            wh,
            source,
            key,
            key_columns=key_columns,
            batch_size=batch_size,
            null_policy=null_policy,
            lookback=lookback,
        )
        with wh:
            written = upsert.upsert_rows(wh, target, p.rows, list(key_columns), "version")
            if advance_watermark:
                advance(wh, p, dag_id=dag_id, run_id=run_id)
    return p, written
