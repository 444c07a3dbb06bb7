"""Delta detection: which source rows changed since the last load.

Vocabulary:
- *cursor column*: a column whose value grows with every change of a row (``updated_at``, a global
  change sequence). The delta is every row whose cursor is past the *watermark* (see
  :mod:`cdclab.state.watermarks`).
- *range*: the half-open ``[lower, upper)`` a read covers. ``lower`` is the stored watermark minus
  the *lookback*; it is **closed** (``>=``) because rows that share the watermark's timestamp may have
  committed after the previous read. ``upper`` is exclusive: the data interval's end, and never later
  than the start of the oldest transaction open in the source database (:func:`read_upper_bound`),
  so the watermark never passes a transaction that has not committed yet — whichever table it
  writes, and whether or not it has written anything so far.
- *lookback* (overlap): how far before the watermark a read starts again. ``updated_at = now()`` is
  the *transaction's start*, so a long transaction that commits late writes a timestamp below a
  watermark already stored; a lookback longer than the longest transaction catches it. Rows read twice
  are harmless because the target write is idempotent and version-guarded (:mod:`cdclab.merge.upsert`
  counts them as ``skipped``) — that is the de-duplication across runs.
- *keyset pagination*: pages ordered by ``(cursor, key...)`` and continued with
  ``WHERE (cursor, key...) > (last cursor, last key...)``. Rows with equal cursor values that straddle
  a page boundary are neither missed nor read twice, which ``cursor > last`` (misses) and
  ``cursor >= last`` (repeats) both get wrong. Within one read a row is returned once per
  ``(cursor, key)``; :func:`cdclab.merge.upsert.dedupe_by_key` collapses a row that moved while paging.
- *NULL cursor policy* (:data:`NullPolicy`): a row whose cursor is NULL has no place in the order.
  ``"raise"`` (default) stops with :class:`NullCursorError`; ``"include"`` reads those rows in every
  run (they are treated as always changed); ``"exclude"`` skips them but reports how many
  (``DeltaResult.null_cursor_rows``), so nothing is dropped silently.
- *version-based*: the cursor is a monotonic version — a global change sequence column, or the
  row's ``xmin`` transaction id widened to 64 bits (*full xid*). For ``xmin`` the watermark is the
  snapshot's ``xmin`` (the oldest transaction still running when the read started): every row that
  read could not see has a transaction id at or above it. ``xmin`` needs no column in the source but
  has no index (a sequential scan per read) and changes on ``VACUUM FULL``/restores.
  A per-row ``version`` counter (``shop`` tables) is not a cursor — it is the upsert *guard*.
- *row hash*: a digest of a row's columns in a canonical text form (:func:`row_hash`). A *snapshot*
  is the ``{key: hash}`` map stored in ``state.row_hashes``; comparing the current map with the
  last snapshot (:func:`diff_hashes`) finds inserts, updates **and deletes** without any cursor.
- *comparison* (reconciliation): the same hash maps built from source and target;
  :func:`compare_tables` returns the keys *missing* from the target, *extra* in the target and
  *different* in both.

All SQL is composed with :mod:`psycopg2.sql`; values are always bound parameters.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import ident
from cdclab.common.ddl import like_declared

NullPolicy = Literal["raise", "include", "exclude"]
NULL_POLICIES: frozenset[str] = frozenset(get_args(NullPolicy))
ROW_HASHES = "state.row_hashes"
Key = tuple[Any, ...]


class DeltaError(Exception):
    """Base class of delta-detection errors."""


class NullCursorError(DeltaError, ValueError):
    """Rows with a NULL cursor under ``null_policy="raise"``."""


class InvalidNullPolicyError(DeltaError, ValueError):
    """An unknown NULL cursor policy."""


@dataclass
class DeltaResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    max_cursor: Any = None
    """The largest non-NULL cursor value read (the next high watermark); for xmin the snapshot xmin."""
    pages: int = 0
    null_cursor_rows: int = 0
    """Rows with a NULL cursor that were included or excluded (never silently)."""


@dataclass(frozen=True)
class ChangeSet:
    inserted: list[Key]
    updated: list[Key]
    deleted: list[Key]

    @property
    def total(self) -> int:
        return len(self.inserted) + len(self.updated) + len(self.deleted)


@dataclass(frozen=True)
class Comparison:
    missing: list[Key]
    """Keys in the source but not in the target."""
    extra: list[Key]
    """Keys in the target but not in the source."""
    different: list[Key]
    """Keys in both whose compared columns differ."""

    @property
    def equal(self) -> bool:
        return not (self.missing or self.extra or self.different)


def check_null_policy(policy: str) -> NullPolicy:
    if policy not in NULL_POLICIES:
        raise InvalidNullPolicyError(f"unknown null_policy {policy!r}; use one of {sorted(NULL_POLICIES)}")
    return policy  # type: ignore[return-value]


def _cols(columns: Sequence[str] | None) -> sql.Composable:
    if not columns:
        return sql.SQL("*")
    return sql.SQL(", ").join(sql.Identifier(c) for c in columns)


def _row_tuple(exprs: Sequence[sql.Composable]) -> sql.Composable:
    return sql.SQL("({})").format(sql.SQL(", ").join(exprs))


def keyset_after(
    cursor: sql.Composable, keys: Sequence[sql.Composable], bound: Sequence[sql.Composable] | None = None
) -> sql.Composed:
    """The keyset continuation ``(cursor, key...) > (bound...)``: the rows after the last one read, in
    ``(cursor, key)`` order (see *keyset pagination* above). ``bound`` defaults to one positional
    placeholder per column; pass one ``sql.Placeholder(name)`` per column for named parameters."""
    columns = [cursor, *keys]
    if bound is None:
        bound = [sql.Placeholder()] * len(columns)
    if len(bound) != len(columns):
        raise DeltaError(f"a keyset bound needs {len(columns)} values (cursor and keys), got {len(bound)}")
    return sql.SQL("{} > {}").format(_row_tuple(columns), _row_tuple(bound))


# ---------------------------------------------------------------------------------------------------
# cursor (timestamp- or version-) based, keyset paginated


@dataclass(frozen=True)
class KeysetScan:
    """What a cursor read scans: the rows of ``table`` whose ``cursor`` is in ``[lower, upper)``
    (``(lower, upper)`` when ``lower_inclusive`` is false; a ``None`` bound is open) and not NULL, in
    keyset pages ordered by ``(cursor, key_columns...)``; ``columns`` (``None``: all) are read."""

    table: str
    cursor: sql.Composable
    key_columns: Sequence[str]
    columns: Sequence[str] | None = None
    lower: Any = None
    lower_inclusive: bool = True
    upper: Any = None

    def page(self, after: tuple[Any, Key] | None = None, limit: int = 1000) -> tuple[sql.Composed, list[Any]]:
        """One page: ``SELECT cols, cursor FROM table WHERE cursor >= lower AND cursor < upper
        [AND (cursor, keys) > (after)] ORDER BY cursor, keys LIMIT n``; returns (statement, params)."""
        if not self.key_columns:
            raise DeltaError("keyset pagination needs the table's key columns")
        cursor = self.cursor
        keys = [sql.Identifier(k) for k in self.key_columns]
        where: list[sql.Composable] = [sql.SQL("{} IS NOT NULL").format(cursor)]
        params: list[Any] = []
        if self.lower is not None:
            where.append(sql.SQL("{} {} %s").format(cursor, sql.SQL(">=" if self.lower_inclusive else ">")))
            params.append(self.lower)
        if self.upper is not None:
            where.append(sql.SQL("{} < %s").format(cursor))
            params.append(self.upper)
        if after is not None:
            after_cursor, after_key = after
            where.append(keyset_after(cursor, keys))
            params.extend([after_cursor, *after_key])
        statement = sql.SQL("SELECT {}, {} AS {} FROM {} WHERE {} ORDER BY {} LIMIT %s").format(
            _cols(self.columns),
            cursor,
            sql.Identifier("_cursor"),
            ident(self.table),
            sql.SQL(" AND ").join(where),
            sql.SQL(", ").join([cursor, *keys]),
        )
        params.append(limit)
        return statement, params

    def pages(self, conn: Any, batch_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Yield pages (lists of row dicts with an extra ``_cursor`` entry) in ``(cursor, key)`` order."""
        after: tuple[Any, Key] | None = None
        while True:
            statement, params = self.page(after, batch_size)
            with conn.cursor() as cur:
                cur.execute(statement, params)
                page = _fetch_dicts(cur)
            if not page:
                return
            last = page[-1]
            after = (last["_cursor"], tuple(last[k] for k in self.key_columns))
            yield page
            if len(page) < batch_size:
                return


