"""Shared helpers of the schema tests: the versioned files of infra/postgres/warehouse and what they declare."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


WAREHOUSE = ROOT / "infra" / "postgres" / "warehouse"


DECLARES = re.compile(
    r"CREATE\s+(?:TABLE\s+IF\s+NOT\s+EXISTS|OR\s+REPLACE\s+VIEW)\s+([a-z_]+\.[a-z_][a-z0-9_]*)", re.I
)


def _versions() -> list[tuple[int, str, Path]]:
    out = []
    for path in sorted(WAREHOUSE.glob("*.sql")):
        m = re.fullmatch(r"V(\d+)__([a-z0-9_]+)\.sql", path.name)
        assert m, f"{path.name}: versioned files are named V<n>__<name>.sql"
        out.append((int(m[1]), m[2], path))
    return sorted(out)


def declared() -> dict[str, int]:
    """Every table or view the versioned files create -> the version that creates it."""
    found: dict[str, int] = {}
    for version, _, path in _versions():
        for name in DECLARES.findall(path.read_text()):
            assert name not in found, f"{name} is declared twice ({found[name]} and {version})"
            found[name] = version
    return found
