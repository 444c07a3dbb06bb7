"""File-ingestion benchmark: MB/s of a chunked parallel load vs a single-pass load of the same object.

``python -m cdclab.files.bench --mb 100 --workers 4 --chunk-mb 8`` writes a generated CSV of about
``--mb`` MB to ``lab-tests/bench-<id>/``, loads it once in one pass (:func:`cdclab.files.loading.load_file`)
and once in record-aligned chunks on a thread pool (the same library calls the 71_04_04 tasks make),
checks both tables hold the same rows, prints one JSON line of figures and removes what it created.
Needs the lab running (Airflow connections from the lab environment).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from psycopg2 import sql

from cdclab.db import ident


def _load_chunk(args: tuple[Any, ...]) -> dict[str, Any]:
    from cdclab.files import chunking
    from cdclab.files.store import ObjectStore

    pipeline, obj, chunk, table = args
    return chunking.load_chunk(ObjectStore(), pipeline, obj, chunk, table)


def _digest(cur: Any, table: str) -> tuple[Any, ...]:
    cur.execute(
        sql.SQL(
            "SELECT count(*), sum(hashtext(source_offset::text || '|' || event_id::text"
            " || '|' || amount::text)) FROM {}"
        ).format(ident(table))
    )
    return tuple(cur.fetchone())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=float, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--chunk-mb", type=float, default=8)
    args = ap.parse_args(argv)

    from cdclab.lab.config import LabConfig

    os.environ.update(LabConfig.load().airflow_env())
    from cdclab.db import WAREHOUSE, transaction
    from cdclab.files import chunking, loading, producer, state
    from cdclab.files.records import render
    from cdclab.files.store import ObjectStore

    run = uuid.uuid4().hex[:8]
    store, bucket, key = ObjectStore(), "lab-tests", f"bench-{run}/big.csv"
    rows_per_mb = 1024 * 1024 // 62
    rows = producer.make_rows(int(args.mb * rows_per_mb), 71)
    data = render(rows, "csv")
    store.put(bucket, key, data)
    obj = store.head(bucket, key)
    assert obj is not None
    single_t, chunk_t = f"staging.bench_single_{run}", f"staging.bench_chunked_{run}"
    try:
        with transaction(WAREHOUSE) as cur:
            loading.ensure_target(cur, single_t)
            loading.ensure_target(cur, chunk_t)
            chunking.ensure_chunk_table(cur, chunk_t + "_chunks")
            state.register(cur, f"bench_single_{run}", [obj])
            state.register(cur, f"bench_chunked_{run}", [obj])

        t0 = time.perf_counter()
        out = loading.load_file(store, f"bench_single_{run}", obj, single_t)
        single_s = time.perf_counter() - t0
        assert out.status == "loaded", out

        t0 = time.perf_counter()
        pipeline = f"bench_chunked_{run}"
        data_start, chunks = chunking.plan_object(store, obj, int(args.chunk_mb * 1024 * 1024))
        with transaction(WAREHOUSE) as cur:
            chunking.register_chunks(cur, pipeline, obj, chunks)
        with ProcessPoolExecutor(args.workers) as pool:  # processes, like mapped task instances
            list(pool.map(_load_chunk, [(pipeline, obj, c, chunk_t + "_chunks") for c in chunks]))
        with transaction(WAREHOUSE) as cur:
            res = chunking.assemble(cur, store, pipeline, obj, data_start, chunk_t, chunk_t + "_chunks")
        chunked_s = time.perf_counter() - t0
        assert res["status"] == "loaded", res

        with transaction(WAREHOUSE) as cur:
            a, b = (_digest(cur, t) for t in (single_t, chunk_t))
        mb = len(data) / 1024 / 1024
        figures = {
            "file_mb": round(mb, 1),
            "rows": len(rows),
            "chunks": len(chunks),
            "workers": args.workers,
            "single_pass_mb_s": round(mb / single_s, 2),
            "chunked_mb_s": round(mb / chunked_s, 2),
            "speedup": round(single_s / chunked_s, 2),
            "same_rows": a == b,
        }
        print(json.dumps(figures))
        return figures
    finally:
        store.delete(bucket, [key])
        with transaction(WAREHOUSE) as cur:
            for t in (single_t, chunk_t, chunk_t + "_chunks"):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(t)))
            cur.execute("DELETE FROM state.file_chunks WHERE pipeline LIKE %s", (f"bench_%_{run}",))
            cur.execute("DELETE FROM state.file_manifest WHERE pipeline LIKE %s", (f"bench_%_{run}",))


if __name__ == "__main__":
    main()
