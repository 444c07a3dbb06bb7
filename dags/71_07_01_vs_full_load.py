"""
# 71.7.1 Incremental vs full load performance — measure both at growing change ratios, find the break-even

**Performance comparison.** Every run changes a growing share of a benchmark table in ``shop``
(``change_ratios``, default 1 %, 10 %, 50 % of its rows, each in its own transaction) and after each
step loads it twice into the warehouse: a *full* load (read every row, ``TRUNCATE`` + ``INSERT`` in one
transaction) and an *incremental* load (read the half-open window ``[watermark, upper)`` on
``updated_at`` through its index, upsert guarded by ``version``, advance the watermark to ``upper`` by
compare-and-set). Both targets end equal to the source after every step. A ``catch_up`` incremental
load first takes in whatever changed since the last run, so each measured step reads exactly its own
changes.

**Break-even analysis.** ``analyse`` reads the run's measurements back and interpolates the change
ratio at which the incremental load takes as long as the full one (``cdclab.perf.break_even``). Per
row the incremental path is dearer (an index range scan, an upsert with a guard per row instead of a
bulk insert into an empty table), so its cost line is steeper and crosses the flat full-load line at
some ratio; with few rows the fixed costs (state round trips) dominate and the answer can be "full is
cheaper everywhere" — which is the finding, not a failure.

**Resource savings.** ``rows_read`` and ``rows_written`` are deterministic: full = table size every
time, incremental = the changed rows. The saving in rows is ``1 - ratio``; whether it becomes a
saving in time depends on the per-row costs above, hence the measurement.

**When to choose.** Incremental when changes are a small share of the table, the table is large or
remote, and the source has a trustworthy, indexed ``updated_at`` (this load cannot see hard deletes:
use CDC or a periodic full comparison for those). Full when the change ratio is above the break-even,
the table is small, or correctness must not depend on the source's timestamps.

Observe: ``SELECT variant, rows_read, rows_written, round(duration_ms::numeric, 1), details FROM
state.perf_runs WHERE experiment = '71_07_01' ORDER BY id``; the ``break_even`` row holds the analysis;
targets ``core.perf_71_07_01_full`` / ``core.perf_71_07_01_incremental``; watermark in
``state.watermarks``. Durations vary with load on the machine: compare within one run.
"""

from __future__ import annotations

import math
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

DAG_ID = "71_07_01_vs_full_load"
KEY_COLUMNS = ["id"]


def _full_load(shop: Any, wh: Any, source: str, target: str) -> tuple[int, int]:
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    from cdclab.db import ident

    with shop.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {}").format(ident(source)))
        columns = [d.name for d in cur.description]
        rows = cur.fetchall()
    shop.rollback()
    with wh, wh.cursor() as cur:
        cur.execute(sql.SQL("TRUNCATE {}").format(ident(target)))
        execute_values(
            cur,
            sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
                ident(target), sql.SQL(", ").join(map(sql.Identifier, columns))
            ),
            rows,
            page_size=1000,
        )
    return len(rows), len(rows)


