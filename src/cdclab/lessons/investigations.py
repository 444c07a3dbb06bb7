"""71.8.1 gap investigation and 71.8.4 duplicate detection: the investigation steps of
``dags/71_08_01_gap_investigation.py`` and ``dags/71_08_04_duplicate_detection.py``. The checks
themselves (gaps, their causes, the ledger, duplicate rows, deduplication, the unique key) are
:mod:`cdclab.ops.diagnostics`; the steps here open the connections, commit and write the findings.

Vocabulary:
- *gap run*: :class:`GapRun`, the source and target one DAG run compares, their key and cursor columns,
  the pipeline's ledger name and watermark key, the grid ``grain``, the findings and ledger tables, and
  the run that records the findings.
- *duplicate run*: :class:`DuplicateRun`, the target one DAG run investigates, its key, the columns that
  rank a key's rows latest first, the findings table and the run.
- *window subject*: a gap's finding subject, ``[<start ISO>, <end ISO>)`` (:func:`window_subject`).
- *charge*: a duplicate row (every row of a key but the first loaded) counted against the load run that
  wrote it, as ``exact`` (a copy of an earlier row) or ``changed`` (:func:`charge_to_load_runs`).

Every step writes findings (:func:`cdclab.ops.diagnostics.record_finding`) into the findings table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Self

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, transaction
from cdclab.lessons import demos
from cdclab.ops import diagnostics as d
from cdclab.state import watermarks as state

UNTAGGED = "<untagged>"


def _count(cur: Any, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table)))
    return int(cur.fetchone()[0])


# ----------------------------------------------------------------------------------- 71.8.1


def window_subject(start: dt.datetime, end: dt.datetime) -> str:
    """A gap's finding subject: the half-open window ``[start, end)`` in ISO form."""
    return f"[{start.isoformat()}, {end.isoformat()})"


@dataclass(frozen=True, kw_only=True)
class _Investigation:
    """A DAG run of an investigation lesson: it records its findings in ``findings_table``."""

    findings_table: str
    dag_id: str
    run_id: str | None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], dag_id: str, run_id: str | None) -> Self:
        """The run of a DAG run from its params: the lesson's own fields (:meth:`fields_from`), then the
        findings table and the run."""
        return cls(
            *cls.fields_from(params), findings_table=params["findings_table"], dag_id=dag_id, run_id=run_id
        )

    @staticmethod
    def fields_from(params: Mapping[str, Any]) -> tuple[Any, ...]:
        """The lesson's own fields, in order, from the DAG run's params."""
        raise NotImplementedError

    def finding(self, cur: Any, **kw: Any) -> None:
        """Append one finding of this run (no commit)."""
        d.record_finding(cur, self.findings_table, dag_id=self.dag_id, run_id=self.run_id, **kw)


@dataclass(frozen=True)
class GapRun(_Investigation):
    source: str
    target: str
    key_column: str
    cursor_column: str
    pipeline: str
    watermark_key: str
    grain: dt.timedelta
    ledger_table: str

    @staticmethod
    def fields_from(params: Mapping[str, Any]) -> tuple[Any, ...]:
        """``grain_minutes`` becomes the grain."""
        names = ("source_table", "target_table", "key_column", "cursor_column", "pipeline", "watermark_key")
        return (
            *(params[n] for n in names),
            dt.timedelta(minutes=params["grain_minutes"]),
            params["ledger_table"],
        )

    def gaps(self, scur: Any, cur: Any) -> list[d.Gap]:
        """The source keys missing from the target, by grid window (:func:`cdclab.ops.diagnostics.find_gaps`)."""
        return d.find_gaps(
            scur, cur, self.source, self.target, self.key_column, self.cursor_column, self.grain
        )


def build_gap_demo(source: str, target: str, pipeline: str, ledger_table: str) -> None:
    """The demo's set-up: source rows over three hours, a target and a ledger missing the middle one
    (:func:`cdclab.lessons.demos.build_gap`, idempotent)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        demos.build_gap(shop, wh, source, target, pipeline, ledger_table)


def detect_gaps(r: GapRun) -> list[d.Gap]:
    """Create the state schema, the findings table and the ledger when missing; find the gaps and record
    a ``gap_detection`` finding per gap (``ok`` about the target when there is none)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        with wh, wh.cursor() as cur, shop.cursor() as scur:
            d.ensure_findings(cur, r.findings_table)
            d.ensure_ledger(cur, r.ledger_table)
            gaps = r.gaps(scur, cur)
            for g in gaps:
                r.finding(
                    cur,
                    check="gap_detection",
                    subject=window_subject(g.start, g.end),
                    verdict="gap",
                    detail={"missing": len(g.missing_keys), "keys": g.missing_keys},
                )
            if not gaps:
                r.finding(cur, check="gap_detection", subject=r.target, verdict="ok")
    return gaps


