"""The shop change generator: deterministic inserts, updates and deletes, and the state they leave.

Every curriculum DAG reads changes from the ``shop`` database; this module makes those changes, and
tells a test exactly which rows the source must hold afterwards, so the test can compare a target
table to the source row by row.

Vocabulary:
- *operation* (:class:`Operation`): one row change in one logical table: ``insert``, ``update``,
  ``delete`` (hard: the row is gone), ``soft_delete`` (``is_deleted = true`` plus ``deleted_at``; the
  row stays) or ``restore`` (undo a soft delete). Soft deletes and restores are updates to Postgres.
  Deleting an order first deletes its order items and payments, as explicit statements, so a copy of
  a table (which has no foreign keys) gets the same changes as the shop's own tables.
- *workload* (:class:`Workload`): the parameters of a run: seed, number of operations, id range,
  tables and anomaly fractions. Rate and transaction size are *how* a run is applied, not *what*
  it does, so they are arguments of :func:`run_workload` and never change the end state.
- *seed*: the only source of randomness. The same seed and parameters give the same *plan* (the
  list of operations, :func:`plan`) and therefore the same end state; operation ``i`` never depends
  on how many operations come after it, so a plan of 200 starts with the plan of 100.
- *business clock*: the deterministic time of operation ``i``, ``start + i * step``. It fills the
  business columns (``created_at``, ``ordered_at``, ``paid_at``, ``deleted_at``); it is not the wall
  clock. ``updated_at`` *is* the wall clock: the ``touch_row`` trigger sets it to the transaction's
  start (``now()``), so no model can predict it and :data:`COLUMNS` leaves it out. ``version`` is
  the predictable change counter instead: 1 on insert, +1 on every update.
- *id range*: a workload owns the ids ``id_base + 1 .. id_base + ID_SPAN`` in every table
  (``order_items`` by ``order_id``) and touches no other row, so many tests can share one database.
  :func:`id_base_for` derives a base from a test's unique name.
- *physical table*: where a logical table (``customers``) really lives; ``public.<logical>`` unless
  :attr:`Workload.tables` maps it elsewhere, e.g. to a copy made by :func:`create_table_copy`.
- *expected state* (:func:`expected_state`): the rows per logical table, in key order, that a pure
  in-memory model (:class:`ShopModel`) holds after applying the plan; :func:`actual_state` reads the
  same columns of the same id range from Postgres, so a test asserts ``actual == expected``.
- *anomalies* (all off by default): *duplicates* (an update applied a second time, as its own
  transaction: the same values, one more version); *long transactions* (an update whose transaction
  stays open ``long_tx_seconds`` on a second connection while later operations commit, so the row
  commits after rows whose ``updated_at`` is later than its own: the watermark trap); *DST* (customers
  in zones with daylight saving time and orders whose ``ordered_at`` lies within 90 minutes of a DST
  change of the customer's zone); *soft deletes* vs hard deletes, and *restores* of soft-deleted rows.
- *clickstream event* (:class:`ClickEvent`, :func:`clickstream_events`): a web event with an
  ``event_time`` (when it happened) and an ``ingest_time`` (when the pipeline got it); some are *late*
  (ingested at least ``lateness`` after they happened), *out of order* (ingested after events that
  happened later, but not late) or *duplicated* (delivered twice with the same ``event_id``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property, lru_cache
from itertools import islice
from typing import Any, Literal, TypedDict, get_args
from zoneinfo import ZoneInfo

from psycopg2 import sql

from cdclab.db import ident

# --------------------------------------------------------------------------------------------------
# vocabulary types

TableName = Literal["customers", "products", "orders", "order_items", "payments"]
OpKind = Literal["insert", "update", "delete", "soft_delete", "restore"]
Key = tuple[int, ...]
Row = dict[str, Any]

TABLES: tuple[TableName, ...] = get_args(TableName)
OP_KINDS: tuple[OpKind, ...] = get_args(OpKind)
ID_SPAN = 1_000_000
"""Ids a workload owns in every table: ``id_base + 1 .. id_base + ID_SPAN``."""
DEFAULT_START = datetime(2026, 3, 1, tzinfo=UTC)
MAX_BIGINT = 2**63 - 1


class CustomerRow(TypedDict):
    id: int
    email: str
    full_name: str
    home_tz: str
    tier: str
    created_at: datetime
    version: int
    is_deleted: bool
    deleted_at: datetime | None


class ProductRow(TypedDict):
    id: int
    sku: str
    name: str
    price: Decimal
    description: str | None
    version: int
    is_deleted: bool
    deleted_at: datetime | None


class OrderRow(TypedDict):
    id: int
    customer_id: int
    status: str
    ordered_at: datetime
    total: Decimal
    version: int


class OrderItemRow(TypedDict):
    order_id: int
    line_no: int
    product_id: int
    quantity: int
    unit_price: Decimal
    version: int


class PaymentRow(TypedDict):
    id: int
    order_id: int
    amount: Decimal
    method: str
    paid_at: datetime
    version: int


_ROW_TYPES: dict[TableName, type] = {
    "customers": CustomerRow,
    "products": ProductRow,
    "orders": OrderRow,
    "order_items": OrderItemRow,
    "payments": PaymentRow,
}
COLUMNS: dict[TableName, tuple[str, ...]] = {t: tuple(_ROW_TYPES[t].__annotations__) for t in TABLES}
"""The columns the model predicts, per table: every column except the trigger's ``updated_at``."""
KEY_COLUMNS: dict[TableName, tuple[str, ...]] = {
    t: ("order_id", "line_no") if t == "order_items" else ("id",) for t in TABLES
}
RANGE_COLUMN: dict[TableName, str] = {t: KEY_COLUMNS[t][0] for t in TABLES}
"""The column whose value lies in the id range (``order_items`` belong to their order's range)."""
PARENTS: dict[TableName, tuple[TableName, ...]] = {
    "customers": (),
    "products": (),
    "orders": ("customers",),
    "order_items": ("orders", "products"),
    "payments": ("orders",),
}
SOFT_DELETE_TABLES: tuple[TableName, ...] = ("customers", "products")
TABLE_WEIGHTS: dict[OpKind, dict[TableName, float]] = {
    "insert": {"customers": 2.0, "products": 1.0, "orders": 3.0, "order_items": 4.0, "payments": 2.0},
    "update": {"customers": 2.0, "products": 1.0, "orders": 3.0, "order_items": 2.0, "payments": 1.0},
    "delete": {"customers": 1.0, "products": 0.5, "orders": 0.5, "order_items": 2.0, "payments": 1.0},
}
"""How often each table is picked, per kind of operation (orders are cancelled more than deleted)."""
ZONES = (
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/Los_Angeles",
    "Asia/Tokyo",
)
DST_ZONES = ("America/New_York", "Europe/Berlin")
"""Home zones given to customers picked for DST anomalies (both change clocks in March and Oct/Nov)."""
DST_WINDOW = timedelta(minutes=90)
TIERS = ("basic", "silver", "gold", "platinum")
ORDER_FLOW = {"new": "paid", "paid": "shipped", "shipped": "delivered"}
PAYMENT_METHODS = ("card", "paypal", "bank_transfer", "gift_card")
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman")
_ADJ = ("Red", "Blue", "Small", "Large", "Quiet", "Fast", "Smart", "Classic")
_NOUN = ("Mug", "Lamp", "Chair", "Notebook", "Backpack", "Kettle", "Headset", "Plant")


