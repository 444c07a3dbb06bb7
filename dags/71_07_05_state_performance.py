"""
# 71.7.5 State management performance — three state stores measured, and a retention step for history

**State storage options.** Every run writes and reads back the same kind of state in three stores and
records counts and timings: (1) ``table`` — ``cdclab.state.TableWatermarkStore`` in the warehouse
(``state.watermarks``: typed value, compare-and-set, a ``state.watermark_history`` row per change);
(2) ``variable`` — Airflow Variables through the Task SDK (``cdclab.state.VariableWatermarkStore``: one
API round trip per get/set, last writer wins, no history); (3) ``kv`` — a plain key-value table
``<kv_table>`` (``key text PRIMARY KEY, value bigint``) holding *many* keys, e.g. one offset per
partition or per tenant, with a history table ``<kv_table>_history``.

**Query efficiency.** The ``kv`` store is read and written twice: one statement per key
(``kv/read_per_key``, ``kv/write_per_key``) and one statement for all keys (``kv/read_batch``:
``WHERE key = ANY(%s)``; ``kv/write_batch``: ``INSERT ... ON CONFLICT`` via ``execute_values``). The
counts are the same; the number of round trips is what differs (``details.statements``).

**Cleanup strategies.** State history grows with runs x keys. ``cleanup`` keeps the newest
``keep_history`` rows per key in ``state.watermark_history`` (only this experiment's keys: the table is
shared) and in ``<kv_table>_history``, each in one ``DELETE`` (``cdclab.perf.prune_history``), and
records how many rows it removed. The current values are never touched: history is for audit, the
value row is the state.

**Scaling patterns.** A keyed table scales to many keys (primary-key lookups, batched reads, one
transaction for all of them, optionally together with the data); Variables suit a handful of
low-frequency settings, not per-partition state (each key is a metadata-DB row behind an API call);
history needs retention from day one.

Observe: ``SELECT variant, rows_read, rows_written, round(duration_ms::numeric, 2), details FROM
state.perf_runs WHERE experiment = '71_07_05' ORDER BY id``; ``state.watermarks`` / ``state.watermark_history``
``WHERE key LIKE '71_07_05/%'``; Admin -> Variables ``71_07_05__*``; ``state.perf_71_07_05_kv``.

**Run without a logical date** (REST API / `airflow dags trigger` without `--logical-date`): treated as a UI
Trigger at the same moment: logical date = the run's `run_after`, data interval = the timetable's last
complete interval before it (`cdclab.intervals.run_interval`, docs/runs_without_interval.md).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_07_05_state_performance"


class StateReadBackMismatch(RuntimeError):
    """A store returned something else than what was just written to it: the store is broken."""


def _kv_ddl(table: str) -> list[Any]:
    from psycopg2 import sql

    from cdclab.db import ident

    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value bigint NOT NULL, "
            "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ).format(ident(table)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, key text NOT NULL, value bigint NOT NULL, "
            "changed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ).format(ident(table + "_history")),
    ]


def kv_value(end: Any, i: int) -> int:
    """The value the run with data interval end ``end`` writes for kv key number ``i``."""
    return int(end.timestamp()) * 1000 + i


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.7", "performance", "reference", "intermediate", "success"],
    doc_md=__doc__,
    params={
        "experiment": Param("71_07_05", type="string", description="name in state.perf_runs and key prefix"),
        "watermark_keys": Param(3, type="integer", minimum=1, maximum=50, description="table/variable keys"),
        "variable_prefix": Param("71_07_05__", type="string"),
        "kv_table": Param("state.perf_71_07_05_kv", type="string"),
        "kv_keys": Param(500, type="integer", minimum=1, maximum=100000),
        "keep_history": Param(2, type="integer", minimum=1),
    },
)
def state_performance() -> None:
    @task
    def prepare(params: dict[str, Any]) -> None:
        from cdclab import perf, state
        from cdclab.db import WAREHOUSE, connect

        wh = connect(WAREHOUSE)
        try:
            state.ensure_schema(wh)
            perf.ensure_schema(wh)
            with wh, wh.cursor() as cur:
                for ddl in _kv_ddl(params["kv_table"]):
                    cur.execute(ddl)
        finally:
            wh.close()

    @task
    def table_store(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab import perf, state
        from cdclab.db import WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none

        exp, end = params["experiment"], iv.end
        keys = [f"{exp}/k{i}" for i in range(params["watermark_keys"])]
        wh = connect(WAREHOUSE)
        try:
            store = state.TableWatermarkStore(wh)
            with perf.Stopwatch() as w:
                with wh:  # one transaction for all keys: read old, compare-and-set new
                    written = 0
                    for key in keys:
                        old = store.read(key, "timestamptz")
                        if old is None or end > old:
                            store.advance(
                                key, old, end, value_type="timestamptz", dag_id=DAG_ID, run_id=dag_run.run_id
                            )
                            written += 1
            with perf.Stopwatch() as r:
                values = {key: store.read(key, "timestamptz") for key in keys}
            wh.rollback()
            wrong = {k: v for k, v in values.items() if v != end}
            if wrong:
                raise StateReadBackMismatch(f"table store read back {wrong}, wrote {end}")
            with wh:
                perf.record(
                    wh,
                    perf.Measurement(
                        exp, "table/write", len(keys), written, w.ms, {"statements": 3 * len(keys)}
                    ),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
                perf.record(
                    wh,
                    perf.Measurement(exp, "table/read", len(keys), 0, r.ms, {"statements": len(keys)}),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
        finally:
            wh.close()
        return {"keys": len(keys), "written": written}

    @task
    def variable_store(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context

        from cdclab import perf, state
        from cdclab.db import WAREHOUSE, connect
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none

        exp, end = params["experiment"], iv.end
        store = state.VariableWatermarkStore(prefix=params["variable_prefix"])
        keys = [f"k{i}" for i in range(params["watermark_keys"])]
        with perf.Stopwatch() as w:
            for key in keys:  # last writer wins: no compare-and-set, max_active_runs=1 protects it
                store.set(key, end, "timestamptz")
        with perf.Stopwatch() as r:
            values = {key: store.get(key, "timestamptz") for key in keys}
        wrong = {k: v for k, v in values.items() if v != end}
        if wrong:
            raise StateReadBackMismatch(f"Variables read back {wrong}, wrote {end}")
        wh = connect(WAREHOUSE)
        try:
            with wh:
                perf.record(
                    wh,
                    perf.Measurement(exp, "variable/write", 0, len(keys), w.ms, {"api_calls": len(keys)}),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
                perf.record(
                    wh,
                    perf.Measurement(exp, "variable/read", len(keys), 0, r.ms, {"api_calls": len(keys)}),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
        finally:
            wh.close()
        return {"keys": len(keys)}

    @task
    def kv_store(params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from airflow.sdk import get_current_context
        from psycopg2 import sql
        from psycopg2.extras import execute_values

        from cdclab import perf
        from cdclab.db import WAREHOUSE, connect, ident
        from cdclab.intervals import run_interval

        iv = run_interval(get_current_context())  # derived from the timetable if the run has none

        exp, end, n = params["experiment"], iv.end, params["kv_keys"]
        t, h = ident(params["kv_table"]), ident(params["kv_table"] + "_history")
        keys = [f"{exp}/p{i:05d}" for i in range(n)]
        half = n // 2
        upsert = sql.SQL(
            "INSERT INTO {} (key, value) VALUES %s ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
            "updated_at = clock_timestamp()"
        ).format(t)
        hist = sql.SQL("INSERT INTO {} (key, value) VALUES %s").format(h)
        values = [(k, kv_value(end, i)) for i, k in enumerate(keys)]
        wh = connect(WAREHOUSE)
        m: list[perf.Measurement] = []
        try:
            with wh, wh.cursor() as cur:
                with perf.Stopwatch() as sw:  # the first half one key per statement
                    for v in values[:half]:
                        execute_values(cur, upsert, [v])
                        execute_values(cur, hist, [v])
                m.append(perf.Measurement(exp, "kv/write_per_key", 0, half, sw.ms, {"statements": 2 * half}))
                with perf.Stopwatch() as sw:  # the second half in one statement each
                    execute_values(cur, upsert, values[half:], page_size=max(n, 1))
                    execute_values(cur, hist, values[half:], page_size=max(n, 1))
                m.append(perf.Measurement(exp, "kv/write_batch", 0, n - half, sw.ms, {"statements": 2}))
            with wh.cursor() as cur:
                read: dict[str, int] = {}
                with perf.Stopwatch() as sw:
                    for k in keys:
                        cur.execute(sql.SQL("SELECT value FROM {} WHERE key = %s").format(t), (k,))
                        read[k] = cur.fetchone()[0]
                m.append(perf.Measurement(exp, "kv/read_per_key", n, 0, sw.ms, {"statements": n}))
                with perf.Stopwatch() as sw:
                    cur.execute(sql.SQL("SELECT key, value FROM {} WHERE key = ANY(%s)").format(t), (keys,))
                    batch = dict(cur.fetchall())
                m.append(perf.Measurement(exp, "kv/read_batch", len(batch), 0, sw.ms, {"statements": 1}))
            wh.rollback()
            expected = dict(values)
            if read != expected or batch != expected:
                raise StateReadBackMismatch(
                    f"kv store read back differs from what was written ({params['kv_table']})"
                )
            with wh:
                for x in m:
                    perf.record(wh, x, dag_id=DAG_ID, run_id=dag_run.run_id)
        finally:
            wh.close()
        return {"keys": n}

    @task
    def cleanup(params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from cdclab import perf, state
        from cdclab.db import WAREHOUSE, connect

        exp, keep = params["experiment"], params["keep_history"]
        wh = connect(WAREHOUSE)
        try:
            with perf.Stopwatch() as sw:
                with wh, wh.cursor() as cur:
                    removed = {
                        "watermark_history": perf.prune_history(
                            cur,
                            state.HISTORY,
                            key_column="key",
                            order_column="id",
                            keep=keep,
                            key_prefix=f"{exp}/",
                        ),
                        "kv_history": perf.prune_history(
                            cur,
                            params["kv_table"] + "_history",
                            key_column="key",
                            order_column="id",
                            keep=keep,
                            key_prefix=f"{exp}/",
                        ),
                    }
            with wh:
                perf.record(
                    wh,
                    perf.Measurement(
                        exp, "cleanup", None, sum(removed.values()), sw.ms, {**removed, "keep": keep}
                    ),
                    dag_id=DAG_ID,
                    run_id=dag_run.run_id,
                )
        finally:
            wh.close()
        print(f"retention keep={keep}: removed {removed}")
        return removed

    prepare() >> [table_store(), variable_store(), kv_store()] >> cleanup()


state_performance()
