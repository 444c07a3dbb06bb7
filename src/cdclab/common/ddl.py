"""Create shared tables at task time, safely when many runs start at the same moment.

``CREATE TABLE IF NOT EXISTS`` is not safe under concurrency in Postgres: two sessions that both find the
table missing both insert its catalog rows, and the one that commits second fails with
``UniqueViolation ... pg_type_typname_nsp_index`` (``pg_namespace_nspname_index`` for a schema,
``pg_class_relname_nsp_index`` for an index). The same happens across *different* functions that
create the same schema (``state``, ``dlq``, ...), so a lock per function is not enough.

Every ``ensure_*`` function of the library runs its DDL through :func:`ensure`:

- when the connection has no transaction open (autocommit, or idle), the DDL runs in **its own short
  transaction** under ``pg_advisory_xact_lock(hashtext('cdclab.ddl:<name>'))`` (``name`` = the
  ``schema.table`` it creates), then commits: creators of the same object wait for each other for a few
  milliseconds instead of failing, and the lock is not held while the caller works;
- when the caller is inside a transaction (the DDL must commit with its work), the DDL runs in a
  ``SAVEPOINT`` without a lock (a lock would be held until the caller commits);
- in both cases a duplicate-object error (a concurrent creator in a path that took no lock, or a
  schema shared with another table) or a deadlock rolls back only the DDL and runs it again: by then the
  other session has committed, ``IF NOT EXISTS`` sees its object and skips.

The DDL statements must be idempotent (``IF NOT EXISTS``). The schema of ``name`` is created first.

**Shared tables are never created here.** The lab's shared tables (``state.*``, ``dlq.*``, lab-wide
targets such as ``marts.pipeline_health``) are declared once, by the versioned files
``infra/postgres/warehouse/V<n>__*.sql``, which ``infra/postgres/migrate.sh`` applies at lab start (both
launchers, through ``initdb.sh``) and records in ``public.schema_version``. The library holds no second
copy of their DDL. :data:`SHARED` names them (one name per ``ensure_*`` function) with the version that
declares them; :func:`require` checks that the warehouse has applied that version and raises
:class:`NotMigratedError` (saying what is missing and how to apply it) when it has not. It runs no DDL
and takes no lock, so two DAGs starting together never race on a shared table.

A table of the same shape under another name (a test's or a run's own ledger, ``{schema}.perf_runs``)
is created on first use ``LIKE`` the declared one (:func:`like_declared`): its shape still comes from
the versioned file, through the database, so no SQL file has to be found at run time.
Tables named by a DAG's or a test's params (lesson tables, targets) are created here, at task time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any, TypeAlias

from psycopg2 import sql

from cdclab.common.db import ident

Statement: TypeAlias = str | sql.Composable | tuple[str | sql.Composable, Any]

# unique_violation, duplicate_table, duplicate_object, duplicate_schema, deadlock_detected
RETRY_SQLSTATES = frozenset({"23505", "42P07", "42710", "42P06", "40P01"})


#: shared tables the ``ensure_*`` functions check (:func:`require`) -> the version that declares them and
#: the tables declared with them (tests/unit/test_schema_files.py keeps this in step with
#: infra/postgres/warehouse).
SHARED: dict[str, int] = {
    "state.watermarks": 1,  # cdclab.state.watermarks: watermarks, watermark_history, run_metrics
    "state.processed_intervals": 1,  # cdclab.ops.diagnostics
    "state.row_hashes": 1,  # cdclab.delta.detection
    "state.strategy_recommendations": 1,  # cdclab.lessons.strategy
    "state.state_backups": 1,  # cdclab.state.backup
    "state.perf_runs": 1,  # cdclab.ops.perf
    "state.docs_index": 1,  # cdclab.lessons.opsdocs
    "state.interval_ledger": 2,  # cdclab.ops.recovery: + validation_results, dlq.rejected_rows
    "state.kafka_offsets": 4,  # cdclab.cdc.consumer: + dlq.kafka_records (2), state.kafka_group_targets (4)
    "state.file_manifest": 6,  # cdclab.files.state: + file_watermark/audit/chunks, dlq.file_quarantine (2),
    # status 'exhausted' (6)
    "state.log_cursor": 2,  # cdclab.files.logs: + dlq.log_gap, dlq.log_bad_lines
    "state.replication_snapshots": 1,  # cdclab.cdc.replication (71_09_01)
    "state.replication_checks": 1,  # cdclab.cdc.replication (71_09_01)
    "marts.pipeline_health": 3,  # cdclab.ops.health: + the view marts.pipeline_health_dashboard
    "state.orders_arrivals_71_02_03": 7,  # cdclab.time.arrivals (71_02_03's ledger)
    "dlq.orders_late_events": 7,  # cdclab.time.arrivals (71_02_03's late-events log)
}


SCHEMA_FILES = "infra/postgres/warehouse/V*.sql"


class NotMigratedError(RuntimeError):
    """A shared table's version is not recorded in the warehouse's ``public.schema_version``: the
    versioned schema files were not applied to this database. Nothing was created."""


def applied_version(target: Any) -> int:
    """The highest version recorded in ``public.schema_version`` (0 when there is none).

    Leaves no transaction open that was not open before."""
    import psycopg2.extensions as ext

    conn = _connection(target)
    idle = not conn.autocommit and conn.info.transaction_status == ext.TRANSACTION_STATUS_IDLE
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('public.schema_version') IS NOT NULL")
        applied = 0
        if cur.fetchone()[0]:
            cur.execute("SELECT coalesce(max(version), 0) FROM public.schema_version")
            applied = int(cur.fetchone()[0])
    if idle:
        conn.rollback()
    return applied


def migrated(target: Any, name: str) -> bool:
    """True when ``name`` is a shared table and the warehouse has applied the version declaring it."""
    version = SHARED.get(name)
    return version is not None and applied_version(target) >= version


def require(target: Any, name: str) -> None:
    """Check that the shared table ``name`` (a key of :data:`SHARED`) exists because its version is applied.

    Runs no DDL. Raises :class:`NotMigratedError` naming the table, the version and the fix."""
    version = SHARED.get(name)
    if version is None:
        raise KeyError(f"{name} is not a shared table of cdclab.common.ddl.SHARED")
    applied = applied_version(target)
    if applied < version:
        raise NotMigratedError(
            f"{name} is declared by version {version} of the warehouse schema, but this database has "
            f"{'applied only version ' + str(applied) if applied else 'no public.schema_version'}: "
            f"the lab applies {SCHEMA_FILES} at start: run `make up` (or `cdclab lab up`), or apply "
            "them by hand with `infra/postgres/migrate.sh <database> infra/postgres/warehouse warehouse` "
            "(PG* variables of a superuser). The library does not create shared tables."
        )


def like_declared(target: Any, name: str, declared: str) -> None:
    """``declared`` (a shared table, checked by :func:`require`), or ``name`` created like it.

    When ``name`` is another table (a run's or a test's own copy), it is created on first use with
    ``CREATE TABLE IF NOT EXISTS name (LIKE declared INCLUDING ALL)``: columns, defaults, constraints and
    indexes as the versioned file declares them (a ``bigserial`` default keeps drawing from the declared
    table's sequence)."""
    require(target, declared)
    if name != declared:
        ensure(
            target,
            name,
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(
                ident(name), ident(declared)
            ),
        )


class DDLRaceError(RuntimeError):
    """The DDL kept colliding with concurrent creators after every attempt."""


def _retryable(exc: BaseException) -> bool:
    code = getattr(exc, "pgcode", None)
    if code in RETRY_SQLSTATES:
        return True
    return code == "XX000" and "concurrently" in str(
        exc
    )  # "tuple concurrently updated" (ALTER ... IF NOT EXISTS)


def _connection(target: Any) -> Any:
    """The psycopg2 connection of a cursor or a connection."""
    return target if hasattr(target, "cursor") else target.connection


def _run(cur: Any, schema: str | None, statements: Sequence[Statement]) -> None:
    if schema:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    for stmt in statements:
        if isinstance(stmt, tuple):
            cur.execute(stmt[0], stmt[1])
        else:
            cur.execute(stmt)


def _end(conn: Any, cur: Any, how: str) -> None:
    if conn.autocommit:
        cur.execute(how)
    elif how == "COMMIT":
        conn.commit()
    else:
        conn.rollback()


def ensure(target: Any, name: str, *statements: Statement, attempts: int = 8) -> None:
    """Run idempotent DDL creating ``name`` (``schema.table``, or any lock name) safely under concurrency.

    ``target`` is a psycopg2 connection or cursor. With no transaction open on it, the DDL commits in its
    own transaction; inside the caller's transaction it stays part of it (see the module doc). A shared
    table (:data:`SHARED`) is refused: the versioned files declare it (use :func:`require`)."""
    import psycopg2.extensions as ext

    if name in SHARED:
        raise ValueError(
            f"{name} is a shared table, declared by version {SHARED[name]} of {SCHEMA_FILES}: "
            "the library does not create it; call cdclab.common.ddl.require()"
        )
    conn = _connection(target)
    schema = name.split(".", 1)[0] if "." in name else None
    own = conn.autocommit or conn.info.transaction_status == ext.TRANSACTION_STATUS_IDLE
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        with conn.cursor() as cur:
            try:
                if own:
                    if conn.autocommit:
                        cur.execute("BEGIN")
                    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cdclab.ddl:{name}",))
                    _run(cur, schema, statements)
                    _end(conn, cur, "COMMIT")
                else:
                    cur.execute("SAVEPOINT cdclab_ddl")
                    _run(cur, schema, statements)
                    cur.execute("RELEASE SAVEPOINT cdclab_ddl")
                return
            except Exception as exc:
                if own:
                    _end(conn, cur, "ROLLBACK")
                if not _retryable(exc):
                    raise
                last = exc
                if not own:
                    cur.execute("ROLLBACK TO SAVEPOINT cdclab_ddl")
        time.sleep(random.uniform(0.01, 0.05) * attempt)
    raise DDLRaceError(
        f"creating {name} collided with concurrent creators {attempts} times: {last}"
    ) from last
