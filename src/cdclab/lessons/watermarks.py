"""71.1.3 Watermark tracking: a timestamp load whose watermark moves only after the rows committed (or in
the same transaction), for ``dags/71_01_03_watermarks.py``.

Vocabulary:
- *upper bound*: the source's clock, held back to the start of the oldest transaction still open in
  the shop (:func:`cdclab.delta.pull.pull`): rows it stamped are not visible yet.
- *mode*: ``after_commit`` (the load commits the rows, a later step moves the watermark by
  compare-and-set, :func:`advance_after_commit`) or ``same_transaction`` (rows and watermark commit
  together in :func:`load`).
- *loaded*: :class:`Loaded`, what one load read and wrote; :meth:`Loaded.xcom` is the hand-over from the
  load to the watermark step (values typed by ``xcom_payload`` of :mod:`cdclab.state.watermarks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import detection as delta
from cdclab.delta import pull
from cdclab.merge import upsert
from cdclab.state import watermarks as state

KEY_COLUMNS = ["id"]
MODES = ("after_commit", "same_transaction")


def prepare(source: str, target: str) -> None:
    """The state schema and a mirror of ``source`` as ``target`` in the warehouse."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        upsert.ensure_mirror_table(shop, source, wh, target, KEY_COLUMNS)


@dataclass(frozen=True)
class Loaded:
    """One load: the watermark key and mode, the watermark before (``old``) and after the read
    (``new``), the read's upper bound, the rows read, the null-cursor rows and the upsert result."""

    key: str
    mode: str
    old: Any
    new: Any
    upper: Any
    rows_read: int
    null_cursor_rows: int
    written: upsert.UpsertResult

    def xcom(self) -> dict[str, Any]:
        """The load task's return value (JSON-safe; the watermarks keep their type)."""
        return {
            "key": self.key,
            "mode": self.mode,
            "rows_read": self.rows_read,
            "inserted": self.written.inserted,
            "updated": self.written.updated,
            "skipped": self.written.skipped,
            "old": None if self.old is None else state.xcom_payload(self.old, "timestamptz"),
            "new": None if self.new is None else state.xcom_payload(self.new, "timestamptz"),
        }


def load(
    source: str,
    target: str,
    key: str,
    *,
    mode: str,
    lookback_seconds: int,
    batch_size: int,
    null_policy: delta.NullPolicy,
    dag_id: str,
    run_id: str,
) -> Loaded:
    """Read ``[watermark - lookback, upper)`` of ``source`` and upsert it into ``target`` guarded by
    ``version``, in one warehouse transaction; in ``same_transaction`` mode the watermark ``key`` moves
    in that transaction too (compare-and-set), in ``after_commit`` mode it stays for
    :func:`advance_after_commit`."""
    if mode not in MODES:
        raise ValueError(f"watermark mode {mode!r} is not one of {MODES}")
    # commit the rows (and, in same_transaction mode, the watermark) or nothing
    p, written = pull.pull_upsert(
        source,
        target,
        key,
        key_columns=tuple(KEY_COLUMNS),
        batch_size=batch_size,
        null_policy=null_policy,
        lookback=timedelta(seconds=lookback_seconds),
        advance_watermark=mode == "same_transaction",
        dag_id=dag_id,
        run_id=run_id,
    )
    return Loaded(key, mode, p.old, p.new, p.upper, len(p.rows), p.null_cursor_rows, written)


def needs_advance(mode: str, old: Any, new: Any) -> bool:
    """Whether the watermark step has to move the watermark: not when the load moved it already
    (``same_transaction``), and not when the read found nothing newer."""
    return mode != "same_transaction" and new is not None and new != old


def advance_after_commit(loaded: Mapping[str, Any], *, dag_id: str, run_id: str) -> tuple[Any, Any, bool]:
    """Move the watermark of a committed load (:meth:`Loaded.xcom`) from ``old`` to ``new`` by
    compare-and-set (:class:`cdclab.state.watermarks.WatermarkConflictError` when another run moved it meanwhile).
    Returns ``(old, new, moved)``."""
    old = state.from_xcom_payload(loaded["old"], "timestamptz")
    new = state.from_xcom_payload(loaded["new"], "timestamptz")
    if not needs_advance(loaded["mode"], old, new):
        return old, new, False
    with closing(connect(WAREHOUSE)) as wh, wh:
        state.TableWatermarkStore(wh).advance(
            loaded["key"], old, new, value_type="timestamptz", dag_id=dag_id, run_id=run_id
        )
    return old, new, True
