"""71.7.5 State management performance: the three state stores of ``dags/71_07_05_state_performance.py``
measured (write, read back, record) and the retention step for their history.

Vocabulary:
- *table store*: :class:`cdclab.state.watermarks.TableWatermarkStore` in ``state.watermarks`` (compare-and-set, a
  history row per change); keys ``<experiment>/k<i>``.
- *variable store*: :class:`cdclab.state.watermarks.VariableWatermarkStore` (Airflow Variables, one API call per
  get/set, last writer wins); keys ``<prefix>k<i>``.
- *kv store*: a plain ``<kv_table>`` (``key text PRIMARY KEY, value bigint``) with ``<kv_table>_history``,
  holding many keys ``<experiment>/p<00000>``; written and read once per key and once in batch.
- *scaling curve*: the same keyed state table ``<kv_table>_scale`` filled with each of the sizes in turn
  (1k, 10k, 100k keys...), and at each size two reads measured with ``EXPLAIN (ANALYZE, BUFFERS)``:
  ``lookup`` (one key by its primary key) and ``scan`` (a predicate no index serves, so every row is
  read). Recorded per size as ``scale/<keys>/lookup`` and ``scale/<keys>/scan``: rows scanned, shared
  buffers touched and the plan's scan nodes: the lookup stays flat, the scan grows with the keys.

Every measurement is a :class:`cdclab.ops.perf.Measurement` recorded in ``state.perf_runs``; a store that
reads back something else than was just written raises :class:`StateReadBackMismatch`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import WAREHOUSE, connect, ident
from cdclab.ops import perf
from cdclab.state import watermarks as state


class StateReadBackMismatch(RuntimeError):
    """A store returned something else than what was just written to it: the store is broken."""


def kv_ddl(table: str) -> list[sql.Composable]:
    """``CREATE TABLE IF NOT EXISTS`` for the kv table and its ``_history``."""
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


@dataclass(frozen=True)
class MeasureRun:
    """One DAG run's measurement: the experiment (perf name and key prefix), the data interval end it
    writes as the value, and the run that records it."""

    experiment: str
    end: Any
    dag_id: str
    run_id: str


def _record_all(wh: Any, ms: Iterable[perf.Measurement], dag_id: str, run_id: str) -> None:
    with wh:
        for m in ms:
            perf.record(wh, m, dag_id=dag_id, run_id=run_id)


def prepare(kv_table: str) -> None:
    """The state and perf schemas and the kv table with its history in the warehouse."""
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        perf.ensure_schema(wh)
        with wh, wh.cursor() as cur:
            for ddl in kv_ddl(kv_table):
                cur.execute(ddl)


def measure_table_store(run: MeasureRun, n_keys: int) -> dict[str, Any]:
    """Advance ``n_keys`` watermarks to ``end`` in one transaction (read old, compare-and-set new), read
    them back, record ``table/write`` and ``table/read``. Returns ``{"keys", "written"}``."""
    experiment, end, dag_id, run_id = run.experiment, run.end, run.dag_id, run.run_id
    keys = [f"{experiment}/k{i}" for i in range(n_keys)]
    with closing(connect(WAREHOUSE)) as wh:
        store = state.TableWatermarkStore(wh)
        with perf.Stopwatch() as w:
            with wh:  # one transaction for all keys: read old, compare-and-set new
                written = 0
                for key in keys:
                    old = store.read(key, "timestamptz")
                    if old is None or end > old:
                        store.advance(key, old, end, value_type="timestamptz", dag_id=dag_id, run_id=run_id)
                        written += 1
        with perf.Stopwatch() as r:
            values = {key: store.read(key, "timestamptz") for key in keys}
        wh.rollback()
        wrong = {k: v for k, v in values.items() if v != end}
        if wrong:
            raise StateReadBackMismatch(f"table store read back {wrong}, wrote {end}")
        _record_all(
            wh,
            [
                perf.Measurement(
                    experiment, "table/write", len(keys), written, w.ms, {"statements": 3 * len(keys)}
                ),
                perf.Measurement(experiment, "table/read", len(keys), 0, r.ms, {"statements": len(keys)}),
            ],
            dag_id,
            run_id,
        )
    return {"keys": len(keys), "written": written}


def measure_variable_store(run: MeasureRun, n_keys: int, prefix: str) -> dict[str, Any]:
    """Set ``n_keys`` Airflow Variables ``<prefix>k<i>`` to ``end`` and read them back (Task SDK, one API
    call each), record ``variable/write`` and ``variable/read``. Returns ``{"keys"}``."""
    experiment, end, dag_id, run_id = run.experiment, run.end, run.dag_id, run.run_id
    store = state.VariableWatermarkStore(prefix=prefix)
    keys = [f"k{i}" for i in range(n_keys)]
    with perf.Stopwatch() as w:
        for key in keys:  # last writer wins: no compare-and-set, max_active_runs=1 protects it
            store.set(key, end, "timestamptz")
    with perf.Stopwatch() as r:
        values = {key: store.get(key, "timestamptz") for key in keys}
    wrong = {k: v for k, v in values.items() if v != end}
    if wrong:
        raise StateReadBackMismatch(f"Variables read back {wrong}, wrote {end}")
    with closing(connect(WAREHOUSE)) as wh:
        _record_all(
            wh,
            [
                perf.Measurement(experiment, "variable/write", 0, len(keys), w.ms, {"api_calls": len(keys)}),
                perf.Measurement(experiment, "variable/read", len(keys), 0, r.ms, {"api_calls": len(keys)}),
            ],
            dag_id,
            run_id,
        )
    return {"keys": len(keys)}


def measure_kv_store(run: MeasureRun, n_keys: int, kv_table: str) -> dict[str, Any]:
    """Write ``n_keys`` kv keys (the first half one statement per key, the rest in one batch, each with
    a history row), read them back per key and in one ``= ANY`` query, record the four measurements
    ``kv/write_per_key``, ``kv/write_batch``, ``kv/read_per_key``, ``kv/read_batch``. Returns ``{"keys"}``."""
    experiment, end, dag_id, run_id = run.experiment, run.end, run.dag_id, run.run_id
    exp, n = experiment, n_keys
    t, h = ident(kv_table), ident(kv_table + "_history")
    keys = [f"{exp}/p{i:05d}" for i in range(n)]
    half = n // 2
    upsert = sql.SQL(
        "INSERT INTO {} (key, value) VALUES %s ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
        "updated_at = clock_timestamp()"
    ).format(t)
    hist = sql.SQL("INSERT INTO {} (key, value) VALUES %s").format(h)
    values = [(k, kv_value(end, i)) for i, k in enumerate(keys)]
    m: list[perf.Measurement] = []
    with closing(connect(WAREHOUSE)) as wh:
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
            raise StateReadBackMismatch(f"kv store read back differs from what was written ({kv_table})")
        _record_all(wh, m, dag_id, run_id)
    return {"keys": n}


def cleanup_history(experiment: str, keep: int, *, kv_table: str, dag_id: str, run_id: str) -> dict[str, int]:
    """Keep the newest ``keep`` history rows per key of this experiment in ``state.watermark_history`` and
    ``<kv_table>_history`` (:func:`cdclab.ops.perf.prune_history`), record ``cleanup``. Returns the rows
    removed per table."""
    with closing(connect(WAREHOUSE)) as wh:
        with perf.Stopwatch() as sw:
            with wh, wh.cursor() as cur:
                removed = {
                    name: perf.prune_history(
                        cur,
                        table,
                        key_column="key",
                        order_column="id",
                        keep=keep,
                        key_prefix=f"{experiment}/",
                    )
                    for name, table in (
                        ("watermark_history", state.HISTORY),
                        ("kv_history", kv_table + "_history"),
                    )
                }
        _record_all(
            wh,
            [
                perf.Measurement(
                    experiment, "cleanup", None, sum(removed.values()), sw.ms, {**removed, "keep": keep}
                )
            ],
            dag_id,
            run_id,
        )
    return removed


def scale_table(kv_table: str) -> str:
    """The table of the scaling curve: ``<kv_table>_scale``."""
    return kv_table + "_scale"


def measure_scaling(run: MeasureRun, sizes: Sequence[int], kv_table: str) -> list[dict[str, Any]]:
    """For each size in ascending order, refill ``<kv_table>_scale`` (``key text PRIMARY KEY, value
    bigint``) with that many keys ``<experiment>/p<0000000>`` and ``ANALYZE`` it, then measure with
    ``EXPLAIN (ANALYZE, BUFFERS)`` a primary-key lookup of the middle key and a full scan (``count(*)``
    with a filter on ``value``, which no index serves); record ``scale/<keys>/lookup`` and
    ``scale/<keys>/scan`` (rows_read = rows scanned, duration = the plan's execution time, details =
    plan stats, ``buffers`` = shared hit + read, ``table_pages``). The table keeps the last size.
    Returns one ``{"keys", "op", "rows_scanned", "buffers", "uses_index"}`` per measurement."""
    t = ident(scale_table(kv_table))
    prefix = f"{run.experiment}/p"
    out: list[dict[str, Any]] = []
    ms: list[perf.Measurement] = []
    with closing(connect(WAREHOUSE)) as wh:
        for n in sorted(set(sizes)):
            with wh, wh.cursor() as cur:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(t))
                cur.execute(
                    sql.SQL("CREATE TABLE {} (key text PRIMARY KEY, value bigint NOT NULL)").format(t)
                )
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (key, value) SELECT %s || lpad(i::text, 7, '0'), i "
                        "FROM generate_series(0, %s - 1) AS i"
                    ).format(t),
                    (prefix, n),
                )
            wh.autocommit = True  # ANALYZE and VACUUM (visibility map) outside a transaction block
            try:
                with wh.cursor() as cur:
                    cur.execute(sql.SQL("VACUUM ANALYZE {}").format(t))
            finally:
                wh.autocommit = False
            with wh, wh.cursor() as cur:
                # one process reads the whole table: rows and buffers per node, no worker averages
                cur.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                cur.execute(
                    "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                    (scale_table(kv_table),),
                )
                pages = int(cur.fetchone()[0])
                probes = {
                    "lookup": (
                        sql.SQL("SELECT value FROM {} WHERE key = %s").format(t),
                        (f"{prefix}{n // 2:07d}",),
                    ),
                    "scan": (sql.SQL("SELECT count(*) FROM {} WHERE value %% 1000 = %s").format(t), (7,)),
                }
                for op, (stmt, args) in probes.items():
                    plan = perf.explain(cur, stmt, args)
                    stats = perf.plan_stats(plan)
                    scanned = perf.rows_scanned(plan)
                    buffers = (stats.shared_hit or 0) + (stats.shared_read or 0)
                    details = {
                        **stats.as_dict(),
                        "keys": n,
                        "op": op,
                        "rows_scanned": scanned,
                        "buffers": buffers,
                        "table_pages": pages,
                    }
                    ms.append(
                        perf.Measurement(
                            run.experiment, f"scale/{n}/{op}", scanned, 0, stats.execution_ms, details
                        )
                    )
                    out.append(
                        {
                            "keys": n,
                            "op": op,
                            "rows_scanned": scanned,
                            "buffers": buffers,
                            "uses_index": stats.uses_index,
                        }
                    )
        _record_all(wh, ms, run.dag_id, run.run_id)
    return out
