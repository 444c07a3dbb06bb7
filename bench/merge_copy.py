"""Merge ÷ COPY into the same table and indexes (issue 14, item 1, last sentence; goal >= 0.5).

The component alone, without Kafka: our merge (:func:`cdclab.cdc.merge.apply_changes`, the function
``replicate`` applies every batch with: the batch's rows as one jsonb literal (COPY into the session's
staging table when a value JSON cannot carry exactly), one set-based upsert with the LSN guard and the
delete ledger, the ledger's clean-up) against a plain ``COPY ... FROM STDIN`` of the
same final rows into an identical empty table.

- *rows*: N row images of the CDC sink benchmark's order-like shape (bigint key, text, numeric, char, date,
  timestamptz, integer), generated deterministically (:func:`images`) as the decoder hands them to the
  merge (column values as the source's text, ids as ints), each with a position (LSN), an op and a source
  timestamp. Untimed.
- *tables*: ``staging.bench_mc_merge_<run>`` made by :func:`cdclab.cdc.merge.ensure_target` (the source
  columns, the bookkeeping columns, the primary key; and its delete ledger), ``staging.bench_mc_copy_<run>``
  ``LIKE`` it ``INCLUDING ALL`` (same columns, types, defaults, primary key and indexes).
- *insert case*: both tables empty; the merge applies the N inserts in batches of B changes, one
  transaction per batch (as ``replicate``, minus the offsets row); the COPY sends the same N final rows
  (the data columns and ``_source_position``, ``_source_op``, ``_source_ts``) in batches of B rows, one
  transaction per batch. The COPY text is rendered before the clock starts (with the merge's COPY
  renderer :func:`cdclab.cdc.merge.copy_text`; its time is reported as ``render_s``): the baseline is
  COPY alone, while the merge's time includes making its batch (the JSON). Conservative for ours. A third
  side, *copy_rendered*, renders each batch from the same row images inside the clock and COPYs it: the
  same input as the merge and the Python work a COPY needs, so merge ÷ (render + COPY) shows what the
  upsert, the LSN guard and the ledger cost beyond loading the same row images.
- *update case*: the merge target holds the N inserted rows (the insert case just loaded it); the merge
  applies N updates (every key, a later position) in batches of B; the COPY sends the N updated final
  rows into the emptied copy table (the same number of rows, the same batches).
- *correct or not a figure*: after every run the two tables are compared (count and md5 of every column
  but ``_loaded_at``); a mismatch fails the benchmark.
- Repeats are interleaved (merge, COPY, merge, COPY...; which goes first alternates), for every batch size.
  Reported: rows/s of each side and merge ÷ COPY (median of the per-repeat ratios, with their min..max).

Knobs: ``BENCH_MC_ROWS`` (200,000; quick 20,000), ``BENCH_REPEATS`` (3), ``BENCH_MC_BATCHES`` (comma
list, 500,2000,5000). Run: ``python -m bench merge_copy [--quick]``.
"""

from __future__ import annotations

import io
import os
import statistics
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import sql

from bench.report import Stopwatch, run_then_clean_up, timings
from cdclab.cdc.events import Change

SHAPE = [
    ("id", "bigint"),
    ("customer_id", "bigint"),
    ("status", "text"),
    ("total", "numeric(12,2)"),
    ("currency", "character(3)"),
    ("placed_on", "date"),
    ("note", "text"),
    ("updated_at", "timestamptz"),
    ("version", "integer"),
]
KEY = ["id"]
DATA = [c for c, _ in SHAPE]
META = ["_source_position", "_source_op", "_source_ts"]
CHECKED = [*DATA, *META, "_deleted", "_deleted_at"]  # every column but _loaded_at (a commit time)
TS0 = 1_790_000_000_000  # ms: 2026-09-21 (a fixed source commit time base)


def say(msg: str) -> None:
    print(f"[bench merge_copy] {msg}", flush=True)


def images(n: int, update: bool = False) -> list[Change]:
    """``n`` deterministic changes of keys 1..n: inserts (op ``c``, positions 16..16n) or, with ``update``,
    updates of every key (op ``u``, later positions), values as the decoder gives them (text)."""
    out = []
    for i in range(1, n + 1):
        position = 16 * (n + i if update else i)
        cents = i % 100_000 + (100 if update else 0)
        row = {
            "id": i,
            "customer_id": i % 5000,
            "status": "paid" if update else "new",
            "total": f"{cents // 100}.{cents % 100:02d}",
            "currency": "EUR",
            "placed_on": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "note": ("u" if update else "n") * (20 + i % 50),
            "updated_at": f"2026-09-21T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}000Z",
            "version": 2 if update else 1,
        }
        out.append(
            Change(
                op="u" if update else "c",
                table="public.bench_mc",
                key={"id": i},
                before=None,
                after=row,
                position=position,
                ts_ms=TS0 + position,
            )
        )
    return out


