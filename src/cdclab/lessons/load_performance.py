"""71.7.1 incremental vs full load and 71.7.2 watermark efficiency: the benchmark tables, the two loads
and the measurement loops of ``dags/71_07_01_vs_full_load.py`` and ``dags/71_07_02_watermark_efficiency.py``.

Vocabulary:
- *benchmark table*: a table in ``shop`` the lesson creates and seeds on first use (71.7.1: a copy of
  ``public.customers`` with its ``touch_row`` trigger, ``table_rows`` rows).
- *full load*: read every source row, ``TRUNCATE`` + ``INSERT`` into the target in one transaction.
- *incremental load*: the half-open window ``[watermark, upper)`` on ``updated_at``
  (:func:`cdclab.pull.pull`), upserted with a version guard, the watermark advanced to ``upper`` by
  compare-and-set in the same transaction: no re-reads, no gaps.
- *change ratio*: the share of the table's rows one step updates (deterministically chosen per run).

Every measurement is a :class:`cdclab.perf.Measurement` recorded in ``state.perf_runs``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from contextlib import closing
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab import perf, pull, state, upsert
from cdclab.db import SHOP, WAREHOUSE, connect, ident

log = logging.getLogger(__name__)

KEY_COLUMNS = ("id",)


# ----------------------------------------------------------------------------------- 71.7.1


def _count(cur: Any, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table)))
    return int(cur.fetchone()[0])


def prepare_customers_benchmark(source: str, table_rows: int, targets: Iterable[str]) -> int:
    """Create ``source`` in shop (``LIKE public.customers`` with its ``touch_row`` trigger) and seed
    ``table_rows`` rows when it is empty; create ``state.perf_runs`` and a mirror of the source for each
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
    transaction. Returns ``(rows read, rows written)``."""
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
    (:func:`cdclab.perf.break_even`) and the share of rows the incremental load did not read; record
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
