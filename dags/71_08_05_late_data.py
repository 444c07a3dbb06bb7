"""
# 71.8.5 Late data debugging — which rows came late, from which source, into which window, and what then

Events carry an *event time* (when it happened) and an *ingest time* (when the warehouse got it). An
hourly event-time aggregate (``marts.events_hourly_71_08_05``) is computed once per data interval at its
*cutoff* = ``data_interval_end + grace_minutes`` (the run's processing time; the arrival log keeps rows
that arrive later, so the lab can replay "what had arrived by then" deterministically). Every computed
window is written to the processed-interval ledger (``state.processed_intervals``) with its cutoff.

**Late data identification.** ``identify`` looks at every row that arrived since the previous cutoff
and compares its ingest time with the cutoff of its window in the ledger: a row whose window was
already computed before it arrived is *late*. Each late row becomes a finding with its lateness
(ingest - event time) and how far past its window end it arrived.

**Source delays.** ``source_delays`` reports, per source, count / p50 / p95 / max of ingest - event time
over the same arrivals (Postgres ``percentile_cont``): a mobile client that buffers offline shows up
here long before anyone notices wrong numbers.

**Processing windows.** ``process_window`` computes the run's own window from the rows that had arrived
by its cutoff (dead-lettered rows excluded) and records it in the ledger; a window is half-open
``[start, end)``.

**Handling strategies.** ``handle`` applies the policy to each late row
(``cdclab.ops.diagnostics.handle_late``): within ``allowed_lateness_minutes`` of its window end the window
is *reprocessed* (recomputed with everything arrived so far, a ``reprocess`` ledger entry); beyond it
the row goes to ``dlq.late_events_71_08_05`` with the reason — recorded, never silently dropped, and
never changing a window that consumers consider final.

Set-up: with the default params the DAG's ``setup`` task first writes the demo arrivals for the run's
window into ``staging.events_71_08_05`` (``cdclab.lessons.demos.build_late_events``, idempotent, ids derived from
the window): three on-time events, and two events of the previous window (whose computation it records
in the ledger if no run did) that arrived after it was computed — a ``pos`` one 30 min after the window
end (reprocessed) and a ``mobile`` one 65 min after it (dead-lettered). With other tables it does nothing.

Observe: ``SELECT check_name, subject, verdict, detail FROM state.findings_71_08_05 ORDER BY id``;
``SELECT * FROM state.processed_intervals WHERE pipeline = '71_08_05/events' ORDER BY id``;
``marts.events_hourly_71_08_05``; ``dlq.late_events_71_08_05``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.time.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, task

from cdclab.dagkit import data_intervals, demo_setup, lesson_dag

DAG_ID = "71_08_05_late_data"
DEMO = {
    "events_table": "staging.events_71_08_05",
    "ledger_table": "state.processed_intervals",
    "pipeline": "71_08_05/events",
}


def _late_run(params: dict[str, Any], dag_run: Any = None) -> Any:
    """This run's window ``[start, end)``, its cutoff ``end + grace_minutes`` and its tables."""
    from airflow.sdk import get_current_context

    from cdclab.lessons.late_data import LateRun
    from cdclab.time.intervals import from_context

    run_id = dag_run.run_id if dag_run is not None else None
    return LateRun.from_params(params, from_context(get_current_context()), DAG_ID, run_id)


PARAMS = {
    "events_table": Param(DEMO["events_table"], type="string"),
    "target_table": Param("marts.events_hourly_71_08_05", type="string"),
    "dead_letter_table": Param("dlq.late_events_71_08_05", type="string"),
    "findings_table": Param("state.findings_71_08_05", type="string"),
    "ledger_table": Param(DEMO["ledger_table"], type="string"),
    "pipeline": Param(DEMO["pipeline"], type="string"),
    "grace_minutes": Param(10, type="integer", minimum=0),
    "allowed_lateness_minutes": Param(60, type="integer", minimum=0),
}


@lesson_dag(
    schedule=data_intervals("@hourly"), tags=["71.8", "debugging", "reference", "intermediate", "success"]
)
def late_data() -> None:
    @demo_setup(DEMO)
    def setup(params: dict[str, Any], dag_run: Any = None) -> str:
        """Default params: the demo arrivals of this window (two of them late). Other tables: nothing."""
        from cdclab.lessons import late_data as lesson

        start = _late_run(params).start
        lesson.build_late_demo(DEMO["events_table"], DEMO["ledger_table"], DEMO["pipeline"], start)
        return f"demo: arrivals for the window starting {start.isoformat()}, two of the previous window late"

    @task
    def identify(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from cdclab.lessons import late_data as lesson

        return lesson.identify_late_rows(_late_run(params, dag_run))

    @task
    def source_delays(params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import late_data as lesson

        lesson.measure_source_delays(_late_run(params, dag_run))

    @task
    def handle(late: list[dict[str, Any]], params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import late_data as lesson

        lesson.handle_late_arrivals(_late_run(params, dag_run), late)

    @task
    def process_window(params: dict[str, Any], dag_run: Any = None) -> None:
        from cdclab.lessons import late_data as lesson

        lesson.process_run_window(_late_run(params, dag_run))

    late = identify()
    setup() >> late
    delays = source_delays()
    late >> delays
    delays >> handle(late) >> process_window()


late_data()
