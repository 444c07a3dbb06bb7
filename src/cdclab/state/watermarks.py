"""Incremental state: where a pipeline remembers how far it got.

Vocabulary:
- *watermark*: the value up to which a pipeline has loaded (a ``timestamptz`` such as the largest
  ``updated_at`` loaded, a ``bigint`` such as a transaction id or sequence, an opaque ``text`` token
  such as an API cursor, or a ``json`` document such as per-partition offsets). The *high watermark*
  is the largest cursor value that is known to be loaded and committed.
- *key*: the name of one watermark, one per pipeline and source (``"71_01_03/public.customers"``).
- *value type*: declared once per key (:data:`ValueType`); every later write must have the same type,
  so a pipeline can never silently compare a timestamp with an integer.
- *compare-and-set* (CAS): :meth:`TableWatermarkStore.advance` takes the value the caller started
  from (``expected_old``) and only writes when the stored value is still that value; when another run
  has moved it meanwhile it raises :class:`WatermarkConflictError`. Two runs can never both advance.
- *reset*: an explicit, audited move to any value (backwards too), with a reason; the only way to go
  back. ``advance`` refuses to move an ordered watermark backwards (:class:`WatermarkRegressionError`).
- *history*: every change, ``old -> new``, when, by which DAG run, and why (``advance``, ``init``,
  ``reset``) in ``state.watermark_history``.
- *future tolerance*: a ``timestamptz`` watermark later than ``now() + tolerance`` is refused
  (:class:`WatermarkInFutureError`): storing it would make the next incremental read skip every
  change until the wall clock catches up, a gap nobody notices.

Backends (all speak the same encoding, :func:`encode` / :func:`decode`):
1. :class:`TableWatermarkStore` — an external table in the ``warehouse`` database (recommended).
   Typed value, history, CAS, audited reset; it lives next to the data, so a load and its
   watermark can even commit in one transaction. Tables: ``state.watermarks``,
   ``state.watermark_history`` (and ``state.run_metrics`` for per-run load metrics), created by
   :func:`ensure_schema`.
2. :class:`VariableWatermarkStore` — Airflow Variables through the Task SDK (``airflow.sdk.Variable``,
   used inside tasks only). Persists across runs and is visible in the UI (Admin -> Variables), but
   there is no compare-and-set (last writer wins), no history and no type: this module adds the type
   by storing ``{"type": ..., "value": ...}``.
3. XCom — a per-run hand-over, not a watermark store. A value a task returns is visible to the
   downstream tasks of the same DAG run; the next run starts without it (``xcom_pull`` only reads the
   current run unless asked for ``include_prior_dates``, and a cleared or retried task deletes its
   XComs). :func:`xcom_payload` / :func:`from_xcom_payload` keep the type across the hand-over.
4. :class:`AssetStateWatermarkStore` — Airflow 3.3's *asset state store* (AIP-103,
   ``context["asset_state_store"][asset]``, model ``airflow.models.asset_state_store``, table
   ``asset_state_store`` in the metadata DB, keyed by ``(asset_id, key)``). Unlike the *task* state
   store (table ``task_state_store``, scoped to ``(dag_run_id, task_id, map_index)`` so each DAG run
   gets a fresh namespace and only retries of one task instance share it — useful to re-attach to a
   submitted job, useless as a cross-run watermark), the asset store persists across runs. It works
   under ``dag.test()`` against the lab's metadata DB (``dags/71_01_05_state_storage.py`` and its
   test prove it) as long as the asset is declared in the task's ``inlets``/``outlets`` so the DAG
   sync registers it. It has no compare-and-set, no history and stores JSON without a type, so the
   lab treats it like Variables: convenient, scoped to the asset, not audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from psycopg2 import sql

from cdclab.common.db import ident, insert_row
from cdclab.common.ddl import require

ValueType = Literal["timestamptz", "bigint", "text", "json"]
VALUE_TYPES: frozenset[str] = frozenset(get_args(ValueType))
ORDERED_TYPES: frozenset[str] = frozenset({"timestamptz", "bigint"})
DEFAULT_FUTURE_TOLERANCE = timedelta(minutes=5)

WATERMARKS = "state.watermarks"
HISTORY = "state.watermark_history"
RUN_METRICS = "state.run_metrics"


class StateError(Exception):
    """Base class of every state-store error."""


class WatermarkTypeError(StateError, TypeError):
    """The value does not have the declared type (or the key already holds another type)."""


class WatermarkInFutureError(StateError, ValueError):
    """A ``timestamptz`` watermark later than now + tolerance."""


class WatermarkConflictError(StateError):
    """Compare-and-set failed: another run moved the watermark since this run read it."""


class WatermarkRegressionError(StateError, ValueError):
    """``advance`` would move an ordered watermark backwards; use ``reset`` with a reason."""


class WatermarkNotFoundError(StateError, KeyError):
    """``reset`` or ``get_required`` of a key that was never initialised."""


@dataclass(frozen=True)
class Watermark:
    key: str
    value: Any
    value_type: ValueType
    updated_at: datetime | None = None
    updated_by_dag_id: str | None = None
    updated_by_run_id: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    key: str
    old_value: Any
    new_value: Any
    value_type: ValueType
    changed_at: datetime
    dag_id: str | None
    run_id: str | None
    reason: str


# ---------------------------------------------------------------------------------------------------
# encoding and validation (pure)


def _check_type_name(value_type: str) -> ValueType:
    if value_type not in VALUE_TYPES:
        raise WatermarkTypeError(f"unknown watermark type {value_type!r}; use one of {sorted(VALUE_TYPES)}")
    return value_type  # type: ignore[return-value]


def validate(
    value: Any,
    value_type: str,
    *,
    now: datetime | None = None,
    future_tolerance: timedelta | None = DEFAULT_FUTURE_TOLERANCE,
) -> None:
    """Raise unless ``value`` is a valid watermark of ``value_type``.

    ``future_tolerance=None`` skips the future check (used for values already stored).
    """
    vt = _check_type_name(value_type)
    if vt == "timestamptz":
        if not isinstance(value, datetime):
            raise WatermarkTypeError(
                f"a timestamptz watermark must be a timezone-aware datetime, got {type(value).__name__} "
                f"{value!r}; parse it first (pendulum.parse) or declare the key with another type"
            )
        if value.tzinfo is None or value.utcoffset() is None:
            raise WatermarkTypeError(
                f"naive datetime {value!r} as a timestamptz watermark; attach a time zone "
                "(pendulum.instance(dt, tz='UTC')) — a naive value is ambiguous"
            )
        now = now or datetime.now(UTC)
        if future_tolerance is not None and value > now + future_tolerance:
            raise WatermarkInFutureError(
                f"watermark {value.isoformat()} is later than now ({now.isoformat()}) + {future_tolerance}; "
                "storing it would skip every change until the clock catches up. Check the source's clock "
                "or the cursor column, and use reset() if you really mean it"
            )
    elif vt == "bigint":
        if isinstance(value, bool) or not isinstance(value, int):
            raise WatermarkTypeError(
                f"a bigint watermark must be an int, got {type(value).__name__} {value!r}"
            )
        if not -(2**63) <= value < 2**63:
            raise WatermarkTypeError(f"bigint watermark {value} is out of the 64-bit range")
    elif vt == "text":
        if not isinstance(value, str):
            raise WatermarkTypeError(f"a text watermark must be a str, got {type(value).__name__} {value!r}")
    else:  # json
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise WatermarkTypeError(f"a json watermark must be JSON-serialisable: {exc}") from exc


def encode(value: Any, value_type: str) -> str:
    """Canonical text of a watermark (equal values give equal text, which CAS relies on)."""
    vt = _check_type_name(value_type)
    if vt == "timestamptz":
        validate(value, vt, future_tolerance=None)
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if vt == "bigint":
        validate(value, vt)
        return str(value)
    if vt == "text":
        validate(value, vt)
        return str(value)
    validate(value, vt)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _decode_history(text: str | None, value_type: str) -> Any:
    """History is an audit trail, not a cursor: a deleted value (``''``) reads as None, and a value
    written under another type (before a type-changing reset) comes back as its stored text."""
    if text is None or text == "":
        return None
    try:
        return decode(text, value_type)
    except WatermarkTypeError:
        return text


def decode(text: str, value_type: str) -> Any:
    """Parse the stored text back into a Python value; a malformed text raises WatermarkTypeError."""
    vt = _check_type_name(value_type)
    try:
        if vt == "timestamptz":
            dt = datetime.fromisoformat(text)
            if dt.tzinfo is None:
                raise ValueError("no UTC offset")
            return dt.astimezone(UTC)
        if vt == "bigint":
            return int(text)
        if vt == "text":
            return text
        return json.loads(text)
    except ValueError as exc:
        raise WatermarkTypeError(
            f"stored watermark text {text!r} is not a valid {vt}: {exc}; reset() it to a valid value"
        ) from exc


def _regresses(old: Any, new: Any, value_type: str) -> bool:
    return value_type in ORDERED_TYPES and old is not None and new < old


# ---------------------------------------------------------------------------------------------------
# the external table (recommended)


def ensure_schema(conn: Any) -> None:
    """Check that ``state.watermarks``, ``state.watermark_history`` and ``state.run_metrics`` exist.

    They are declared by ``infra/postgres/warehouse/V001__state.sql``, which the lab applies at start;
    nothing is created here (raises :class:`cdclab.common.ddl.NotMigratedError` on a warehouse that was
    not migrated). Runs no DDL, so any number of runs may call it at once.
    """
    require(conn, "state.watermarks")
    conn.commit()  # as when it created them: callers may rely on it


class TableWatermarkStore:
    """Watermarks in ``state.watermarks`` with history, compare-and-set and audited reset.

    Methods run on the caller's connection and do not commit: the caller decides the transaction
    (``with conn:``), so the watermark can commit together with the load when both live in the
    warehouse, or right after it. Reads use the connection's snapshot.
    """

    def __init__(
        self,
        conn: Any,
        *,
        table: str = WATERMARKS,
        history_table: str = HISTORY,
        future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    ) -> None:
        self.conn = conn
        self.table = ident(table)
        self.history_table = ident(history_table)
        self.future_tolerance = future_tolerance

    # -- reads
    def get(self, key: str) -> Watermark | None:
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT value, value_type, updated_at, updated_by_dag_id, updated_by_run_id "
                    "FROM {} WHERE key = %s"
                ).format(self.table),
                (key,),
            )
            row = cur.fetchone()
        if row is None:
            return None
        text, vt, updated_at, dag_id, run_id = row
        return Watermark(key, decode(text, vt), vt, updated_at, dag_id, run_id)

    def read(self, key: str, value_type: ValueType) -> Any:
        """The value a pipeline starts from, checked: the stored type must be ``value_type`` and a
        ``timestamptz`` must not lie in the future; None when the key was never written."""
        wm = self.get(key)
        if wm is None:
            return None
        if wm.value_type != value_type:
            raise WatermarkTypeError(
                f"watermark {key!r} holds a {wm.value_type} value ({wm.value!r}), the pipeline reads a "
                f"{value_type}; reset(key, value, reason, value_type={value_type!r}) to fix it"
            )
        validate(wm.value, value_type, future_tolerance=self.future_tolerance)
        return wm.value

    def get_value(self, key: str, default: Any = None) -> Any:
        wm = self.get(key)
        return default if wm is None else wm.value

    def history(self, key: str) -> list[HistoryEntry]:
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT old_value, new_value, value_type, changed_at, dag_id, run_id, reason "
                    "FROM {} WHERE key = %s ORDER BY id"
                ).format(self.history_table),
                (key,),
            )
            rows = cur.fetchall()
        return [
            HistoryEntry(key, _decode_history(old, vt), _decode_history(new, vt), vt, at, d, r, why)
            for old, new, vt, at, d, r, why in rows
        ]

    # -- writes
    def _validate(self, value: Any, value_type: str) -> str:
        validate(value, value_type, future_tolerance=self.future_tolerance)
        return encode(value, value_type)

    def _record(
        self,
        cur: Any,
        key: str,
        old: str | None,
        new: str,
        vt: str,
        dag_id: str | None,
        run_id: str | None,
        reason: str,
    ) -> None:
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (key, old_value, new_value, value_type, dag_id, run_id, reason) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)"
            ).format(self.history_table),
            (key, old, new, vt, dag_id, run_id, reason),
        )

    def advance(
        self,
        key: str,
        expected_old: Any,
        new: Any,
        *,
        value_type: ValueType,
        dag_id: str | None = None,
        run_id: str | None = None,
        reason: str = "advance",
    ) -> Watermark:
        """Move ``key`` from ``expected_old`` to ``new``; raise if another run moved it first.

        ``expected_old=None`` means "the key does not exist yet" (the first run creates it).
        Equal ``new`` and ``expected_old`` is a no-op that still checks the expectation.
        """
        new_text = self._validate(new, value_type)
        if expected_old is not None:
            validate(expected_old, value_type, future_tolerance=None)
            if _regresses(expected_old, new, value_type):
                raise WatermarkRegressionError(
                    f"advance({key!r}) would move the watermark back from {expected_old!r} to {new!r}; "
                    "watermarks only move forward — use reset(key, value, reason) to reprocess"
                )
        with self.conn.cursor() as cur:
            if expected_old is None:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (key, value, value_type, updated_by_dag_id, updated_by_run_id) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING updated_at"
                    ).format(self.table),
                    (key, new_text, value_type, dag_id, run_id),
                )
                row = cur.fetchone()
                if row is None:
                    self._conflict(cur, key, expected_old, new)
                self._record(cur, key, None, new_text, value_type, dag_id, run_id, "init")
                return Watermark(key, decode(new_text, value_type), value_type, row[0], dag_id, run_id)
            old_text = encode(expected_old, value_type)
            cur.execute(
                sql.SQL(
                    "UPDATE {} SET value = %s, updated_at = now(), updated_by_dag_id = %s, "
                    "updated_by_run_id = %s WHERE key = %s AND value = %s AND value_type = %s "
                    "RETURNING updated_at"
                ).format(self.table),
                (new_text, dag_id, run_id, key, old_text, value_type),
            )
            row = cur.fetchone()
            if row is None:
                self._conflict(cur, key, expected_old, new, value_type)
            if new_text != old_text:
                self._record(cur, key, old_text, new_text, value_type, dag_id, run_id, reason)
            return Watermark(key, decode(new_text, value_type), value_type, row[0], dag_id, run_id)

    def _conflict(
        self, cur: Any, key: str, expected_old: Any, new: Any, value_type: str | None = None
    ) -> None:
        cur.execute(
            sql.SQL(
                "SELECT value, value_type, updated_by_dag_id, updated_by_run_id FROM {} WHERE key = %s"
            ).format(self.table),
            (key,),
        )
        row = cur.fetchone()
        if row is not None and value_type is not None and row[1] != value_type:
            raise WatermarkTypeError(
                f"watermark {key!r} holds a {row[1]} value, this run writes a {value_type}; "
                "reset(key, value, reason, value_type=...) to change its type deliberately"
            )
        current = "absent" if row is None else f"{row[0]!r} (set by {row[2]}/{row[3]})"
        raise WatermarkConflictError(
            f"watermark {key!r} is {current}, this run expected {expected_old!r} and wanted to write "
            f"{new!r}: another run moved it. Do not overwrite — rerun this interval from the current value"
        )

    def reset(
        self,
        key: str,
        value: Any,
        reason: str,
        *,
        value_type: ValueType | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
    ) -> Watermark:
        """Set ``key`` to ``value`` (any direction, type change allowed), audited with ``reason``."""
        if not reason or not reason.strip():
            raise ValueError("reset() needs a reason: it is written to state.watermark_history")
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT value, value_type FROM {} WHERE key = %s FOR UPDATE").format(self.table),
                (key,),
            )
            row = cur.fetchone()
            if row is None and value_type is None:
                raise WatermarkNotFoundError(
                    f"no watermark {key!r} to reset; pass value_type= to create it with reset()"
                )
            vt = value_type or row[1]
            new_text = self._validate(value, vt)
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (key, value, value_type, updated_at, updated_by_dag_id, updated_by_run_id) "
                    "VALUES (%s, %s, %s, now(), %s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, "
                    "value_type = EXCLUDED.value_type, updated_at = EXCLUDED.updated_at, "
                    "updated_by_dag_id = EXCLUDED.updated_by_dag_id, updated_by_run_id = EXCLUDED.updated_by_run_id "
                    "RETURNING updated_at"
                ).format(self.table),
                (key, new_text, vt, dag_id, run_id),
            )
            updated_at = cur.fetchone()[0]
            self._record(
                cur, key, None if row is None else row[0], new_text, vt, dag_id, run_id, f"reset: {reason}"
            )
        return Watermark(key, decode(new_text, vt), vt, updated_at, dag_id, run_id)

    def delete(self, key: str, reason: str, *, dag_id: str | None = None, run_id: str | None = None) -> None:
        """Forget ``key`` (tests and decommissioned pipelines); audited like a reset."""
        with self.conn.cursor() as cur:
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE key = %s RETURNING value, value_type").format(self.table),
                (key,),
            )
            row = cur.fetchone()
            if row is not None:
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (key, old_value, new_value, value_type, dag_id, run_id, reason) "
                        "VALUES (%s, %s, '', %s, %s, %s, %s)"
                    ).format(self.history_table),
                    (key, row[0], row[1], dag_id, run_id, f"delete: {reason}"),
                )


# ---------------------------------------------------------------------------------------------------
# Airflow Variables (Task SDK; call inside tasks only)


class VariableWatermarkStore:
    """Watermarks as Airflow Variables named ``<prefix><key>`` holding ``{"type": ..., "value": ...}``.

    Last writer wins: there is no compare-and-set, so ``max_active_runs=1`` is what keeps two runs
    from racing. Use inside a task (``Variable.get`` at parse time is forbidden in the lab).
    """

    def __init__(
        self, prefix: str = "watermark__", future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE
    ) -> None:
        self.prefix = prefix
        self.future_tolerance = future_tolerance

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def get(self, key: str, value_type: ValueType) -> Any:
        from airflow.sdk import Variable

        raw = Variable.get(self.name(key), default=None)
        if raw is None:
            return None
        return parse_typed_document(raw, value_type, where=f"Variable {self.name(key)!r}")

    def set(self, key: str, value: Any, value_type: ValueType) -> None:
        from airflow.sdk import Variable

        validate(value, value_type, future_tolerance=self.future_tolerance)
        Variable.set(
            self.name(key),
            typed_document(value, value_type),
            description=f"cdclab watermark ({value_type}), written by cdclab.state.watermarks",
        )

    def delete(self, key: str) -> None:
        from airflow.sdk import Variable

        Variable.delete(self.name(key))


def typed_document(value: Any, value_type: str) -> str:
    """``{"type": "timestamptz", "value": "2026-01-01T00:00:00.000000+00:00"}`` as JSON text."""
    return json.dumps({"type": value_type, "value": encode(value, value_type)}, sort_keys=True)


def parse_typed_document(raw: Any, value_type: str, *, where: str = "state") -> Any:
    """Inverse of :func:`typed_document`; a wrong or missing type raises WatermarkTypeError."""
    doc = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(doc, dict) or "type" not in doc or "value" not in doc:
        raise WatermarkTypeError(
            f"{where} does not hold a typed watermark document ({raw!r}); expected "
            '{"type": ..., "value": ...} — delete it or write it with cdclab.state.watermarks'
        )
    if doc["type"] != value_type:
        raise WatermarkTypeError(
            f"{where} holds a {doc['type']} watermark, the pipeline reads a {value_type}; "
            "fix the pipeline or reset the stored value"
        )
    return decode(doc["value"], value_type)


# ---------------------------------------------------------------------------------------------------
# XCom (per-run hand-over)


def xcom_payload(value: Any, value_type: ValueType) -> dict[str, str]:
    """A JSON-safe XCom value that keeps the watermark's type across the hand-over."""
    return {"type": value_type, "value": encode(value, value_type)}


