"""Shared pieces of the kill drills: a source table, a writer that survives a database restart, a
consuming process to SIGKILL, and the moment a batch transaction is open in the warehouse."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg2
from psycopg2 import sql

from cdclab.cdc.connect import ConnectClient, ConnectError
from cdclab.cdc.inspect import read_topic
from cdclab.lab.native import connector_state


def make_source_table(shop_db: Any, table: str) -> None:
    """A keyed table in the shop (captured by the lab's connector) with full row images."""
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TABLE public.{t} (id bigint PRIMARY KEY, amount numeric(12,2) NOT NULL, note text)"
            ).format(t=t)
        )
        cur.execute(sql.SQL("ALTER TABLE public.{t} REPLICA IDENTITY FULL").format(t=t))


def drop_tables(lab: Any, table: str) -> None:
    for database, schema in (("shop", "public"), ("warehouse", "core")):
        conn = psycopg2.connect(lab.pg_dsn(database))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
            )
        conn.close()


def insert_batches(lab: Any, table: str, first: int, batches: int, per_batch: int) -> int:
    """Insert ``batches`` transactions of ``per_batch`` rows; returns the rows written."""
    conn = psycopg2.connect(lab.pg_dsn("shop"))
    t = sql.Identifier(table)
    try:
        for b in range(batches):
            start = first + b * per_batch
            with conn, conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO public.{t} (id, amount, note) "
                        "SELECT g, mod(g, 1000) + 0.25, repeat('x', 40) FROM generate_series(%s, %s) g"
                    ).format(t=t),
                    (start, start + per_batch - 1),
                )
    finally:
        conn.close()
    return batches * per_batch


class Writer(threading.Thread):
    """Inserts row ``i`` then updates row ``i - 1``, one transaction each, for ids ``first..last``.

    A failed statement (the database was killed) is retried on a new connection until it commits, so
    the source ends with every id exactly once; ``failures`` counts the errors it rode out."""

    def __init__(self, lab: Any, table: str, first: int, last: int, pause: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.lab, self.table, self.first, self.last, self.pause = lab, table, first, last, pause
        self.failures = 0
        self.written = 0
        self.error: BaseException | None = None

    def _apply(self, conn: Any, i: int) -> None:
        t = sql.Identifier(self.table)
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO public.{t} (id, amount, note) VALUES (%s, %s, 'w') ON CONFLICT (id) DO NOTHING"
                ).format(t=t),
                (i, i % 1000 + 0.5),
            )
            cur.execute(
                sql.SQL("UPDATE public.{t} SET note = note || '+' WHERE id = %s").format(t=t), (i - 1,)
            )

    def run(self) -> None:
        conn = None
        deadline = time.monotonic() + 600
        i = self.first
        try:
            while i <= self.last:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"writer stuck at id {i}")
                try:
                    if conn is None or conn.closed:
                        conn = psycopg2.connect(self.lab.pg_dsn("shop"), connect_timeout=3)
                    self._apply(conn, i)
                    self.written += 1
                    i += 1
                    time.sleep(self.pause)
                except psycopg2.Error:
                    self.failures += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.5)
        except BaseException as exc:  # surfaced by the test after join()
            self.error = exc
        finally:
            if conn is not None:
                conn.close()


def start_replicate(
    table: str, group: str, batch_size: int, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """``replicate`` in its own process (what an Airflow task is), so it can be SIGKILLed."""
    code = (
        "import json, sys; from cdclab.cdc.pipeline import replicate; "
        f"print(json.dumps(replicate(['public.{table}'], group='{group}', target_schema='core', "
        f"batch_size={batch_size}, max_seconds=240), default=str))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def open_batch_transaction(lab: Any, table: str) -> dict[str, Any] | None:
    """The warehouse session of a batch transaction on ``table`` that has written rows (``backend_xid``
    set) and now waits for a lock, if there is one right now."""
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pid, state, backend_xid::text, now() - xact_start, left(query, 200) FROM pg_stat_activity "
                "WHERE datname = 'warehouse' AND backend_xid IS NOT NULL AND pid <> pg_backend_pid() "
                "AND wait_event_type = 'Lock' AND query ILIKE %s",
                (f"%{table}%",),
            )
            row = cur.fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    return {"pid": row[0], "state": row[1], "xid": row[2], "open_for": str(row[3]), "query": row[4]}


@contextlib.contextmanager
def offsets_held(lab: Any, group: str, topic: str) -> Iterator[None]:
    """Hold a row lock on ``group``'s stored offset of ``topic`` (which must exist): a consumer of the
    group then writes its next batch's rows and waits, inside its batch transaction, to advance the
    offset. That is the moment to kill it, reached every time however fast the consumer is."""
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT next_offset FROM state.kafka_offsets WHERE consumer_group = %s AND topic = %s "
                "FOR UPDATE",
                (group, topic),
            )
            if cur.fetchone() is None:
                raise AssertionError(f"no stored offset of {group} on {topic} to hold")
        yield
    finally:
        conn.rollback()
        conn.close()


def kill_inside_a_batch(lab: Any, proc: subprocess.Popen, table: str, timeout: float = 180) -> dict[str, Any]:
    """SIGKILL ``proc`` once its batch transaction has written rows and waits on a lock (see
    :func:`offsets_held`); returns what was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the consumer ended before a batch transaction was seen:\n{proc.stdout.read()}"
            )
        seen = open_batch_transaction(lab, table)
        if seen is not None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            return seen
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no batch transaction on core.{table} within {timeout}s")


def count_rows(lab: Any, database: str, qualified: str) -> tuple[int, int]:
    schema, table = qualified.split(".", 1)
    conn = psycopg2.connect(lab.pg_dsn(database))
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT count(*), count(DISTINCT id) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(table)
                )
            )
            total, distinct = cur.fetchone()
            return int(total), int(distinct)
    except psycopg2.errors.UndefinedTable:
        return 0, 0
    finally:
        conn.close()


def duplicates_by_key_and_lsn(lab: Any, topic: str) -> int:
    """Change events that Debezium wrote to ``topic`` more than once (same key, same source LSN)."""
    seen: Counter[tuple[Any, Any]] = Counter()
    for m in read_topic(lab.kafka_bootstrap, topic):
        if m.value():
            seen[(m.key(), json.loads(m.value())["source"]["lsn"])] += 1
    return sum(c - 1 for c in seen.values() if c > 1)


def ensure_connector_running(lab) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state, tasks, _ = connector_state(lab, "shop-postgres-source")
        if state == "RUNNING" and tasks and all(t == "RUNNING" for t in tasks):
            return
        if "FAILED" in tasks or state == "FAILED":
            with contextlib.suppress(ConnectError):  # e.g. 409 during a rebalance: the loop tries again
                ConnectClient(lab.connect_url).restart(
                    "shop-postgres-source", include_tasks=True, only_failed=True
                )
        time.sleep(0.5)
    raise AssertionError(f"connector not RUNNING again: {connector_state(lab, 'shop-postgres-source')}")