# --------------------------------------------------------------------------------------------------
# errors: one per failure mode, each says how to fix it


class WorkloadError(Exception):
    """Base class of the change generator's errors."""


class InvalidWorkloadError(WorkloadError, ValueError):
    """A workload parameter is out of range or inconsistent."""


class TableMappingError(WorkloadError, ValueError):
    """The logical -> physical table mapping would break a foreign key or names an unknown table."""


class IdRangeInUseError(WorkloadError):
    """A fresh run found rows already in its id range."""

    def __init__(self, table: str, id_base: int) -> None:
        super().__init__(
            f"{table} already has rows in the id range {id_base + 1}..{id_base + ID_SPAN}: a fresh run "
            f"(start=0) needs an empty range. Pass reset=True (CLI: --reset) to delete them first, use "
            f"another id_base (id_base_for(<unique name>)), or resume with start=<ops already applied> "
            f"(CLI: --from-op N)."
        )


class WorkloadDivergedError(WorkloadError):
    """The database did not hold the row an operation expected: someone else changed the id range."""

    def __init__(self, op: Operation, physical: str, rowcount: int) -> None:
        super().__init__(
            f"operation #{op.seq} ({op.kind} {op.table} key={op.key}) changed {rowcount} rows in {physical}, "
            f"expected 1: the database no longer matches the model. Another writer touched this id "
            f"range, or a resumed run used the wrong start. Reset the range (reset=True) and rerun."
        )


class OpenTransactionError(WorkloadError):
    """The connection handed to the runner is inside a transaction it does not own."""

    def __init__(self) -> None:
        super().__init__(
            "the connection has an open transaction: commit or roll back before running a workload "
            "(the runner commits its own transactions and would otherwise commit yours)."
        )


class ProtectedTableError(WorkloadError):
    """An attempt to drop one of the shop's own tables through :func:`drop_table_copy`."""


class ModelError(WorkloadError, AssertionError):
    """An operation that the model cannot apply (a plan bug, or a hand-written operation that is wrong)."""


# --------------------------------------------------------------------------------------------------
# parameters


@dataclass(frozen=True)
class OpMix:
    """Relative weights of inserts, updates and deletes (soft deletes and restores count as deletes)."""

    insert: float = 0.45
    update: float = 0.40
    delete: float = 0.15

    def __post_init__(self) -> None:
        values = (self.insert, self.update, self.delete)
        if min(values) < 0 or sum(values) <= 0:
            raise InvalidWorkloadError(f"OpMix weights must be >= 0 with a positive sum, got {values}")


