"""The shared warehouse tables come from infra/postgres/warehouse, applied once by migrate.sh.

``infra/postgres/initdb.sh`` (run on every start by the compose image's entrypoint and by the native
launcher) calls ``migrate.sh warehouse ...``. Here the same script runs against scratch databases of the
running lab's Postgres and against the lab's own warehouse:

- applied twice, the second run changes nothing: every versioned file is recorded once in
  ``public.schema_version`` with its sha256, and every declared table exists, owned by ``warehouse``;
- the versioned files are the only definition of the shared tables: on a database that was never
  migrated the ``ensure_*`` functions of shared tables raise ``NotMigratedError`` (saying what to run)
  and create nothing at all;
- on a migrated warehouse the ``ensure_*`` functions of shared tables run no DDL at all (they work on a
  read-only connection), which is what makes concurrent first runs safe;
- a copy of a shared table under a run's own name is created ``LIKE`` the declared table: same columns,
  defaults and constraints;
- a versioned file changed after it was applied is refused with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.unit._schema_helpers import WAREHOUSE, _versions, declared

ROOT = Path(__file__).resolve().parents[2]
MIGRATE = ROOT / "infra" / "postgres" / "migrate.sh"


@pytest.fixture(autouse=True)
def _psql() -> None:
    """migrate.sh runs psql, as the launchers do: a machine without it fails here, clearly (never a skip)."""
    if shutil.which("psql") is None:
        pytest.fail("these tests run infra/postgres/migrate.sh, which needs psql: install postgresql-client")


def _migrate(lab: Any, database: str, directory: Path = WAREHOUSE) -> subprocess.CompletedProcess[str]:
    env = lab.service_env()
    env.update(
        PGHOST=lab.host_of("postgres"),
        PGPORT=str(lab.port("postgres")),
        PGUSER="postgres",
        PGPASSWORD=lab["POSTGRES_SUPERUSER_PASSWORD"],
    )
    return subprocess.run(
        ["bash", str(MIGRATE), database, str(directory), "warehouse"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture
def scratch_db(lab: Any) -> Iterator[Any]:
    """A new empty database owned by ``warehouse`` (as init.sql makes ``warehouse``); dropped after."""
    made: list[str] = []

    def make() -> str:
        name = f"schema_{uuid.uuid4().hex[:10]}"
        su = psycopg2.connect(lab.pg_dsn("postgres", "postgres"))
        su.autocommit = True
        with su.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name} OWNER warehouse")
        su.close()
        made.append(name)
        return name

    yield make
    su = psycopg2.connect(lab.pg_dsn("postgres", "postgres"))
    su.autocommit = True
    with su.cursor() as cur:
        for name in made:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    su.close()


def _connect(lab: Any, database: str, **options: str) -> Any:
    dsn = lab.pg_dsn("warehouse").replace("dbname=warehouse", f"dbname={database}")
    if options:
        dsn += " options='" + " ".join(f"-c {k}={v}" for k, v in options.items()) + "'"
    return psycopg2.connect(dsn)


def _rows(conn: Any, query: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query)
        rows = cur.fetchall()
    conn.rollback()
    return rows


def _expected_versions() -> list[tuple[int, str, str]]:
    return [(v, n, hashlib.sha256(p.read_bytes()).hexdigest()) for v, n, p in _versions()]


def _shared_checks(target: str = "staging.app_logs") -> dict[str, Callable[[Any], None]]:
    """Every ``ensure_*`` function of a shared table, as ``fn(conn)`` (cursor-taking ones get a cursor).

    ``files.logs.ensure_tables`` also creates the DAG's own ``target`` (after the check)."""
    from cdclab.cdc import consumer
    from cdclab.common import ddl
    from cdclab.delta import detection as delta
    from cdclab.files import logs
    from cdclab.files import state as files_state
    from cdclab.lessons import opsdocs, strategy
    from cdclab.ops import diagnostics, health, perf, recovery
    from cdclab.state import backup as statebackup
    from cdclab.state import watermarks as state
    from cdclab.time import arrivals

    def on_cursor(fn: Callable[..., None], *args: Any) -> Callable[[Any], None]:
        def run(conn: Any) -> None:
            with conn.cursor() as cur:
                fn(cur, *args)
            conn.commit()

        return run

    return {
        "watermarks.ensure_schema": state.ensure_schema,
        "strategy.ensure_schema": strategy.ensure_schema,
        "backup.ensure_schema": statebackup.ensure_schema,
        "perf.ensure_schema": perf.ensure_schema,
        "opsdocs.ensure_schema": opsdocs.ensure_schema,
        "health.ensure_schema": health.ensure_schema,
        "recovery.ensure_schema": recovery.ensure_schema,
        "detection.ensure_snapshot_table": delta.ensure_snapshot_table,
        "diagnostics.ensure_ledger": on_cursor(diagnostics.ensure_ledger),
        "consumer.ensure_schema": on_cursor(consumer.ensure_schema),
        "files.state.ensure_tables": on_cursor(files_state.ensure_tables),
        "arrivals.ensure_ledger": on_cursor(arrivals.ensure_ledger),
        "arrivals.ensure_late_log": on_cursor(arrivals.ensure_late_log),
        # lessons.replication checks these two on the lab's warehouse connection (71_09_01)
        "replication snapshots": on_cursor(ddl.require, "state.replication_snapshots"),
        "replication checks": on_cursor(ddl.require, "state.replication_checks"),
        "files.logs.ensure_tables": on_cursor(logs.ensure_tables, target),
    }


