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
(``cdclab.diagnostics.handle_late``): within ``allowed_lateness_minutes`` of its window end the window
is *reprocessed* (recomputed with everything arrived so far, a ``reprocess`` ledger entry); beyond it
the row goes to ``dlq.late_events_71_08_05`` with the reason — recorded, never silently dropped, and
never changing a window that consumers consider final.

Set-up: with the default params the DAG's ``setup`` task first writes the demo arrivals for the run's
window into ``staging.events_71_08_05`` (``cdclab.demos.build_late_events``, idempotent, ids derived from
the window): three on-time events, and two events of the previous window (whose computation it records
in the ledger if no run did) that arrived after it was computed — a ``pos`` one 30 min after the window
end (reprocessed) and a ``mobile`` one 65 min after it (dead-lettered). With other tables it does nothing.

Observe: ``SELECT check_name, subject, verdict, detail FROM state.findings_71_08_05 ORDER BY id``;
``SELECT * FROM state.processed_intervals WHERE pipeline = '71_08_05/events' ORDER BY id``;
``marts.events_hourly_71_08_05``; ``dlq.late_events_71_08_05``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_08_05_late_data"
DEMO = {
    "events_table": "staging.events_71_08_05",
    "ledger_table": "state.processed_intervals",
    "pipeline": "71_08_05/events",
}
WINDOW = "1 hour"


def _finding(cur: Any, params: dict[str, Any], run_id: str, **kw: Any) -> None:
    from cdclab.diagnostics import record_finding

    record_finding(cur, params["findings_table"], dag_id=DAG_ID, run_id=run_id, **kw)


def _bounds(params: dict[str, Any], ctx: dict[str, Any]) -> tuple[Any, Any, Any]:
    import datetime as dt

    from airflow.sdk import get_current_context

    from cdclab.intervals import from_context

    w = from_context(get_current_context())  # the whole context: ``ctx`` lacks the dag_run argument
    return w.start, w.end, w.end + dt.timedelta(minutes=params["grace_minutes"])


