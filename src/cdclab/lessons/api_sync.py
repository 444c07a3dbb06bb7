"""71.9.3 API data sync: one incremental pull of the partner's accounts into the warehouse, for
``dags/71_09_03_api_sync.py``. The HTTP client (cursor pagination, rate limits, retries), the target and
stats tables and the guarded upsert are :mod:`cdclab.delta.partner_api`; the step here reads and moves the
watermark around them and commits in the lesson's order.

Vocabulary:
- *sync run*: :class:`SyncRun`, the pipeline name, the API's base URL, the target and stats tables, the
  page size, the overlap, the retry settings, the run's data interval and the run that records it.
- *watermark*: ``state.watermarks`` key ``71_09_03/<pipeline>`` (:func:`watermark_key`), the largest
  ``modified_at`` loaded; it only moves forward (:func:`next_watermark`) and only after the load committed.
- *overlap*: the run asks for ``modified_since = watermark - overlap`` (:func:`modified_since`) so a record
  stamped just before the previous read but visible only after it is not lost; re-read records are
  harmless (the upsert is guarded by ``modified_at``).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cdclab.common.db import WAREHOUSE, connect
from cdclab.delta import partner_api
from cdclab.state import watermarks as state

CONN_ID = "partner_api"


def watermark_key(pipeline: str) -> str:
    """The pipeline's watermark key: ``71_09_03/<pipeline>``."""
    return f"71_09_03/{pipeline}"


def modified_since(watermark: datetime | None, overlap_seconds: float) -> datetime | None:
    """Where the next read starts: ``overlap_seconds`` before the watermark; None (everything) without one."""
    return watermark - timedelta(seconds=overlap_seconds) if watermark is not None else None


def next_watermark(old: datetime | None, newest: datetime | None) -> datetime | None:
    """The watermark after a load whose newest record is ``newest``: never backwards, kept when nothing
    was read."""
    return max(old, newest) if old is not None and newest is not None else (newest or old)


def base_url(param: str, conn_id: str = CONN_ID) -> str:
    """The ``base_url`` param without its trailing slash, or, when empty, the address of the Airflow
    connection ``conn_id`` (:func:`cdclab.delta.partner_api.base_url_of`)."""
    url = param.rstrip("/")
    if url:
        return url
    from airflow.sdk import Connection

    return partner_api.base_url_of(Connection.get(conn_id))


@dataclass(frozen=True)
class SyncRun:
    pipeline: str
    base_url: str
    target: str
    stats_table: str
    page_size: int
    overlap_seconds: float
    max_attempts: int
    backoff_seconds: float
    max_retry_after_seconds: float
    start: datetime
    end: datetime
    dag_id: str
    run_id: str

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], start: datetime, end: datetime, dag_id: str, run_id: str
    ) -> SyncRun:
        """The sync run of a DAG run from its params (an empty ``base_url`` resolved by :func:`base_url`)."""
        return cls(
            params["pipeline"],
            base_url(params["base_url"]),
            params["target"],
            params["stats_table"],
            params["page_size"],
            params["overlap_seconds"],
            params["max_attempts"],
            params["backoff_seconds"],
            params["max_retry_after_seconds"],
            start,
            end,
            dag_id,
            run_id,
        )

    def policy(self) -> partner_api.RetryPolicy:
        return partner_api.RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
        )


def sync(r: SyncRun) -> dict[str, Any]:
    """Create the state schema, the target and the stats table when missing; fetch every account changed
    in ``[watermark - overlap, end)`` (:func:`cdclab.delta.partner_api.fetch_changes`: fails before anything
    is written when the API stays unavailable); upsert them and commit; then advance the watermark and
    record the run's numbers in one transaction. Returns the fetch stats with ``written``, ``since`` and
    ``watermark`` (as text)."""
    key = watermark_key(r.pipeline)
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        with wh, wh.cursor() as cur:
            partner_api.ensure_tables(cur, r.target, r.stats_table)
        store = state.TableWatermarkStore(wh)
        old = store.read(key, "timestamptz")
        wh.rollback()
        since = modified_since(old, r.overlap_seconds)
        rows, stats = partner_api.fetch_changes(
            r.base_url,
            since,
            r.end,
            page_size=r.page_size,
            policy=r.policy(),
            client_id=f"cdclab-{r.pipeline}",
        )
        new = next_watermark(old, partner_api.max_modified(rows))
        with wh, wh.cursor() as cur:  # the load commits first ...
            written = partner_api.upsert_accounts(cur, r.target, rows)
        with wh:  # ... then the watermark moves, and the run's numbers are recorded
            if new is not None and new != old:
                store.advance(key, old, new, value_type="timestamptz", dag_id=r.dag_id, run_id=r.run_id)
            with wh.cursor() as cur:
                partner_api.record_run(
                    cur,
                    r.stats_table,
                    r.pipeline,
                    r.run_id,
                    (r.start, r.end),
                    since,
                    stats,
                    written,
                    old,
                    new,
                )
    return {**stats.as_dict(), "written": written, "since": str(since), "watermark": str(new)}
