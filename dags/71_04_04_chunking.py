"""71.4.4 Large File Chunking — split a large object into record-aligned byte ranges, load them in
parallel with dynamic task mapping, track every chunk, assemble the result atomically.

1. **Split large files** — ``plan_chunks`` cuts the object every ``params.chunk_bytes`` bytes and moves
   each cut to the next record start with a small S3 Range GET (a record starts after a ``\\n``), so no
   record is split or read twice. The plan costs one probe per boundary, never a full read. A gzip
   object cannot be entered mid-stream: it becomes one *whole* chunk.
2. **Parallel processing** — ``load_chunk.expand(...)`` maps one task instance per chunk (up to
   ``max_active_tis_per_dagrun`` at once); each does one Range GET (``bytes=start-(end-1)``), parses with
   the chunk's base offset and writes into the chunk staging table ``<target>_chunks``.
3. **Chunk tracking** — ``state.file_chunks`` keeps each chunk's range, status, rows, attempts and error.
   A loaded chunk is never redone; a failed one is **retried alone** (task retries, or clearing just
   that mapped task instance): trigger with ``{"fail_chunk_once": 2}`` to watch chunk 2 fail after
   inserting its rows, roll back, and succeed on try 2 while the other chunks ran once.
4. **Result assembly** — ``assemble`` checks every chunk is loaded and the ranges tile
   ``[data_start, size)`` with no gap or overlap, then in one transaction replaces the file's rows in
   the target from the chunk table and marks the file ``loaded``: readers never see half a file, and
   the result equals a single-pass load (``71_04_01``) row for row, offsets included. A corrupt chunk
   quarantines the whole file.

Observe: put a large CSV under ``landing/71_04_04_chunking/`` (``cdclab.files.producer.drop`` writes
one), trigger the DAG, watch the mapped ``load_chunk`` instances in the Grid view, then
``SELECT chunk_no, start_byte, end_byte, status, row_count, attempts FROM state.file_chunks WHERE
pipeline = '71_04_04_chunking' ORDER BY key, chunk_no``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import task

from cdclab.dagkit import landing_params, lesson_dag

PIPELINE = "71_04_04_chunking"

PARAMS = {
    **landing_params(PIPELINE),  # pipeline, bucket "landing", prefix "<pipeline>/", pattern "*"
    "target": "staging.partner_events",
    "chunk_table": "",  # default: <target>_chunks
    "chunk_bytes": 64 * 1024 * 1024,
    "quarantine_bucket": "quarantine",
    "fail_chunk_once": -1,  # >= 0: that chunk fails on its first try, after inserting (retry demo)
}


@lesson_dag(
    schedule="*/15 * * * *", tags=["71.4", "files", "reference", "patterns", "intermediate", "success"]
)
def chunking_71_04_04():
    @task
    def plan(**context: Any) -> list[dict[str, Any]]:
        """Register and return every chunk of every pending file (each item carries its file)."""
        from cdclab.files import steps

        p = context["params"]
        plans = steps.plan_chunked_files(
            p["pipeline"],
            p["bucket"],
            p["prefix"],
            p["pattern"],
            p["target"],
            steps.chunk_table_of(p["target"], p["chunk_table"]),
            int(p["chunk_bytes"]),
        )
        for f in plans:
            print(f.summary)
        return [item for f in plans for item in f.items()]

    @task(retries=2, retry_delay=timedelta(seconds=1), max_active_tis_per_dagrun=4)
    def load_chunk(item: dict[str, Any], **context: Any) -> dict[str, Any]:
        from cdclab.files import steps

        p = context["params"]
        fail = item["chunk_no"] == int(p["fail_chunk_once"]) and context["ti"].try_number == 1
        return steps.load_chunk_item(
            p["pipeline"], item, steps.chunk_table_of(p["target"], p["chunk_table"]), fail_before_commit=fail
        )

    @task
    def assemble(chunks: list[dict[str, Any]], loaded: list[dict[str, Any]], **context: Any) -> list[Any]:
        from cdclab.files import steps

        p = context["params"]
        out = steps.assemble_files(
            p["pipeline"],
            chunks,
            p["target"],
            steps.chunk_table_of(p["target"], p["chunk_table"]),
            p["quarantine_bucket"],
        )
        print(f"assembled {out} from {len(list(loaded))} chunk task(s)")
        return out

    planned = plan()
    assemble(planned, load_chunk.expand(item=planned))


chunking_71_04_04()
