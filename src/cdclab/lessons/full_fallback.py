"""71.6.3 Full-load fallback (anti-pattern): an unreadable watermark sends the anti-pattern to a full
reload on every run, the fix rebuilds the watermark from the target and reads only the delta, for
``dags/71_06_03_full_fallback.py``. The pieces and the vocabulary (*full-load fallback*, *bounded
recovery*) live in :mod:`cdclab.lessons.antipatterns`; :func:`load` is the DAG's one step.

Vocabulary:
- *recoverable*: the watermark errors the fix repairs (:data:`RECOVERABLE`: a wrongly typed or a future
  value); every other error fails the run.
- *strategy*: ``initial`` (no watermark yet), ``incremental``, ``full`` (the anti-pattern's fallback) or
  ``recovered`` (the fix rebuilt the watermark from ``max(updated_at)`` of the target).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cdclab.lessons import antipatterns as ap
from cdclab.state import watermarks as state

RECOVERABLE = (state.WatermarkTypeError, state.WatermarkInFutureError)


def watermark_key(source: str, target: str) -> str:
    """The watermark (and the metrics pipeline) of one source and target."""
    return f"71_06_03/{source}->{target}"


@dataclass(frozen=True)
class Loaded(ap.VariantRun):
    """One run (:class:`~cdclab.lessons.antipatterns.VariantRun`), the rows written and the notes to log
    before the summary."""

    rows_written: int
    notes: list[str] = field(default_factory=list)

    def xcom(self) -> dict[str, Any]:
        return {**super().xcom(), "rows_written": self.rows_written}

    def summary(self) -> str:
        return (
            f"{self.variant}/{self.strategy}: read {self.rows_read} rows, wrote {self.rows_written}; "
            f"watermark {self.since} -> {self.new}"
        )


def load(
    source: str,
    target_table: str,
    variant_param: str,
    *,
    corrupt_state: bool,
    interval_start: datetime,
    interval_end: datetime,
    dag_id: str,
    run_id: str,
) -> Loaded:
    """One run of ``variant_param`` (``target_table`` may hold ``{variant}``): corrupt the watermark first
    when ``corrupt_state``, read it — the anti-pattern falls back to a full reload when it is unreadable,
    the fix recovers it from the target — load the rows before ``interval_end`` and record the run's
    metrics (``state.run_metrics``) in the load's transaction."""
    notes: list[str] = []
    with ap.rows_run(source, target_table, variant_param, watermark_key, dag_id=dag_id, run_id=run_id) as run:
        store = state.TableWatermarkStore(run.wh)
        if corrupt_state:
            with run.wh:
                ap.corrupt_watermark(run.wh, run.key)
        full = False
        try:
            since = store.read(run.key, "timestamptz")
            strategy = "incremental" if since is not None else "initial"
        except RECOVERABLE as exc:
            run.wh.rollback()
            if run.variant == "anti_pattern":
                notes.append(f"watermark unreadable ({exc}); falling back to a full reload")
                since, strategy, full = None, "full", True
            else:
                notes.append(f"watermark unreadable ({exc}); recovering it from the target")
                since, strategy = ap.recover_watermark(run, store), "recovered"
        done = ap.load_after(
            run,
            since,
            strategy=strategy,
            store=store,
            full=full,  # the full reload leaves the watermark unreadable
            interval_start=interval_start,
            interval_end=interval_end,
        )
    return Loaded(run.variant, strategy, since, done.new, done.rows_read, done.rows_written, notes)
