"""The shop's model: tables, row types, errors, the workload's parameters, operations and the
in-memory :class:`ShopModel` that predicts the end state (see :mod:`cdclab.workload`)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Any, Literal, TypedDict, get_args
from zoneinfo import ZoneInfo

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
