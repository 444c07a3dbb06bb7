"""File-load benchmark: our load of one CSV object from MinIO against a raw ``COPY ... FROM STDIN`` of the same
object into the same table with the same indexes, side by side, plus chunked vs single-pass.

What is timed (wall clock, each from a new connection to commit):
- ``raw_copy``: the object streamed from MinIO straight into ``COPY t (six columns) FROM STDIN (FORMAT csv,
  HEADER)``; ``t`` has the target's shape and primary key, ``source_offset`` comes from a sequence. No
  validation, no offsets, no ledger: the floor.
- ``raw_copy_mem``: the same COPY from bytes already in memory (no object store at all).
- ``load_fast``: :func:`cdclab.files.loading.load_file` (``mode="auto"``, which takes the COPY path): lock
  the manifest row, stream, sha256, byte offsets, COPY into a temp staging table, one validating
  ``INSERT ... SELECT``, manifest ``loaded``, commit.
- ``load_strict``: the same call with ``mode="strict"`` (Python parses every row; ``execute_values``).
- ``chunked``: plan record-aligned chunks, load them in a process pool (like mapped task instances), then
  assemble (one more ``INSERT ... SELECT`` of every row from the chunk table into the target).
- ``io_bound``: the single-pass fast load and the chunked load again through an object store throttled to
  ``BENCH_IO_MBPS`` MB/s per GET (a remote store or a thin link), where parallel Range GETs pay off.

Repeats are interleaved (raw, fast, raw, fast ...); the median and the spread (min..max) are reported.
After every run the loaded table is compared with the raw COPY's (count and a hash of the six value
columns; fast vs strict also with the byte offsets). Knobs: ``BENCH_FILE_MB`` (100; quick 8),
``BENCH_REPEATS`` (3), ``BENCH_WORKERS`` (2), ``BENCH_CHUNK_MB`` (16; quick 2), ``BENCH_IO_MBPS`` (comma
list, ``4,1``), ``BENCH_IO_WORKERS`` (4).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from psycopg2 import sql

from bench.report import Stopwatch, run_then_clean_up, timings
from cdclab.common.db import ident

VALUES = "event_id, customer_id, sku, qty, amount, event_time"


def say(msg: str) -> None:
    print(f"[bench files] {msg}", flush=True)


def _knob(name: str, full: float, quick: float, is_quick: bool) -> float:
    return float(os.environ.get(name, quick if is_quick else full))


class ThrottledStore:
    """An :class:`~cdclab.files.store.ObjectStore` whose every GET delivers at most ``mb_s`` MB/s (sleeping,
    so the CPU is free for other workers): the I/O-bound case of a remote object store."""

    def __init__(self, mb_s: float) -> None:
        from cdclab.files.store import ObjectStore

        self._store = ObjectStore()
        self._bps = mb_s * 1024 * 1024

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def _pace(self, n: int) -> None:
        time.sleep(n / self._bps)

    # the same signatures as ObjectStore's (etag: that version of the object, or ObjectChanged)
    def get(self, bucket: str, key: str, etag: str | None = None) -> bytes:
        data = self._store.get(bucket, key, etag)
        self._pace(len(data))
        return data

    def get_range(self, bucket: str, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        data = self._store.get_range(bucket, key, start, end, etag)
        self._pace(len(data))
        return data

    def stream(
        self, bucket: str, key: str, chunk_bytes: int = 1 << 20, etag: str | None = None
    ) -> Iterator[bytes]:
        for piece in self._store.stream(bucket, key, chunk_bytes, etag):
            self._pace(len(piece))
            yield piece


def _load_chunk(args: tuple[Any, ...]) -> dict[str, Any]:
    from cdclab.files import chunking
    from cdclab.files.store import ObjectStore

    pipeline, obj, chunk, table, mb_s = args
    store = ThrottledStore(mb_s) if mb_s else ObjectStore()
    return chunking.load_chunk(store, pipeline, obj, chunk, table)


class Bench:
    def __init__(self, quick: bool) -> None:
        from cdclab.files.store import ObjectStore

        self.quick = quick
        self.mb = _knob("BENCH_FILE_MB", 100, 8, quick)
        self.repeats = int(_knob("BENCH_REPEATS", 3, 3, quick))
        self.workers = int(_knob("BENCH_WORKERS", 2, 2, quick))
        self.chunk_mb = _knob("BENCH_CHUNK_MB", 16, 2, quick)
        self.io_mbps = [float(x) for x in os.environ.get("BENCH_IO_MBPS", "4,1").split(",")]
        self.io_workers = int(_knob("BENCH_IO_WORKERS", 4, 4, quick))
        self.run = uuid.uuid4().hex[:8]
        self.store = ObjectStore()
        self.bucket = f"bench-files-{self.run}"
        self.key = "landing/events.csv"
        self.tables: list[str] = []
        self.pipelines: list[str] = []

    # ---- setup -----------------------------------------------------------------------------------
    def table(self, name: str) -> str:
        from cdclab.common.db import WAREHOUSE, transaction
        from cdclab.files import loading

        t = f"staging.bench_{name}_{self.run}"
        with transaction(WAREHOUSE) as cur:
            loading.ensure_target(cur, t)
        self.tables.append(t)
        return t

    def pipeline(self, name: str, obj: Any) -> str:
        from cdclab.common.db import WAREHOUSE, transaction
        from cdclab.files import state

        p = f"bench_{name}_{self.run}_{len(self.pipelines)}"
        with transaction(WAREHOUSE) as cur:
            state.register(cur, p, [obj])
        self.pipelines.append(p)
        return p

    def raw_defaults(self, table: str) -> None:
        """The raw COPY sends only the file's six columns: the source columns get constants, the offset
        an identity, so the table keeps the target's shape and primary key."""
        from cdclab.common.db import WAREHOUSE, transaction

        with transaction(WAREHOUSE) as cur:
            cur.execute(
                sql.SQL(
                    "ALTER TABLE {} ALTER source_bucket SET DEFAULT 'raw', ALTER source_key SET DEFAULT 'raw',"
                    " ALTER source_etag SET DEFAULT 'raw',"
                    " ALTER source_offset ADD GENERATED BY DEFAULT AS IDENTITY"
                ).format(ident(table))
            )

    def truncate(self, table: str) -> None:
        from cdclab.common.db import WAREHOUSE, transaction

        with transaction(WAREHOUSE) as cur:
            cur.execute(sql.SQL("TRUNCATE {}").format(ident(table)))

    def digest(self, table: str, offsets: bool = False) -> tuple[Any, ...]:
        from cdclab.common.db import WAREHOUSE, transaction

        cols = ("source_offset, " if offsets else "") + VALUES
        with transaction(WAREHOUSE) as cur:
            cur.execute(
                sql.SQL("SELECT count(*), sum(hashtext(({c})::text)::bigint) FROM {t}").format(
                    c=sql.SQL(cols), t=ident(table)
                )
            )
            return tuple(cur.fetchone())

    # ---- the timed loads -------------------------------------------------------------------------
    def raw_copy(self, table: str, source: Callable[[], Any]) -> float:
        from cdclab.common.db import WAREHOUSE, transaction

        clock = Stopwatch()
        with transaction(WAREHOUSE) as cur:
            cur.copy_expert(
                sql.SQL("COPY {} (" + VALUES + ") FROM STDIN WITH (FORMAT csv, HEADER true)")
                .format(ident(table))
                .as_string(cur),
                source(),
                size=1 << 20,
            )
        return clock.s

    def load(self, table: str, obj: Any, mode: str, store: Any = None) -> float:
        from cdclab.files import loading

        p = self.pipeline(mode, obj)
        clock = Stopwatch()
        out = loading.load_file(store or self.store, p, obj, table, mode=mode)  # type: ignore[arg-type]
        dt = clock.s
        want = "fast" if mode == "auto" else "strict"
        if out.status != "loaded" or out.path != want:
            raise RuntimeError(f"{mode} load did not load on the {want} path: {out}")
        return dt

    def chunked(self, table: str, obj: Any, workers: int, mb_s: float = 0) -> tuple[float, int]:
        from cdclab.common.db import WAREHOUSE, transaction
        from cdclab.files import chunking

        store = ThrottledStore(mb_s) if mb_s else self.store
        ct = table + "_chunks"
        with transaction(WAREHOUSE) as cur:
            chunking.ensure_chunk_table(cur, ct)
        if ct not in self.tables:
            self.tables.append(ct)
        p = self.pipeline("chunked", obj)
        clock = Stopwatch()
        data_start, chunks = chunking.plan_object(store, obj, int(self.chunk_mb * 1024 * 1024))
        with transaction(WAREHOUSE) as cur:
            chunking.register_chunks(cur, p, obj, chunks)
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(_load_chunk, [(p, obj, c, ct, mb_s) for c in chunks]))
        with transaction(WAREHOUSE) as cur:
            res = chunking.assemble(cur, store, p, obj, data_start, table, ct)
        dt = clock.s
        if res["status"] != "loaded" or any(d["status"] != "loaded" for d in done):
            raise RuntimeError(f"chunked load failed: {res} {done}")
        return dt, len(chunks)

    # ---- the benchmark ---------------------------------------------------------------------------
    def main(self) -> dict[str, Any]:
        import io

        from cdclab.files import producer
        from cdclab.files.records import render

        rows = producer.make_rows(int(self.mb * 1024 * 1024 / 62), 71)
        data = render(rows, "csv")
        mb = len(data) / 1024 / 1024
        self.store.hook.create_bucket(bucket_name=self.bucket)
        self.store.put(self.bucket, self.key, data)
        obj = self.store.head(self.bucket, self.key)
        assert obj is not None
        say(f"{mb:.1f} MB CSV, {len(rows):,} rows, s3://{self.bucket}/{self.key}; {self.repeats} repeats")
        raw_t, fast_t, strict_t, chunk_t = (self.table(n) for n in ("raw", "fast", "strict", "chunked"))
        self.raw_defaults(raw_t)
        times: dict[str, list[float]] = {
            k: [] for k in ("raw_copy", "raw_copy_mem", "load_fast", "load_strict")
        }
        checks: list[bool] = []
        for i in range(self.repeats):
            for name, fn in (
                (
                    "raw_copy",
                    lambda: self.raw_copy(raw_t, lambda: _Stream(self.store.stream(obj.bucket, obj.key))),
                ),
                ("raw_copy_mem", lambda: self.raw_copy(raw_t, lambda: io.BytesIO(data))),
                ("load_fast", lambda: self.load(fast_t, obj, "auto")),
            ):
                self.truncate(raw_t if name.startswith("raw") else fast_t)
                times[name].append(fn())
                if name == "raw_copy":
                    ref = self.digest(raw_t)
                checks.append(self.digest(raw_t if name.startswith("raw") else fast_t) == ref)
            say(f"repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v))
        strict_repeats = self.repeats if self.quick else 1
        for _ in range(strict_repeats):
            self.truncate(strict_t)
            times["load_strict"].append(self.load(strict_t, obj, "strict"))
        checks.append(self.digest(strict_t) == ref)
        checks.append(self.digest(strict_t, offsets=True) == self.digest(fast_t, offsets=True))
        say(f"strict: {times['load_strict']}")

        chunked_s, n_chunks = self.chunked(chunk_t, obj, self.workers)
        checks.append(self.digest(chunk_t, offsets=True) == self.digest(fast_t, offsets=True))
        say(f"chunked ({n_chunks} chunks, {self.workers} workers): {chunked_s:.2f} s")
        io_bound = []
        for mb_s in self.io_mbps:
            self.truncate(fast_t)
            io_single = self.load(fast_t, obj, "auto", store=ThrottledStore(mb_s))
            checks.append(self.digest(fast_t, offsets=True) == self.digest(chunk_t, offsets=True))
            self.truncate(chunk_t)
            io_chunked, _ = self.chunked(chunk_t, obj, self.io_workers, mb_s)
            checks.append(self.digest(chunk_t, offsets=True) == self.digest(fast_t, offsets=True))
            say(f"I/O-bound at {mb_s} MB/s per GET: single {io_single:.2f} s, chunked {io_chunked:.2f} s")
            io_bound.append(
                {
                    "mb_s_per_get": mb_s,
                    "workers": self.io_workers,
                    "single_pass_s": round(io_single, 3),
                    "chunked_s": round(io_chunked, 3),
                    "ratio_chunked_over_single": round(io_single / io_chunked, 3),
                }
            )

        stats = {k: timings(v) for k, v in times.items()}
        med = {k: v["median_s"] for k, v in stats.items()}
        return {
            "benchmark": "files",
            "settings": {
                "file_mb": self.mb,
                "repeats": self.repeats,
                "workers": self.workers,
                "chunk_mb": self.chunk_mb,
                "io_mb_s_per_get": self.io_mbps,
                "io_workers": self.io_workers,
                "raw_copy": "COPY t (six columns) FROM STDIN (FORMAT csv, HEADER), same shape and primary key",
            },
            "file_mb": round(mb, 1),
            "rows": len(rows),
            "repeats": self.repeats,
            "strict_repeats": strict_repeats,
            "timings": stats,
            "mb_s": {k: round(mb / v, 1) for k, v in med.items()},
            "ratio_fast_over_raw_copy": round(med["raw_copy"] / med["load_fast"], 3),
            "ratio_fast_over_raw_copy_mem": round(med["raw_copy_mem"] / med["load_fast"], 3),
            "ratio_strict_over_raw_copy": round(med["raw_copy"] / med["load_strict"], 3),
            "chunked": {
                "chunks": n_chunks,
                "chunk_mb": self.chunk_mb,
                "workers": self.workers,
                "chunked_s": round(chunked_s, 3),
                "single_pass_fast_s": med["load_fast"],
                "ratio_chunked_over_single": round(med["load_fast"] / chunked_s, 3),
            },
            "io_bound": io_bound,
            "outputs_equal": all(checks),
            "checks": checks,
        }

    def cleanup(self) -> None:
        from cdclab.common.db import WAREHOUSE, transaction

        try:
            self.store.delete(self.bucket, [o.key for o in self.store.list_objects(self.bucket, "")])
            self.store.client.delete_bucket(Bucket=self.bucket)
        finally:
            with transaction(WAREHOUSE) as cur:
                for t in self.tables:
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(t)))
                for table in ("state.file_chunks", "state.file_manifest"):
                    cur.execute(
                        sql.SQL("DELETE FROM {} WHERE pipeline LIKE %s").format(ident(table)),
                        (f"bench_%_{self.run}_%",),
                    )