def explain_gaps(r: GapRun, gaps: Sequence[Mapping[str, Any]]) -> list[str]:
    """Classify each gap (``Gap.as_dict`` form) from the ledger and, when the run names one, the
    watermark's history (:func:`cdclab.ops.diagnostics.classify_gap`); record a ``root_cause`` finding per
    gap. Returns the causes in gap order."""
    causes: list[str] = []
    with closing(connect(WAREHOUSE)) as wh, wh, wh.cursor() as cur:
        entries = d.ledger(cur, r.pipeline, r.ledger_table)
        history = d.watermark_history(cur, r.watermark_key) if r.watermark_key else []
        for raw in gaps:
            g = d.Gap.from_dict(dict(raw))
            cause, detail = d.classify_gap(g, entries, history)
            causes.append(cause)
            r.finding(
                cur, check="root_cause", subject=window_subject(g.start, g.end), verdict=cause, detail=detail
            )
    return causes


def backfill_gaps(r: GapRun, gaps: Sequence[Mapping[str, Any]], causes: Sequence[str]) -> int:
    """Backfill each gap window (an idempotent upsert of its source rows) with its ``backfill`` ledger
    entry and ``recovery`` finding, one warehouse transaction per window. Returns the rows written."""
    total = 0
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        for raw, cause in zip(gaps, causes, strict=True):
            g = d.Gap.from_dict(dict(raw))
            with wh, wh.cursor() as cur:  # the rows and their ledger entry commit together
                n = d.load_window(shop, wh, r.source, r.target, r.key_column, r.cursor_column, g.start, g.end)
                d.record_interval(
                    cur, r.pipeline, g.start, g.end, n, run_id=r.run_id, kind="backfill", table=r.ledger_table
                )
                r.finding(
                    cur,
                    check="recovery",
                    subject=window_subject(g.start, g.end),
                    verdict="backfilled",
                    detail={"rows": n, "cause": cause},
                )
            total += n
    return total