@dataclass(frozen=True)
class Workload:
    """What a run does. Same fields -> same plan -> same end state.

    ``only``: the logical tables the workload changes; ``None`` means all five, or exactly the mapped
    tables when ``tables`` is given. A table needs its parents (orders need customers, order items
    need orders and products, payments need orders).
    """

    seed: int
    ops: int
    id_base: int = 0
    tables: Mapping[str, str] = field(default_factory=dict)
    only: tuple[TableName, ...] | None = None
    mix: OpMix = field(default_factory=OpMix)
    soft_deletes: float = 0.0
    restores: float = 0.0
    duplicates: float = 0.0
    long_tx: float = 0.0
    long_tx_seconds: float = 2.0
    dst: float = 0.0
    start: datetime = DEFAULT_START
    step: timedelta = timedelta(minutes=1)
    dst_year: int | None = None  # the year whose DST changes DST orders lie near; None: start's year

    def __post_init__(self) -> None:
        if not 0 <= self.ops <= ID_SPAN:
            raise InvalidWorkloadError(f"ops must be between 0 and {ID_SPAN} (the id range), got {self.ops}")
        if self.id_base < 0 or self.id_base + ID_SPAN > MAX_BIGINT:
            raise InvalidWorkloadError(
                f"id_base must be >= 0 and leave room for {ID_SPAN} ids, got {self.id_base}"
            )
        for name in ("soft_deletes", "restores", "duplicates", "long_tx", "dst"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidWorkloadError(f"{name} is a fraction between 0 and 1, got {value}")
        if self.long_tx_seconds < 0:
            raise InvalidWorkloadError(f"long_tx_seconds must be >= 0, got {self.long_tx_seconds}")
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise InvalidWorkloadError(
                f"start is a naive datetime ({self.start!r}); pass an aware one, e.g. "
                f"datetime(2026, 3, 1, tzinfo=UTC)"
            )
        if self.step <= timedelta(0):
            raise InvalidWorkloadError(f"step must be positive, got {self.step}")
        for logical, physical in self.tables.items():
            if logical not in TABLES:
                raise TableMappingError(f"unknown logical table {logical!r} in tables; use one of {TABLES}")
            _check_physical(physical)
        only = self.touched
        for table in only:
            if table not in TABLES:
                raise InvalidWorkloadError(f"unknown table {table!r} in only; use one of {TABLES}")
            for parent in PARENTS[table]:
                if parent not in only:
                    raise InvalidWorkloadError(
                        f"{table} rows need {parent} rows: add {parent!r} to only (or drop {table!r})"
                    )
                if parent in self.tables and table not in self.tables:
                    raise TableMappingError(
                        f"{table} is the shop's own table (public.{table}) but its parent {parent} is mapped "
                        f"to {self.tables[parent]}: the foreign key of public.{table} would reject "
                        f"every row. "
                        f"Map {table} to a copy too (create_table_copy) or leave it out of only."
                    )

    @cached_property
    def touched(self) -> tuple[TableName, ...]:
        """The logical tables this workload changes, in parent-first order."""
        if self.only is not None:
            wanted: set[str] = set(self.only)
        elif self.tables:
            wanted = set(self.tables)
        else:
            wanted = set(TABLES)
        unknown = wanted - set(TABLES)
        if unknown:
            raise InvalidWorkloadError(f"unknown table(s) {sorted(unknown)}; use names from {TABLES}")
        return tuple(t for t in TABLES if t in wanted)

    def physical(self, table: TableName) -> str:
        """The schema-qualified table that holds ``table``'s rows for this workload."""
        return self.tables.get(table, f"public.{table}")

    @property
    def id_range(self) -> tuple[int, int]:
        """``(first, last)`` id this workload may use, inclusive."""
        return self.id_base + 1, self.id_base + ID_SPAN

    def at(self, seq: int) -> datetime:
        """The business-clock time of operation ``seq``."""
        return (self.start + self.step * seq).astimezone(UTC)


def _check_physical(name: str) -> None:
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or any(not p or len(p) > 63 for p in parts):
        raise TableMappingError(
            f"physical table name {name!r} must be 'table' or 'schema.table' with parts of 1-63 characters"
        )


def id_base_for(name: str) -> int:
    """A stable id base for a unique name (e.g. a test's ``names("wl")``): a multiple of ``ID_SPAN``.

    Two names collide with probability about one in a million; 0 is never returned (it is the
    interactive lab's range, the CLI's default).
    """
    digest = hashlib.sha256(name.encode()).digest()
    return (int.from_bytes(digest[:8], "big") % 1_000_000 + 1) * ID_SPAN


@lru_cache(maxsize=64)
def dst_changes(zone: str, year: int) -> tuple[datetime, ...]:
    """The UTC instants in ``year`` at which ``zone`` changes its UTC offset (e.g. two for New York)."""
    tz = ZoneInfo(zone)
    changes: list[datetime] = []
    t = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    previous = t.astimezone(tz).utcoffset()
    while t < end:
        nxt = t + timedelta(hours=1)
        offset = nxt.astimezone(tz).utcoffset()
        if offset != previous:
            m = t
            while m.astimezone(tz).utcoffset() == previous:
                m += timedelta(minutes=1)
            changes.append(m)
            previous = offset
        t = nxt
    return tuple(changes)


# --------------------------------------------------------------------------------------------------
# operations and the model


@dataclass(frozen=True)
class Operation:
    """One row change. ``values``: every model column but ``version`` for inserts, the changed columns
    for updates, empty for deletes. ``duplicate_of``: the seq of the update this one repeats.
    ``hold_seconds`` > 0: a long transaction (kept open that long before it commits)."""

    seq: int
    kind: OpKind
    table: TableName
    key: Key
    values: Mapping[str, Any]
    at: datetime
    duplicate_of: int | None = None
    hold_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (``json.dumps(op.as_dict(), default=json_default)``)."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "table": self.table,
            "key": list(self.key),
            "values": dict(self.values),
            "at": self.at,
            "duplicate_of": self.duplicate_of,
            "hold_seconds": self.hold_seconds,
        }


