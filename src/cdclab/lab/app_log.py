"""The lab's application log: the workload service writes one line per shop operation it applies.

71_09_02_log_processing reads ``<lab state>/applogs/71_09_02_log_processing/app.log`` (the folder is
the Airflow connection ``applogs``) incrementally; on a fresh lab nothing else writes there, so the
workload service (:mod:`cdclab.lab.shop_workload`) is the "application": each applied operation adds a
line ``<ISO time> <LEVEL> req=<id> <message>`` (the format :func:`cdclab.files.logs.parse_line` reads),
and the file is rotated the way logrotate's default does (rename ``app.log`` -> ``app.log.1``, keep
:data:`KEEP`) once it passes :data:`ROTATE_BYTES`, so the lesson's rotation handling has real work.
Lines are only appended whole (one ``write`` per batch, each ending in a newline)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

PIPELINE = "71_09_02_log_processing"
ROTATE_BYTES = 256 * 1024
KEEP = 5


def log_path(state: Path) -> Path:
    return state / "applogs" / PIPELINE / "app.log"


class AppLog:
    def __init__(self, path: Path, rotate_bytes: int = ROTATE_BYTES, keep: int = KEEP) -> None:
        self.path, self.rotate_bytes, self.keep = path, rotate_bytes, keep
        self.seq = 0
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, operations: int, what: str = "shop operation applied") -> int:
        """Append one line per operation; rotate first when the live file is over the size limit."""
        if operations <= 0:
            return 0
        if self.path.exists() and self.path.stat().st_size >= self.rotate_bytes:
            self.rotate()
        now = datetime.now(UTC)
        stamp = now.isoformat(timespec="milliseconds")
        lines = []
        for _ in range(operations):
            self.seq += 1
            level = "WARN" if self.seq % 7 == 0 else "INFO"
            lines.append(f"{stamp} {level} req=w{int(now.timestamp())}-{self.seq} {what} seq={self.seq}\n")
        with self.path.open("a") as f:
            f.write("".join(lines))
        return operations

    def rotate(self) -> None:
        """logrotate's rename mode: app.log.N-1 -> app.log.N (the oldest dropped), app.log -> app.log.1."""
        for i in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                if i == self.keep:
                    older.unlink()
                else:
                    os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self.path.touch()