def verify_no_gaps(r: GapRun, repaired: int) -> None:
    """Look for gaps again and for holes in the ledger; record the ``verify`` and ``prevention``
    findings; raise :class:`cdclab.ops.diagnostics.GapRemainsError` when a gap remains."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        with wh, wh.cursor() as cur, shop.cursor() as scur:
            left = r.gaps(scur, cur)
            holes = d.ledger_holes(d.ledger(cur, r.pipeline, r.ledger_table))
            r.finding(
                cur,
                check="verify",
                subject=r.target,
                verdict="gap" if left else "ok",
                detail={"repaired": repaired, "gaps": len(left)},
            )
            r.finding(
                cur,
                check="prevention",
                subject=r.pipeline,
                verdict="ledger_holes" if holes else "ledger_contiguous",
                detail={"holes": [[s.isoformat(), e.isoformat()] for s, e in holes]},
            )
    if left:
        raise d.GapRemainsError(
            f"{len(left)} gap(s) remain in {r.target} after the backfill: "
            f"{[g.as_dict() for g in left]}; rows keep arriving in those windows — rerun, then check the load"
        )


# ----------------------------------------------------------------------------------- 71.8.4


@dataclass(frozen=True)
class DuplicateRun(_Investigation):
    target: str
    key_column: str
    order_columns: Sequence[str]

    @staticmethod
    def fields_from(params: Mapping[str, Any]) -> tuple[Any, ...]:
        return params["target_table"], params["key_column"], list(params["order_columns"])

    def duplicates(self, cur: Any) -> list[d.DuplicateRow]:
        """Every row of a key that occurs more than once (:func:`cdclab.ops.diagnostics.duplicate_rows`)."""
        return d.duplicate_rows(cur, self.target, self.key_column, self.order_columns)


def build_duplicates_demo(target: str) -> None:
    """The demo's set-up: the target as the broken append-only load left it
    (:func:`cdclab.lessons.demos.build_duplicates`, rebuilt every time)."""
    with closing(connect(WAREHOUSE)) as wh:
        demos.build_duplicates(wh, target)


def by_key(dups: Sequence[d.DuplicateRow]) -> dict[Any, list[d.DuplicateRow]]:
    """The duplicate rows grouped by key, in the order they come."""
    out: dict[Any, list[d.DuplicateRow]] = {}
    for row in dups:
        out.setdefault(row.key, []).append(row)
    return out


def key_verdict(rows: Sequence[d.DuplicateRow]) -> str:
    """``exact_duplicate`` when every row of the key has the same row hash, else ``version_duplicate``."""
    return "exact_duplicate" if len({r.row_hash for r in rows}) == 1 else "version_duplicate"


def find_duplicates(r: DuplicateRun) -> tuple[int, list[dict[str, Any]]]:
    """Create the findings table when missing; record a ``finding_duplicates`` finding per duplicated key
    and a ``summary``. Returns the number of duplicated keys and, per duplicate row,
    ``{"load_run_id", "first_load", "exact"}`` (what :func:`charge_to_load_runs` needs)."""
    with transaction(WAREHOUSE) as cur:
        d.ensure_findings(cur, r.findings_table)
        dups = r.duplicates(cur)
        keys = by_key(dups)
        for k, rows in keys.items():
            r.finding(
                cur,
                check="finding_duplicates",
                subject=str(k),
                verdict=key_verdict(rows),
                detail={
                    "rows": len(rows),
                    "distinct_rows": len({row.row_hash for row in rows}),
                    "load_runs": [row.load_run_id for row in rows],
                },
            )
        r.finding(
            cur,
            check="summary",
            subject=r.target,
            verdict="duplicates" if keys else "ok",
            detail={
                "rows": _count(cur, r.target),
                "duplicated_keys": len(keys),
                "extra_rows": sum(len(v) - 1 for v in keys.values()),
            },
        )
    return len(keys), [
        {"load_run_id": x.load_run_id, "first_load": x.first_load, "exact": x.exact} for x in dups
    ]


def charge_to_load_runs(dups: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """``{load run: {"exact": n, "changed": m}}`` over the duplicate rows that are not the first loaded
    of their key (rows without a load run are charged to ``<untagged>``)."""
    per_run: dict[str, dict[str, int]] = {}
    for row in dups:
        if row["first_load"]:
            continue
        counts = per_run.setdefault(row["load_run_id"] or UNTAGGED, {"exact": 0, "changed": 0})
        counts["exact" if row["exact"] else "changed"] += 1
    return per_run


def load_run_verdict(counts: Mapping[str, int]) -> str:
    """``rerun_append`` when a load run only wrote copies, ``append_of_changes`` when it wrote a change."""
    return "rerun_append" if counts["changed"] == 0 else "append_of_changes"


def attribute_duplicates(r: DuplicateRun, dups: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Record a ``source_analysis`` finding per load run that wrote duplicates. Returns the charges."""
    per_run = charge_to_load_runs(dups)
    with transaction(WAREHOUSE) as cur:
        for run, counts in sorted(per_run.items()):
            r.finding(
                cur, check="source_analysis", subject=run, verdict=load_run_verdict(counts), detail=counts
            )
    return per_run


def deduplicate(r: DuplicateRun) -> int:
    """Keep the latest row of each key and delete the rest (:func:`cdclab.ops.diagnostics.deduplicate`) with
    the ``deduplication`` finding, in one transaction. Returns the rows deleted."""
    with transaction(WAREHOUSE) as cur:
        before = _count(cur, r.target)
        deleted = d.deduplicate(cur, r.target, r.key_column, r.order_columns)
        after = _count(cur, r.target)
        r.finding(
            cur,
            check="deduplication",
            subject=r.target,
            verdict="deduplicated" if deleted else "nothing_to_do",
            detail={"before": before, "deleted": deleted, "after": after},
        )
    return deleted


def prevent_duplicates(r: DuplicateRun, deleted: int, *, add_constraint: bool) -> None:
    """Prove no key has two rows (:class:`cdclab.ops.diagnostics.DuplicatesRemainError` otherwise), add
    ``UNIQUE (<key>)`` when asked, and record the ``prevention`` finding."""
    with transaction(WAREHOUSE) as cur:
        left = r.duplicates(cur)
        if left:
            raise d.DuplicatesRemainError(
                f"{len(left)} rows still share a key in {r.target} after deduplication; "
                "a load is appending concurrently — pause it and rerun"
            )
        if not add_constraint:
            verdict = "skipped"
        elif d.add_unique_key(cur, r.target, r.key_column):
            verdict = "unique_constraint_added"
        else:
            verdict = "already_present"
        r.finding(
            cur,
            check="prevention",
            subject=r.target,
            verdict=verdict,
            detail={"key": r.key_column, "deleted": deleted},
        )
