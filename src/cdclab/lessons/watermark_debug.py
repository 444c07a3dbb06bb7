"""71.8.2 Watermark debugging: verify a stored watermark against the data, read its history, reset it
when it lies, load incrementally and verify again, for ``dags/71_08_02_watermark_debug.py``.

Vocabulary:
- *debug run*: :class:`DebugRun`, the source, the target, the watermark key and the findings table one
  DAG run works on, and the run that records the findings.
- *verdict*: :func:`cdclab.ops.diagnostics.check_watermark`'s ``ok``, ``missing``, ``wrong_type``,
  ``ahead_of_data``, ``behind_data``; the first two of :data:`INCONSISTENT` are repaired by :func:`reset`.
- *history verdict*: ``empty`` (no move yet), ``ok``, ``regressed`` (the latest move went backwards) or
  ``type_changed`` (the latest move changed the value type).

Every step writes findings (:func:`cdclab.ops.diagnostics.record_finding`) into the findings table.
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, connect, ident
from cdclab.delta import pull
from cdclab.lessons import demos
from cdclab.merge import upsert
from cdclab.ops import diagnostics as d
from cdclab.state import watermarks as state

KEY = "id"
CURSOR = "updated_at"
INCONSISTENT = {"ahead_of_data", "wrong_type"}


@dataclass(frozen=True)
class DebugRun:
    source: str
    target: str
    key: str
    findings_table: str
    dag_id: str
    run_id: str

    def finding(self, cur: Any, **kw: Any) -> None:
        """Append one finding about this run's watermark (no commit)."""
        d.record_finding(
            cur, self.findings_table, dag_id=self.dag_id, run_id=self.run_id, subject=self.key, **kw
        )


def break_demo_watermark(r: DebugRun) -> None:
    """The demo's set-up: the watermark holds a bigint, audited (:func:`cdclab.lessons.demos.break_watermark`)."""
    with closing(connect(WAREHOUSE)) as wh:
        demos.break_watermark(wh, r.key, r.dag_id, r.run_id)


def _check(shop: Any, wh: Any, r: DebugRun) -> d.WatermarkCheck:
    with shop.cursor() as cur:
        source_rows = d.keys_and_cursor(cur, r.source, KEY, CURSOR)
    shop.rollback()
    with wh.cursor() as cur:
        target_rows = d.keys_and_cursor(cur, r.target, KEY, CURSOR)
        max_loaded = d.max_cursor(cur, r.target, CURSOR)
    return d.check_watermark(state.TableWatermarkStore(wh).get(r.key), max_loaded, source_rows, target_rows)


def _history_verdict(history: list[Any]) -> str:
    back, types = d.regressions(history), d.type_changes(history)
    last = history[-1] if history else None
    if last is None:
        return "empty"
    verdict = "ok"
    if back and back[-1] is last:
        verdict = "regressed"
    if types and types[-1][1] is last:
        verdict = "type_changed"
    return verdict


def diagnose(r: DebugRun) -> tuple[d.WatermarkCheck, str]:
    """Record the ``value_verification`` and ``history`` findings of the watermark (creating the state
    schema, the mirror target and the findings table when missing). Returns the check and the history
    verdict."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        upsert.ensure_mirror_table(shop, r.source, wh, r.target, [KEY])
        with wh, wh.cursor() as cur:
            d.ensure_findings(cur, r.findings_table)
            check = _check(shop, wh, r)
            r.finding(cur, check="value_verification", verdict=check.verdict, detail=check.as_dict())
            history = d.watermark_history(cur, r.key)
            last = history[-1] if history else None
            verdict = _history_verdict(history)
            r.finding(
                cur,
                check="history",
                verdict=verdict,
                detail={
                    "changes": len(history),
                    "regressions": len(d.regressions(history)),
                    "type_changes": len(d.type_changes(history)),
                    "last_reason": None if last is None else last.reason,
                    "last_run_id": None if last is None else last.run_id,
                },
            )
    return check, verdict


def reset(r: DebugRun, verdict: str, max_loaded: str | None, *, auto_reset: bool) -> bool:
    """Reset an inconsistent watermark to ``max_loaded`` (the target's ``max(updated_at)``, ISO text) with
    an audited reset, or delete it when nothing is proven loaded; record the ``reset`` finding
    (``not_needed``, ``skipped`` or ``reset``). Returns whether it reset."""
    with closing(connect(WAREHOUSE)) as wh, wh, wh.cursor() as cur:
        if verdict not in INCONSISTENT or not auto_reset:
            r.finding(cur, check="reset", verdict="not_needed" if verdict not in INCONSISTENT else "skipped")
            return False
        store = state.TableWatermarkStore(wh)
        if max_loaded is None:  # nothing proven loaded: start over
            store.delete(r.key, f"{verdict} and an empty target", dag_id=r.dag_id, run_id=r.run_id)
        else:
            store.reset(
                r.key,
                dt.datetime.fromisoformat(max_loaded),
                f"{verdict}: back to max({CURSOR}) loaded",
                value_type="timestamptz",
                dag_id=r.dag_id,
                run_id=r.run_id,
            )
        r.finding(cur, check="reset", verdict="reset", detail={"cause": verdict, "to": max_loaded})
    return True


def load(r: DebugRun) -> tuple[pull.Pull, upsert.UpsertResult]:
    """Incremental load from the watermark (:func:`cdclab.delta.pull.pull`, which refuses a wrong type or a
    future value), upsert guarded by ``version``; the watermark is initialised with an audited ``init``
    reset when it was missing, else advanced by compare-and-set, in the same transaction."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        p = pull.pull(shop, wh, r.source, r.key, key_columns=(KEY,), cursor_column=CURSOR)
        with wh:
            written = upsert.upsert_rows(wh, r.target, p.rows, [KEY], "version")
            if p.old is None and p.new is not None:
                state.TableWatermarkStore(wh).reset(
                    r.key, p.new, "init", value_type="timestamptz", dag_id=r.dag_id, run_id=r.run_id
                )
            else:
                pull.advance(wh, p, dag_id=r.dag_id, run_id=r.run_id)
    return p, written


def _source_empty(shop: Any, source: str) -> bool:
    with shop.cursor() as cur:
        cur.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(ident(source)))
        empty = bool(cur.fetchone()[0])
    shop.rollback()
    return empty


def recheck(r: DebugRun, loaded: dict[str, int]) -> None:
    """Record the ``post_load_verification`` finding (``empty_source`` when nothing is there to load and
    nothing was loaded); :class:`cdclab.ops.diagnostics.WatermarkInconsistentError` unless it is ``ok``."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        with wh, wh.cursor() as cur:
            check = _check(shop, wh, r)
            verdict: str = check.verdict
            if verdict == "missing" and check.max_loaded is None and _source_empty(shop, r.source):
                verdict = "empty_source"  # nothing to load yet, nothing loaded: consistent
            r.finding(
                cur, check="post_load_verification", verdict=verdict, detail={**check.as_dict(), **loaded}
            )
    if verdict not in ("ok", "empty_source"):
        raise d.WatermarkInconsistentError(
            f"after reset and load the watermark is still {check.verdict}: {check.as_dict()}; "
            "inspect state.watermark_history and the target's max(updated_at)"
        )
