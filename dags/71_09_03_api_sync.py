"""71.9.3 API Data Sync — pull a partner's accounts through its HTTP API, incrementally and politely.

1. **Cursor-based pagination** — ``GET /accounts`` returns pages ordered by ``(modified_at, id)`` and an
   opaque ``next_cursor`` (base64 of the last record's ``modified_at`` and ``id``). The run follows
   cursors until ``next_cursor`` is null. Because the cursor is a keyset position and not an offset,
   records sharing one ``modified_at`` across a page boundary are neither skipped nor repeated, and
   records changing between two page reads cannot shift the pages.
2. **Modified since** — each run asks for ``modified_since = watermark - overlap`` and
   ``modified_before = data interval end`` (a manual run with logical date H covers up to H). The
   watermark (``state.watermarks``, key ``71_09_03/<pipeline>``) is the largest ``modified_at`` loaded
   and moves only after the load committed; the overlap re-reads a little so a record stamped just
   before the previous read but visible only after it is not lost. Re-read records are harmless: the
   upsert is guarded by ``modified_at`` (an older or equal version never overwrites a newer one).
   Soft deletes arrive as changes (``deleted = true``) and become flagged rows.
3. **Rate limiting** — the API has a per-client token bucket; an empty bucket answers ``429`` with
   ``Retry-After``. The client sleeps exactly that long (capped) and retries the same page.
4. **Error recovery** — ``5xx`` answers and connection errors are retried with bounded exponential
   backoff; after ``max_attempts`` the task fails with ``PartnerAPIUnavailableError`` *before* anything is
   loaded or the watermark moves, so the next run (or a retry) re-reads the same window. Every run writes
   pages, requests, retries, 429s and 5xx counts to the stats table.

Observe: the lab service ``partner-api`` serves ``http://127.0.0.1:8099/accounts`` (Airflow connection
``partner_api``; ``curl '127.0.0.1:8099/accounts?limit=3'``, follow ``next_cursor``). Change data with
``curl -X PATCH 127.0.0.1:8099/accounts/3 -d '{"tier":"gold"}'`` or ``curl -X DELETE ...``, inject
faults with ``curl -X POST 127.0.0.1:8099/admin/faults -d '{"fail_next":2}'``, then trigger the DAG and
look at ``core.partner_accounts`` and ``state.api_sync_runs`` (retries / throttled columns) and the task log.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_09_03_api_sync"

PARAMS = {
    "pipeline": Param("partner_accounts", type="string"),
    "base_url": Param("", type="string", description="default: the Airflow connection partner_api"),
    "target": Param("core.partner_accounts", type="string"),
    "stats_table": Param("state.api_sync_runs", type="string"),
    "page_size": Param(100, type="integer", minimum=1, maximum=1000),
    "overlap_seconds": Param(60, type="integer", minimum=0),
    "max_attempts": Param(8, type="integer", minimum=1),
    "backoff_seconds": Param(0.2, type="number", minimum=0),
    "max_retry_after_seconds": Param(30, type="number", minimum=0),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.9", "api", "reference", "intermediate", "success", "example"],
)
def api_sync() -> None:
    @task
    def sync(
        params: dict[str, Any],
        dag_run: Any = None,
    ) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab.lessons import api_sync as lesson
        from cdclab.time.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        run = lesson.SyncRun.from_params(params, iv.start, iv.end, DAG_ID, dag_run.run_id)
        result = lesson.sync(run)
        print(f"synced from {run.base_url}: {result}")
        return result

    sync()


api_sync()
