"""71.8.5 Late data debugging: the steps of ``dags/71_08_05_late_data.py``. The checks themselves (which
rows came late, per-source delays, the handling policy, a window's recompute, the processed-interval
ledger) are :mod:`cdclab.ops.diagnostics`; each step here opens one ``warehouse`` transaction around them,
so a step's findings and writes commit together or not at all.

Vocabulary:
- *late run*: :class:`LateRun`, one DAG run's view of a late-data pipeline: its tables
  (:class:`cdclab.ops.diagnostics.LateDataTables`), the run's window ``[start, end)``, its *cutoff*
  ``end + grace_minutes`` (the run's processing time: rows ingested after it are not in the window's first
  computation), the allowed lateness and the run that records the findings.
- *demo arrivals*: what :func:`cdclab.lessons.demos.build_late_events` writes for the run's window with the
  default params (:func:`build_late_demo`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cdclab.common.db import WAREHOUSE, transaction
from cdclab.lessons import demos
from cdclab.ops import diagnostics as d
from cdclab.time.intervals import Window


def late_tables(params: Mapping[str, Any]) -> d.LateDataTables:
    """The pipeline's tables as the DAG's params name them."""
    return d.LateDataTables(
        events=params["events_table"],
        target=params["target_table"],
        dead_letter=params["dead_letter_table"],
        findings=params["findings_table"],
        ledger=params["ledger_table"],
        pipeline=params["pipeline"],
    )


@dataclass(frozen=True)
class LateRun:
    tables: d.LateDataTables
    start: dt.datetime
    end: dt.datetime
    cutoff: dt.datetime
    allowed_lateness_minutes: int
    dag_id: str
    run_id: str | None

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any], window: Window, dag_id: str, run_id: str | None
    ) -> LateRun:
        """The run of ``window`` (the data interval); its cutoff is ``grace_minutes`` after the window end."""
        return cls(
            late_tables(params),
            window.start,
            window.end,
            window.end + dt.timedelta(minutes=params["grace_minutes"]),
            params["allowed_lateness_minutes"],
            dag_id,
            run_id,
        )

    @property
    def allowed(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.allowed_lateness_minutes)


def build_late_demo(events: str, ledger_table: str, pipeline: str, start: dt.datetime) -> None:
    """The demo arrivals of the window starting at ``start`` (:func:`cdclab.lessons.demos.build_late_events`,
    idempotent), in one transaction."""
    with transaction(WAREHOUSE) as cur:
        demos.build_late_events(cur, events, ledger_table, pipeline, start)


def identify_late_rows(r: LateRun) -> list[dict[str, Any]]:
    """Create the pipeline's tables if missing and identify the rows that arrived since the previous cutoff
    after their window was computed (:func:`cdclab.ops.diagnostics.identify_late`), in one transaction.
    Returns the late rows (XCom-safe dicts)."""
    with transaction(WAREHOUSE) as cur:
        d.prepare_late_data(cur, r.tables)
        return d.identify_late(cur, r.tables, r.cutoff, r.allowed, dag_id=r.dag_id, run_id=r.run_id)


def measure_source_delays(r: LateRun) -> None:
    """One ``source_delay`` finding per source (:func:`cdclab.ops.diagnostics.record_source_delays`)."""
    with transaction(WAREHOUSE) as cur:
        d.record_source_delays(cur, r.tables, r.cutoff, dag_id=r.dag_id, run_id=r.run_id)


def handle_late_arrivals(r: LateRun, late: Sequence[dict[str, Any]]) -> None:
    """Reprocess or dead-letter each late row (:func:`cdclab.ops.diagnostics.handle_late_rows`), in one
    transaction."""
    with transaction(WAREHOUSE) as cur:
        d.handle_late_rows(
            cur, r.tables, late, r.cutoff, r.allowed_lateness_minutes, dag_id=r.dag_id, run_id=r.run_id
        )


def process_run_window(r: LateRun) -> None:
    """Compute the run's own window from the rows arrived by its cutoff and record it in the ledger
    (:func:`cdclab.ops.diagnostics.process_late_window`), in one transaction."""
    with transaction(WAREHOUSE) as cur:
        d.process_late_window(cur, r.tables, r.start, r.end, r.cutoff, dag_id=r.dag_id, run_id=r.run_id)