class _Bag:
    """Keys with O(1) add, remove and a deterministic random choice."""

    def __init__(self) -> None:
        self._items: list[Key] = []
        self._pos: dict[Key, int] = {}

    def add(self, key: Key) -> None:
        if key not in self._pos:
            self._pos[key] = len(self._items)
            self._items.append(key)

    def discard(self, key: Key) -> None:
        i = self._pos.pop(key, None)
        if i is None:
            return
        last = self._items.pop()
        if i < len(self._items):
            self._items[i] = last
            self._pos[last] = i

    def choice(self, rng: random.Random) -> Key:
        return self._items[rng.randrange(len(self._items))]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._pos


class ShopModel:
    """The shop tables in memory: apply operations, read the rows. Pure; no database.

    Semantics match Postgres with the ``touch_row`` trigger: an insert starts at version 1, every
    update (including soft deletes, restores and duplicates) adds 1, a delete removes the row, and
    deleting an order removes its order items and payments.
    """

    def __init__(self) -> None:
        self.rows: dict[TableName, dict[Key, Row]] = {t: {} for t in TABLES}
        self.live: dict[TableName, _Bag] = {t: _Bag() for t in TABLES}
        self.soft_deleted: dict[TableName, _Bag] = {t: _Bag() for t in SOFT_DELETE_TABLES}
        self.inserted: dict[TableName, int] = dict.fromkeys(TABLES, 0)
        self.orders_of_customer: dict[int, int] = {}
        self.items_of_product: dict[int, int] = {}
        self.items_of_order: dict[int, set[int]] = {}
        self.payments_of_order: dict[int, set[int]] = {}
        self.next_line: dict[int, int] = {}

    def apply(self, op: Operation) -> None:
        rows = self.rows[op.table]
        if op.kind == "insert":
            if op.key in rows:
                raise ModelError(f"#{op.seq}: insert into {op.table} of existing key {op.key}")
            row: Row = dict(op.values)
            row["version"] = 1
            rows[op.key] = {c: row.get(c) for c in COLUMNS[op.table]}
            self.inserted[op.table] += 1
            self.live[op.table].add(op.key)
            self._link(op.table, rows[op.key], +1)
            return
        if op.key not in rows:
            raise ModelError(f"#{op.seq}: {op.kind} of missing {op.table} key {op.key}")
        if op.kind == "delete":
            self._delete(op.table, op.key)
            return
        row = rows[op.key]
        unknown = set(op.values) - set(COLUMNS[op.table]) - {"version"}
        if unknown or "version" in op.values:
            raise ModelError(
                f"#{op.seq}: cannot set {sorted(set(op.values) - set(COLUMNS[op.table]))} "
                f"on {op.table} (version belongs to the trigger)"
            )
        row.update(op.values)
        row["version"] += 1
        if op.table in SOFT_DELETE_TABLES:
            if row["is_deleted"]:
                self.live[op.table].discard(op.key)
                self.soft_deleted[op.table].add(op.key)
            else:
                self.soft_deleted[op.table].discard(op.key)
                self.live[op.table].add(op.key)

    def _delete(self, table: TableName, key: Key) -> None:
        if table == "orders":
            order_id = key[0]
            for line in sorted(self.items_of_order.get(order_id, ())):
                self._delete("order_items", (order_id, line))
            for pid in sorted(self.payments_of_order.get(order_id, ())):
                self._delete("payments", (pid,))
        if table == "customers" and self.orders_of_customer.get(key[0]):
            raise ModelError(f"customer {key[0]} still has orders: the foreign key forbids a hard delete")
        if table == "products" and self.items_of_product.get(key[0]):
            raise ModelError(
                f"product {key[0]} is still in order items: the foreign key forbids a hard delete"
            )
        row = self.rows[table].pop(key)
        self.live[table].discard(key)
        if table in SOFT_DELETE_TABLES:
            self.soft_deleted[table].discard(key)
        self._link(table, row, -1)

    def _link(self, table: TableName, row: Row, delta: int) -> None:
        def bump(counter: dict[int, int], k: int) -> None:
            counter[k] = counter.get(k, 0) + delta

        if table == "orders":
            bump(self.orders_of_customer, row["customer_id"])
        elif table == "order_items":
            bump(self.items_of_product, row["product_id"])
            lines = self.items_of_order.setdefault(row["order_id"], set())
            if delta > 0:
                lines.add(row["line_no"])
                self.next_line[row["order_id"]] = max(self.next_line.get(row["order_id"], 0), row["line_no"])
            else:
                lines.discard(row["line_no"])
        elif table == "payments":
            payments = self.payments_of_order.setdefault(row["order_id"], set())
            if delta > 0:
                payments.add(row["id"])
            else:
                payments.discard(row["id"])

    def table_rows(self, table: TableName) -> list[Row]:
        """Copies of ``table``'s rows in key order, with exactly :data:`COLUMNS` ``[table]``."""
        return [dict(self.rows[table][k]) for k in sorted(self.rows[table])]

    def order_total(self, order_id: int) -> Decimal:
        total = sum(
            (
                self.rows["order_items"][(order_id, line)]["quantity"]
                * self.rows["order_items"][(order_id, line)]["unit_price"]
                for line in self.items_of_order.get(order_id, ())
            ),
            Decimal("0.00"),
        )
        return total.quantize(Decimal("0.01"))


