"""71.4.5 Archive After Processing — move loaded files out of ``landing/``, keep an audit trail, expire
old archives by policy.

1. **Move processed files** — after a file is ``loaded``, it is copied to the archive bucket, the copy's
   size is verified, the manifest row becomes ``archived`` and an ``archive`` audit row is written (one
   transaction), then the landing object is deleted if it is still the same version (ETag). S3 has no
   rename: copy-verify-delete means a crash leaves two copies, never none, and rerunning is idempotent.
2. **Archive patterns** — ``archive/<pipeline>/<yyyy>/<mm>/<dd>/<original key>`` by the run's logical date
   (not the wall clock): a processing day can be listed, restored (copy back to landing: it is a new
   ETag, so it is loaded again) or expired as one prefix. Corrupt input goes to
   ``quarantine/<pipeline>/`` instead, with a ``.reason.json``.
3. **Cleanup policies** — an archived copy is deleted and audited as ``expire`` exactly once when its
   *archive day* (the ``yyyy/mm/dd`` in its key: the logical date of the run that archived it) is more
   than ``params.retention_days`` before the expiring run's logical date. Both sides of the comparison
   are logical dates, never the audit row's wall-clock time: a backfill of March, run in December,
   archives March's files under March and expires them by March's calendar; a rerun of an old day
   expires what was due on that day and nothing newer. (With wall-clock audit times, the backfilled
   files would outlive every backfill run, and a run whose logical date is ahead of the wall clock would
   expire files archived minutes ago.) The same rule could be an S3 lifecycle rule (``Expiration.Days``
   on the ``archive/<pipeline>/`` prefix), which counts from each object's wall-clock creation and so has
   the backfill problem; doing it here keeps every deletion in the audit trail and testable.
   ``landing/`` keeps only files still to be processed.
4. **Audit trail** — ``state.file_audit``: action (archive, quarantine, expire, ...), source and
   destination bucket/key, ETag, size, reason, time — what happened to every object, queryable next to
   the data it produced.

Observe: MinIO console, buckets ``landing`` (emptied), ``archive`` (dated folders) and ``quarantine``;
in ``warehouse``: ``SELECT action, src_key, dst_bucket, dst_key, reason, at FROM state.file_audit WHERE
pipeline = '71_04_05_archive' ORDER BY id``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import task

from cdclab.dagkit import landing_params, lesson_dag

PIPELINE = "71_04_05_archive"

PARAMS = {
    **landing_params(PIPELINE),  # pipeline, bucket "landing", prefix "<pipeline>/", pattern "*"
    "target": "staging.partner_events",
    "archive_bucket": "archive",
    "quarantine_bucket": "quarantine",
    "retention_days": 30,
}


@lesson_dag(schedule="@hourly", tags=["71.4", "files", "reference", "patterns", "intermediate", "success"])
def archive_71_04_05():
    @task
    def load_new_files(**context: Any) -> dict[str, Any]:
        from cdclab.files import steps

        p = context["params"]
        return steps.detect_and_load(
            p["pipeline"], p["bucket"], p["prefix"], p["pattern"], p["target"], p["quarantine_bucket"]
        )

    @task
    def archive_loaded(**context: Any) -> list[str]:
        from cdclab.files import steps
        from cdclab.time.intervals import run_interval

        p = context["params"]
        moved = steps.archive_loaded(p["pipeline"], run_interval(context).logical_date, p["archive_bucket"])
        print(f"archived {len(moved)} file(s): {moved}")
        return moved

    @task
    def expire_old_archives(**context: Any) -> list[str]:
        from cdclab.files import steps
        from cdclab.time.intervals import run_interval

        p = context["params"]
        gone = steps.expire_archives(
            p["pipeline"], run_interval(context).logical_date, timedelta(days=p["retention_days"])
        )
        print(f"expired {len(gone)} archived object(s)")
        return gone

    load_new_files() >> archive_loaded() >> expire_old_archives()


archive_71_04_05()
