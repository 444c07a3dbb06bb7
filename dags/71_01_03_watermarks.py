"""
# 71.1.3 Watermark tracking — store the high watermark only after the load commits

**High watermark.** The largest ``updated_at`` this pipeline has loaded *and committed* into the
warehouse. Every run reads ``[watermark - lookback, upper)`` from ``shop`` where ``upper`` is the
source's ``now()``, but never later than the start of the oldest still-open transaction that writes
the source table (a row it stamped is not visible yet; ``cdclab.delta.detection.oldest_open_transaction_start``), and upserts it into the target.

**Watermark storage.** ``state.watermarks`` in the ``warehouse`` (``cdclab.state.watermarks.TableWatermarkStore``):
the value with its declared type (``timestamptz``), who wrote it (DAG id, run id), and every change in
``state.watermark_history``. A value of the wrong type or later than now (+5 min) is refused with
``WatermarkTypeError`` / ``WatermarkInFutureError``.

**Update patterns.** ``load`` commits the rows, then ``advance_watermark`` moves the watermark with
compare-and-set from the value the load started from (``watermark_mode="after_commit"``, default). If
another run moved it meanwhile the task fails with ``WatermarkConflictError`` instead of overwriting.
Because target and state share the warehouse, ``watermark_mode="same_transaction"`` commits rows and
watermark atomically instead — the strongest pattern when it is available.

**Recovery handling.** A crash between "load committed" and "watermark stored" (simulate it with
``{"fail_after_load": true}``) leaves the old watermark. The rerun reads the same rows again; the
upsert is guarded by ``version`` so they are counted as ``skipped`` — no gap (the watermark never ran
ahead of the data) and no duplicate (the target is keyed, the replay is idempotent). The opposite
order (watermark first, then load) would lose the rows of a crashed run forever.

Observe: ``SELECT * FROM state.watermarks WHERE key LIKE '71_01_03/%'``, the history in
``state.watermark_history``, the target ``core.customers_71_01_03``; the task logs print rows read,
inserted, updated and skipped. Trigger with ``{"fail_after_load": true}`` in the UI to see the failed
run, then trigger again.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, from_params, lesson_dag

DAG_ID = "71_01_03_watermarks"


class SimulatedCrashAfterLoad(RuntimeError):
    """Raised by ``fail_after_load=True`` after the load committed and before the watermark moved."""


def _key(params: dict[str, Any]) -> str:
    return params["watermark_key"] or f"71_01_03/{params['source_table']}->{params['target_table']}"


PARAMS = {
    "source_table": Param("public.customers", type="string"),
    "target_table": Param("core.customers_71_01_03", type="string"),
    "watermark_key": Param("", type="string", description="default: 71_01_03/<source>-><target>"),
    "lookback_seconds": Param(0, type="integer", minimum=0),
    "null_policy": Param("raise", enum=["raise", "include", "exclude"]),
    "watermark_mode": Param("after_commit", enum=["after_commit", "same_transaction"]),
    "fail_after_load": Param(False, type="boolean"),
    "batch_size": Param(500, type="integer", minimum=1),
}


@lesson_dag(
    schedule=data_intervals("@hourly"),
    tags=["71.1", "watermarks", "reference", "core", "intermediate", "success"],
)
def watermarks() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab.lessons import watermarks as lesson

        lesson.prepare(params["source_table"], params["target_table"])

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import watermarks as lesson

        key = _key(params)
        r = lesson.load(
            params["source_table"],
            params["target_table"],
            key,
            mode=params["watermark_mode"],
            **from_params(params, "lookback_seconds", "batch_size", "null_policy"),
            dag_id=DAG_ID,
            run_id=dag_run.run_id,
        )
        print(
            f"watermark {r.old} -> {r.new} (upper bound {r.upper}); read {r.rows_read} rows, "
            f"null cursor rows {r.null_cursor_rows}; inserted {r.written.inserted}, "
            f"updated {r.written.updated}, skipped {r.written.skipped}"
        )
        if params["fail_after_load"]:
            raise SimulatedCrashAfterLoad(
                f"simulated crash: {r.written.written} rows committed into {params['target_table']}, "
                f"watermark {key!r} still at {r.old}. Rerun: the same rows are re-read and skipped."
            )
        return r.xcom()

    @task
    def advance_watermark(loaded: dict[str, Any], dag_run: Any = None) -> str | None:
        from cdclab.lessons import watermarks as lesson

        old, new, moved = lesson.advance_after_commit(loaded, dag_id=DAG_ID, run_id=dag_run.run_id)
        if not moved:
            print(f"watermark {loaded['key']!r} stays at {new} ({loaded['mode']})")
            return None if new is None else new.isoformat()
        print(f"watermark {loaded['key']!r}: {old} -> {new}")
        return new.isoformat()

    prepared = prepare()
    loaded = load()
    prepared >> loaded
    advance_watermark(loaded)


watermarks()
