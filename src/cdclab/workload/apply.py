"""Applying a plan to Postgres: statements, the runner (rate, batches, anomalies such as long
transactions and duplicates), the actual state of an id range, and table copies (see
:mod:`cdclab.workload`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.workload.model import (
    COLUMNS,
    KEY_COLUMNS,
    OP_KINDS,
    RANGE_COLUMN,
    TABLES,
    IdRangeInUseError,
    InvalidWorkloadError,
    Key,
    OpenTransactionError,
    Operation,
    ProtectedTableError,
    Row,
    TableMappingError,
    TableName,
    Workload,
    WorkloadDivergedError,
    _check_physical,
)
from cdclab.workload.planner import iter_plan

# --------------------------------------------------------------------------------------------------
# Postgres


def _key_condition(table: TableName, key: Key) -> tuple[sql.Composable, list[Any]]:
    cond = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in KEY_COLUMNS[table])
    return cond, list(key)


def statement(op: Operation, physical: str) -> tuple[sql.Composed, list[Any]]:
    """The SQL (and bound values) that applies ``op`` to ``physical`` (cascades not included)."""
    table = ident(physical)
    if op.kind == "insert":
        cols = list(op.values)
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table,
            sql.SQL(", ").join(map(sql.Identifier, cols)),
            sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        )
        return query, [op.values[c] for c in cols]
    cond, params = _key_condition(op.table, op.key)
    if op.kind == "delete":
        return sql.SQL("DELETE FROM {} WHERE {}").format(table, cond), params
    cols = list(op.values)
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in cols)
    return (
        sql.SQL("UPDATE {} SET {} WHERE {}").format(table, assignments, cond),
        [op.values[c] for c in cols] + params,
    )


def _apply(cur: Any, workload: Workload, op: Operation) -> None:
    if op.kind == "delete" and op.table == "orders":
        for child in ("order_items", "payments"):
            if child in workload.touched:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                        ident(workload.physical(child)), sql.Identifier("order_id")
                    ),
                    [op.key[0]],
                )
    query, params = statement(op, workload.physical(op.table))
    cur.execute(query, params)
    if cur.rowcount != 1:
        raise WorkloadDivergedError(op, workload.physical(op.table), cur.rowcount)


def apply_operation(cur: Any, workload: Workload, op: Operation) -> None:
    """Apply one operation (with an order's cascade) on ``cur``, in the caller's transaction.

    For a runner that commits its own bookkeeping with the changes (the lab's workload service);
    raises :class:`WorkloadDivergedError` when the row is not where the plan expects it."""
    _apply(cur, workload, op)


@dataclass
class LongTransaction:
    """A long transaction as it happened: ``started_at`` is the row's ``updated_at`` (``now()``),
    ``committed_at`` the database clock just before COMMIT; ``overtaken`` counts the operations that
    committed on the main connection meanwhile."""

    seq: int
    table: TableName
    key: Key
    started_at: datetime
    committed_at: datetime | None = None
    overtaken: int = 0


@dataclass
class RunReport:
    """What :func:`run_workload` did."""

    workload: Workload
    start: int
    stop: int
    counts: dict[str, int] = field(default_factory=dict)
    long_transactions: list[LongTransaction] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def applied(self) -> int:
        return self.stop - self.start

    @property
    def duplicates(self) -> int:
        return self.counts.get("duplicate", 0)

    @property
    def rate(self) -> float:
        return self.applied / self.elapsed if self.elapsed > 0 else float("inf")

    def summary(self) -> str:
        lines = [
            f"applied operations {self.start}..{self.stop - 1} ({self.applied}) in {self.elapsed:.2f}s "
            f"({self.rate:.1f} ops/s)"
        ]
        for table in self.workload.touched:
            parts = [
                f"{kind}={self.counts[f'{table}.{kind}']}"
                for kind in OP_KINDS
                if self.counts.get(f"{table}.{kind}")
            ]
            lines.append(f"  {table:<12} -> {self.workload.physical(table)}: {' '.join(parts) or '-'}")
        lines.append(f"  duplicates: {self.duplicates}  long transactions: {len(self.long_transactions)}")
        for lt in self.long_transactions:
            lines.append(
                f"    #{lt.seq} {lt.table} {lt.key}: updated_at {lt.started_at.isoformat()}, committed "
                f"{lt.committed_at.isoformat() if lt.committed_at else '?'} after {lt.overtaken} later ops"
            )
        return "\n".join(lines)


class _Held(threading.Thread):
    """Keeps a long transaction open on its own connection for ``hold`` seconds, then commits."""

    def __init__(self, conn: Any, record: LongTransaction, hold: float, done: Callable[[], int]) -> None:
        super().__init__(name=f"cdclab-long-tx-{record.seq}", daemon=True)
        self.conn, self.record, self.hold, self.done = conn, record, hold, done
        self.baseline = done()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            time.sleep(self.hold)
            with self.conn.cursor() as cur:
                cur.execute("SELECT clock_timestamp()")
                self.record.committed_at = cur.fetchone()[0]
            self.record.overtaken = self.done() - self.baseline
            self.conn.commit()
        except BaseException as exc:  # reported by the runner after join()
            self.error = exc
        finally:
            self.conn.close()


def second_connection(conn: Any) -> Any:
    """A new connection to the same database as ``conn`` (for long transactions)."""
    import psycopg2

    info = conn.info
    return psycopg2.connect(
        host=info.host,
        port=info.port,
        dbname=info.dbname,
        user=info.user,
        password=info.password or None,
        application_name="cdclab-workload-long-tx",
    )


def _idle(conn: Any) -> bool:
    import psycopg2.extensions as ext

    return bool(conn.info.transaction_status == ext.TRANSACTION_STATUS_IDLE)


def _finish(conn: Any, was_idle: bool, *, write: bool) -> None:
    """End the transaction this module started; leave a caller's own transaction to the caller."""
    if conn.autocommit or not was_idle:
        return
    if write:
        conn.commit()
    else:
        conn.rollback()


def _range_has_rows(cur: Any, workload: Workload, table: TableName) -> bool:
    first, last = workload.id_range
    cur.execute(
        sql.SQL("SELECT 1 FROM {} WHERE {} BETWEEN %s AND %s LIMIT 1").format(
            ident(workload.physical(table)), sql.Identifier(RANGE_COLUMN[table])
        ),
        [first, last],
    )
    return cur.fetchone() is not None


def reset_range(conn: Any, workload: Workload) -> dict[str, int]:
    """Delete every row of the workload's id range from its touched tables (children first); commits.

    Returns the number of rows deleted per physical table.
    """
    first, last = workload.id_range
    deleted: dict[str, int] = {}
    was_idle = _idle(conn)
    with conn.cursor() as cur:
        for table in reversed(workload.touched):
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} BETWEEN %s AND %s").format(
                    ident(workload.physical(table)), sql.Identifier(RANGE_COLUMN[table])
                ),
                [first, last],
            )
            deleted[workload.physical(table)] = cur.rowcount
    _finish(conn, was_idle, write=True)
    return deleted


