"""Entry point of ``make bench``: every benchmark, each a ratio against a baseline run side by side.

- ``cdc_sink``: our exactly-once Kafka->Postgres sink vs Debezium's JDBC sink, same topic, same run.
- ``files``: our file load vs a raw COPY of the same object into the same table; chunked vs single-pass.
- ``breakeven``: incremental load vs full reload over changed fractions 0.1% .. 50%.
Results go to ``bench/results/<name>-<UTC time>.json`` and ``<name>-latest.json``.
Sizes: BENCH_ROWS (default 20000), BENCH_FILE_MB (default 100), BENCH_WORKERS (default 2).
``--quick`` (small sizes), ``--only files,breakeven`` (see bench/report.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import cdc_sink, report

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    only, quick = report.parse_args(sys.argv[1:])
    results = []
    if not only or "cdc_sink" in only:
        results.append(cdc_sink.main())
    for name in ("files", "breakeven"):
        if not only or name in only:
            results.append(report.run(name, quick))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
