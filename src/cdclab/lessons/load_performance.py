"""71.7.1 incremental vs full load and 71.7.2 watermark efficiency: the benchmark tables, the two loads
and the measurement loops of ``dags/71_07_01_vs_full_load.py`` and ``dags/71_07_02_watermark_efficiency.py``.

Vocabulary:
- *benchmark table*: a table in ``shop`` the lesson creates and seeds on first use (71.7.1: a copy of
  ``public.customers`` with its ``touch_row`` trigger, ``table_rows`` rows).
- *full load*: read every source row, ``TRUNCATE`` + ``INSERT`` into the target in one transaction.
- *incremental load*: the half-open window ``[watermark, upper)`` on ``updated_at``
  (:func:`cdclab.delta.pull.pull`), upserted with a version guard, the watermark advanced to ``upper`` by
  compare-and-set in the same transaction: no re-reads, no gaps.
- *change ratio*: the share of the table's rows one step updates (deterministically chosen per run).

Every measurement is a :class:`cdclab.ops.perf.Measurement` recorded in ``state.perf_runs``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Any

from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, transaction
from cdclab.delta import detection as delta
from cdclab.delta import pull
from cdclab.merge import upsert
from cdclab.ops import perf
from cdclab.state import watermarks as state

log = logging.getLogger(__name__)

KEY_COLUMNS = ("id",)


# ----------------------------------------------------------------------------------- 71.7.1


def _count(cur: Any, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table)))
    return int(cur.fetchone()[0])


def prepare_customers_benchmark(source: str, table_rows: int, targets: Iterable[str]) -> int:
    """Create ``source`` in shop (``LIKE public.customers`` with its ``touch_row`` trigger) and seed
    ``table_rows`` rows when it is empty; check ``state.perf_runs`` (declared by the lab) and create a mirror of the source for each
    target in the warehouse. Returns the source's row count."""
    src = ident(source)
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        with shop, shop.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NULL", (source,))
            if cur.fetchone()[0]:
                cur.execute(sql.SQL("CREATE TABLE {} (LIKE public.customers INCLUDING ALL)").format(src))
                cur.execute(
                    sql.SQL(
                        "CREATE TRIGGER touch_row BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION public.touch_row()"
                    ).format(src)
                )
            if _count(cur, source) == 0:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, email, full_name) SELECT i, 'p' || i || '@perf.test', "
                        "'Perf ' || i FROM generate_series(1, %s) AS i"
                    ).format(src),
                    (table_rows,),
                )
                cur.execute(sql.SQL("ANALYZE {}").format(src))
        state.ensure_schema(wh)
        perf.ensure_schema(wh)
        for target in targets:
            upsert.ensure_mirror_table(shop, source, wh, target, KEY_COLUMNS)
        with shop, shop.cursor() as cur:
            return _count(cur, source)


def full_load(shop: Any, wh: Any, source: str, target: str) -> tuple[int, int]:
    """Read every row of ``source``, ``TRUNCATE`` ``target`` and insert them, in one warehouse
    transaction (:func:`cdclab.merge.upsert.replace_from`). Returns ``(rows read, rows written)``."""
    with wh:
        n = upsert.replace_from(shop, source, wh, target)
    return n, n


def incremental_load(
    shop: Any, wh: Any, source: str, target: str, key: str, *, dag_id: str, run_id: str
) -> tuple[int, int]:
    """Read ``[watermark key, upper)``, upsert guarded by ``version`` and advance the watermark to
    ``upper`` in the same transaction. Returns ``(rows read, rows written)``."""
    p = pull.pull(shop, wh, source, key, key_columns=KEY_COLUMNS)
    assert p.upper is not None  # pull always bounds its read
    with wh:
        written = upsert.upsert_rows(wh, target, p.rows, list(KEY_COLUMNS), "version")
        if p.old is None or p.upper > p.old:  # the window end is the next watermark: no re-reads, no gaps
            state.TableWatermarkStore(wh).advance(
                key, p.old, p.upper, value_type="timestamptz", dag_id=dag_id, run_id=run_id
            )
    return len(p.rows), written.written


def change_share(shop: Any, source: str, ratio: float, run_id: str) -> dict[str, Any]:
    """Update ``ceil(ratio * rows)`` rows of ``source`` (chosen by a hash of the run and the ratio) in
    one transaction; returns ``{"ratio", "changed", "table_rows"}``."""
    with shop, shop.cursor() as cur:
        n = _count(cur, source)
        k = min(n, math.ceil(ratio * n))
        cur.execute(
            sql.SQL(
                "UPDATE {t} SET full_name = split_part(full_name, ' #', 1) || ' #' || %s "
                "WHERE id IN (SELECT id FROM {t} ORDER BY md5(id::text || %s) LIMIT %s)"
            ).format(t=ident(source)),
            (run_id[-12:], f"{run_id}/{ratio}", k),
        )
    return {"ratio": ratio, "changed": k, "table_rows": n}


