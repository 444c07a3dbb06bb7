"""71.5.5 Incremental testing: the self-check suite of :mod:`cdclab.lessons.selfcheck` run as DAG steps, one per
check, plus an end-to-end load of a real table compared in full, for ``dags/71_05_05_testing.py``. Each
step opens and closes its own connections and records its result row.

Vocabulary (the rest in :mod:`cdclab.lessons.selfcheck`):
- *results table*: one row per check and run (``check_name``, ``passed``, ``detail``).
- *end-to-end check*: one :func:`cdclab.lessons.selfcheck.load_step` of ``source`` into ``target``, then
  :func:`cdclab.delta.detection.compare_tables` of both; it fails on a *missing* or *different* row. An *extra*
  target row is a row deleted at the source, which a timestamp cursor cannot see (71.1.1): reported in
  the detail, not a failure (:func:`end_to_end_verdict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import detection as delta
from cdclab.lessons import selfcheck
from cdclab.merge import upsert
from cdclab.state import watermarks as state

KEY_COLUMNS = ["id"]
END_TO_END = "integration_end_to_end"


def watermark_key(watermark_key_param: str, source: str, target: str) -> str:
    """The end-to-end load's watermark: the ``watermark_key`` param, else ``71_05_05/<source>-><target>``."""
    return watermark_key_param or f"71_05_05/{source}->{target}"


def prepare(source: str, target: str, results_table: str) -> None:
    """The state schema, the results table and a mirror of ``source`` as ``target`` (idempotent)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        selfcheck.ensure_results(wh, results_table)
        upsert.ensure_mirror_table(shop, source, wh, target, KEY_COLUMNS)


def run_check(
    check: str, scratch_prefix: str, defect: str, results_table: str, run_id: str
) -> tuple[bool, str]:
    """Run one self-check on its own scratch tables (:func:`cdclab.lessons.selfcheck.run_check`) and record its
    result row; returns (passed, detail)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        passed, detail = selfcheck.run_check(shop, wh, check, scratch_prefix, defect)
        selfcheck.record(wh, results_table, run_id, check, passed, detail)
    return passed, detail


def end_to_end_verdict(loaded: Mapping[str, int], cmp: delta.Comparison) -> tuple[bool, str]:
    """Passed unless a source row is missing in the target or differs there; the detail names the load's
    counts and every missing, different and extra key."""
    # extra target keys are source rows deleted since they were loaded: a timestamp cursor cannot
    # see hard deletes (71.1.1), and the lab's live workload makes some; reported, not a failure
    passed = not cmp.missing and not cmp.different
    detail = (
        f"{loaded}; missing {cmp.missing}, different {cmp.different}, "
        f"extra {cmp.extra} (deleted at the source; a timestamp cursor cannot see hard deletes)"
    )
    return passed, detail


def end_to_end(
    source: str, target: str, key: str, results_table: str, *, defect: str, dag_id: str, run_id: str
) -> tuple[bool, str, dict[str, int]]:
    """One load step of ``source`` into ``target`` (watermark ``key``, with ``defect``), a full comparison
    of both tables and its result row. Returns (passed, detail, the load's counts)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        loaded = selfcheck.load_step(
            shop,
            wh,
            source,
            target,
            key,
            KEY_COLUMNS,
            dag_id=dag_id,
            run_id=run_id,
            defect=selfcheck.check_defect(defect),
        )
        columns = [c for c, _ in upsert.source_columns(shop, source)]
        cmp = delta.compare_tables(shop, source, wh, target, key_columns=KEY_COLUMNS, columns=columns)
        shop.rollback()
        wh.rollback()
        passed, detail = end_to_end_verdict(loaded, cmp)
        selfcheck.record(wh, results_table, run_id, END_TO_END, passed, detail)
    return passed, detail, loaded
