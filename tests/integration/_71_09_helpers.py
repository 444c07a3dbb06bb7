"""Shared helpers of the 71.9 tests: the partner-API sync's warehouse table, read row by row."""

from __future__ import annotations

from datetime import UTC
from typing import Any


def warehouse_rows(db, target: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute(
            f'SELECT id, name, email, tier, modified_at, deleted FROM staging."{target[8:]}" ORDER BY id'
        )
        return [(*r[:4], r[4].astimezone(UTC), r[5]) for r in cur.fetchall()]