def measure_vs_full_load(
    *,
    source: str,
    full_target: str,
    incremental_target: str,
    experiment: str,
    change_ratios: Sequence[float],
    dag_id: str,
    run_id: str,
) -> list[dict[str, Any]]:
    """A catch-up incremental load, then per change ratio (smallest first): change that share of the
    rows, load incrementally, load fully; each load timed and recorded. Returns one summary per load."""
    key = f"{experiment}/{source}->{incremental_target}"
    out: list[dict[str, Any]] = []
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:

        def keep(m: perf.Measurement) -> None:
            with wh:
                perf.record(wh, m, dag_id=dag_id, run_id=run_id)
            out.append({"variant": m.variant, "rows_read": m.rows_read, **m.details})
            log.info(
                "%s: read %s, wrote %s, %.1f ms %s",
                m.variant,
                m.rows_read,
                m.rows_written,
                m.duration_ms,
                m.details,
            )

        def incremental() -> tuple[int, int]:
            return incremental_load(shop, wh, source, incremental_target, key, dag_id=dag_id, run_id=run_id)

        with perf.Stopwatch() as sw:
            read, written = incremental()
        keep(perf.Measurement(experiment, "catch_up", read, written, sw.ms, {"ratio": None}))
        for ratio in sorted(change_ratios):
            details = change_share(shop, source, ratio, run_id)
            with perf.Stopwatch() as sw:
                read, written = incremental()
            keep(perf.Measurement(experiment, "incremental", read, written, sw.ms, details))
            with perf.Stopwatch() as sw:
                read, written = full_load(shop, wh, source, full_target)
            keep(perf.Measurement(experiment, "full", read, written, sw.ms, details))
    return out


def analyse_break_even(*, experiment: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """Read the run's measurements back, interpolate the break-even change ratio by duration
    (:func:`cdclab.ops.perf.break_even`) and the share of rows the incremental load did not read; record
    them as the ``break_even`` measurement and return them."""
    with closing(connect(WAREHOUSE)) as wh:
        rows = perf.measurements(wh, experiment, run_id)
        by = {(r["variant"], r["details"].get("ratio")): r for r in rows}
        ratios = sorted(r["details"]["ratio"] for r in rows if r["variant"] == "full")
        points = [(r, by[("full", r)]["duration_ms"], by[("incremental", r)]["duration_ms"]) for r in ratios]
        by_time = perf.break_even(points)
        savings = {
            str(r): 1 - by[("incremental", r)]["rows_read"] / max(by[("full", r)]["rows_read"], 1)
            for r in ratios
        }
        analysis = {"by_duration": by_time.as_dict(), "rows_read_saving": savings}
        with wh:
            perf.record(
                wh, perf.Measurement(experiment, "break_even", details=analysis), dag_id=dag_id, run_id=run_id
            )
    log.info(
        "break-even change ratio by duration: %s (%s); share of rows the incremental load did not read: %s",
        by_time.ratio,
        by_time.side,
        savings,
    )
    return analysis


# ----------------------------------------------------------------------------------- 71.7.2

INDEX_MODES = ("no_index", "index")
RANGES = ("closed", "open")
WINDOW_TABLE_COLUMNS = sql.SQL(
    "id bigint PRIMARY KEY, updated_at timestamptz NOT NULL, payload text NOT NULL"
)


def window_query(source: str, rng: str) -> sql.Composable:
    """The watermark query over ``%(start)s`` (and ``%(end)s`` when ``rng`` is ``closed``), in
    ``(updated_at, id)`` order: ``closed`` is the half-open data interval, ``open`` everything after start."""
    if rng not in RANGES:
        raise ValueError(f"range {rng!r} is not one of {RANGES}")
    bound = sql.SQL(" AND updated_at < %(end)s") if rng == "closed" else sql.SQL("")
    return sql.SQL("SELECT * FROM {} WHERE updated_at >= %(start)s{} ORDER BY updated_at, id").format(
        ident(source), bound
    )


def index_name(source: str) -> str:
    """The benchmark table's ``(updated_at, id)`` index: ``<table>_updated_at_idx``."""
    return source.split(".")[-1] + "_updated_at_idx"


def prepare_window_benchmark(source: str, table_rows: int, target: str, anchor: Any) -> None:
    """Create and seed ``source`` in shop when it is missing (``table_rows`` rows spread evenly over the 24
    hours around ``anchor``) with its ``(updated_at, id)`` index, under an advisory lock on its name;
    check ``state.perf_runs`` (declared by the lab) and create ``target`` in the warehouse."""
    src = ident(source)
    with transaction(SHOP) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (source,))
        cur.execute("SELECT to_regclass(%s) IS NULL", (source,))
        if cur.fetchone()[0]:
            cur.execute(sql.SQL("CREATE TABLE {} ({})").format(src, WINDOW_TABLE_COLUMNS))
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT i, %(anchor)s::timestamptz - interval '12 hours' "
                    "+ (i - 1) * interval '24 hours' / %(n)s, repeat(md5(i::text), 6) "
                    "FROM generate_series(1, %(n)s) AS i"
                ).format(src),
                {"anchor": anchor, "n": table_rows},
            )
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (updated_at, id)").format(
                sql.Identifier(index_name(source)), src
            )
        )
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        perf.ensure_schema(wh)
    with transaction(WAREHOUSE) as cur:
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident(target), WINDOW_TABLE_COLUMNS))