def from_xcom_payload(payload: Any, value_type: ValueType) -> Any:
    if payload is None:
        return None
    return parse_typed_document(payload, value_type, where="XCom payload")


# ---------------------------------------------------------------------------------------------------
# Airflow 3.3 asset state store (context["asset_state_store"][asset]; inside tasks only)


class AssetStateWatermarkStore:
    """Typed watermarks on an asset's state store (persist across runs; no CAS, no history)."""

    def __init__(self, accessor: Any, future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE) -> None:
        self.accessor = accessor
        self.future_tolerance = future_tolerance

    def get(self, key: str, value_type: ValueType) -> Any:
        raw = self.accessor.get(key, default=None)
        if raw is None:
            return None
        return parse_typed_document(raw, value_type, where=f"asset state {key!r}")

    def set(self, key: str, value: Any, value_type: ValueType) -> None:
        validate(value, value_type, future_tolerance=self.future_tolerance)
        self.accessor.set(key, {"type": value_type, "value": encode(value, value_type)})


# ---------------------------------------------------------------------------------------------------
# run metrics


def record_run_metrics(
    conn: Any,
    *,
    pipeline: str,
    strategy: str,
    rows_read: int,
    rows_written: int,
    duration_ms: float,
    dag_id: str | None = None,
    run_id: str | None = None,
    interval_start: datetime | None = None,
    interval_end: datetime | None = None,
    table: str = RUN_METRICS,
) -> None:
    """Append one row to ``state.run_metrics`` (does not commit)."""
    row = {
        "pipeline": pipeline,
        "strategy": strategy,
        "dag_id": dag_id,
        "run_id": run_id,
        "interval_start": interval_start,
        "interval_end": interval_end,
        "rows_read": rows_read,
        "rows_written": rows_written,
        "duration_ms": duration_ms,
    }
    with conn.cursor() as cur:
        insert_row(cur, table, row)
