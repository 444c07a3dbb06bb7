"""Incremental reading of rotating application logs: per-file state, rotation handling, gap recovery.

Vocabulary:
- *log*: ``<dir>/<base>`` (``app.log``) that an application appends lines to; *generations* are the
  rotated copies ``<base>.1`` (newest) ... ``<base>.N`` (oldest) plus the live file.
- *rotation by rename* (logrotate default): ``app.log -> app.log.1`` (same inode), a new ``app.log``.
- *rotation by copytruncate*: ``app.log`` is copied to ``app.log.1`` (new inode, same content) and then
  truncated in place (same inode, size 0). Lines written between copy and truncate are lost by design.
- *fingerprint*: sha256 of a generation's first line. It identifies a generation across both kinds of
  rotation (the inode survives a rename but not a copy; the content survives both).
- *cursor* (``state.log_cursor``): per (pipeline, log): fingerprint, inode and byte offset just past the
  last complete line read. Partial last lines are left for the next run.
- *gap*: the generation holding the cursor rotated out of retention before it was read (a missed
  rotation); the unread tail is lost. Recovery reads every generation still present from its start and
  records the loss in ``dlq.log_gap`` (lost fingerprint, offset, how many bytes were known) — never silent.
- *missed rotation*: several rotations between two runs; recovered by reading the cursor's generation
  from the cursor, then every newer generation in full.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.common.ddl import require

TARGET_DDL = """
CREATE TABLE IF NOT EXISTS {target} (
    source_fingerprint text        NOT NULL,
    source_inode       bigint      NOT NULL,
    source_file        text        NOT NULL,
    source_offset      bigint      NOT NULL,
    ts                 timestamptz NOT NULL,
    level              text        NOT NULL,
    request_id         text        NOT NULL,
    message            text        NOT NULL,
    loaded_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source_fingerprint, source_offset)
)
"""

LINE = re.compile(r"^(?P<ts>\S+) (?P<level>[A-Z]+) req=(?P<req>\S+) (?P<msg>.*)$")


@dataclass(frozen=True)
class Generation:
    path: Path
    inode: int
    size: int
    fingerprint: str | None  # None while the file has no complete first line


@dataclass(frozen=True)
class Cursor:
    fingerprint: str
    inode: int
    file_name: str
    offset: int


@dataclass(frozen=True)
class Line:
    fingerprint: str
    inode: int
    file_name: str
    offset: int
    text: str


@dataclass(frozen=True)
class Gap:
    lost: Cursor
    detail: str


def fingerprint_of(path: Path) -> str | None:
    with path.open("rb") as f:
        first = f.readline(64 * 1024)
    return hashlib.sha256(first).hexdigest() if first.endswith(b"\n") else None


def generations(log: Path) -> list[Generation]:
    """Existing generations, oldest first (``app.log.N`` ... ``app.log.1``, ``app.log``)."""
    rotated = []
    for p in log.parent.glob(log.name + ".*"):
        suffix = p.name[len(log.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    paths = [p for _, p in sorted(rotated, reverse=True)] + ([log] if log.exists() else [])
    out = []
    for p in paths:
        st = p.stat()
        out.append(Generation(p, st.st_ino, st.st_size, fingerprint_of(p)))
    return out


def _complete_lines(g: Generation, start: int, fp: str) -> tuple[list[Line], int]:
    with g.path.open("rb") as f:
        f.seek(start)
        data = f.read()
    end = data.rfind(b"\n") + 1  # only complete lines; a partial tail waits for the next run
    lines, pos = [], 0
    while pos < end:
        nl = data.index(b"\n", pos)
        text = data[pos:nl].decode("utf-8", "replace").rstrip("\r")
        if text.strip():
            lines.append(Line(fp, g.inode, g.path.name, start + pos, text))
        pos = nl + 1
    return lines, start + end


def collect(log: Path, cursor: Cursor | None) -> tuple[list[Line], Cursor | None, Gap | None]:
    """New complete lines since ``cursor`` across rotations, the advanced cursor, and a gap if the
    cursor's generation is gone."""
    gens = [g for g in generations(log) if g.fingerprint is not None]
    start_index, start_offset, gap = 0, 0, None
    if cursor is not None:
        match = [i for i, g in enumerate(gens) if g.fingerprint == cursor.fingerprint]
        if match:
            start_index = match[-1]
            start_offset = cursor.offset if gens[start_index].size >= cursor.offset else 0
        else:
            gap = Gap(
                cursor,
                f"generation {cursor.file_name} (inode {cursor.inode}) rotated away before "
                f"it was read past byte {cursor.offset}; its unread tail is lost",
            )
    lines: list[Line] = []
    new_cursor = cursor
    for i, g in enumerate(gens[start_index:], start=start_index):
        assert g.fingerprint is not None
        got, end = _complete_lines(g, start_offset if i == start_index else 0, g.fingerprint)
        lines += got
        new_cursor = Cursor(g.fingerprint, g.inode, g.path.name, end)
    return lines, new_cursor, gap


