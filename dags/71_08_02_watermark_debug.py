"""
# 71.8.2 Watermark debugging — is the stored watermark true, how did it get there, and how to fix it

An incremental load trusts its watermark blindly: a watermark ahead of the data skips rows forever, a
watermark of the wrong type breaks (or silently mis-compares), a regressed one re-reads. Every run of
this DAG checks the watermark *before* it loads, repairs it with an audited reset when it lies, loads
incrementally (``updated_at``, version-guarded upsert, compare-and-set advance as in ``71_01_03``) and
checks again.

**Value verification.** ``diagnose`` compares the stored value (``state.watermarks``) with
``max(updated_at)`` in the target (what was really loaded) and with the source: a source row whose
cursor is <= the watermark but which the target lacks is a row the next read will skip. Verdicts
(``cdclab.ops.diagnostics.check_watermark``): ``ok``, ``missing`` (first run), ``wrong_type`` (not a
``timestamptz``), ``ahead_of_data`` (with the keys it would skip), ``behind_data`` (harmless: re-reads).

**History tracking.** ``state.watermark_history`` holds every move (old -> new, when, run, reason).
``diagnose`` records how many moves, how many went backwards (only ``reset`` can) and how many changed
the type, and names the latest one: which run and which reason put the watermark where it is.

**Inconsistency detection.** ``ahead_of_data`` and ``wrong_type`` are inconsistencies; ``behind_data``
after a backwards reset is a warning, not an error (the guarded upsert makes re-reads harmless).

**Reset procedures.** ``reset`` moves an inconsistent watermark to the last value proven loaded —
``max(updated_at)`` of the target — with ``TableWatermarkStore.reset`` (audited, the reason names the
verdict and the run). The load then re-reads from there and ``recheck`` proves the watermark equals the
target's high watermark and no source row below it is missing (``WatermarkInconsistentError``
otherwise). ``{"auto_reset": false}`` only reports.

Set-up: with the default params the DAG's ``setup`` task first breaks the demo watermark
(``71_08_02/public.customers->core.customers_71_08_02``) the way a bad deploy does — a bigint where a
``timestamptz`` belongs, an audited move in ``state.watermark_history`` (``cdclab.lessons.demos.break_watermark``)
— so every run shows ``wrong_type`` -> ``reset`` -> load -> ``ok``. With other tables or an explicit
``watermark_key`` it does nothing. An empty source (a fresh lab before the workload) is consistent: the
post-load check records ``empty_source`` instead of failing.

Observe: ``SELECT check_name, verdict, detail FROM state.findings_71_08_02 ORDER BY id``;
``SELECT * FROM state.watermark_history WHERE key = '71_08_02/...' ORDER BY id``; target
``core.customers_71_08_02``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, demo_setup, lesson_dag

DAG_ID = "71_08_02_watermark_debug"
DEMO = {"source_table": "public.customers", "target_table": "core.customers_71_08_02", "watermark_key": ""}


def _wm_key(params: dict[str, Any]) -> str:
    return params["watermark_key"] or f"71_08_02/{params['source_table']}->{params['target_table']}"


def _debug_run(params: dict[str, Any], dag_run: Any) -> Any:
    from cdclab.lessons.watermark_debug import DebugRun

    return DebugRun(
        params["source_table"],
        params["target_table"],
        _wm_key(params),
        params["findings_table"],
        DAG_ID,
        dag_run.run_id,
    )


PARAMS = {
    "source_table": Param(DEMO["source_table"], type="string"),
    "target_table": Param(DEMO["target_table"], type="string"),
    "watermark_key": Param("", type="string", description="default: 71_08_02/<source>-><target>"),
    "findings_table": Param("state.findings_71_08_02", type="string"),
    "auto_reset": Param(True, type="boolean"),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.8", "debugging", "reference", "intermediate", "success"]
)
def watermark_debug() -> None:
    @demo_setup(DEMO)
    def setup(params: dict[str, Any], dag_run: Any = None) -> str:
        """Default params: break the demo watermark (wrong type, audited). Other tables: nothing to do."""
        from cdclab.lessons import watermark_debug as lesson

        lesson.break_demo_watermark(_debug_run(params, dag_run))
        return f"demo: watermark {_wm_key(params)!r} now holds a bigint"

    @task
    def diagnose(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.lessons import watermark_debug as lesson

        check, verdict = lesson.diagnose(_debug_run(params, dag_run))
        print(f"watermark {_wm_key(params)!r}: {check.verdict} {check.as_dict()}; history: {verdict}")
        return {"verdict": check.verdict, "max_loaded": check.as_dict()["max_loaded"]}

    @task
    def reset(diagnosis: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import watermark_debug as lesson

        verdict, to = diagnosis["verdict"], diagnosis["max_loaded"]
        if lesson.reset(_debug_run(params, dag_run), verdict, to, auto_reset=params["auto_reset"]):
            print(f"watermark {_wm_key(params)!r} reset to {to} ({verdict})")

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab.lessons import watermark_debug as lesson

        p, written = lesson.load(_debug_run(params, dag_run))
        print(f"read {len(p.rows)} rows since {p.old}; {written}; watermark -> {p.new}")
        return {"read": len(p.rows), "inserted": written.inserted, "updated": written.updated}

    @task
    def recheck(loaded: dict[str, int], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import watermark_debug as lesson

        lesson.recheck(_debug_run(params, dag_run), loaded)

    diagnosis = diagnose()
    setup() >> diagnosis
    loaded = load()
    reset(diagnosis) >> loaded
    recheck(loaded)


watermark_debug()
