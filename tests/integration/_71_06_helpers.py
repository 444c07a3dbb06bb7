"""Shared helpers of the 71.6 anti-pattern tests: hours of a fixed day, test-owned tables, reads."""

from __future__ import annotations

from typing import Any

import pendulum

from cdclab.lessons import antipatterns as ap


def at(h: int, minute: int = 0) -> pendulum.DateTime:
    """An instant on the tests' fixed day (2026-03-01, UTC)."""
    return pendulum.datetime(2026, 3, 1, h, minute, tz="UTC")


def hour(h: int) -> pendulum.DateTime:
    """The logical date of the hourly run whose data interval is ``[at(h), at(h + 1))``: with
    ``CronDataIntervalTimetable`` a manual run's interval is the one that ends at its logical date."""
    return at(h + 1)


def create(conn: Any, table: str, shape: str) -> None:
    ap.ensure_source(conn, table, shape)


def insert(conn: Any, table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    marks = ", ".join(["%s"] * len(rows[0]))
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def fetch(conn: Any, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def drop(conn: Any, *tables: str) -> None:
    with conn.cursor() as cur:
        for t in tables:
            cur.execute(f"DROP TABLE IF EXISTS {t} CASCADE")


def xcom(dr: Any, task_id: str) -> Any:
    from tests.integration._71_01_helpers import xcom as _xcom

    return _xcom(dr, task_id)


HOURS = (1, 2, 3, 4)


PER_HOUR = 5


def deliveries() -> list[tuple]:
    """Per hour: five new events at minutes 10..50, and two re-deliveries 20-40 minutes after the first
    delivery (one of them crossing into the next hour)."""
    out, seq = [], 0
    for h in HOURS:
        for k in range(PER_HOUR):
            seq += 1
            eid = f"e{h}-{k}"
            out.append((seq, eid, at(h, 10 + 10 * k), at(h, 10 + 10 * k), f"payload {eid}"))
        if (
            h > 1
        ):  # re-deliveries of the previous hour's last event (first seen at minute 50) and of this hour's
            seq += 1
            out.append((seq, f"e{h - 1}-4", at(h - 1, 50), at(h, 15), f"payload e{h - 1}-4"))
        seq += 1
        out.append((seq, f"e{h}-0", at(h, 10), at(h, 40), f"payload e{h}-0"))
    return out