def parse_line(text: str) -> tuple[datetime, str, str, str]:
    m = LINE.match(text)
    if not m:
        raise ValueError("does not match '<iso-ts> <LEVEL> req=<id> <message>'")
    ts = datetime.fromisoformat(m["ts"])
    if ts.tzinfo is None:
        raise ValueError("timestamp has no UTC offset")
    return ts, m["level"], m["req"], m["msg"]


# ---- warehouse ---------------------------------------------------------------------------------------
def ensure_tables(cur: Any, target: str) -> None:
    """Check the shared cursor and dead-letter tables (declared by infra/postgres/warehouse, V002) and create
    the DAG's own ``target`` if missing."""
    require(cur, "state.log_cursor")
    ensure_ddl(cur, target, sql.SQL(TARGET_DDL).format(target=ident(target)))


def get_cursor(cur: Any, pipeline: str, log: Path) -> Cursor | None:
    cur.execute(
        "SELECT fingerprint, inode, file_name, byte_offset FROM state.log_cursor"
        " WHERE pipeline = %s AND log_path = %s FOR UPDATE",
        (pipeline, str(log)),
    )
    row = cur.fetchone()
    return Cursor(*row) if row else None


def ingest(cur: Any, pipeline: str, log: Path, target: str) -> dict[str, Any]:
    """One incremental step in ``cur``'s transaction: lines + cursor (+ gap, bad lines) commit together."""
    cursor = get_cursor(cur, pipeline, log)
    lines, new_cursor, gap = collect(log, cursor)
    good, bad = [], []
    for ln in lines:
        try:
            good.append((ln.fingerprint, ln.inode, ln.file_name, ln.offset, *parse_line(ln.text)))
        except ValueError as exc:
            bad.append((pipeline, ln.fingerprint, ln.offset, ln.text, str(exc)))
    if good:
        execute_values(
            cur,
            sql.SQL(
                "INSERT INTO {t} (source_fingerprint, source_inode, source_file, source_offset, ts, level,"
                " request_id, message) VALUES %s ON CONFLICT DO NOTHING"
            )
            .format(t=ident(target))
            .as_string(cur),
            good,
        )
    if bad:
        execute_values(
            cur,
            "INSERT INTO dlq.log_bad_lines (pipeline, fingerprint, byte_offset, line, reason)"
            " VALUES %s ON CONFLICT DO NOTHING",
            bad,
        )
    if gap is not None:
        cur.execute(
            "INSERT INTO dlq.log_gap (pipeline, log_path, lost_fingerprint, lost_inode, lost_from_offset,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s)",
            (pipeline, str(log), gap.lost.fingerprint, gap.lost.inode, gap.lost.offset, gap.detail),
        )
    if new_cursor is not None and new_cursor != cursor:
        cur.execute(
            "INSERT INTO state.log_cursor (pipeline, log_path, fingerprint, inode, file_name, byte_offset)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (pipeline, log_path) DO UPDATE SET"
            " fingerprint = EXCLUDED.fingerprint, inode = EXCLUDED.inode, file_name = EXCLUDED.file_name,"
            " byte_offset = EXCLUDED.byte_offset, updated_at = clock_timestamp()",
            (
                pipeline,
                str(log),
                new_cursor.fingerprint,
                new_cursor.inode,
                new_cursor.file_name,
                new_cursor.offset,
            ),
        )
    return {
        "lines": len(good),
        "bad_lines": len(bad),
        "gap": gap.detail if gap else None,
        "cursor": None if new_cursor is None else f"{new_cursor.file_name}@{new_cursor.offset}",
    }


# ---- the application simulator ------------------------------------------------------------------------
class LogWriter:
    """An application writing ``<dir>/<base>`` with numbered lines, and logrotate's two rotation modes."""

    def __init__(self, log: Path, start: datetime | None = None) -> None:
        self.log = log
        self.seq = 0
        self.t0 = start or datetime(2026, 3, 29, 0, 59, 58, tzinfo=UTC)
        log.parent.mkdir(parents=True, exist_ok=True)

    def line(self, seq: int) -> str:
        ts = (self.t0 + timedelta(milliseconds=250 * seq)).isoformat(timespec="milliseconds")
        return f"{ts} {'WARN' if seq % 7 == 0 else 'INFO'} req=r{seq:05d} GET /orders/{seq} 200 seq={seq}"

    def write(self, n: int, partial_tail: str = "") -> list[int]:
        seqs = list(range(self.seq + 1, self.seq + n + 1))
        with self.log.open("a") as f:
            f.write("".join(self.line(s) + "\n" for s in seqs) + partial_tail)
        self.seq += n
        return seqs

    def _shift(self, keep: int) -> None:
        for i in range(keep, 0, -1):
            src = self.log.with_name(f"{self.log.name}.{i}")
            if src.exists():
                if i == keep:
                    src.unlink()
                else:
                    os.replace(src, self.log.with_name(f"{self.log.name}.{i + 1}"))

    def rotate_rename(self, keep: int = 5) -> None:
        self._shift(keep)
        os.replace(self.log, self.log.with_name(self.log.name + ".1"))
        self.log.touch()

    def rotate_copytruncate(self, keep: int = 5) -> None:
        self._shift(keep)
        self.log.with_name(self.log.name + ".1").write_bytes(self.log.read_bytes())
        with self.log.open("r+") as f:
            f.truncate(0)