def _fetch_dicts(cur: Any) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _null_rows(conn: Any, scan: KeysetScan, policy: NullPolicy, column_label: str) -> tuple[int, list[dict]]:
    table, cursor = scan.table, scan.cursor
    with conn.cursor() as cur:
        if policy == "include":
            cur.execute(
                sql.SQL("SELECT {} FROM {} WHERE {} IS NULL ORDER BY {}").format(
                    _cols(scan.columns),
                    ident(table),
                    cursor,
                    sql.SQL(", ").join(sql.Identifier(k) for k in scan.key_columns),
                )
            )
            rows = _fetch_dicts(cur)
            return len(rows), rows
        cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(ident(table), cursor))
        count = int(cur.fetchone()[0])
    if count and policy == "raise":
        raise NullCursorError(
            f"{count} row(s) of {table} have a NULL {column_label}, so no watermark can place them. "
            "Fix the source (NOT NULL DEFAULT now()), or choose null_policy='include' (load them in "
            "every run) or 'exclude' (skip them, counted in DeltaResult.null_cursor_rows)"
        )
    return count, []


def _read_cursor_delta(
    conn: Any,
    scan: KeysetScan,
    column_label: str,
    batch_size: int,
    null_policy: str,
    nullable: bool = True,
) -> DeltaResult:
    policy = check_null_policy(null_policy)
    if scan.columns:
        scan = replace(scan, columns=list(dict.fromkeys([*scan.columns, *scan.key_columns])))
    null_count, null_rows = 0, list[dict[str, Any]]()
    if nullable:
        null_count, null_rows = _null_rows(conn, scan, policy, column_label)
    result = DeltaResult(null_cursor_rows=null_count)
    for page in scan.pages(conn, batch_size):
        result.pages += 1
        for row in page:
            value = row.pop("_cursor")
            if result.max_cursor is None or value > result.max_cursor:
                result.max_cursor = value
            result.rows.append(row)
    result.rows.extend(null_rows)
    return result


