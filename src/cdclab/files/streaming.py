"""Continuous ingestion in mini-batches with a measured landing-to-table latency.

Vocabulary:
- *mini-batch*: one detect + load cycle over at most ``max_files`` new files.
- *poll interval*: the pause between mini-batches inside one run; *run budget*: how long one run keeps
  polling before it ends (the next scheduled run takes over). Latency is bounded by poll interval + load
  time while a run is active, and by the schedule period between runs.
- *latency* of a file: ``loaded_at - LastModified`` (both from ``state.file_manifest``; MinIO and
  Postgres share the host clock in the lab).
"""

from __future__ import annotations

import statistics
import time
from datetime import timedelta
from typing import Any

from cdclab.common.db import WAREHOUSE, transaction
from cdclab.files import detection, loading, state
from cdclab.files.store import ObjectStore


def run_micro_batches(
    pipeline: str,
    bucket: str,
    prefix: str,
    pattern: str,
    target: str,
    run_seconds: float,
    poll_seconds: float,
    max_files: int = 100,
    quarantine_bucket: str = "quarantine",
) -> dict[str, Any]:
    """Poll and load until the run budget is spent (at least one mini-batch)."""
    store = ObjectStore()
    with transaction(WAREHOUSE) as cur:
        loading.ensure_target(cur, target)
    deadline = time.monotonic() + run_seconds
    batches: list[dict[str, Any]] = []
    while True:
        with transaction(WAREHOUSE) as cur:
            detection.detect(cur, store, pipeline, bucket, prefix, pattern, timedelta(minutes=5))
            todo = [r.obj for r in state.pending(cur, pipeline)][:max_files]
        if todo:
            summary = loading.load_all(store, pipeline, todo, target, quarantine_bucket)
            batches.append({"files": len(todo), "rows": summary["rows"]})
        if time.monotonic() + poll_seconds > deadline:
            break
        time.sleep(poll_seconds)
    return {"batches": batches, **latency(pipeline)}


def latency(pipeline: str) -> dict[str, float | None]:
    """p50 / p95 / max landing-to-table latency in seconds over the pipeline's loaded files."""
    with transaction(WAREHOUSE) as cur:
        cur.execute(
            "SELECT extract(epoch FROM loaded_at - last_modified) FROM state.file_manifest"
            " WHERE pipeline = %s AND loaded_at IS NOT NULL ORDER BY 1",
            (pipeline,),
        )
        secs = [float(s) for (s,) in cur.fetchall()]
    if not secs:
        return {"latency_p50_s": None, "latency_p95_s": None, "latency_max_s": None}
    p95 = secs[min(len(secs) - 1, round(0.95 * (len(secs) - 1)))]
    return {"latency_p50_s": statistics.median(secs), "latency_p95_s": p95, "latency_max_s": secs[-1]}
