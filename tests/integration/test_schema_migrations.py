"""The shared warehouse tables come from infra/postgres/warehouse, applied once by migrate.sh.

``infra/postgres/initdb.sh`` (run on every start by the compose image's entrypoint and by the native
launcher) calls ``migrate.sh warehouse ...``. Here the same script runs against scratch databases of the
running lab's Postgres and against the lab's own warehouse:

- applied twice, the second run changes nothing: every versioned file is recorded once in
  ``public.schema_version`` with its sha256, and every declared table exists, owned by ``warehouse``;
- the tables it creates are exactly what the library's ``ensure_*`` functions create (columns,
  defaults, indexes), so the task-time fallback and the versioned files cannot drift apart;
- on a migrated warehouse the ``ensure_*`` functions of shared tables run no DDL at all (they work on a
  read-only connection), which is what makes concurrent first runs safe;
- a versioned file changed after it was applied is refused with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
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


# shared tables that only the versioned files define (newer than the library's ensure_* functions)
SQL_ONLY = {("marts", "alerts"), ("dlq", "orders_late_events"), ("state", "orders_arrivals_71_02_03")}

SHAPE = """
SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.column_default, c.is_nullable
FROM information_schema.columns c
WHERE c.table_schema IN ('state', 'dlq', 'marts')
ORDER BY 1, 2, c.ordinal_position
"""
INDEXES = "SELECT schemaname, tablename, indexdef FROM pg_indexes WHERE schemaname IN ('state', 'dlq', 'marts') ORDER BY 1, 2, 3"


def _create_with_the_library(conn: Any) -> None:
    """Every shared table the way a task creates it when the warehouse was never migrated."""
    from cdclab.cdc import consumer, replication
    from cdclab.common.ddl import ensure
    from cdclab.delta import detection as delta
    from cdclab.files import logs
    from cdclab.files import state as files_state
    from cdclab.lessons import opsdocs, strategy
    from cdclab.ops import diagnostics, health, perf, recovery
    from cdclab.state import backup as statebackup
    from cdclab.state import watermarks as state

    for fn in (state, strategy, statebackup, perf, opsdocs, health, recovery):
        fn.ensure_schema(conn)
    delta.ensure_snapshot_table(conn)
    with conn.cursor() as cur:
        diagnostics.ensure_ledger(cur)
        consumer.ensure_schema(cur)
        files_state.ensure_tables(cur)
        logs.ensure_tables(cur, "staging.app_logs")
        ensure(cur, "state.replication_snapshots", replication.SNAPSHOTS_DDL)
        ensure(cur, "state.replication_checks", replication.CHECKS_DDL)
        cur.execute("DROP TABLE staging.app_logs")  # a DAG's own target, not a shared table
    conn.commit()


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


def test_the_versioned_files_create_exactly_what_the_library_creates(lab, scratch_db) -> None:
    migrated, by_library = scratch_db(), scratch_db()
    assert _migrate(lab, migrated).returncode == 0
    conn = _connect(lab, by_library)
    _create_with_the_library(conn)
    other = _connect(lab, migrated)
    by_files = _rows(other, SHAPE)
    library_tables = {(r[0], r[1]) for r in _rows(conn, SHAPE)}
    # tables added since the versioned files became the one schema exist only there (no task creates them)
    only_in_files = {(r[0], r[1]) for r in by_files} - library_tables
    assert only_in_files == SQL_ONLY
    assert _rows(conn, SHAPE) == [r for r in by_files if (r[0], r[1]) in library_tables]
    assert _rows(conn, INDEXES) == [r for r in _rows(other, INDEXES) if (r[0], r[1]) in library_tables]
    conn.close()
    other.close()


def test_on_a_migrated_warehouse_the_shared_ensure_functions_run_no_ddl(lab, scratch_db) -> None:
    db = scratch_db()
    assert _migrate(lab, db).returncode == 0
    # DDL fails on a read-only connection even when IF NOT EXISTS would skip: success proves none ran
    readonly = _connect(lab, db, default_transaction_read_only="on")
    _create_with_the_library_readonly(readonly)
    readonly.close()
    # ... and without the versioned files, the same calls do need DDL (the fallback path)
    bare = scratch_db()
    readonly = _connect(lab, bare, default_transaction_read_only="on")
    from cdclab.state import watermarks as state

    with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
        state.ensure_schema(readonly)
    readonly.close()


def _create_with_the_library_readonly(conn: Any) -> None:
    from cdclab.cdc import consumer
    from cdclab.delta import detection as delta
    from cdclab.files import state as files_state
    from cdclab.lessons import opsdocs, strategy
    from cdclab.ops import diagnostics, health, perf, recovery
    from cdclab.state import backup as statebackup
    from cdclab.state import watermarks as state

    for fn in (state, strategy, statebackup, perf, opsdocs, health, recovery):
        fn.ensure_schema(conn)
    delta.ensure_snapshot_table(conn)
    with conn.cursor() as cur:
        diagnostics.ensure_ledger(cur)
        consumer.ensure_schema(cur)
        files_state.ensure_tables(cur)
    conn.commit()


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