class _Stream:
    """A file-like ``read()`` over an iterator of byte pieces (what ``copy_expert`` reads)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces

    def read(self, size: int = -1) -> bytes:
        return next(self._pieces, b"")

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def main(quick: bool = False) -> dict[str, Any]:
    return run_then_clean_up(Bench(quick))


def table(r: dict[str, Any]) -> str:
    """The ratio table (higher is better for ours)."""
    t = r["timings"]
    lines = [
        f"files: {r['file_mb']} MB, {r['rows']:,} rows, median of {r['repeats']} (min..max)",
        f"  {'load':<34}{'median s':>10}{'min..max s':>16}{'MB/s':>8}",
    ]
    for k in ("raw_copy", "raw_copy_mem", "load_fast", "load_strict"):
        lines.append(
            f"  {k:<34}{t[k]['median_s']:>10.2f}{t[k]['min_s']:>8.2f}..{t[k]['max_s']:<6.2f}{r['mb_s'][k]:>8}"
        )
    c = r["chunked"]
    lines += [
        f"  ours (fast) / raw COPY from MinIO   {r['ratio_fast_over_raw_copy']:.2f}  (goal >= 0.5)",
        f"  ours (fast) / raw COPY from memory  {r['ratio_fast_over_raw_copy_mem']:.2f}",
        f"  strict / raw COPY from MinIO        {r['ratio_strict_over_raw_copy']:.2f}",
        f"  chunked / single-pass ({c['workers']} workers)    {c['ratio_chunked_over_single']:.2f}",
        *(
            f"  chunked / single-pass, I/O-bound at {io_['mb_s_per_get']} MB/s per GET, {io_['workers']} workers:"
            f" {io_['ratio_chunked_over_single']:.2f}"
            for io_ in r["io_bound"]
        ),
        f"  outputs equal: {r['outputs_equal']}",
    ]
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Any) -> None:
    """Throughput bars (MB/s, median with min..max) of every load of the same file."""
    import matplotlib.pyplot as plt

    t = r["timings"]
    names = ["raw_copy", "raw_copy_mem", "load_fast", "load_strict"]
    mb = r["file_mb"]
    med = [mb / t[k]["median_s"] for k in names]
    lo = [med[i] - mb / t[k]["max_s"] for i, k in enumerate(names)]
    hi = [mb / t[k]["min_s"] - med[i] for i, k in enumerate(names)]
    extra = [("chunked", mb / r["chunked"]["chunked_s"])]
    extra += [
        *((f"{io_['mb_s_per_get']:g} MB/s: single", mb / io_["single_pass_s"]) for io_ in r["io_bound"]),
        *((f"{io_['mb_s_per_get']:g} MB/s: chunked", mb / io_["chunked_s"]) for io_ in r["io_bound"]),
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, med, yerr=[lo, hi], capsize=4, color=["#888", "#bbb", "#2a7", "#c63"])
    ax.bar([n for n, _ in extra], [v for _, v in extra], color="#58c")
    ax.set_ylabel("MB/s (higher is better)")
    ax.set_title(f"file load, {mb} MB CSV, {r['rows']:,} rows ({r['measured_at']})")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
