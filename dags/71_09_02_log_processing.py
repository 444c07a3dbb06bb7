"""71.9.2 Log Processing — read rotating application logs incrementally: nothing twice, nothing missed,
losses recorded.

1. **File-based incremental** — each run reads only the bytes appended since the last run, and only
   complete lines (a half-written last line waits for the next run). Lines land in
   ``staging.app_logs`` keyed by (generation fingerprint, byte offset), so a replay cannot duplicate.
2. **State tracking** — ``state.log_cursor`` keeps, per log, the generation's fingerprint (sha256 of its
   first line), inode, file name and byte offset. Lines and cursor commit in one transaction.
3. **Rotation handling** — logrotate renames (``app.log -> app.log.1``, same inode) or copies and
   truncates (``copytruncate``: new inode for the copy, the live file shrinks to 0). The fingerprint
   follows the content through both, so the run finishes the rotated generation from the saved offset
   and then reads the new live file from byte 0. Several rotations between runs (a *missed rotation*)
   are handled the same way: finish the cursor's generation, read every newer one in full.
4. **Gap recovery** — if the cursor's generation rotated out of retention before it was read, its unread
   tail is gone: the run reads every generation still present from the start and writes a
   ``dlq.log_gap`` row naming the lost generation and offset, so the loss is visible and bounded.
   Lines that do not parse go to ``dlq.log_bad_lines`` with the reason.

Observe: the lab writes logs under ``<lab state>/applogs/71_09_02_log_processing/app.log`` (or pass
``{"log_dir": ...}``; the folder is the Airflow connection `applogs`); after a run look at ``state.log_cursor``, ``staging.app_logs``, ``dlq.log_gap``.
Rotate by hand (``mv app.log app.log.1``) between runs to watch the cursor follow the fingerprint.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from cdclab.dagkit import lesson_dag

PIPELINE = "71_09_02_log_processing"

PARAMS = {
    "pipeline": PIPELINE,
    "log_dir": "",  # default: <lab state>/applogs/<pipeline>
    "log_name": "app.log",
    "target": "staging.app_logs",
}


@lesson_dag(schedule="*/5 * * * *", tags=["71.9", "logs", "reference", "example", "intermediate", "success"])
def log_processing_71_09_02():
    @task
    def ingest_new_lines(**context: Any) -> dict[str, Any]:
        from pathlib import Path

        from airflow.providers.standard.hooks.filesystem import FSHook

        from cdclab.files import steps

        p = context["params"]
        if p["log_dir"]:
            folder = Path(p["log_dir"])
        else:  # the lab's log folder: the `applogs` connection (File (path)) that the launcher sets
            folder = Path(FSHook(fs_conn_id="applogs").get_path()) / p["pipeline"]
        result = steps.ingest_log(p["pipeline"], folder / p["log_name"], p["target"])
        print(f"{folder / p['log_name']}: {result}")
        if result["gap"]:
            print(f"GAP recorded in dlq.log_gap: {result['gap']}")
        return result

    ingest_new_lines()


log_processing_71_09_02()