# --------------------------------------------------------------------------------------------------
# the generator


def _cents(rng: random.Random, low: int, high: int) -> Decimal:
    return Decimal(rng.randint(low, high)) / Decimal(100)


class _Planner:
    def __init__(self, wl: Workload) -> None:
        self.wl = wl
        self.rng = random.Random(wl.seed)
        self.model = ShopModel()
        self.touched = wl.touched
        self.pending_duplicate: Operation | None = None

    def __iter__(self) -> Iterator[Operation]:
        for seq in range(self.wl.ops):
            if self.pending_duplicate is not None:
                src = self.pending_duplicate
                self.pending_duplicate = None
                op = Operation(
                    seq, src.kind, src.table, src.key, src.values, self.wl.at(seq), duplicate_of=src.seq
                )
            else:
                op = self._next(seq)
            self.model.apply(op)
            yield op

    def _new_id(self, table: TableName) -> int:
        return self.wl.id_base + self.model.inserted[table] + 1

    def _feasible(self, kind: str, table: TableName) -> bool:
        m = self.model
        if kind == "insert":
            if m.inserted[table] >= ID_SPAN:
                return False
            return all(len(m.live[p]) > 0 for p in PARENTS[table])
        if kind == "delete" and table in SOFT_DELETE_TABLES:
            return len(m.live[table]) > 0 or (self.wl.restores > 0 and len(m.soft_deleted[table]) > 0)
        return len(m.live[table]) > 0

    def _next(self, seq: int) -> Operation:
        rng = self.rng
        mix = self.wl.mix
        kinds: tuple[tuple[OpKind, float], ...] = (
            ("insert", mix.insert),
            ("update", mix.update),
            ("delete", mix.delete),
        )
        candidates = [
            (kind, table, weight * TABLE_WEIGHTS[kind][table])
            for kind, weight in kinds
            for table in self.touched
            if weight > 0 and self._feasible(kind, table)
        ]
        if not candidates:
            raise InvalidWorkloadError(
                f"operation #{seq}: nothing can be inserted; give OpMix.insert a weight > 0"
            )
        pick = rng.random() * sum(w for _, _, w in candidates)
        kind, table = candidates[-1][0], candidates[-1][1]
        for k, t, w in candidates:
            if pick < w:
                kind, table = k, t
                break
            pick -= w
        at = self.wl.at(seq)
        if kind == "insert":
            return self._insert(seq, table, at)
        if kind == "delete":
            return self._delete(seq, table, at)
        return self._update(seq, table, at)

    def _insert(self, seq: int, table: TableName, at: datetime) -> Operation:
        rng, m, wl = self.rng, self.model, self.wl
        values: Row
        if table == "customers":
            cid = self._new_id(table)
            zone = rng.choice(DST_ZONES) if rng.random() < wl.dst else rng.choice(ZONES)
            values = {
                "id": cid,
                "email": f"c{cid}@shop.example",
                "full_name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                "home_tz": zone,
                "tier": "basic",
                "created_at": at,
                "is_deleted": False,
                "deleted_at": None,
            }
            key: Key = (cid,)
        elif table == "products":
            pid = self._new_id(table)
            values = {
                "id": pid,
                "sku": f"SKU-{pid}",
                "name": f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}",
                "price": _cents(rng, 199, 49_999),
                "description": None,
                "is_deleted": False,
                "deleted_at": None,
            }
            key = (pid,)
        elif table == "orders":
            oid = self._new_id(table)
            customer = m.live["customers"].choice(rng)[0]
            ordered_at = at
            if rng.random() < wl.dst:
                for _ in range(8):
                    if m.rows["customers"][(customer,)]["home_tz"] in DST_ZONES:
                        break
                    customer = m.live["customers"].choice(rng)[0]
                zone = m.rows["customers"][(customer,)]["home_tz"]
                changes = dst_changes(
                    zone if zone in DST_ZONES else DST_ZONES[0], wl.dst_year or wl.start.astimezone(UTC).year
                )
                ordered_at = rng.choice(changes) + timedelta(
                    minutes=rng.randint(-89, 89), seconds=rng.randint(0, 59)
                )
            values = {
                "id": oid,
                "customer_id": customer,
                "status": "new",
                "ordered_at": ordered_at,
                "total": Decimal("0.00"),
            }
            key = (oid,)
        elif table == "order_items":
            order_id = m.live["orders"].choice(rng)[0]
            product = m.live["products"].choice(rng)[0]
            line = m.next_line.get(order_id, 0) + 1
            values = {
                "order_id": order_id,
                "line_no": line,
                "product_id": product,
                "quantity": rng.randint(1, 5),
                "unit_price": m.rows["products"][(product,)]["price"],
            }
            key = (order_id, line)
        else:
            pid = self._new_id(table)
            order_id = m.live["orders"].choice(rng)[0]
            total = m.order_total(order_id)
            amount = total if total > 0 else _cents(rng, 500, 20_000)
            values = {
                "id": pid,
                "order_id": order_id,
                "amount": amount,
                "method": rng.choice(PAYMENT_METHODS),
                "paid_at": at,
            }
            key = (pid,)
        return Operation(seq, "insert", table, key, values, at)

    def _update(self, seq: int, table: TableName, at: datetime) -> Operation:
        rng, m, wl = self.rng, self.model, self.wl
        key = m.live[table].choice(rng)
        row = m.rows[table][key]
        values: Row
        if table == "customers":
            r = rng.random()
            if r < 0.6:
                values = {"tier": rng.choice([t for t in TIERS if t != row["tier"]])}
            elif r < 0.9:
                values = {"full_name": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"}
            else:
                values = {"home_tz": rng.choice(DST_ZONES) if rng.random() < wl.dst else rng.choice(ZONES)}
        elif table == "products":
            if rng.random() < 0.7:
                values = {"price": _cents(rng, 199, 49_999)}
            else:
                values = {
                    "description": f"{rng.choice(_ADJ).lower()} and {rng.choice(_ADJ).lower()}, rev {seq}"
                }
        elif table == "orders":
            status = ORDER_FLOW.get(row["status"], row["status"])
            if row["status"] == "new" and rng.random() < 0.1:
                status = "cancelled"
            values = {"status": status, "total": m.order_total(key[0])}
        elif table == "order_items":
            values = {"quantity": rng.choice([q for q in range(1, 6) if q != row["quantity"]])}
        else:
            if rng.random() < 0.5:
                values = {"method": rng.choice([p for p in PAYMENT_METHODS if p != row["method"]])}
            else:
                values = {"amount": _cents(rng, 500, 20_000)}
        hold = 0.0
        if rng.random() < wl.long_tx:
            hold = wl.long_tx_seconds
        elif rng.random() < wl.duplicates:
            self.pending_duplicate = Operation(seq, "update", table, key, values, at)
        return Operation(seq, "update", table, key, values, at, hold_seconds=hold)

    def _delete(self, seq: int, table: TableName, at: datetime) -> Operation:
        rng, m, wl = self.rng, self.model, self.wl
        if table in SOFT_DELETE_TABLES:
            soft = m.soft_deleted[table]
            if len(soft) > 0 and (len(m.live[table]) == 0 or rng.random() < wl.restores):
                return Operation(
                    seq, "restore", table, soft.choice(rng), {"is_deleted": False, "deleted_at": None}, at
                )
            if rng.random() < wl.soft_deletes:
                return Operation(
                    seq,
                    "soft_delete",
                    table,
                    m.live[table].choice(rng),
                    {"is_deleted": True, "deleted_at": at},
                    at,
                )
            refs = m.orders_of_customer if table == "customers" else m.items_of_product
            for _ in range(8):
                key = m.live[table].choice(rng)
                if not refs.get(key[0]):
                    return Operation(seq, "delete", table, key, {}, at)
            return self._update(seq, table, at)
        return Operation(seq, "delete", table, m.live[table].choice(rng), {}, at)


def iter_plan(workload: Workload) -> Iterator[Operation]:
    """The workload's operations, one at a time (cheap for large workloads)."""
    return iter(_Planner(workload))


def plan(workload: Workload) -> list[Operation]:
    """All of the workload's operations, in order. Same workload -> equal list."""
    return list(iter_plan(workload))


def model_after(workload: Workload, upto: int | None = None) -> ShopModel:
    """The model after the first ``upto`` operations (all of them when ``None``)."""
    planner = _Planner(workload)
    stop = workload.ops if upto is None else upto
    if not 0 <= stop <= workload.ops:
        raise InvalidWorkloadError(f"upto must be between 0 and ops={workload.ops}, got {upto}")
    for _ in islice(planner, stop):
        pass
    return planner.model


def expected_state(workload: Workload, upto: int | None = None) -> dict[TableName, list[Row]]:
    """The rows each touched table holds in the id range after ``upto`` operations, in key order.

    Columns are :data:`COLUMNS` (no ``updated_at``: that is the server's clock).
    """
    model = model_after(workload, upto)
    return {t: model.table_rows(t) for t in workload.touched}


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


# --------------------------------------------------------------------------------------------------
# clickstream events (pure; producing them to Kafka is the DAGs' job)

EventType = Literal["page_view", "product_view", "add_to_cart", "checkout", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
_EVENT_WEIGHTS = (0.6, 0.2, 0.12, 0.05, 0.03)


class ClickEvent(TypedDict):
    event_id: str
    user_id: int
    event_type: EventType
    event_time: str
    ingest_time: str


def utc_iso(value: datetime) -> str:
    """``2026-03-01T00:00:01.250Z``: UTC, milliseconds, a ``Z`` suffix."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clickstream_events(
    seed: int,
    n: int,
    late_fraction: float = 0.0,
    duplicate_fraction: float = 0.0,
    out_of_order_fraction: float = 0.0,
    start: datetime = DEFAULT_START,
    *,
    users: int = 100,
    id_base: int = 0,
    step: timedelta = timedelta(seconds=1),
    lateness: timedelta = timedelta(minutes=10),
) -> list[ClickEvent]:
    """``n`` distinct events (plus duplicates) in ingest order; deterministic in all arguments.

    Event ``i`` happens at ``start + i * step``. Normally it is ingested 50-900 ms later, so ingest
    order is event-time order. Exactly ``round(n * late_fraction)`` events are *late*: ingested
    ``lateness`` to ``2 * lateness`` after they happened. Exactly ``round(n * out_of_order_fraction)``
    other events are delayed 2-4 steps: they arrive after later events but are not late. Exactly
    ``round(n * duplicate_fraction)`` events are delivered a second time (same ``event_id``, a later
    ``ingest_time``: a producer retry). ``user_id`` is in ``id_base + 1 .. id_base + users``.
    """
    for name, value in (
        ("late_fraction", late_fraction),
        ("duplicate_fraction", duplicate_fraction),
        ("out_of_order_fraction", out_of_order_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise InvalidWorkloadError(f"{name} is a fraction between 0 and 1, got {value}")
    if late_fraction + out_of_order_fraction > 1.0:
        raise InvalidWorkloadError(
            "late_fraction + out_of_order_fraction must be <= 1 (an event is one or the other)"
        )
    if n < 0 or users < 1:
        raise InvalidWorkloadError(f"need n >= 0 and users >= 1, got n={n} users={users}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise InvalidWorkloadError(f"start is a naive datetime ({start!r}); pass an aware one")
    if step <= timedelta(0) or lateness <= step * 4:
        raise InvalidWorkloadError(
            f"need step > 0 and lateness > 4 * step, got step={step} lateness={lateness}"
        )
    rng = random.Random(seed)
    indices = list(range(n))
    late = set(rng.sample(indices, round(n * late_fraction)))
    rest = [i for i in indices if i not in late]
    disordered = set(rng.sample(rest, round(n * out_of_order_fraction)))
    duplicated = set(rng.sample(indices, round(n * duplicate_fraction)))
    deliveries: list[tuple[datetime, int, int, ClickEvent]] = []
    for i in indices:
        event_time = start + step * i
        if i in late:
            delay = lateness + lateness * rng.random()
        elif i in disordered:
            delay = step * (2 + 2 * rng.random())
        else:
            delay = timedelta(milliseconds=rng.randint(50, 900)) * (step / timedelta(seconds=1))
        ingest = event_time + delay
        event: ClickEvent = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": id_base + rng.randint(1, users),
            "event_type": rng.choices(EVENT_TYPES, weights=_EVENT_WEIGHTS)[0],
            "event_time": utc_iso(event_time),
            "ingest_time": utc_iso(ingest),
        }
        deliveries.append((ingest, i, 0, event))
        if i in duplicated:
            again = ingest + timedelta(milliseconds=rng.randint(1_000, 3_000))
            deliveries.append((again, i, 1, {**event, "ingest_time": utc_iso(again)}))
    deliveries.sort(key=lambda d: (d[0], d[1], d[2]))
    return [d[3] for d in deliveries]


# --------------------------------------------------------------------------------------------------
# CLI


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: datetimes as ISO 8601, decimals as strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _table_map(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"expected LOGICAL=PHYSICAL (customers=public.customers_x), got {text!r}"
        )
    logical, physical = text.split("=", 1)
    return logical.strip(), physical.strip()


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; write e.g. 2026-03-01T00:00:00Z")
    return value


def _workload_from(args: argparse.Namespace) -> Workload:
    return Workload(
        seed=args.seed,
        ops=args.ops,
        id_base=args.id_base,
        tables=dict(args.table_map or []),
        only=tuple(args.only) if args.only else None,
        soft_deletes=args.soft_deletes,
        restores=args.restores,
        duplicates=args.duplicates,
        long_tx=args.long_tx,
        long_tx_seconds=args.long_tx_seconds,
        dst=args.dst,
        start=args.start,
        step=timedelta(seconds=args.step_seconds),
    )


def _connect_shop() -> Any:
    import psycopg2

    from cdclab.lab.config import LabConfig

    return psycopg2.connect(LabConfig.load().pg_dsn("shop"), application_name="cdclab-workload")


def _cmd_run(args: argparse.Namespace) -> int:
    wl = _workload_from(args)
    first, last = wl.id_range
    pace = f"{args.rate:g} ops/s" if args.rate else "as fast as possible"
    print(
        f"workload seed={wl.seed} ops={wl.ops} ids {first}..{last}, {pace}; tables: "
        + ", ".join(f"{t}->{wl.physical(t)}" for t in wl.touched)
    )
    last_print = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last_print[0] >= 1.0:
            last_print[0] = now
            print(f"  {done}/{total} operations ({100 * done // max(total, 1)}%)", flush=True)

    conn = _connect_shop()
    try:
        report = run_workload(
            conn,
            wl,
            start=args.from_op,
            stop=args.to_op,
            rate=args.rate,
            batch_size=args.batch_size,
            reset=args.reset,
            on_progress=progress,
        )
    except WorkloadError as exc:
        print(f"cdclab workload: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(report.summary())
    return 0


def _cmd_expected(args: argparse.Namespace) -> int:
    wl = _workload_from(args)
    if args.table not in wl.touched:
        print(
            f"cdclab workload: {args.table} is not changed by this workload (tables: {wl.touched})",
            file=sys.stderr,
        )
        return 1
    for row in expected_state(wl, args.upto)[args.table]:
        print(json.dumps(row, default=json_default))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    wl = _workload_from(args)
    for op in iter_plan(wl):
        print(json.dumps(op.as_dict(), default=json_default))
    return 0


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, required=True, help="the seed; same seed + parameters = same changes")
    p.add_argument("--ops", type=int, required=True, help="number of operations in the plan")
    p.add_argument(
        "--id-base", type=int, default=0, help=f"the id range is ID_BASE+1..ID_BASE+{ID_SPAN} (default 0)"
    )
    p.add_argument(
        "--table-map",
        action="append",
        type=_table_map,
        metavar="LOGICAL=PHYSICAL",
        help="write a logical table to another table, e.g. customers=public.customers_copy (repeatable)",
    )
    p.add_argument("--only", nargs="+", choices=TABLES, help="change only these tables (parents included)")
    p.add_argument(
        "--soft-deletes",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="FRACTION",
        help="soft-delete customers/products instead of deleting them (alone: always; or a fraction)",
    )
    p.add_argument(
        "--restores", type=float, default=0.0, help="fraction of deletes that restore a soft-deleted row"
    )
    p.add_argument("--duplicates", type=float, default=0.0, help="fraction of updates applied twice")
    p.add_argument("--long-tx", type=float, default=0.0, help="fraction of updates in a long transaction")
    p.add_argument(
        "--long-tx-seconds", type=float, default=2.0, help="how long a long transaction stays open"
    )
    p.add_argument(
        "--dst",
        type=float,
        default=0.0,
        help="fraction of customers in DST zones and of orders placed around a DST change",
    )
    p.add_argument(
        "--start", type=_aware, default=DEFAULT_START, help="business clock start (ISO 8601 with offset)"
    )
    p.add_argument("--step-seconds", type=float, default=60.0, help="business clock step per operation")


def add_cli(subparsers: Any) -> None:
    """Register ``cdclab workload run|expected|plan`` on the ``cdclab`` subparsers."""
    workload = subparsers.add_parser(
        "workload",
        help="drive deterministic changes into the shop database",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = workload.add_subparsers(dest="workload_action", required=True)
    run = actions.add_parser(
        "run", help="apply a workload to the shop database, printing progress and a summary"
    )
    _add_workload_args(run)
    run.add_argument(
        "--rate", type=float, default=None, help="operations per second (default: as fast as possible)"
    )
    run.add_argument("--batch-size", type=int, default=1, help="operations per transaction (default 1)")
    run.add_argument("--reset", action="store_true", help="delete existing rows in the id range first")
    run.add_argument(
        "--from-op", type=int, default=0, help="resume: skip the first N operations (already applied)"
    )
    run.add_argument("--to-op", type=int, default=None, help="stop before operation N")
    run.set_defaults(func=_cmd_run)
    expected = actions.add_parser(
        "expected", help="print the rows a table must hold afterwards, as JSON lines"
    )
    _add_workload_args(expected)
    expected.add_argument("--table", choices=TABLES, required=True)
    expected.add_argument(
        "--upto", type=int, default=None, help="after the first N operations (default: all)"
    )
    expected.set_defaults(func=_cmd_expected)
    plan_p = actions.add_parser("plan", help="print the operations as JSON lines (no database)")
    _add_workload_args(plan_p)
    plan_p.set_defaults(func=_cmd_plan)
