"""
# 71.1.4 Delta detection — timestamp, version and hash based, checked by a full comparison

One source table (``shop.public.customers``), three detectors, three warehouse targets, and a
reconciliation that compares each target with the source every run (``cdclab.delta.detection``).

**Timestamp-based.** ``updated_at >= watermark - lookback`` and ``< `` the start of the oldest open
transaction writing the table, keyset-paginated on ``(updated_at, id)`` so equal timestamps across a
page boundary are neither missed nor repeated. Re-read rows are skipped by the ``version``-guarded
upsert. Cheap with an index on ``updated_at``; blind to hard deletes; needs a trustworthy column.

**Version-based.** Postgres' ``xmin`` (the writing transaction, widened to 64 bits) against the
snapshot ``xmin`` stored as a ``bigint`` watermark: no application column needed, late-committing
transactions are caught by construction (the watermark is the oldest transaction still running), but
every read is a sequential scan and deletes stay invisible. A per-row ``version`` column is used as the
upsert guard so an older read can never overwrite a newer row.

**Hash-based.** A ``{id: md5(columns)}`` map of the source against the last snapshot stored in
``state.row_hashes``: finds inserts, updates **and deletes**, needs no change column at all, but reads
the whole source every run (cost grows with the table, not with the changes).

**Comparison patterns.** ``reconcile`` hashes source and each target and records the keys *missing*
from the target, *extra* in it and *different* (``state.delta_reconciliation``). After a hard delete
the timestamp and version targets show the deleted key as *extra*; the hash target stays equal.

Observe: the targets ``core.customers_71_01_04_{timestamp,version,hash}``, watermarks
``state.watermarks WHERE key LIKE '71_01_04/%'``, snapshots ``state.row_hashes``, and
``SELECT * FROM state.delta_reconciliation ORDER BY id DESC``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, lesson_dag

DAG_ID = "71_01_04_delta_detection"


def _key(params: dict[str, Any], method: str) -> str:
    return f"{params['state_prefix'] or '71_01_04/' + params['source_table']}/{method}"


def _target(params: dict[str, Any], method: str) -> str:
    from cdclab.lessons.delta_detection import target_of

    return target_of(params["target_prefix"], method)


PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "target_prefix": Param(
        "core.customers_71_01_04",
        type="string",
        description="targets are <prefix>_timestamp, _version, _hash",
    ),
    "state_prefix": Param(
        "", type="string", description="watermark/snapshot keys; default 71_01_04/<source>"
    ),
    "lookback_seconds": Param(60, type="integer", minimum=0),
    "null_policy": Param("raise", enum=["raise", "include", "exclude"]),
    "reconciliation_table": Param("state.delta_reconciliation", type="string"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.1", "delta-detection", "reference", "core", "intermediate", "success"],
)
def delta_detection() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import delta_detection as lesson

        lesson.prepare(params["source_table"], params["target_prefix"], params["reconciliation_table"])

    @task
    def timestamp_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab.lessons import delta_detection as lesson

        counts, old = lesson.timestamp_load(
            params["source_table"],
            _target(params, "timestamp"),
            _key(params, "timestamp"),
            lookback_seconds=params["lookback_seconds"],
            null_policy=params["null_policy"],
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(f"timestamp-based since {old} (lookback {params['lookback_seconds']} s): {counts}")
        return counts

    @task
    def version_based(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab.lessons import delta_detection as lesson

        counts, old, new = lesson.version_load(
            params["source_table"],
            _target(params, "version"),
            _key(params, "version"),
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(f"version-based (xmin) since xid {old} -> {new}: {counts}")
        return counts

    @task
    def hash_based(params: dict[str, Any]) -> dict[str, int]:
        from cdclab.lessons import delta_detection as lesson

        snapshot = _key(params, "hash")
        counts = lesson.hash_load(params["source_table"], _target(params, "hash"), snapshot)
        print(f"hash-based against snapshot {snapshot!r}: {counts}")
        return counts

    @task
    def reconcile(params: dict[str, Any], dag_run: Any = None) -> dict[str, dict[str, list[Any]]]:
        from cdclab.lessons import delta_detection as lesson

        return lesson.reconcile(
            params["source_table"],
            params["target_prefix"],
            params["reconciliation_table"],
            run_id=dag_run.run_id,
        )

    prepared = prepare()
    loads = [timestamp_based(), version_based(), hash_based()]
    prepared >> loads
    loads >> reconcile()


delta_detection()