def _recompute(cur: Any, params: dict[str, Any], start: Any, end: Any, cutoff: Any) -> tuple[int, int]:
    """Recompute one window from the rows arrived by ``cutoff`` (dead letters excluded); upsert it."""
    from psycopg2 import sql

    from cdclab.db import ident

    cur.execute(
        sql.SQL(
            "SELECT count(*), COALESCE(sum(amount), 0) FROM {e} WHERE event_time >= %s AND event_time < %s "
            "AND ingested_at <= %s AND event_id NOT IN (SELECT event_id FROM {dl})"
        ).format(e=ident(params["events_table"]), dl=ident(params["dead_letter_table"])),
        (start, end, cutoff),
    )
    events, amount = cur.fetchone()
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (window_start, window_end, events, amount, computed_at_cutoff) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (window_start) DO UPDATE SET events = EXCLUDED.events, amount = EXCLUDED.amount, "
            "computed_at_cutoff = EXCLUDED.computed_at_cutoff"
        ).format(ident(params["target_table"])),
        (start, end, events, amount, cutoff),
    )
    return int(events), int(amount)


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.8", "debugging", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "events_table": Param(DEMO["events_table"], type="string"),
        "target_table": Param("marts.events_hourly_71_08_05", type="string"),
        "dead_letter_table": Param("dlq.late_events_71_08_05", type="string"),
        "findings_table": Param("state.findings_71_08_05", type="string"),
        "ledger_table": Param(DEMO["ledger_table"], type="string"),
        "pipeline": Param(DEMO["pipeline"], type="string"),
        "grace_minutes": Param(10, type="integer", minimum=0),
        "allowed_lateness_minutes": Param(60, type="integer", minimum=0),
    },
)
def late_data() -> None:
    @task
    def setup(params: dict[str, Any]) -> bool:
        """Default params: the demo arrivals of this window (two of them late). Other tables: nothing."""
        from cdclab import demos
        from cdclab.db import WAREHOUSE, connect

        if not demos.uses_demo_tables(params, DEMO, DEMO):
            print("custom tables: setup leaves them as they are")
            return False
        start, _, _ = _bounds(params, {})
        wh = connect(WAREHOUSE)
        try:
            demos.build_late_events(wh, DEMO["events_table"], DEMO["ledger_table"], DEMO["pipeline"], start)
        finally:
            wh.close()
        print(f"demo: arrivals for the window starting {start.isoformat()}, two of the previous window late")
        return True

    @task
    def identify(params: dict[str, Any], dag_run: Any = None, **ctx: Any) -> list[dict[str, Any]]:
        import datetime as dt

        from psycopg2 import sql

        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, ident, transaction

        _, _, cutoff = _bounds(params, ctx)
        with transaction(WAREHOUSE) as cur:
            d.ensure_findings(cur, params["findings_table"])
            d.ensure_ledger(cur, params["ledger_table"])
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (event_id text PRIMARY KEY, source text, event_time timestamptz, "
                    "ingested_at timestamptz, window_start timestamptz, reason text NOT NULL, "
                    "dead_lettered_at timestamptz NOT NULL DEFAULT now())"
                ).format(ident(params["dead_letter_table"]))
            )
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (window_start timestamptz PRIMARY KEY, window_end timestamptz "
                    "NOT NULL, events bigint NOT NULL, amount bigint NOT NULL, computed_at_cutoff timestamptz NOT NULL)"
                ).format(ident(params["target_table"]))
            )
            entries = d.ledger(cur, params["pipeline"], params["ledger_table"])
            since = max((e.cutoff for e in entries), default=None)
            cur.execute(
                sql.SQL(
                    "SELECT event_id, source, event_time, ingested_at FROM {} WHERE ingested_at <= %s "
                    "AND (%s::timestamptz IS NULL OR ingested_at > %s) ORDER BY event_id"
                ).format(ident(params["events_table"])),
                (cutoff, since, since),
            )
            arrivals = cur.fetchall()
            processed: dict[Any, Any] = {}
            for e in entries:  # window start -> latest cutoff it was computed at
                processed[e.start] = max(processed.get(e.start, e.cutoff), e.cutoff)
            allowed = dt.timedelta(minutes=params["allowed_lateness_minutes"])
            late = []
            for event_id, source, event_time, ingested_at in arrivals:
                start = d.floor_to(event_time, dt.timedelta(hours=1))
                if start in processed and ingested_at > processed[start]:
                    end = start + dt.timedelta(hours=1)
                    handling = d.handle_late(end, ingested_at, allowed)
                    detail = {
                        "source": source,
                        "window_start": start.isoformat(),
                        "lateness_s": (ingested_at - event_time).total_seconds(),
                        "after_window_end_s": (ingested_at - end).total_seconds(),
                        "window_cutoff": processed[start].astimezone(dt.UTC).isoformat(),
                        "handling": handling,
                    }
                    _finding(
                        cur,
                        params,
                        dag_run.run_id,
                        check="late_identification",
                        subject=event_id,
                        verdict="late",
                        detail=detail,
                    )
                    late.append({"event_id": event_id, **detail})
        print(f"{len(arrivals)} arrivals since {since}, {len(late)} late")
        return late

    @task
    def source_delays(params: dict[str, Any], dag_run: Any = None, **ctx: Any) -> None:
        from psycopg2 import sql

        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, ident, transaction

        _, _, cutoff = _bounds(params, ctx)
        with transaction(WAREHOUSE) as cur:
            since = max(
                (e.cutoff for e in d.ledger(cur, params["pipeline"], params["ledger_table"])), default=None
            )
            cur.execute(
                sql.SQL(
                    "SELECT source, count(*), "
                    "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - event_time)), "
                    "percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM ingested_at - event_time)), "
                    "max(extract(epoch FROM ingested_at - event_time)) FROM {} WHERE ingested_at <= %s "
                    "AND (%s::timestamptz IS NULL OR ingested_at > %s) GROUP BY source ORDER BY source"
                ).format(ident(params["events_table"])),
                (cutoff, since, since),
            )
            for source, n, p50, p95, worst in cur.fetchall():
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="source_delay",
                    subject=source,
                    verdict="measured",
                    detail={"rows": n, "p50_s": float(p50), "p95_s": float(p95), "max_s": float(worst)},
                )

    @task
    def handle(late: list[dict[str, Any]], params: dict[str, Any], dag_run: Any = None, **ctx: Any) -> None:
        import datetime as dt

        from psycopg2 import sql

        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, ident, transaction

        _, _, cutoff = _bounds(params, ctx)
        with transaction(WAREHOUSE) as cur:
            for row in late:
                if row["handling"] != "dead_letter":
                    continue
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {dl} (event_id, source, event_time, ingested_at, window_start, reason) "
                        "SELECT event_id, source, event_time, ingested_at, %s, %s FROM {e} WHERE event_id = %s "
                        "ON CONFLICT (event_id) DO NOTHING"
                    ).format(dl=ident(params["dead_letter_table"]), e=ident(params["events_table"])),
                    (
                        row["window_start"],
                        f"arrived {row['after_window_end_s']:.0f}s after its window ended; allowed lateness is "
                        f"{params['allowed_lateness_minutes']} min, the window stays final",
                        row["event_id"],
                    ),
                )
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="handling",
                    subject=row["event_id"],
                    verdict="dead_letter",
                    detail={"window_start": row["window_start"]},
                )
            windows = sorted({r["window_start"] for r in late if r["handling"] == "reprocess"})
            for ws in windows:
                start = dt.datetime.fromisoformat(ws)
                events, amount = _recompute(cur, params, start, start + dt.timedelta(hours=1), cutoff)
                d.record_interval(
                    cur,
                    params["pipeline"],
                    start,
                    start + dt.timedelta(hours=1),
                    events,
                    run_id=dag_run.run_id,
                    kind="reprocess",
                    cutoff=cutoff,
                    table=params["ledger_table"],
                )
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="handling",
                    subject=ws,
                    verdict="reprocessed",
                    detail={
                        "events": events,
                        "amount": amount,
                        "late_rows": sum(1 for r in late if r["window_start"] == ws),
                    },
                )

    @task
    def process_window(params: dict[str, Any], dag_run: Any = None, **ctx: Any) -> None:
        from cdclab import diagnostics as d
        from cdclab.db import WAREHOUSE, transaction

        start, end, cutoff = _bounds(params, ctx)
        with transaction(WAREHOUSE) as cur:
            events, amount = _recompute(cur, params, start, end, cutoff)
            d.record_interval(
                cur,
                params["pipeline"],
                start,
                end,
                events,
                run_id=dag_run.run_id,
                kind="load",
                cutoff=cutoff,
                table=params["ledger_table"],
            )
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="processing_window",
                subject=start.isoformat(),
                verdict="processed",
                detail={"events": events, "amount": amount, "cutoff": cutoff.isoformat()},
            )

    late = identify()
    setup() >> late
    delays = source_delays()
    late >> delays
    delays >> handle(late) >> process_window()


late_data()
