"""The planner: a workload's deterministic list of operations and the state they leave (see
:mod:`cdclab.workload`)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import islice

from cdclab.workload.model import (
    _ADJ,
    _FIRST,
    _LAST,
    _NOUN,
    DST_ZONES,
    ID_SPAN,
    ORDER_FLOW,
    PARENTS,
    PAYMENT_METHODS,
    SOFT_DELETE_TABLES,
    TABLE_WEIGHTS,
    TIERS,
    ZONES,
    InvalidWorkloadError,
    Key,
    Operation,
    OpKind,
    Row,
    ShopModel,
    TableName,
    Workload,
    dst_changes,
)

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
