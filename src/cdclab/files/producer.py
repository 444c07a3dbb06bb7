"""The partner simulator: deterministic event files (and their manifests) dropped into the landing bucket.

Vocabulary:
- *seed*: the same seed gives the same rows, so a test computes the expected target rows itself.
- *drop*: writing a data file under ``<prefix>``; a *batch* is several files plus a ``_manifest.json``
  written last (the commit marker; see :mod:`cdclab.files.manifest`).
- *corruption*: ``bad_row``, ``truncated_gzip``, ``empty`` — what the quarantine path must catch.
"""

from __future__ import annotations

import gzip
import hashlib
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from cdclab.files.records import FIELDS, Format, render
from cdclab.files.store import ObjectStore

Corruption = Literal["bad_row", "truncated_gzip", "empty"]


def make_rows(n: int, seed: int, first_id: int = 1) -> list[dict[str, Any]]:
    """``n`` partner events with ids ``first_id..first_id+n-1``."""
    rnd = random.Random(seed)
    t0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # spans the EU DST change; offsets kept explicit
    return [
        {
            "event_id": first_id + i,
            "customer_id": rnd.randint(1, 500),
            "sku": f"SKU-{rnd.randint(1, 99):03d}",
            "qty": rnd.randint(1, 5),
            "amount": f"{rnd.randint(100, 99999) / 100:.2f}",
            "event_time": (t0 + timedelta(seconds=rnd.randint(0, 86400))).isoformat(),
        }
        for i in range(n)
    ]


def expected(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as the target returns them: ``(event_id, customer_id, sku, qty, amount, event_time)``."""
    return sorted(
        (
            r["event_id"],
            r["customer_id"],
            r["sku"],
            r["qty"],
            Decimal(r["amount"]),
            datetime.fromisoformat(r["event_time"]),
        )
        for r in rows
    )


def file_bytes(rows: list[dict[str, Any]], key: str) -> bytes:
    fmt: Format = "csv" if ".csv" in key else "jsonl"
    return render(rows, fmt, compress=key.endswith(".gz"))


def drop(store: ObjectStore, bucket: str, key: str, rows: list[dict[str, Any]]) -> bytes:
    """Upload a partner file; returns its bytes."""
    data = file_bytes(rows, key)
    store.put(bucket, key, data)
    return data


def corrupt(kind: Corruption, key: str, rows: list[dict[str, Any]]) -> bytes:
    """Bytes of a broken partner file of the given kind."""
    if kind == "empty":
        return b""
    data = file_bytes(rows, key)
    if kind == "truncated_gzip":
        full = data if key.endswith(".gz") else gzip.compress(data, mtime=0)
        return full[: len(full) * 2 // 3]
    lines = data.decode().splitlines(keepends=True)
    mid = max(1, len(lines) // 2)
    bad = "not,a,valid,row\n" if ".csv" in key else '{"event_id": "x"\n'
    return "".join([*lines[:mid], bad, *lines[mid:]]).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


__all__ = ["FIELDS", "corrupt", "drop", "expected", "file_bytes", "make_rows", "sha256"]


def drop_batch(
    store: ObjectStore,
    bucket: str,
    folder: str,
    batch_id: str,
    files: dict[str, list[dict[str, Any]]],
    *,
    write_manifest: bool = True,
    lie_about: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Upload a batch folder's data files, then its ``_manifest.json`` (last: the commit marker).
    ``lie_about`` overrides manifest fields per file name (to test mismatches). Returns the manifest key."""
    from cdclab.files.manifest import MANIFEST_NAME, render_manifest

    entries = []
    for name, rows in files.items():
        data = drop(store, bucket, f"{folder}{name}", rows)
        entries.append(
            {
                "key": name,
                "size": len(data),
                "sha256": sha256(data),
                "rows": len(rows),
                **(lie_about or {}).get(name, {}),
            }
        )
    key = f"{folder}{MANIFEST_NAME}"
    if write_manifest:
        store.put(bucket, key, render_manifest(batch_id, "partner-sim", datetime.now(UTC), entries))
    return key