def run_workload(
    conn: Any,
    workload: Workload,
    *,
    start: int = 0,
    stop: int | None = None,
    rate: float | None = None,
    batch_size: int = 1,
    reset: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    connect: Callable[[], Any] | None = None,
) -> RunReport:
    """Apply operations ``start .. stop-1`` of the workload's plan to Postgres through ``conn``.

    - ``rate``: operations per second (``None`` or 0: as fast as possible).
    - ``batch_size``: operations per transaction on ``conn`` (a long transaction always gets its own,
      on a second connection from ``connect``, default :func:`second_connection`).
    - ``start == 0`` requires an empty id range, unless ``reset`` deletes what is there; a later
      ``start`` resumes a run that applied the first ``start`` operations.
    - ``on_progress(done, total)`` is called after every commit on ``conn``; it must read through its
      own connection (a transaction it leaves open on ``conn`` is rolled back).

    The end state equals :func:`expected_state` ``(workload, stop)`` whatever the rate and batch size.
    ``conn`` is left as it was found (autocommit restored); on error the open batch is rolled back and
    the error re-raised after every long transaction has finished.
    """
    stop = workload.ops if stop is None else stop
    if not 0 <= start <= stop <= workload.ops:
        raise InvalidWorkloadError(
            f"need 0 <= start <= stop <= ops={workload.ops}, got start={start} stop={stop}"
        )
    if batch_size < 1:
        raise InvalidWorkloadError(f"batch_size must be >= 1, got {batch_size}")
    if rate is not None and rate < 0:
        raise InvalidWorkloadError(f"rate must be >= 0 ops/s (0 or None: as fast as possible), got {rate}")
    if not _idle(conn):
        raise OpenTransactionError()
    run = _Run(
        conn, workload, start, stop, batch_size, on_progress, connect or (lambda: second_connection(conn))
    )
    was_autocommit = conn.autocommit
    conn.autocommit = False
    t0 = time.monotonic()
    try:
        if start == 0:
            with conn.cursor() as cur:
                busy = [t for t in workload.touched if _range_has_rows(cur, workload, t)]
            conn.commit()
            if busy and not reset:
                raise IdRangeInUseError(workload.physical(busy[0]), workload.id_base)
            if busy:
                reset_range(conn, workload)
        for op in islice(iter_plan(workload), start, stop):
            if rate:
                delay = t0 + (op.seq - start) / rate - time.monotonic()
                if delay > 0:
                    run.commit()  # what is due is visible while we wait
                    time.sleep(delay)
            run.apply(op)
        run.commit()
    except BaseException:
        conn.rollback()
        raise
    finally:
        for thread in run.held:
            thread.join()
        if not _idle(conn):
            conn.rollback()
        conn.autocommit = was_autocommit
        run.report.elapsed = time.monotonic() - t0
    for thread in run.held:
        if thread.error is not None:
            raise thread.error
    return run.report


