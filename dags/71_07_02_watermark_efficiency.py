"""
# 71.7.2 Watermark efficiency — what the watermark query costs, with and without an index, closed vs open range

**Index usage.** The watermark query of an interval-bounded load is a range predicate on the cursor
column (``updated_at``) ordered by ``(updated_at, id)``. ``explain`` runs it under
``EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)`` twice: once with the index on ``updated_at`` dropped inside
a transaction that is rolled back (the plan becomes a ``Seq Scan`` plus a ``Sort``: every run reads the
whole table, and that cost grows with the table, not with the changes), and once with the index
(``Index Scan``/``Bitmap Index Scan``: the pages read follow the window size).

**Query optimization.** Fresh statistics (``ANALYZE`` before planning) let the planner estimate the
window's rows (``plan_rows`` vs ``actual_rows`` in the record). Buffers tell the I/O story: ``shared_hit``
pages came from Postgres' cache, ``shared_read`` from the OS — compare them between variants rather
than milliseconds.

**Range selection.** *Closed*: ``updated_at >= start AND updated_at < end`` (the data interval; half-open
so adjacent intervals neither overlap nor leave a gap) reads one interval's rows. *Open*:
``updated_at >= start`` reads every later row too — with the index the planner may even give up on it
and scan the table, because "everything after start" is a large share when the load lags behind. The
record shows both plans and row counts side by side.

**Update strategies.** ``load`` reads the closed window in keyset order (``cdclab.delta``), upserts it
into the target guarded by ``updated_at`` (an older version never overwrites a newer one) and stores the
window end as the watermark in the same warehouse transaction (``state.watermarks``, compare-and-set): the
next run starts exactly where this one ended. The end is held back to the start of the oldest transaction
still open in the shop (``delta.read_upper_bound``): ``updated_at`` is a transaction's *start*, so a long
transaction commits rows stamped inside a window that is already read; the watermark stops before them
and the next run reads from the watermark (or its window start, whichever is earlier).

Observe: ``SELECT variant, rows_read, details->'plan'->'scan_nodes', details->'plan'->'shared_hit',
details->'plan'->'plan_rows', details->'plan'->'actual_rows' FROM state.perf_runs WHERE experiment =
'71_07_02' ORDER BY id``; the target ``core.perf_71_07_02``; the watermark ``71_07_02/...`` in
``state.watermarks``. Seed: ``table_rows`` rows spread evenly over the 24 hours around the first run.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_07_02_watermark_efficiency"
KEY_COLUMNS = ["id"]
INDEX_MODES = ("no_index", "index")
RANGES = ("closed", "open")


def _window_query(source: str, rng: str) -> Any:
    from psycopg2 import sql

    from cdclab.db import ident

    bound = sql.SQL(" AND updated_at < %(end)s") if rng == "closed" else sql.SQL("")
    return sql.SQL("SELECT * FROM {} WHERE updated_at >= %(start)s{} ORDER BY updated_at, id").format(
        ident(source), bound
    )


def _index_name(source: str) -> str:
    return source.split(".")[-1] + "_updated_at_idx"


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.7", "performance", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source_table": Param("public.perf_71_07_02", type="string", description="benchmark table in shop"),
        "table_rows": Param(2400, type="integer", minimum=24, description="rows seeded when it is missing"),
        "target_table": Param("core.perf_71_07_02", type="string"),
        "experiment": Param("71_07_02", type="string", description="name in state.perf_runs"),
    },
)
def watermark_efficiency() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from airflow.sdk import get_current_context
        from psycopg2 import sql

        from cdclab import perf, state
        from cdclab.db import SHOP, WAREHOUSE, connect, ident
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none
        data_interval_start = iv.start

        src = ident(params["source_table"])
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with shop, shop.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (params["source_table"],))
                cur.execute("SELECT to_regclass(%s) IS NULL", (params["source_table"],))
                if cur.fetchone()[0]:
                    cur.execute(
                        sql.SQL(
                            "CREATE TABLE {} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, "
                            "payload text NOT NULL)"
                        ).format(src)
                    )
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} SELECT i, %(anchor)s::timestamptz - interval '12 hours' "
                            "+ (i - 1) * interval '24 hours' / %(n)s, repeat(md5(i::text), 6) "
                            "FROM generate_series(1, %(n)s) AS i"
                        ).format(src),
                        {"anchor": data_interval_start, "n": params["table_rows"]},
                    )
                cur.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (updated_at, id)").format(
                        sql.Identifier(_index_name(params["source_table"])), src
                    )
                )
            state.ensure_schema(wh)
            perf.ensure_schema(wh)
            with wh, wh.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, "
                        "payload text NOT NULL)"
                    ).format(ident(params["target_table"]))
                )
        finally:
            shop.close()
            wh.close()

    @task
    def explain(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from airflow.sdk import get_current_context
        from psycopg2 import sql

        from cdclab import perf
        from cdclab.db import SHOP, WAREHOUSE, connect, ident
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none

        source = params["source_table"]
        bounds = {"start": iv.start, "end": iv.end}
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        out = []
        try:
            shop.autocommit = True
            with shop.cursor() as cur:
                cur.execute(sql.SQL("ANALYZE {}").format(ident(source)))
            shop.autocommit = False
            for mode in INDEX_MODES:
                with shop.cursor() as cur:  # one transaction per index mode, always rolled back
                    if mode == "no_index":
                        schema = source.split(".")[0] if "." in source else "public"
                        cur.execute(sql.SQL("DROP INDEX {}").format(ident(f"{schema}.{_index_name(source)}")))
                    for rng in RANGES:
                        with perf.Stopwatch() as sw:
                            stats = perf.plan_stats(perf.explain(cur, _window_query(source, rng), bounds))
                        m = perf.Measurement(
                            params["experiment"],
                            f"{mode}/{rng}",
                            rows_read=int(stats.actual_rows or 0),
                            duration_ms=sw.ms,
                            details={"index": mode, "range": rng, **bounds, "plan": stats.as_dict()},
                        )
                        with wh:
                            perf.record(wh, m, dag_id=DAG_ID, run_id=dag_run.run_id)
                        out.append(
                            {"variant": m.variant, "rows": m.rows_read, "scans": list(stats.scan_nodes)}
                        )
                        print(
                            f"{m.variant}: {' + '.join(stats.node_types)}; rows est {stats.plan_rows:.0f} "
                            f"actual {stats.actual_rows}; buffers hit {stats.shared_hit} "
                            f"read {stats.shared_read}; {stats.execution_ms} ms"
                        )
                shop.rollback()
        finally:
            shop.close()
            wh.close()
        return out

    @task
    def load(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab import delta, perf, state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none

        source, target = params["source_table"], params["target_table"]
        key = f"{params['experiment']}/{source}->{target}"
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with perf.Stopwatch() as sw:
                store = state.TableWatermarkStore(wh)
                old = store.read(key, "timestamptz")
                # from the watermark (or the window start, whichever is earlier: a watermark held back by
                # an open transaction) to the window end, held back to the oldest open transaction's start
                start = iv.start if old is None else min(old, iv.start)
                end = delta.read_upper_bound(shop, iv.end)
                result = delta.read_timestamp_delta(
                    shop, source, cursor_column="updated_at", key_columns=KEY_COLUMNS, since=start, until=end
                )
                rows = result.rows
                shop.rollback()
                with wh:  # rows and watermark commit together
                    written = upsert.upsert_rows(wh, target, rows, KEY_COLUMNS, "updated_at")
                    if old is None or end > old:
                        store.advance(
                            key, old, end, value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id
                        )
            m = perf.Measurement(
                params["experiment"],
                "load/closed",
                rows_read=len(rows),
                rows_written=written.written,
                duration_ms=sw.ms,
                details={"start": start, "end": end, "skipped": written.skipped},
            )
            with wh:
                perf.record(wh, m, dag_id=DAG_ID, run_id=dag_run.run_id)
        finally:
            shop.close()
            wh.close()
        print(
            f"window [{start}, {end}): read {len(rows)}, wrote {written.written}; watermark {key!r} -> {end}"
        )
        return {"rows_read": len(rows), "rows_written": written.written}

    prepare() >> explain() >> load()


watermark_efficiency()
