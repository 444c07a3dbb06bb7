"""Shared tables created at task time stay safe when many runs start at the same moment.

Concurrent ``CREATE TABLE IF NOT EXISTS`` of one table in Postgres fails in all sessions but one with
``UniqueViolation ... pg_type_typname_nsp_index`` (seen in the lab for ``state.kafka_offsets`` when two
DAGs started together). Every ``ensure_*`` function now runs its DDL through ``cdclab.common.ddl.ensure``.

Here many threads, each with its own connection, released together by a barrier, call the ensure
functions on *fresh scratch schemas* (new names every run, so every table really is created under
contention), half of them from inside an already open transaction (the savepoint path), half from an
idle connection (the own-transaction path). All must succeed and every table must exist once.
Without the shared helper this test fails with UniqueViolation (tried: the functions as of commit
5b6d8dc, put first on PYTHONPATH)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg2
import pytest

THREADS = 12


def _race(lab: Any, work: Callable[[Any, int], None], threads: int = THREADS) -> list[BaseException]:
    """Run ``work(conn, i)`` in ``threads`` threads at once; return the exceptions they raised."""
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        conn = psycopg2.connect(lab.pg_dsn("warehouse"))
        try:
            if i % 2:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")  # a transaction is open: the DDL must join it (savepoint path)
            barrier.wait(timeout=60)
            work(conn, i)
            conn.commit()
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    return errors


@pytest.fixture
def scratch(lab, warehouse_db):
    """Two fresh schema names, created empty (so what races is the tables, as with ``state``)."""
    names = [f"ddl_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    with warehouse_db.cursor() as cur:
        for s in names:
            cur.execute(f"CREATE SCHEMA {s}")
    yield names
    with warehouse_db.cursor() as cur:
        for s in names:
            cur.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")


def _tables(warehouse_db, schema: str) -> list[str]:
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,))
        return [r[0] for r in cur.fetchall()]


def test_ensure_functions_called_by_many_runs_at_once_all_succeed(lab, warehouse_db, scratch) -> None:
    from cdclab.cdc import append
    from cdclab.delta import detection as delta
    from cdclab.files import loading
    from cdclab.lessons import antipatterns, features, selfcheck
    from cdclab.merge import aggregates
    from cdclab.ops import diagnostics, perf
    from cdclab.time import out_of_order as outoforder

    def work(conn: Any, i: int) -> None:
        for s in scratch:
            # connection-taking functions (commit themselves)
            outoforder.ensure(conn, outoforder.Tables(prefix=f"{s}.ooo", dead_letters=f"{s}.ooo_dlq"))
            aggregates.ensure(conn, aggregates.Tables(prefix=f"{s}.agg"))
            features.ensure(conn, features.Tables(prefix=f"{s}.feat"))
            perf.ensure_schema(conn, f"{s}.perf_runs")
            delta.ensure_snapshot_table(conn, f"{s}.row_hashes")
            antipatterns.ensure_source(conn, f"{s}.ap_src", "rows")
            antipatterns.ensure_rows_target(conn, f"{s}.ap_tgt")
            selfcheck.ensure_results(conn, f"{s}.selfcheck")
            # cursor-taking functions, inside the caller's transaction
            with conn.cursor() as cur:
                diagnostics.ensure_findings(cur, f"{s}.findings")
                diagnostics.ensure_ledger(cur, f"{s}.ledger")
                append.ensure_ledger(cur, f"{s}.append_ledger", {"id": "bigint", "amount": "numeric"})
                loading.ensure_target(cur, f"{s}.file_rows")
            conn.commit()

    errors = _race(lab, work)
    assert errors == [], f"{len(errors)} of {THREADS} runs failed: {[repr(e)[:200] for e in errors[:3]]}"
    for s in scratch:
        assert set(_tables(warehouse_db, s)) >= {
            "ooo_orders",
            "ooo_payments",
            "ooo_buffer",
            "agg_orders",
            "feat_orders",
            "perf_runs",
            "row_hashes",
            "ap_src",
            "ap_tgt",
            "selfcheck",
            "findings",
            "ledger",
            "append_ledger",
            "file_rows",
        }


def test_the_helper_creates_schema_table_and_index_once_under_contention(lab, warehouse_db) -> None:
    """The helper itself, on a schema that does not exist yet: schema, table and index all race."""
    from cdclab.common.ddl import ensure

    schema = f"ddl_{uuid.uuid4().hex[:10]}"
    name = f"{schema}.shared"
    try:

        def work(conn: Any, i: int) -> None:
            ensure(
                conn,
                name,
                f"CREATE TABLE IF NOT EXISTS {name} (id bigint PRIMARY KEY, at timestamptz)",
                f"CREATE INDEX IF NOT EXISTS shared_at_idx ON {name} (at)",
                f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS note text",
            )
            with conn.cursor() as cur:  # usable at once, in the caller's transaction
                cur.execute(f"INSERT INTO {name} (id, note) VALUES (%s, %s)", (i, f"run {i}"))

        errors = _race(lab, work, threads=16)
        assert errors == [], [repr(e)[:200] for e in errors[:3]]
        with warehouse_db.cursor() as cur:
            cur.execute(f"SELECT count(*), count(DISTINCT note) FROM {name}")
            assert cur.fetchone() == (16, 16)
            cur.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (schema,))
            assert [r[0] for r in cur.fetchall()] == ["shared_at_idx", "shared_pkey"]
    finally:
        with warehouse_db.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