class _Run:
    """The mutable part of :func:`run_workload`: the open batch, the held transactions, the counts."""

    def __init__(
        self,
        conn: Any,
        workload: Workload,
        start: int,
        stop: int,
        batch_size: int,
        on_progress: Callable[[int, int], None] | None,
        connect: Callable[[], Any],
    ) -> None:
        self.conn, self.workload, self.start, self.stop = conn, workload, start, stop
        self.batch_size, self.on_progress, self.connect = batch_size, on_progress, connect
        self.report = RunReport(workload, start, stop)
        self.held: list[_Held] = []
        self.batch: list[Operation] = []
        self.committed = start

    def apply(self, op: Operation) -> None:
        counts = self.report.counts
        counts[f"{op.table}.{op.kind}"] = counts.get(f"{op.table}.{op.kind}", 0) + 1
        if op.duplicate_of is not None:
            counts["duplicate"] = counts.get("duplicate", 0) + 1
        if op.hold_seconds > 0:
            self.commit()  # the long transaction must not wait for a lock of our own open batch
            self._hold(op)
            return
        with self.conn.cursor() as cur:
            _apply(cur, self.workload, op)
        self.batch.append(op)
        if len(self.batch) >= self.batch_size:
            self.commit()

    def commit(self) -> None:
        if not self.batch:
            return
        self.conn.commit()
        for _ in self.batch:
            self._done()
        self.batch.clear()

    def _done(self) -> None:
        self.committed += 1
        if self.on_progress:
            self.on_progress(self.committed - self.start, self.stop - self.start)

    def _hold(self, op: Operation) -> None:
        other = self.connect()
        try:
            with other.cursor() as cur:
                _apply(cur, self.workload, op)
                cur.execute("SELECT now()")
                started_at = cur.fetchone()[0]
        except BaseException:
            other.rollback()
            other.close()
            raise
        record = LongTransaction(op.seq, op.table, op.key, started_at)
        self.report.long_transactions.append(record)
        self._done()
        thread = _Held(other, record, op.hold_seconds, lambda: self.committed)
        self.held.append(thread)
        thread.start()


def actual_state(conn: Any, workload: Workload, table: TableName) -> list[Row]:
    """``table``'s rows in the workload's id range as Postgres holds them: :data:`COLUMNS`, key order."""
    first, last = workload.id_range
    query = sql.SQL("SELECT {} FROM {} WHERE {} BETWEEN %s AND %s ORDER BY {}").format(
        sql.SQL(", ").join(map(sql.Identifier, COLUMNS[table])),
        ident(workload.physical(table)),
        sql.Identifier(RANGE_COLUMN[table]),
        sql.SQL(", ").join(map(sql.Identifier, KEY_COLUMNS[table])),
    )
    was_idle = _idle(conn)
    with conn.cursor() as cur:
        cur.execute(query, [first, last])
        names = [d[0] for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    _finish(conn, was_idle, write=False)
    return rows


def create_table_copy(conn: Any, logical: TableName, physical: str) -> None:
    """Create ``physical`` as a copy of the *shape* of ``public.<logical>``; idempotent; commits.

    ``LIKE ... INCLUDING ALL`` copies columns, defaults, NOT NULL and CHECK constraints and indexes
    (primary key, unique, the updated_at index) but no foreign keys and no rows. The ``touch_row``
    trigger is added so ``updated_at``/``version`` behave like the original, and ``REPLICA IDENTITY
    FULL`` when the original has it (``pg_class.relreplident = 'f'``), so Debezium sees before-images.
    """
    if logical not in TABLES:
        raise TableMappingError(f"unknown logical table {logical!r}; use one of {TABLES}")
    _check_physical(physical)
    target = ident(physical)
    was_idle = _idle(conn)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL)").format(
                target, ident(f"public.{logical}")
            )
        )
        cur.execute(sql.SQL("DROP TRIGGER IF EXISTS touch_row ON {}").format(target))
        cur.execute(
            sql.SQL(
                "CREATE TRIGGER touch_row BEFORE UPDATE ON {} "
                "FOR EACH ROW EXECUTE FUNCTION public.touch_row()"
            ).format(target)
        )
        cur.execute("SELECT relreplident FROM pg_class WHERE oid = %s::regclass", [f"public.{logical}"])
        (replident,) = cur.fetchone()
        if replident == "f":
            cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY FULL").format(target))
    _finish(conn, was_idle, write=True)


def drop_table_copy(conn: Any, physical: str) -> None:
    """Drop a copy made by :func:`create_table_copy` (if it exists); refuses the shop's own tables."""
    _check_physical(physical)
    qualified = physical if "." in physical else f"public.{physical}"
    if qualified in {f"public.{t}" for t in TABLES}:
        raise ProtectedTableError(
            f"refusing to drop {qualified}: it is one of the shop's own tables, not a copy"
        )
    was_idle = _idle(conn)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(physical)))
    _finish(conn, was_idle, write=True)
