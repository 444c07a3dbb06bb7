"""71.6.1 Lost watermarks (anti-pattern): a load whose watermark vanishes, once kept in an Airflow
Variable and guessed again (the anti-pattern), once kept in ``state.watermarks`` and rebuilt from the
target (the fix), for ``dags/71_06_01_lost_watermarks.py``. The pieces and the vocabulary (*gap*,
*variant*) live in :mod:`cdclab.lessons.antipatterns`; :func:`load` is the DAG's one step.

Vocabulary:
- *cold start* (anti-pattern, no watermark found): ``interval_start`` reads from just before the data
  interval's start ("from now", the silent gap) or ``everything`` reloads the whole source
  (:func:`anti_pattern_since`).
- *strategy*: how the run chose where to read from — ``incremental`` (a stored watermark), ``from_now`` or
  ``everything`` (the anti-pattern's cold starts), ``recovered`` (the fix rebuilt the watermark from
  ``max(updated_at)`` of the target) or ``initial`` (the fix found an empty target: a first load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cdclab.lessons import antipatterns as ap
from cdclab.state import watermarks as state

VARIABLE_KEY = "71_06_01_watermark"
COLD_STARTS = ("interval_start", "everything")


def watermark_key(source: str, target: str) -> str:
    """The fix's watermark (and the metrics pipeline) of one source and target."""
    return f"71_06_01/{source}->{target}"


def anti_pattern_since(stored: Any, cold_start: str, interval_start: datetime) -> tuple[Any, str]:
    """Where the anti-pattern reads from, and its strategy: the stored watermark, else (first run or
    lost state — it cannot tell) just before ``interval_start`` or nothing (everything)."""
    if cold_start not in COLD_STARTS:
        raise ValueError(f"anti_cold_start {cold_start!r} is not one of {COLD_STARTS}")
    if stored is not None:
        return stored, "incremental"
    if cold_start == "interval_start":
        return interval_start - timedelta(microseconds=1), "from_now"
    return None, "everything"


@dataclass(frozen=True)
class Loaded(ap.VariantRun):
    """One run (:class:`~cdclab.lessons.antipatterns.VariantRun`), the gap (source keys before the interval
    end missing in the target) and the notes to log before the summary."""

    gap: list[Any]
    notes: list[str] = field(default_factory=list)

    def xcom(self) -> dict[str, Any]:
        return {**super().xcom(), "gap": self.gap}

    def summary(self) -> str:
        return (
            f"{self.variant}/{self.strategy}: read {self.rows_read} rows since {self.since}; "
            f"watermark now {self.new}; gap: {self.gap}"
        )


def load(
    source: str,
    target_table: str,
    variant_param: str,
    *,
    lose_state: bool,
    anti_cold_start: str,
    interval_start: datetime,
    interval_end: datetime,
    dag_id: str,
    run_id: str,
) -> Loaded:
    """One run of ``variant_param`` (``target_table`` may hold ``{variant}``): lose the state first when
    ``lose_state``, choose where to read from, load ``(since, interval_end)`` upserted by ``updated_at``,
    store the new watermark and the run's metrics (``state.run_metrics``), then measure the gap."""
    notes: list[str] = []
    with ap.rows_run(source, target_table, variant_param, watermark_key, dag_id=dag_id, run_id=run_id) as run:
        variant, shop, wh = run.variant, run.shop, run.wh
        table_store = state.TableWatermarkStore(wh)
        variable_store = state.VariableWatermarkStore(prefix=f"{source}__")
        if lose_state:
            if variant == "anti_pattern":
                variable_store.delete(VARIABLE_KEY)
            else:
                with wh:
                    table_store.delete(run.key, "lose_state=true", dag_id=dag_id, run_id=run_id)
            notes.append(f"state lost on purpose ({variant})")

        if variant == "anti_pattern":
            stored = variable_store.get(VARIABLE_KEY, "timestamptz")
            since, strategy = anti_pattern_since(stored, anti_cold_start, interval_start)
        else:
            since = table_store.read(run.key, "timestamptz")
            strategy = "incremental"
            if since is None:
                since = ap.recover_watermark(run, table_store)
                strategy = "recovered" if since is not None else "initial"

        done = ap.load_after(
            run,
            since,
            strategy=strategy,
            store=table_store if variant == "fixed" else None,
            interval_start=interval_start,
            interval_end=interval_end,
        )
        new = done.new
        if variant == "anti_pattern" and new is not None:
            variable_store.set(VARIABLE_KEY, new, "timestamptz")
        source_keys = [r["id"] for r in ap.read_rows_after(shop, source, None, interval_end)]
        shop.rollback()
        target_keys = ap.keys_of(wh, run.target)
        wh.rollback()
    gap = ap.missing_keys(source_keys, target_keys)
    return Loaded(variant, strategy, since, new, done.rows_read, gap, notes)