def _incremental_load(shop: Any, wh: Any, source: str, target: str, key: str, run_id: str) -> tuple[int, int]:
    from cdclab import delta, state, upsert

    store = state.TableWatermarkStore(wh)
    old = store.read(key, "timestamptz")
    with shop.cursor() as cur:
        cur.execute("SELECT now()")
        upper = cur.fetchone()[0]
    oldest_open = delta.oldest_open_transaction_start(shop, source)
    upper = min(upper, oldest_open) if oldest_open else upper
    result = delta.read_timestamp_delta(
        shop, source, cursor_column="updated_at", key_columns=KEY_COLUMNS, since=old, until=upper
    )
    shop.rollback()
    with wh:
        written = upsert.upsert_rows(wh, target, result.rows, KEY_COLUMNS, "version")
        if old is None or upper > old:  # the window end is the next watermark: no re-reads, no gaps
            store.advance(key, old, upper, value_type="timestamptz", dag_id=DAG_ID, run_id=run_id)
    return len(result.rows), written.written


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.7", "performance", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "source_table": Param("public.perf_71_07_01", type="string", description="benchmark table in shop"),
        "table_rows": Param(1000, type="integer", minimum=10, description="rows seeded when it is empty"),
        "change_ratios": Param([0.01, 0.1, 0.5], type="array", items={"type": "number"}),
        "full_target": Param("core.perf_71_07_01_full", type="string"),
        "incremental_target": Param("core.perf_71_07_01_incremental", type="string"),
        "experiment": Param("71_07_01", type="string", description="name in state.perf_runs"),
    },
)
def vs_full_load() -> None:
    @task
    def prepare(params: dict[str, Any]) -> dict[str, int]:
        from psycopg2 import sql

        from cdclab import perf, state, upsert
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        src = ident(params["source_table"])
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        try:
            with shop, shop.cursor() as cur:
                cur.execute("SELECT to_regclass(%s) IS NULL", (params["source_table"],))
                if cur.fetchone()[0]:
                    cur.execute(sql.SQL("CREATE TABLE {} (LIKE public.customers INCLUDING ALL)").format(src))
                    cur.execute(
                        sql.SQL(
                            "CREATE TRIGGER touch_row BEFORE UPDATE ON {} FOR EACH ROW "
                            "EXECUTE FUNCTION public.touch_row()"
                        ).format(src)
                    )
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(src))
                if cur.fetchone()[0] == 0:
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (id, email, full_name) SELECT i, 'p' || i || '@perf.test', "
                            "'Perf ' || i FROM generate_series(1, %s) AS i"
                        ).format(src),
                        (params["table_rows"],),
                    )
                    cur.execute(sql.SQL("ANALYZE {}").format(src))
            state.ensure_schema(wh)
            perf.ensure_schema(wh)
            for target in (params["full_target"], params["incremental_target"]):
                upsert.ensure_mirror_table(shop, params["source_table"], wh, target, KEY_COLUMNS)
            with shop.cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(src))
                n = cur.fetchone()[0]
            shop.rollback()
        finally:
            shop.close()
            wh.close()
        return {"table_rows": n}

    @task
    def measure(params: dict[str, Any], dag_run: Any = None) -> list[dict[str, Any]]:
        from psycopg2 import sql

        from cdclab import perf
        from cdclab.db import SHOP, WAREHOUSE, connect, ident

        source = params["source_table"]
        key = f"{params['experiment']}/{source}->{params['incremental_target']}"
        shop, wh = connect(SHOP), connect(WAREHOUSE)
        out: list[dict[str, Any]] = []

        def keep(m: perf.Measurement) -> None:
            with wh:
                perf.record(wh, m, dag_id=DAG_ID, run_id=dag_run.run_id)
            out.append({"variant": m.variant, "rows_read": m.rows_read, **m.details})
            print(
                f"{m.variant}: read {m.rows_read}, wrote {m.rows_written}, {m.duration_ms:.1f} ms {m.details}"
            )

        try:
            with perf.Stopwatch() as sw:
                read, written = _incremental_load(
                    shop, wh, source, params["incremental_target"], key, dag_run.run_id
                )
            keep(perf.Measurement(params["experiment"], "catch_up", read, written, sw.ms, {"ratio": None}))
            for ratio in sorted(params["change_ratios"]):
                with shop, shop.cursor() as cur:
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(source)))
                    n = cur.fetchone()[0]
                    k = min(n, math.ceil(ratio * n))
                    cur.execute(
                        sql.SQL(
                            "UPDATE {t} SET full_name = split_part(full_name, ' #', 1) || ' #' || %s "
                            "WHERE id IN (SELECT id FROM {t} ORDER BY md5(id::text || %s) LIMIT %s)"
                        ).format(t=ident(source)),
                        (dag_run.run_id[-12:], f"{dag_run.run_id}/{ratio}", k),
                    )
                details = {"ratio": ratio, "changed": k, "table_rows": n}
                with perf.Stopwatch() as sw:
                    read, written = _incremental_load(
                        shop, wh, source, params["incremental_target"], key, dag_run.run_id
                    )
                keep(perf.Measurement(params["experiment"], "incremental", read, written, sw.ms, details))
                with perf.Stopwatch() as sw:
                    read, written = _full_load(shop, wh, source, params["full_target"])
                keep(perf.Measurement(params["experiment"], "full", read, written, sw.ms, details))
        finally:
            shop.close()
            wh.close()
        return out

    @task
    def analyse(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab import perf
        from cdclab.db import WAREHOUSE, connect

        wh = connect(WAREHOUSE)
        try:
            rows = perf.measurements(wh, params["experiment"], dag_run.run_id)
            by = {(r["variant"], r["details"].get("ratio")): r for r in rows}
            ratios = sorted(r["details"]["ratio"] for r in rows if r["variant"] == "full")
            points = [
                (r, by[("full", r)]["duration_ms"], by[("incremental", r)]["duration_ms"]) for r in ratios
            ]
            by_time = perf.break_even(points)
            savings = {
                str(r): 1 - by[("incremental", r)]["rows_read"] / max(by[("full", r)]["rows_read"], 1)
                for r in ratios
            }
            analysis = {"by_duration": by_time.as_dict(), "rows_read_saving": savings}
            with wh:
                perf.record(
                    wh,
                    perf.Measurement(params["experiment"], "break_even", details=analysis),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
        finally:
            wh.close()
        print(
            f"break-even change ratio by duration: {by_time.ratio} ({by_time.side}); "
            f"share of rows the incremental load did not read: {savings}"
        )
        return analysis

    prepare() >> measure() >> analyse()


vs_full_load()
