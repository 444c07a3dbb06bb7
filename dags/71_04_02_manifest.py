"""71.4.2 File Manifest Processing — producer manifests drive the loads; every file has a tracked status.

A partner delivers a batch as a folder: data files first, then ``_manifest.json`` naming each file with
its size, sha256 and row count. The manifest is the commit marker: until it exists the batch is in
flight and nothing in the folder is touched. The four points:

1. **Manifest files** — the sensor waits for ``<prefix>*/_manifest.json``; each new manifest is parsed and
   validated (:mod:`cdclab.files.manifest`). An invalid manifest is quarantined with its reason. A
   manifest naming a file that is not in the bucket yet stays pending and is retried next run.
2. **File tracking** — every file named by a manifest is registered in ``state.file_manifest`` with its
   batch id and the producer's expectations (rows, sha256). Files no manifest names are never loaded.
3. **Processed status** — each file goes ``discovered -> loaded | quarantined`` (sha256 or row count
   disagreeing with the manifest quarantines it: partial upload or stale manifest); when every file
   of a batch is finished, a receipt goes to ``manifests/<pipeline>/<batch_id>.receipt.json``. A file
   that keeps failing for operational reasons ends ``exhausted`` after `max_attempts` (the load task
   raises ``FilesExhausted`` until someone reprocesses it), never parked silently.
4. **Reprocessing** — trigger with ``{"reprocess_keys": [...]}`` or ``{"reprocess_batch": "<id>"}``: the
   files go back to ``discovered`` (audited as ``reprocess``) and are loaded again by *replacing* their
   rows (delete by source key + insert in one transaction), so a reprocess never duplicates rows.

Observe: MinIO console bucket ``landing`` folder ``71_04_02_manifest/``, bucket ``manifests`` for
receipts; in ``warehouse``: ``SELECT kind, batch_id, key, status, expected_rows, row_count, attempts
FROM state.file_manifest WHERE pipeline = '71_04_02_manifest'``, ``state.file_audit``,
``staging.partner_events``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task

from cdclab.dagkit import landing_params, landing_sensor, lesson_dag

PIPELINE = "71_04_02_manifest"


def _has_work(files: list[dict[str, Any]], **context: Any) -> bool:
    from cdclab.files import steps

    p = context["params"]
    if p["reprocess_keys"] or p["reprocess_batch"]:
        return True
    return steps.has_pending_work(p["pipeline"], p["bucket"], files, p["max_attempts"])


PARAMS = {
    **landing_params(PIPELINE, pattern=None),  # pipeline, bucket "landing", prefix "<pipeline>/"
    "target": "staging.partner_events",
    "quarantine_bucket": "quarantine",
    "receipts_bucket": "manifests",
    "max_attempts": 3,
    "reprocess_keys": [],
    "reprocess_batch": "",
}


@lesson_dag(
    schedule="*/5 * * * *", tags=["71.4", "files", "reference", "patterns", "intermediate", "success"]
)
def manifest_71_04_02():
    wait = landing_sensor(  # S3KeySensor on MinIO: pokes until _has_work, skips the run after 5 min
        "wait_for_manifest",
        "s3://{{ params.bucket }}/{{ params.prefix }}*/_manifest.json",
        check_fn=_has_work,
        metadata_keys=["Key", "Size", "ETag"],
    )

    @task
    def register_batches(**context: Any) -> dict[str, list[str]]:
        """New manifests -> ledger (kind=manifest); each pending manifest registers its files."""
        from cdclab.files import steps

        p = context["params"]
        result = steps.register_batches(
            p["pipeline"], p["bucket"], p["prefix"], p["target"], p["quarantine_bucket"]
        )
        print(f"manifests: {result}")
        return result

    @task
    def request_reprocess(**context: Any) -> list[str]:
        from cdclab.files import steps

        p = context["params"]
        if not (p["reprocess_keys"] or p["reprocess_batch"]):
            return []
        reset = steps.request_reprocess(
            p["pipeline"], keys=p["reprocess_keys"] or None, batch_id=p["reprocess_batch"] or None
        )
        print(f"reprocess requested for {reset}")
        return reset

    @task
    def load_files(**context: Any) -> dict[str, Any]:
        from cdclab.files import steps

        p = context["params"]
        return steps.load_pending(p["pipeline"], p["target"], p["quarantine_bucket"], p["max_attempts"])

    @task
    def write_receipts(**context: Any) -> list[str]:
        from cdclab.files import steps

        p = context["params"]
        return steps.write_receipts(p["pipeline"], p["receipts_bucket"])

    wait >> register_batches() >> request_reprocess() >> load_files() >> write_receipts()


manifest_71_04_02()
