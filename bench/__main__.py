"""Entry point of ``make bench``: runs every benchmark module and writes bench/results/."""

from __future__ import annotations

import sys

from bench import cdc_sink


def main() -> int:
    results = [cdc_sink.main()]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