def read_timestamp_delta(
    conn: Any,
    table: str,
    *,
    cursor_column: str,
    key_columns: Sequence[str],
    since: datetime | None,
    until: datetime | None = None,
    lookback: timedelta = timedelta(0),
    columns: Sequence[str] | None = None,
    batch_size: int = 1000,
    null_policy: NullPolicy = "raise",
) -> DeltaResult:
    """Rows with ``since - lookback <= cursor < until`` (keyset-paginated), plus the NULL policy.

    ``since=None`` reads from the beginning (the first load). ``max_cursor`` is the next watermark.
    """
    for name, value in (("since", since), ("until", until)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise DeltaError(f"{name}={value!r} is naive; pass a timezone-aware datetime (UTC)")
    if lookback < timedelta(0):
        raise DeltaError(f"lookback {lookback} is negative; use timedelta(0) for no overlap")
    lower = None if since is None else since - lookback
    scan = KeysetScan(table, sql.Identifier(cursor_column), key_columns, columns, lower, True, until)
    return _read_cursor_delta(conn, scan, cursor_column, batch_size, null_policy)


def read_committed_delta(
    conn: Any,
    table: str,
    *,
    key_columns: Sequence[str],
    since: datetime | None,
    until: datetime | None = None,
    cursor_column: str = "updated_at",
    lookback: timedelta = timedelta(0),
    batch_size: int = 1000,
    null_policy: NullPolicy = "raise",
) -> tuple[datetime, DeltaResult]:
    """:func:`read_timestamp_delta` up to :func:`read_upper_bound` (``until`` capped at the oldest open
    transaction's start): the read that misses no row committed late. Returns ``(upper, result)``."""
    upper = read_upper_bound(conn, until)
    result = read_timestamp_delta(
        conn,
        table,
        cursor_column=cursor_column,
        key_columns=key_columns,
        since=since,
        until=upper,
        lookback=lookback,
        batch_size=batch_size,
        null_policy=null_policy,
    )
    return upper, result


def read_version_delta(
    conn: Any,
    table: str,
    *,
    version_column: str,
    key_columns: Sequence[str],
    since: int | None,
    until: int | None = None,
    columns: Sequence[str] | None = None,
    batch_size: int = 1000,
    null_policy: NullPolicy = "raise",
) -> DeltaResult:
    """Rows with ``since < version < until`` for a globally monotonic version column (exclusive lower
    bound: a version number is never reused, unlike a timestamp)."""
    scan = KeysetScan(table, sql.Identifier(version_column), key_columns, columns, since, False, until)
    return _read_cursor_delta(conn, scan, version_column, batch_size, null_policy)


# the row's inserting transaction id as a 64-bit "full" xid (epoch-adjusted against the snapshot)
FULL_XMIN = sql.SQL(
    "((((pg_snapshot_xmax(pg_current_snapshot())::text::bigint) >> 32) << 32) + xmin::text::bigint"
    " - CASE WHEN xmin::text::bigint > ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint)"
    " & 4294967295) THEN 4294967296 ELSE 0 END)"
)


def snapshot_xmin(conn: Any) -> int:
    """The oldest transaction id still running for this statement's snapshot (a safe xmin watermark)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
        return int(cur.fetchone()[0])


def read_xmin_delta(
    conn: Any,
    table: str,
    *,
    key_columns: Sequence[str],
    since: int | None,
    columns: Sequence[str] | None = None,
    batch_size: int = 1000,
) -> DeltaResult:
    """Rows written by transactions with full xid ``>= since``; ``max_cursor`` is the snapshot xmin
    taken before the read (the next watermark: nothing the read missed is below it)."""
    watermark = snapshot_xmin(conn)
    scan = KeysetScan(table, FULL_XMIN, key_columns, columns, lower=since)
    result = _read_cursor_delta(conn, scan, "xmin", batch_size, "exclude", nullable=False)
    result.max_cursor = watermark
    return result


# Sessions that never write a table row stamped with their own ``now()``: they do not hold a read back.
_NON_WRITERS = ("walsender", "autovacuum worker", "autovacuum launcher")


class UnsafeReadBoundError(DeltaError):
    """The read bound cannot be computed safely (a repeatable-read snapshot, a prepared transaction)."""


def oldest_open_transaction_start(conn: Any, table: str | None = None) -> datetime | None:
    """Start of the oldest transaction open in the source database (other sessions), or None.

    ``updated_at = now()`` is the *transaction's start*: a transaction that began at ``T`` and commits
    later writes rows stamped ``T`` that no read can see before the commit. Any open transaction may
    still write to any table, even one it has not touched yet (it may hold no lock on it, and no xid if
    it has only read so far), so every client transaction open in this database counts — not only those
    holding a lock on the table or an xid. ``table`` is accepted for compatibility and ignored: counting
    only the lock holders of the table let a transaction that began before the read, and wrote the
    table after it, commit rows below a watermark already stored (issue 11, item 9).

    The price: an idle-in-transaction session holds back every timestamp read of the database until it
    ends (``idle_in_transaction_session_timeout`` is the server's remedy); the read is delayed, never
    wrong. Sessions of other roles are only visible with ``pg_read_all_stats`` (the lab grants it to the
    ``shop`` role); replication senders and autovacuum never stamp rows and are not counted.
    Use :func:`read_upper_bound`, which also caps the bound at the moment of the check.
    """
    del table  # see the docstring: every open transaction counts
    return _open_transaction_bound(conn)[1]


def read_upper_bound(conn: Any, until: datetime | None = None) -> datetime:
    """The exclusive upper bound of an ``updated_at`` read that misses no row committed late.

    ``min(until, check time, start of the oldest open transaction)`` where *check time* is the start of
    the statement that looked at ``pg_stat_activity`` (``statement_timestamp()``) on ``conn``. Call it
    right *before* the read, on the connection that reads, in READ COMMITTED (each later statement takes
    a new snapshot). Why nothing is missed: a row stamped ``t < bound`` belongs to a transaction that
    started at ``t``, before the check. If it was still open at the check, ``bound <= t``; so it had
    ended before the check, and a snapshot taken after the check sees it (a transaction leaves
    ``pg_stat_activity`` only after its commit is visible). A transaction that starts after the check
    stamps ``t >= bound``. Storing the largest cursor read (or this bound) as the watermark is therefore
    safe; the next read resumes at it (closed lower bound), with no lookback needed.

    A repeatable-read or serializable transaction reads with the snapshot of its first statement, which
    can predate the check: :class:`UnsafeReadBoundError`. So does a prepared transaction in this
    database (its start time is unknown): commit or roll it back first (``COMMIT PREPARED 'gid'``).
    """
    if until is not None and (until.tzinfo is None or until.utcoffset() is None):
        raise DeltaError(f"until={until!r} is naive; pass a timezone-aware datetime (UTC)")
    checked_at, oldest = _open_transaction_bound(conn)
    bound = checked_at if oldest is None else min(checked_at, oldest)
    return bound if until is None else min(until, bound)


def _open_transaction_bound(conn: Any) -> tuple[datetime, datetime | None]:
    """``(statement_timestamp(), oldest open xact_start)`` from a fresh look at ``pg_stat_activity``."""
    with conn.cursor() as cur:
        # pg_stat_activity is cached for the rest of a transaction after the first look: drop the cache,
        # so a second call in the same transaction cannot use a picture older than its own timestamp
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT statement_timestamp(), current_setting('transaction_isolation'), "
            "(SELECT min(xact_start) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND backend_type <> ALL(%s)), "
            "(SELECT string_agg(gid, ', ') FROM pg_prepared_xacts WHERE database = current_database())",
            (list(_NON_WRITERS),),
        )
        checked_at, isolation, oldest, prepared = cur.fetchone()
    if isolation != "read committed":
        raise UnsafeReadBoundError(
            f"the read bound needs READ COMMITTED, the connection runs {isolation.upper()}: its snapshot "
            "may predate the check of open transactions; read in a READ COMMITTED transaction"
        )
    if prepared:
        raise UnsafeReadBoundError(
            f"prepared transaction(s) {prepared} are open in this database and their start is unknown, "
            "so a timestamp read cannot be bounded safely; COMMIT PREPARED or ROLLBACK PREPARED them"
        )
    return checked_at, oldest


def next_watermark(old: Any, result: DeltaResult) -> Any:
    """The watermark after a read: ``max(old, max_cursor)`` — a lookback re-read never moves it back."""
    if result.max_cursor is None:
        return old
    if old is None:
        return result.max_cursor
    return max(old, result.max_cursor)


# ---------------------------------------------------------------------------------------------------
# hash based


def canonical(value: Any) -> Any:
    """A JSON-safe, type-stable form of a column value (datetimes in UTC, decimals as text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def row_hash(values: Sequence[Any]) -> str:
    """md5 of the canonical JSON of ``values`` (column order matters)."""
    text = json.dumps([canonical(v) for v in values], separators=(",", ":"), sort_keys=True)
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def key_text(key: Sequence[Any]) -> str:
    return json.dumps([canonical(k) for k in key], separators=(",", ":"))


def key_from_text(text: str) -> Key:
    return tuple(json.loads(text))


def table_hashes(
    conn: Any,
    table: str,
    *,
    key_columns: Sequence[str],
    columns: Sequence[str],
    where: sql.Composable | None = None,
    params: Sequence[Any] = (),
) -> dict[str, str]:
    """``{key_text: row_hash}`` of every row (streamed with a server-side cursor when possible)."""
    statement = sql.SQL("SELECT {}, {} FROM {}{}").format(
        sql.SQL(", ").join(sql.Identifier(k) for k in key_columns),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        ident(table),
        sql.SQL("") if where is None else sql.SQL(" WHERE {}").format(where),
    )
    n = len(key_columns)
    hashes: dict[str, str] = {}
    named = not conn.autocommit
    cur = conn.cursor(name=f"hashes_{uuid.uuid4().hex[:8]}") if named else conn.cursor()
    try:
        if named:
            cur.itersize = 5000
        cur.execute(statement, list(params))
        for row in cur:
            hashes[key_text(row[:n])] = row_hash(row[n:])
    finally:
        cur.close()
    return hashes


def fetch_rows_by_keys(
    conn: Any,
    table: str,
    key_columns: Sequence[str],
    keys: Sequence[Key],
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The current rows for ``keys`` (e.g. the inserts and updates a hash diff found)."""
    if not keys:
        return []
    statement = sql.SQL(
        "SELECT {} FROM {} WHERE ({}) IN (SELECT * FROM (VALUES %s) AS k) ORDER BY {}"
    ).format(
        _cols(columns),
        ident(table),
        sql.SQL(", ").join(sql.Identifier(k) for k in key_columns),
        sql.SQL(", ").join(sql.Identifier(k) for k in key_columns),
    )
    with conn.cursor() as cur:
        execute_values(cur, statement, [tuple(k) for k in keys], page_size=len(keys))
        return _fetch_dicts(cur)


def diff_hashes(old: Mapping[str, str], new: Mapping[str, str]) -> ChangeSet:
    """Inserts (only in ``new``), updates (hash changed) and deletes (only in ``old``), keys sorted."""
    inserted = sorted(key_from_text(k) for k in new.keys() - old.keys())
    deleted = sorted(key_from_text(k) for k in old.keys() - new.keys())
    updated = sorted(key_from_text(k) for k in new.keys() & old.keys() if new[k] != old[k])
    return ChangeSet(inserted, updated, deleted)


def ensure_snapshot_table(conn: Any, table: str = ROW_HASHES) -> None:
    """``state.row_hashes (snapshot, row_key, row_hash)`` as infra/postgres/warehouse/V001__state.sql
    declares it, or ``table`` created on first use like it; commits."""
    with conn.cursor() as cur:
        like_declared(cur, table, ROW_HASHES)
    conn.commit()


def load_snapshot(conn: Any, snapshot: str, table: str = ROW_HASHES) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT row_key, row_hash FROM {} WHERE snapshot = %s").format(ident(table)), (snapshot,)
        )
        return dict(cur.fetchall())


def save_snapshot(
    conn: Any,
    snapshot: str,
    hashes: Mapping[str, str],
    changes: ChangeSet | None = None,
    table: str = ROW_HASHES,
) -> None:
    """Store ``hashes`` as the snapshot (does not commit). With ``changes`` only the changed keys are
    written; without, the snapshot is replaced."""
    target = ident(table)
    with conn.cursor() as cur:
        if changes is None:
            cur.execute(sql.SQL("DELETE FROM {} WHERE snapshot = %s").format(target), (snapshot,))
            upserts = list(hashes.items())
        else:
            gone = [key_text(k) for k in changes.deleted]
            if gone:
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE snapshot = %s AND row_key = ANY(%s)").format(target),
                    (snapshot, gone),
                )
            upserts = [(key_text(k), hashes[key_text(k)]) for k in (*changes.inserted, *changes.updated)]
        if upserts:
            execute_values(
                cur,
                sql.SQL(
                    "INSERT INTO {} (snapshot, row_key, row_hash) VALUES %s ON CONFLICT (snapshot, row_key) "
                    "DO UPDATE SET row_hash = EXCLUDED.row_hash, taken_at = now()"
                ).format(target),
                [(snapshot, k, h) for k, h in upserts],
                page_size=1000,
            )


# ---------------------------------------------------------------------------------------------------
# full comparison (reconciliation)


def compare_hashes(source: Mapping[str, str], target: Mapping[str, str]) -> Comparison:
    changes = diff_hashes(target, source)
    return Comparison(missing=changes.inserted, extra=changes.deleted, different=changes.updated)


def compare_tables(
    source_conn: Any,
    source_table: str,
    target_conn: Any,
    target_table: str,
    *,
    key_columns: Sequence[str],
    columns: Sequence[str],
) -> Comparison:
    """Full comparison of ``columns`` by key between a source and a target table (any two DBs)."""
    return compare_hashes(
        table_hashes(source_conn, source_table, key_columns=key_columns, columns=columns),
        table_hashes(target_conn, target_table, key_columns=key_columns, columns=columns),
    )