def copy_rows(changes: Sequence[Change]) -> list[str]:
    """The final rows of ``changes`` as lines of ``COPY (DATA + META) FROM STDIN`` text, rendered as the
    merge renders its staging rows."""
    from cdclab.cdc.merge import _ts, copy_text

    return [
        "\t".join(
            [*(copy_text(c.row.get(col)) for col in DATA), str(c.position), c.op, _ts(c.ts_ms) or "\\N"]
        )
        for c in changes
    ]


def batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """``items`` cut into consecutive slices of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    return [items[i : i + size] for i in range(0, len(items), size)]


class Bench:
    def __init__(self, quick: bool) -> None:
        from cdclab.lab.config import LabConfig

        self.dsn = LabConfig.load().pg_dsn("warehouse")
        self.quick = quick
        self.n = int(os.environ.get("BENCH_MC_ROWS", 20_000 if quick else 200_000))
        self.repeats = int(os.environ.get("BENCH_REPEATS", 3))
        self.sizes = [int(x) for x in os.environ.get("BENCH_MC_BATCHES", "500,2000,5000").split(",") if x]
        self.run = uuid.uuid4().hex[:8]
        self.merge_t = f"staging.bench_mc_merge_{self.run}"
        self.copy_t = f"staging.bench_mc_copy_{self.run}"
        self.conn: Any = None

    def _ident(self, table: str) -> sql.Identifier:
        return sql.Identifier(*table.split("."))

    def setup(self) -> None:
        from cdclab.cdc.merge import ensure_target

        self.conn = psycopg2.connect(self.dsn, application_name="bench_merge_copy")
        with self.conn.cursor() as cur:
            ensure_target(cur, self.merge_t, SHAPE, KEY)
            cur.execute(
                sql.SQL("CREATE TABLE {c} (LIKE {m} INCLUDING ALL)").format(
                    c=self._ident(self.copy_t), m=self._ident(self.merge_t)
                )
            )
        self.conn.commit()

    def empty(self, *tables: str) -> None:
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(self._ident(t) for t in tables)))
        self.conn.commit()

    def merge(self, changes: Sequence[Change], size: int) -> float:
        from cdclab.cdc.merge import apply_changes

        clock = Stopwatch()
        for chunk in batches(changes, size):
            with self.conn.cursor() as cur:
                apply_changes(cur, self.merge_t, KEY, chunk)
            self.conn.commit()
        return clock.s

    def copy(self, texts: Sequence[str]) -> float:
        stmt_text = self._copy_statement()
        clock = Stopwatch()
        for text in texts:
            with self.conn.cursor() as cur:
                cur.copy_expert(stmt_text, io.StringIO(text))
            self.conn.commit()
        return clock.s

    def copy_rendered(self, changes: Sequence[Change], size: int) -> float:
        """COPY from the same row images the merge gets: each batch rendered (the merge's COPY renderer)
        and copied inside the clock: the same input as the merge and the Python work a COPY needs."""
        stmt_text = self._copy_statement()
        clock = Stopwatch()
        for chunk in batches(changes, size):
            text = "\n".join(copy_rows(chunk)) + "\n"
            with self.conn.cursor() as cur:
                cur.copy_expert(stmt_text, io.StringIO(text))
            self.conn.commit()
        return clock.s

    def _copy_statement(self) -> str:
        stmt = sql.SQL("COPY {t} ({cols}) FROM STDIN").format(
            t=self._ident(self.copy_t), cols=sql.SQL(", ").join(map(sql.Identifier, [*DATA, *META]))
        )
        return str(stmt.as_string(self.conn))

    def digest(self, table: str) -> tuple[int, str | None]:
        from cdclab.cdc.replication import checksum

        with self.conn.cursor() as cur:
            result = checksum(cur, table, CHECKED, KEY)
        self.conn.commit()
        return result

    def main(self) -> dict[str, Any]:
        say(f"{self.n:,} rows, batch sizes {self.sizes}, {self.repeats} repeats, interleaved")
        inserts, updates = images(self.n), images(self.n, update=True)
        render = Stopwatch()
        lines = {"insert": copy_rows(inserts), "update": copy_rows(updates)}
        render_s = render.s
        self.setup()
        times: dict[int, dict[str, dict[str, list[float]]]] = {
            b: {case: {"merge": [], "copy": [], "copy_rendered": []} for case in ("insert", "update")}
            for b in self.sizes
        }
        checks: list[bool] = []
        for rep in range(self.repeats):
            for size in self.sizes:
                texts = {k: ["\n".join(b) + "\n" for b in batches(v, size)] for k, v in lines.items()}
                t = times[size]
                # insert: both tables empty; update: the merge target holds the inserted rows, the copy
                # table starts empty
                for case, rows, empty in (
                    ("insert", inserts, (self.merge_t, self.merge_t + "__deleted", self.copy_t)),
                    ("update", updates, (self.copy_t,)),
                ):
                    self.empty(*empty)
                    if rep % 2 == 0:
                        t[case]["merge"].append(self.merge(rows, size))
                        t[case]["copy"].append(self.copy(texts[case]))
                    else:
                        t[case]["copy"].append(self.copy(texts[case]))
                        t[case]["merge"].append(self.merge(rows, size))
                    checks.append(self.digest(self.merge_t) == self.digest(self.copy_t))
                    self.empty(self.copy_t)
                    t[case]["copy_rendered"].append(self.copy_rendered(rows, size))
                    checks.append(self.digest(self.merge_t) == self.digest(self.copy_t))
                say(
                    f"repeat {rep + 1} batch {size}: "
                    + ", ".join(
                        f"{c} {w} {t[c][w][-1]:.2f} s" for c in t for w in ("merge", "copy", "copy_rendered")
                    )
                    + f"; equal: {checks[-4:]}"
                )
        results: dict[str, Any] = {}
        for size in self.sizes:
            row: dict[str, Any] = {}
            for case, tc in times[size].items():
                ratios = [c / m for m, c in zip(tc["merge"], tc["copy"], strict=True)]
                rendered = [c / m for m, c in zip(tc["merge"], tc["copy_rendered"], strict=True)]
                row[case] = {
                    "merge": timings(tc["merge"], digits=4),
                    "copy": timings(tc["copy"], digits=4),
                    "merge_rows_per_s": round(self.n / statistics.median(tc["merge"]), 1),
                    "copy_rows_per_s": round(self.n / statistics.median(tc["copy"]), 1),
                    "ratio_merge_over_copy": round(statistics.median(ratios), 3),
                    "ratio_min": round(min(ratios), 3),
                    "ratio_max": round(max(ratios), 3),
                    "copy_rendered": timings(tc["copy_rendered"], digits=4),
                    "copy_rendered_rows_per_s": round(self.n / statistics.median(tc["copy_rendered"]), 1),
                    "ratio_merge_over_copy_rendered": round(statistics.median(rendered), 3),
                }
            results[str(size)] = row
        return {
            "benchmark": "merge_copy",
            "settings": {
                "rows": self.n,
                "repeats": self.repeats,
                "batch_sizes": self.sizes,
                "columns": SHAPE,
                "key": KEY,
                "merge": "cdclab.cdc.merge.apply_changes (delete_mode hard, schema_policy fail), a transaction per batch",
                "copy": "COPY (data columns + _source_position, _source_op, _source_ts) FROM STDIN, a transaction per batch, text rendered untimed",
                "copy_rendered": "the same COPY, each batch rendered from the same row images inside the clock",
            },
            "rows": self.n,
            "render_s": round(render_s, 3),
            "batches": results,
            "goal_ratio": 0.5,
            "checks": checks,
            "outputs_equal": bool(checks) and all(checks),
        }

    def cleanup(self) -> None:
        if self.conn is not None:
            self.conn.close()
        conn = psycopg2.connect(self.dsn, application_name="bench_merge_copy")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                for t in (self.merge_t, self.merge_t + "__deleted", self.copy_t):
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(t)))
        finally:
            conn.close()


def main(quick: bool = False) -> dict[str, Any]:
    return run_then_clean_up(Bench(quick))


def table(r: dict[str, Any]) -> str:
    """The ratio table (merge ÷ COPY rows/s; higher is better for ours)."""
    lines = [
        f"merge_copy: {r['rows']:,} rows per run, median of {r['settings']['repeats']} interleaved repeats"
        " (merge / COPY in rows/s; goal >= 0.5)",
        f"  {'case':<8}{'batch':>7}{'merge rows/s':>14}{'COPY rows/s':>13}{'merge/COPY':>12}{'min..max':>14}"
        f"{'merge/(render+COPY)':>21}",
    ]
    for size, row in r["batches"].items():
        for case in ("insert", "update"):
            c = row[case]
            lines.append(
                f"  {case:<8}{size:>7}{c['merge_rows_per_s']:>14,.0f}{c['copy_rows_per_s']:>13,.0f}"
                f"{c['ratio_merge_over_copy']:>12.3f}{c['ratio_min']:>8.3f}..{c['ratio_max']:<5.3f}"
                f"{c.get('ratio_merge_over_copy_rendered', float('nan')):>21.3f}"
            )
    lines.append(
        f"  COPY text rendering (untimed in COPY): {r['render_s']} s; outputs equal: {r['outputs_equal']}"
    )
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Any) -> None:
    """Bars: rows/s of the merge and of COPY per batch size, insert and update cases."""
    from bench.report import grouped_bars

    sizes = list(r["batches"])
    cases = (
        ("insert", "merge", "#2a7"),
        ("insert", "copy", "#888"),
        ("update", "merge", "#58c"),
        ("update", "copy", "#bbb"),
    )
    grouped_bars(
        path,
        [f"batch {s}" for s in sizes],
        [
            (f"{case}: {side}", color, [r["batches"][s][case][f"{side}_rows_per_s"] for s in sizes], None)
            for case, side, color in cases
        ],
        width=0.2,
        ylabel="rows/s (higher is better)",
        title=f"merge vs COPY, {r['rows']:,} rows ({r.get('measured_at', '')})",
    )
