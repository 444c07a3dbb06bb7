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
(``cdclab.diagnostics.check_watermark``): ``ok``, ``missing`` (first run), ``wrong_type`` (not a
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
``timestamptz`` belongs, an audited move in ``state.watermark_history`` (``cdclab.demos.break_watermark``)
— so every run shows ``wrong_type`` -> ``reset`` -> load -> ``ok``. With other tables or an explicit
``watermark_key`` it does nothing. An empty source (a fresh lab before the workload) is consistent: the
post-load check records ``empty_source`` instead of failing.

Observe: ``SELECT check_name, verdict, detail FROM state.findings_71_08_02 ORDER BY id``;
``SELECT * FROM state.watermark_history WHERE key = '71_08_02/...' ORDER BY id``; target
``core.customers_71_08_02``.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_08_02_watermark_debug"
KEY = "id"
CURSOR = "updated_at"
INCONSISTENT = {"ahead_of_data", "wrong_type"}
DEMO = {"source_table": "public.customers", "target_table": "core.customers_71_08_02", "watermark_key": ""}


def _wm_key(params: dict[str, Any]) -> str:
    return params["watermark_key"] or f"71_08_02/{params['source_table']}->{params['target_table']}"


def _check(shop: Any, wh: Any, params: dict[str, Any]) -> Any:
    from psycopg2 import sql

    from cdclab import diagnostics as d
    from cdclab import state
    from cdclab.db import ident

    with shop.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {}, {} FROM {}").format(
                sql.Identifier(KEY), sql.Identifier(CURSOR), ident(params["source_table"])
            )
        )
        source_rows = dict(cur.fetchall())
    shop.rollback()
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {}, {} FROM {}").format(
                sql.Identifier(KEY), sql.Identifier(CURSOR), ident(params["target_table"])
            )
        )
        target_rows = dict(cur.fetchall())
        max_loaded = d.max_cursor(cur, params["target_table"], CURSOR)
    return d.check_watermark(
        state.TableWatermarkStore(wh).get(_wm_key(params)), max_loaded, source_rows, target_rows
    )


def _source_empty(shop: Any, params: dict[str, Any]) -> bool:
    from psycopg2 import sql

    from cdclab.db import ident

    with shop.cursor() as cur:
        cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(ident(params["source_table"])))
        empty = bool(cur.fetchone()[0])
    shop.rollback()
    return empty


