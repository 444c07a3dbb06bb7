"""71.4.1 New File Detection — find every new file in ``landing/`` exactly once, across restarts.

A partner drops event files (CSV / JSON lines, optionally gzip) under a landing prefix. This DAG waits
for them with a sensor, decides which are *new* from state kept in the warehouse, and loads each one
exactly once into a staging table. The four points:

1. **File sensors** — ``S3KeySensor`` (official Amazon provider, connection ``minio``) pokes the landing
   prefix. Its ``check_fn`` asks the ledger whether any listed (key, ETag) is unknown or unfinished, so
   the sensor fires for *new* files, not for files that merely exist. It runs deferrable (released
   worker slot, triggerer polls) when ``aiobotocore`` is installed, else in ``reschedule`` mode; with
   no new files it times out and skips the run (``soft_fail``).
2. **Prefix patterns** — ``params.prefix`` bounds the listing (``landing/<pipeline>/``), ``params.pattern``
   (fnmatch on the key relative to the prefix: ``*.csv``, ``part-*``, ``dt=2026-*/*.jsonl.gz``) selects
   data files, so manifests, temp files (``_tmp/…``) and other partners' drops are never touched.
3. **Modification time** — ``state.file_watermark`` keeps the newest ``LastModified`` seen; objects older
   than ``watermark - lag`` are skipped without a ledger lookup. Younger ones are always checked by
   (key, ETag): ``LastModified`` is no commit order (multipart uploads carry their start time), so a pure
   ``> watermark`` filter would lose a file that becomes visible late.
4. **State tracking** — ``state.file_manifest`` (warehouse) has one row per (pipeline, key, ETag) with
   status, size, sha256, rows, attempts and error. Registration and loading are separate transactions;
   a file is loaded under a row lock in the same transaction that marks it ``loaded``. A crash leaves it
   ``discovered`` and the next run loads it; a file that lands while a run is listing or loading is not
   in that run's snapshot and is new for the next run. Corrupt files (bad row, truncated gzip, empty
   object) are moved to ``quarantine/<pipeline>/`` with a ``.reason.json``; the other files continue.
   An operational failure leaves the file ``failed`` and the next run retries it; after `max_attempts`
   it is ``exhausted`` — not retried, and loud: the task raises ``FilesExhausted`` every run (and
   71_10_04's ``files_exhausted`` alerts) until it is fixed and reprocessed. Reads are pinned to the
   registered ETag (``If-Match``): an object replaced after registration raises ``ObjectChanged``,
   nothing of it is loaded, and the new version is a new file.

Observe in the running lab: drop files with the MinIO console (http://127.0.0.1:9001, bucket
``landing``, folder ``71_04_01_file_detection/``), trigger the DAG, then in ``warehouse``:
``SELECT key, status, attempts, row_count, error FROM state.file_manifest WHERE pipeline =
'71_04_01_file_detection'``, the rows in ``staging.partner_events`` and ``dlq.file_quarantine``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import task

from cdclab.dagkit import landing_params, landing_sensor, lesson_dag

PIPELINE = "71_04_01_file_detection"


def _has_new_files(files: list[dict[str, Any]], **context: Any) -> bool:
    from cdclab.files import steps

    p = context["params"]
    return steps.has_new_files(p["pipeline"], p["bucket"], files)


PARAMS = {
    **landing_params(PIPELINE),  # pipeline, bucket "landing", prefix "<pipeline>/", pattern "*"
    "target": "staging.partner_events",
    "quarantine_bucket": "quarantine",
    "lag_seconds": 300,
    "max_attempts": 3,
    "crash_after_files": -1,  # > -1: the load task dies after N files (restart demo/test)
}


@lesson_dag(
    schedule="*/5 * * * *", tags=["71.4", "files", "reference", "patterns", "intermediate", "success"]
)
def file_detection_71_04_01():
    wait = landing_sensor(  # S3KeySensor on MinIO: pokes until _has_new_files, skips the run after 5 min
        "wait_for_new_files",
        "s3://{{ params.bucket }}/{{ params.prefix }}{{ params.pattern }}",
        check_fn=_has_new_files,
        metadata_keys=["Key", "Size", "ETag", "LastModified"],
    )

    @task
    def detect_new_files(**context: Any) -> list[dict[str, Any]]:
        from cdclab.files import steps

        p = context["params"]
        found, todo = steps.detect_new_files(
            p["pipeline"],
            p["bucket"],
            p["prefix"],
            p["pattern"],
            p["target"],
            timedelta(seconds=p["lag_seconds"]),
            p["max_attempts"],
        )
        print(
            f"listed {len(found.listed)}, {found.skipped_by_time} older than watermark-lag, "
            f"{len(found.new)} new; watermark {found.watermark_before} -> {found.watermark_after}; "
            f"{len(todo)} pending"
        )
        return [r.obj.as_dict() for r in todo]

    @task
    def load_files(files: list[dict[str, Any]], **context: Any) -> dict[str, Any]:
        from cdclab.files import steps

        p = context["params"]
        # crash_after_files >= 0 simulates a worker dying part-way: committed files stay loaded
        return steps.load_listed(
            p["pipeline"],
            files,
            p["target"],
            p["quarantine_bucket"],
            p["max_attempts"],
            crash_after_files=int(p["crash_after_files"]),
        )

    wait >> load_files(detect_new_files())


file_detection_71_04_01()
