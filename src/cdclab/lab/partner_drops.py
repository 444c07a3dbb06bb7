"""Partner files for the 71.4 file lessons, dropped into MinIO by the lab's workload service.

The five 71.4 DAGs wait for files under ``landing/<dag_id>/`` (their default ``params.prefix``); on a
fresh lab nothing writes there, so a run triggered from the UI would find nothing. The workload service
(:mod:`cdclab.lab.shop_workload`) makes *drop* ``n`` once when it starts and then every
``--files-every`` seconds (:data:`DEFAULT_EVERY`; not while paused):

- ``71_04_01_file_detection/``, ``71_04_03_streaming/``, ``71_04_04_chunking/`` and ``71_04_05_archive/``
  get ``partner-<n>.csv``: :data:`ROWS` partner events (:func:`cdclab.files.producer.make_rows`, CSV as
  :mod:`cdclab.files.records` renders it, the format the lessons load);
- ``71_04_02_manifest/`` gets a batch folder ``batch-<n>/`` with ``part-0001.csv`` and, written last
  (the commit marker), ``_manifest.json`` naming it with its size, sha256 and row count.

A drop's content depends only on ``n`` (rows from ``make_rows(ROWS, seed=n, first_id=...)``, event ids
unique per pipeline and ``n``, the manifest's ``created_at`` fixed by ``n``). An existing key is never
overwritten: a drop repeated after a crash writes only what is missing. ``lab.workload.files_dropped``
counts the drops, so a restart goes on with the next ``n``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cdclab.files import producer
from cdclab.files.manifest import MANIFEST_NAME, render_manifest

DEFAULT_EVERY = 120.0  # seconds between two drops
ROWS = 20  # partner events per file
BUCKET = "landing"
FILE_PIPELINES = (
    "71_04_01_file_detection",
    "71_04_03_streaming",
    "71_04_04_chunking",
    "71_04_05_archive",
)
MANIFEST_PIPELINE = "71_04_02_manifest"
ID_BLOCK = 100_000_000  # event ids: pipeline i (0..4) uses i * ID_BLOCK + n * ROWS + 1 ...
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # the manifests' created_at: EPOCH + n minutes


def every_from_env(default: float = DEFAULT_EVERY) -> float:
    return float(os.environ.get("CDCLAB_WORKLOAD_FILES_EVERY", default))


def drop_objects(n: int, root: str = "") -> list[tuple[str, bytes]]:
    """Drop ``n``'s objects, ``(key, bytes)`` in the order they are written (a manifest after its file);
    keys under ``root`` (``""`` for the lab: the DAGs' default prefixes)."""
    if n < 0:
        raise ValueError(f"drop number must be >= 0, got {n}")
    out: list[tuple[str, bytes]] = []
    pipelines = (*FILE_PIPELINES, MANIFEST_PIPELINE)
    for i, pipeline in enumerate(pipelines):
        rows = producer.make_rows(ROWS, seed=n * len(pipelines) + i, first_id=i * ID_BLOCK + n * ROWS + 1)
        if pipeline != MANIFEST_PIPELINE:
            key = f"{root}{pipeline}/partner-{n:06d}.csv"
            out.append((key, producer.file_bytes(rows, key)))
            continue
        folder, name = f"{root}{pipeline}/batch-{n:06d}/", "part-0001.csv"
        data = producer.file_bytes(rows, name)
        entry = {"key": name, "size": len(data), "sha256": producer.sha256(data), "rows": len(rows)}
        manifest = render_manifest(f"batch-{n:06d}", "cdclab-workload", EPOCH + timedelta(minutes=n), [entry])
        out += [(f"{folder}{name}", data), (f"{folder}{MANIFEST_NAME}", manifest)]
    return out


def s3_client() -> Any:
    """A boto3 S3 client for the lab's MinIO (address and login from the lab's configuration)."""
    from botocore.config import Config

    from cdclab.lab.config import LabConfig

    # short: a MinIO that is down must not hold up the shop's changes (the next drop tries again)
    return LabConfig.load().s3_client(Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2}))


def _exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


@dataclass
class PartnerDrops:
    """Writes drop ``n`` (:func:`drop_objects`) to ``bucket``; ``client`` makes the S3 client (lazily)."""

    bucket: str = BUCKET
    root: str = ""
    client: Callable[[], Any] = s3_client
    _s3: Any = field(default=None, repr=False)

    def write(self, n: int) -> list[str]:
        """Write drop ``n``'s objects that are not there yet; returns the keys written."""
        if self._s3 is None:
            self._s3 = self.client()
        written = []
        for key, data in drop_objects(n, self.root):
            if not _exists(self._s3, self.bucket, key):
                self._s3.put_object(Bucket=self.bucket, Key=key, Body=data)
                written.append(key)
        return written

    def drop_next(self, conn: Any, name: str) -> int | None:
        """Write the runner's next drop and count it in ``lab.workload.files_dropped`` (commits);
        returns its number (``None`` when another process counted it meanwhile)."""
        with conn.cursor() as cur:
            cur.execute("SELECT files_dropped FROM lab.workload WHERE name = %s", (name,))
            row = cur.fetchone()
        conn.rollback()
        if row is None:
            raise RuntimeError(f"no lab.workload row {name!r}")
        n = int(row[0])
        self.write(n)
        with conn.cursor() as cur:
            cur.execute(
                "UPDATE lab.workload SET files_dropped = %s WHERE name = %s AND files_dropped = %s",
                (n + 1, name, n),
            )
            counted = cur.rowcount == 1
        conn.commit()
        return n if counted else None