def explain_windows(
    *, source: str, experiment: str, start: Any, end: Any, dag_id: str, run_id: str
) -> list[dict[str, Any]]:
    """``ANALYZE`` the source, then ``EXPLAIN (ANALYZE, BUFFERS)`` the closed and the open window query
    without the index (dropped in a transaction that is rolled back) and with it; record each plan's
    stats as the measurement ``<index mode>/<range>``. Returns ``{"variant", "rows", "scans"}`` per plan."""
    bounds = {"start": start, "end": end}
    out = []
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        shop.autocommit = True
        with shop.cursor() as cur:
            cur.execute(sql.SQL("ANALYZE {}").format(ident(source)))
        shop.autocommit = False
        for mode in INDEX_MODES:
            with shop.cursor() as cur:  # one transaction per index mode, always rolled back
                if mode == "no_index":
                    schema = source.split(".")[0] if "." in source else "public"
                    cur.execute(sql.SQL("DROP INDEX {}").format(ident(f"{schema}.{index_name(source)}")))
                for rng in RANGES:
                    with perf.Stopwatch() as sw:
                        stats = perf.plan_stats(perf.explain(cur, window_query(source, rng), bounds))
                    m = perf.Measurement(
                        experiment,
                        f"{mode}/{rng}",
                        rows_read=int(stats.actual_rows or 0),
                        duration_ms=sw.ms,
                        details={"index": mode, "range": rng, **bounds, "plan": stats.as_dict()},
                    )
                    with wh:
                        perf.record(wh, m, dag_id=dag_id, run_id=run_id)
                    out.append({"variant": m.variant, "rows": m.rows_read, "scans": list(stats.scan_nodes)})
                    log.info(
                        "%s: %s; rows est %.0f actual %s; buffers hit %s read %s; %s ms",
                        m.variant,
                        " + ".join(stats.node_types),
                        stats.plan_rows,
                        stats.actual_rows,
                        stats.shared_hit,
                        stats.shared_read,
                        stats.execution_ms,
                    )
            shop.rollback()
    return out


def load_window(
    *, source: str, target: str, experiment: str, start: Any, end: Any, dag_id: str, run_id: str
) -> dict[str, Any]:
    """Read ``[min(watermark, start), end held back to the oldest open transaction)`` in keyset order,
    upsert it guarded by ``updated_at`` and store the window end as the watermark in the same
    transaction; record the load as the measurement ``load/closed``."""
    key = f"{experiment}/{source}->{target}"
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        with perf.Stopwatch() as sw:
            store = state.TableWatermarkStore(wh)
            old = store.read(key, "timestamptz")
            # from the watermark (or the window start, whichever is earlier: a watermark held back by
            # an open transaction) to the window end, held back to the oldest open transaction's start
            lower = start if old is None else min(old, start)
            upper, result = delta.read_committed_delta(
                shop, source, key_columns=list(KEY_COLUMNS), since=lower, until=end
            )
            rows = result.rows
            shop.rollback()
            with wh:  # rows and watermark commit together
                written = upsert.upsert_rows(wh, target, rows, list(KEY_COLUMNS), "updated_at")
                if old is None or upper > old:
                    store.advance(key, old, upper, value_type="timestamptz", dag_id=dag_id, run_id=run_id)
        m = perf.Measurement(
            experiment,
            "load/closed",
            rows_read=len(rows),
            rows_written=written.written,
            duration_ms=sw.ms,
            details={"start": lower, "end": upper, "skipped": written.skipped},
        )
        with wh:
            perf.record(wh, m, dag_id=dag_id, run_id=run_id)
    log.info(
        "window [%s, %s): read %s, wrote %s; watermark %r -> %s",
        lower,
        upper,
        len(rows),
        written.written,
        key,
        upper,
    )
    return {"rows_read": len(rows), "rows_written": written.written}
