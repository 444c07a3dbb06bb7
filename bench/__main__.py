"""Entry point of ``make bench``: every benchmark, each a ratio against a baseline run side by side.

- ``cdc_sink``: our exactly-once Kafka->Postgres sink vs Debezium's JDBC sink, each draining the same
  pre-filled topic from offset 0 (see :mod:`bench.cdc_sink`).
- ``files``: our file load vs a raw COPY of the same object into the same table; chunked vs single-pass.
- ``breakeven``: incremental load vs full reload over changed fractions 0.1% .. 50%.
- ``latency``: source commit -> visible in the warehouse at a fixed rate, p50/p99 over 10,000 events, our
  follow run and Debezium's JDBC sink consuming the same topic in the same run (see :mod:`bench.latency`).
- ``merge_copy``: our merge (the batch as one jsonb literal + set-based upsert with the LSN guard) vs a
  plain COPY of the same rows into the same table and indexes, no Kafka (see :mod:`bench.merge_copy`).
Results go to ``bench/results/<name>-<UTC time>.json`` and ``<name>-latest.json``, with
``<name>-latest.md`` (the ratio table and a Mermaid chart, to paste into the README) and a PNG chart.
``python -m bench report`` writes the .md and .png files again from the latest JSONs, running nothing.

``python -m bench [cdc_sink] [files] [breakeven] [latency] [merge_copy] [--only a,b] [--quick] [--events N] [--runs R]
[--batch-sizes 500,2000,5000]``; sizes also from BENCH_EVENTS (default 1,000,000), BENCH_ROWS,
BENCH_FILE_MB (default 100), BENCH_WORKERS (default 2), BENCH_LATENCY_* (bench.latency). ``--quick``: small
sizes (20,000 CDC events, 1,000 latency events).
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench import cdc_sink, report

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    if sys.argv[1:2] == ["report"]:
        return report.regenerate()
    only, quick, options = report.parse_args(sys.argv[1:])
    if quick and not any(o.startswith("--events") for o in options):
        options = ["--events", "20000", *options]
    results = []
    if not only or "cdc_sink" in only:
        results.append(cdc_sink.main(options))
    for name in ("files", "breakeven", "latency", "merge_copy"):
        if not only or name in only:
            results.append(report.run(name, quick))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