CATALOG = """
SELECT n.nspname, coalesce(c.relname, '') FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1, 2
"""

COLUMNS = """
SELECT column_name, data_type, column_default, is_nullable FROM information_schema.columns
WHERE table_schema || '.' || table_name = %s ORDER BY ordinal_position
"""
CONSTRAINTS = (
    "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass ORDER BY 1, 2"
)


def test_applying_twice_records_every_version_once_and_creates_every_shared_table(lab, scratch_db) -> None:
    db = scratch_db()
    first = _migrate(lab, db)
    assert first.returncode == 0, first.stderr
    conn = _connect(lab, db)
    recorded = _rows(conn, "SELECT version, name, sha256, applied_at FROM public.schema_version ORDER BY 1")
    assert [r[:3] for r in recorded] == _expected_versions()

    second = _migrate(lab, db)
    assert second.returncode == 0, second.stderr
    assert "applied" not in second.stdout  # nothing left to apply
    assert (
        _rows(conn, "SELECT version, name, sha256, applied_at FROM public.schema_version ORDER BY 1")
        == recorded
    )

    tables = declared()
    owners = dict(
        _rows(
            conn,
            "SELECT schemaname || '.' || tablename, tableowner FROM pg_tables "
            "UNION ALL SELECT schemaname || '.' || viewname, viewowner FROM pg_views",
        )
    )
    assert {t: owners.get(t) for t in tables} == {t: "warehouse" for t in tables}
    conn.close()


def test_on_a_database_never_migrated_the_shared_ensure_functions_raise_and_create_nothing(
    lab, scratch_db
) -> None:
    from cdclab.common.ddl import NotMigratedError
    from cdclab.ops import perf

    db = scratch_db()
    conn = _connect(lab, db)
    before = _rows(conn, CATALOG)
    checks = _shared_checks()
    checks["perf.ensure_schema (own table)"] = lambda c: perf.ensure_schema(c, "public.my_perf_runs")
    raised = {}
    for what, check in checks.items():
        with pytest.raises(NotMigratedError) as exc:
            check(conn)
        conn.rollback()
        raised[what] = str(exc.value)
    for what, message in raised.items():
        assert "is declared by version" in message, what
        assert "no public.schema_version" in message, what
        assert "infra/postgres/migrate.sh" in message and "make up" in message, what
    # not a schema, not a table, not the DAG's own target (logs.ensure_tables checks before it creates)
    assert _rows(conn, CATALOG) == before
    conn.close()


def test_on_a_migrated_warehouse_the_shared_ensure_functions_run_no_ddl(lab, scratch_db) -> None:
    db = scratch_db()
    assert _migrate(lab, db).returncode == 0
    # DDL fails on a read-only connection even when IF NOT EXISTS would skip: success proves none ran
    readonly = _connect(lab, db, default_transaction_read_only="on")
    checks = _shared_checks()
    del checks["files.logs.ensure_tables"]  # it creates the DAG's own target (checked in the next test)
    for check in checks.values():
        check(readonly)
    readonly.close()


def test_own_copies_of_shared_tables_are_created_like_the_declared_ones(lab, scratch_db) -> None:
    from cdclab.delta import detection as delta
    from cdclab.files import logs
    from cdclab.ops import diagnostics, perf

    db = scratch_db()
    assert _migrate(lab, db).returncode == 0
    conn = _connect(lab, db)
    with conn.cursor() as cur:
        cur.execute("CREATE SCHEMA copies")
    conn.commit()
    perf.ensure_schema(conn, "copies.perf_runs")
    delta.ensure_snapshot_table(conn, "copies.row_hashes")
    with conn.cursor() as cur:
        diagnostics.ensure_ledger(cur, "copies.ledger")
        logs.ensure_tables(cur, "copies.app_logs")
    conn.commit()
    for copy, declared_as in (
        ("copies.perf_runs", "state.perf_runs"),
        ("copies.row_hashes", "state.row_hashes"),
        ("copies.ledger", "state.processed_intervals"),
    ):
        for query in (COLUMNS, CONSTRAINTS):
            with conn.cursor() as cur:
                cur.execute(query, (declared_as,))
                expected = cur.fetchall()
                cur.execute(query, (copy,))
                got = cur.fetchall()
            conn.rollback()
            assert expected, f"{declared_as}: {query}"
            assert got == expected, copy
    assert _rows(conn, "SELECT to_regclass('copies.app_logs') IS NOT NULL") == [(True,)]
    conn.close()


def test_a_changed_version_is_refused(lab, scratch_db, tmp_path) -> None:
    db = scratch_db()
    assert _migrate(lab, db).returncode == 0
    for path in WAREHOUSE.glob("V*.sql"):
        shutil.copy(path, tmp_path / path.name)
    first = sorted(tmp_path.glob("V*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited after it was applied\n")
    out = _migrate(lab, db, tmp_path)
    assert out.returncode != 0
    assert "a version never changes once applied" in out.stderr


def test_the_running_labs_warehouse_is_migrated_and_stays_so(lab, warehouse_db) -> None:
    """The lab's own warehouse: migrate.sh (what `make up` runs) is a no-op the second time."""
    for _ in range(2):
        out = _migrate(lab, "warehouse")
        assert out.returncode == 0, out.stderr
    rows = _rows(warehouse_db, "SELECT version, name, sha256 FROM public.schema_version ORDER BY 1")
    assert rows == _expected_versions()
    missing = [t for t in declared() if _rows(warehouse_db, f"SELECT to_regclass('{t}')")[0][0] is None]
    assert missing == []
