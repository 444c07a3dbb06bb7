"""Entry point of ``make bench``: every benchmark, each a ratio against a baseline run side by side.

- ``cdc_sink``: our exactly-once Kafka->Postgres sink vs Debezium's JDBC sink, each draining the same
  pre-filled topic from offset 0 (see :mod:`bench.cdc_sink`).
- ``files``: chunked parallel file load vs single-pass load of the same object (MB/s ratio).
Results go to ``bench/results/<name>-<UTC time>.json`` and ``<name>-latest.json``.

``python -m bench [cdc_sink] [files] [--events N] [--runs R] [--batch-sizes 500,2000,5000]``;
sizes also from BENCH_EVENTS (default 1,000,000), BENCH_FILE_MB (default 100), BENCH_WORKERS (default 2).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench import cdc_sink

RESULTS = Path(__file__).parent / "results"


def files() -> bool:
    from cdclab.files import bench as files_bench

    print(
        f"[bench files] chunked vs single-pass load of a {os.environ.get('BENCH_FILE_MB', '100')} MB CSV",
        flush=True,
    )
    figures = files_bench.main(
        [
            "--mb",
            os.environ.get("BENCH_FILE_MB", "100"),
            "--workers",
            os.environ.get("BENCH_WORKERS", "2"),
            "--chunk-mb",
            "16",
        ]
    )
    figures = {
        "benchmark": "files_chunking",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cores": os.cpu_count(),
        **figures,
        "ratio_mb_s_chunked_over_single": figures["speedup"],
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for name in (f"files_chunking-{stamp}.json", "files_chunking-latest.json"):
        (RESULTS / name).write_text(json.dumps(figures, indent=2) + "\n")
    return bool(figures["same_rows"])


def main() -> int:
    only = {a for a in sys.argv[1:] if a in ("cdc_sink", "files")}
    options = [a for a in sys.argv[1:] if a not in ("cdc_sink", "files")]
    results = []
    if not only or "cdc_sink" in only:
        results.append(cdc_sink.main(options))
    if not only or "files" in only:
        results.append(files())
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