def _finding(cur: Any, params: dict[str, Any], run_id: str, **kw: Any) -> None:
    from cdclab.diagnostics import record_finding

    record_finding(cur, params["findings_table"], dag_id=DAG_ID, run_id=run_id, **kw)


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.8", "debugging", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source_table": Param(DEMO["source_table"], type="string"),
        "target_table": Param(DEMO["target_table"], type="string"),
        "watermark_key": Param("", type="string", description="default: 71_08_02/<source>-><target>"),
        "findings_table": Param("state.findings_71_08_02", type="string"),
        "auto_reset": Param(True, type="boolean"),
    },
)
def watermark_debug() -> None:
    @task
    def setup(params: dict[str, Any], dag_run: Any = None) -> bool:
        """Default params: break the demo watermark (wrong type, audited). Other tables: nothing to do."""
        from cdclab import demos
        from cdclab.db import WAREHOUSE, connect

        if not demos.uses_demo_tables(params, DEMO, DEMO):
            print("custom tables: setup leaves the watermark as it is")
            return False
        wh = connect(WAREHOUSE)
        try:
            demos.break_watermark(wh, _wm_key(params), DAG_ID, dag_run.run_id)
        finally:
            wh.close()
        print(f"demo: watermark {_wm_key(params)!r} now holds a bigint")
        return True

    @task
    def diagnose(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab import diagnostics as d
        from cdclab import state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect

        shop, wh = connect(SHOP), connect(WAREHOUSE)
        key = _wm_key(params)
        try:
            state.ensure_schema(wh)
            upsert.ensure_mirror_table(shop, params["source_table"], wh, params["target_table"], [KEY])
            with wh, wh.cursor() as cur:
                d.ensure_findings(cur, params["findings_table"])
                check = _check(shop, wh, params)
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="value_verification",
                    subject=key,
                    verdict=check.verdict,
                    detail=check.as_dict(),
                )
                history = d.watermark_history(cur, key)
                back, types = d.regressions(history), d.type_changes(history)
                last = history[-1] if history else None
                verdict = "empty"
                if last is not None:
                    verdict = "ok"
                    if back and back[-1] is last:
                        verdict = "regressed"
                    if types and types[-1][1] is last:
                        verdict = "type_changed"
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="history",
                    subject=key,
                    verdict=verdict,
                    detail={
                        "changes": len(history),
                        "regressions": len(back),
                        "type_changes": len(types),
                        "last_reason": None if last is None else last.reason,
                        "last_run_id": None if last is None else last.run_id,
                    },
                )
        finally:
            shop.close()
            wh.close()
        print(f"watermark {key!r}: {check.verdict} {check.as_dict()}; history: {verdict}")
        return {"verdict": check.verdict, "max_loaded": check.as_dict()["max_loaded"]}

    @task
    def reset(diagnosis: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> None:
        import datetime as dt

        from cdclab import state
        from cdclab.db import WAREHOUSE, connect

        key, verdict = _wm_key(params), diagnosis["verdict"]
        wh = connect(WAREHOUSE)
        try:
            with wh, wh.cursor() as cur:
                if verdict not in INCONSISTENT or not params["auto_reset"]:
                    _finding(
                        cur,
                        params,
                        dag_run.run_id,
                        check="reset",
                        subject=key,
                        verdict="not_needed" if verdict not in INCONSISTENT else "skipped",
                    )
                    return
                store = state.TableWatermarkStore(wh)
                if diagnosis["max_loaded"] is None:  # nothing proven loaded: start over
                    store.delete(key, f"{verdict} and an empty target", dag_id=DAG_ID, run_id=dag_run.run_id)
                    to = None
                else:
                    to = dt.datetime.fromisoformat(diagnosis["max_loaded"])
                    store.reset(
                        key,
                        to,
                        f"{verdict}: back to max({CURSOR}) loaded",
                        value_type="timestamptz",
                        dag_id=DAG_ID,
                        run_id=dag_run.run_id,
                    )
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="reset",
                    subject=key,
                    verdict="reset",
                    detail={"cause": verdict, "to": diagnosis["max_loaded"]},
                )
        finally:
            wh.close()
        print(f"watermark {key!r} reset to {to} ({verdict})")

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab import delta, state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect

        key = _wm_key(params)
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            store = state.TableWatermarkStore(wh)
            old = store.read(key, "timestamptz")  # refuses a wrong type or a future value
            with shop.cursor() as cur:
                cur.execute("SELECT now()")
                upper = cur.fetchone()[0]
            oldest_open = delta.oldest_open_transaction_start(shop, params["source_table"])
            if oldest_open is not None and oldest_open < upper:
                upper = oldest_open
            result = delta.read_timestamp_delta(
                shop, params["source_table"], cursor_column=CURSOR, key_columns=[KEY], since=old, until=upper
            )
            shop.rollback()
            new = delta.next_watermark(old, result)
            with wh:
                written = upsert.upsert_rows(wh, params["target_table"], result.rows, [KEY], "version")
                if new is not None and new != old:
                    if old is None:
                        store.reset(
                            key, new, "init", value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id
                        )
                    else:
                        store.advance(
                            key, old, new, value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id
                        )
        finally:
            shop.close()
            wh.close()
        print(f"read {len(result.rows)} rows since {old}; {written}; watermark -> {new}")
        return {"read": len(result.rows), "inserted": written.inserted, "updated": written.updated}

    @task
    def recheck(loaded: dict[str, int], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab import diagnostics as d
        from cdclab.db import SHOP, WAREHOUSE, connect

        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with wh, wh.cursor() as cur:
                check = _check(shop, wh, params)
                verdict = check.verdict
                if verdict == "missing" and check.max_loaded is None and _source_empty(shop, params):
                    verdict = "empty_source"  # nothing to load yet, nothing loaded: consistent
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="post_load_verification",
                    subject=_wm_key(params),
                    verdict=verdict,
                    detail={**check.as_dict(), **loaded},
                )
        finally:
            shop.close()
            wh.close()
        if verdict not in ("ok", "empty_source"):
            raise d.WatermarkInconsistentError(
                f"after reset and load the watermark is still {check.verdict}: {check.as_dict()}; "
                "inspect state.watermark_history and the target's max(updated_at)"
            )

    diagnosis = diagnose()
    setup() >> diagnosis
    loaded = load()
    reset(diagnosis) >> loaded
    recheck(loaded)


watermark_debug()
