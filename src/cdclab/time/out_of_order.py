"""Out-of-order arrival: children that arrive before their parent (a payment before its order).

Vocabulary:
- *parent* / *child*: an order and its payments. A child can only be loaded into the core model once its
  parent is there (the core payment carries the order's ``customer_id``).
- *late arriving parent*: the order reaches the warehouse in a later interval than its payment (another
  system, a slower extract, a retried transaction).
- *buffer*: ``<prefix>_buffer``, the staging table where a child waits for its parent, with ``first_seen``
  (the end of the data interval that first buffered it) and ``last_seen``.
- *reprocessing trigger*: the arrival of the parent. :func:`release` moves every buffered child whose parent
  now exists into the core table in one statement (``DELETE ... RETURNING`` feeding the ``INSERT``).
- *buffer window*: how long a child may wait. :func:`expire` moves children buffered longer than the window
  (measured in scheduler time: ``first_seen <= data_interval_end - window``) to a dead-letter table with the
  reason; nothing is dropped silently.
- *reconciliation*: :func:`reconcile` compares every source child with the warehouse (core + buffer):
  ``missing`` (nowhere), ``stale`` (older version than the source), ``extra`` (not in the source); with
  ``repair`` it loads the missing and stale children whose parent exists (an expired payment whose order
  finally arrived) and marks their dead letters resolved. Each run writes one report row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.common.tablenames import PrefixedTables, Table
from cdclab.merge import upsert

ORDER_COLUMNS = ["id", "customer_id", "status", "total", "ordered_at", "version"]
PAYMENT_COLUMNS = ["id", "order_id", "amount", "method", "paid_at", "version"]


class ParentKeyMissingError(ValueError):
    """A child row without a parent key (``order_id`` NULL): it can never be matched."""


@dataclass(frozen=True)
class Tables(PrefixedTables):
    """This lesson's tables: ``<prefix>_orders``, ``_payments``, ``_buffer``, ``_reconciliation``; and
    its dead-letter table, named in full."""

    dead_letters: str

    orders = Table()
    payments = Table()
    buffer = Table()
    reconciliation = Table()


def ensure(wh: Any, t: Tables) -> None:
    """Create the tables (idempotent) and commit."""
    upsert.ensure_with_orders_copy(
        wh,
        t,
        "CREATE TABLE IF NOT EXISTS {payments} (id bigint PRIMARY KEY, order_id bigint NOT NULL, "
        "customer_id bigint NOT NULL, amount numeric(12,2) NOT NULL, method text NOT NULL, "
        "paid_at timestamptz NOT NULL, version integer NOT NULL, via text NOT NULL);"
        "CREATE TABLE IF NOT EXISTS {buffer} (id bigint PRIMARY KEY, order_id bigint NOT NULL, "
        "amount numeric(12,2) NOT NULL, method text NOT NULL, paid_at timestamptz NOT NULL, "
        "version integer NOT NULL, first_seen timestamptz NOT NULL, last_seen timestamptz NOT NULL);"
        "CREATE TABLE IF NOT EXISTS {dead_letters} (id bigserial PRIMARY KEY, payment_id bigint NOT NULL, "
        "order_id bigint NOT NULL, payload jsonb NOT NULL, reason text NOT NULL, "
        "expired_at timestamptz NOT NULL, resolved_at timestamptz, resolved_by text);"
        "CREATE TABLE IF NOT EXISTS {reconciliation} (id bigserial PRIMARY KEY, run_id text NOT NULL, "
        "checked_at timestamptz NOT NULL, source_rows integer NOT NULL, core_rows integer NOT NULL, "
        "buffered integer NOT NULL, missing bigint[] NOT NULL, stale bigint[] NOT NULL, "
        "extra bigint[] NOT NULL, repaired bigint[] NOT NULL)",
        dead_letters=t.dead_letters,
    )


def _upsert_payment_sql(t: Tables) -> sql.Composed:
    return sql.SQL(
        "INSERT INTO {p} (id, order_id, customer_id, amount, method, paid_at, version, via) "
        "SELECT %(id)s, %(order_id)s, o.customer_id, %(amount)s, %(method)s, %(paid_at)s, %(version)s, %(via)s "
        "FROM {o} o WHERE o.id = %(order_id)s "
        "ON CONFLICT (id) DO UPDATE SET order_id = EXCLUDED.order_id, customer_id = EXCLUDED.customer_id, "
        "amount = EXCLUDED.amount, method = EXCLUDED.method, paid_at = EXCLUDED.paid_at, "
        "version = EXCLUDED.version, via = EXCLUDED.via WHERE {p}.version < EXCLUDED.version "
        "RETURNING id"
    ).format(p=ident(t.payments), o=ident(t.orders))


def ingest(
    wh: Any, t: Tables, orders: list[dict[str, Any]], payments: list[dict[str, Any]], seen_at: datetime
) -> dict[str, int]:
    """Upsert the pulled orders, then load each pulled payment whose order exists and buffer the others.

    Runs on the caller's transaction (no commit). Re-reading a row is harmless: version guards."""
    for p in payments:
        if p.get("order_id") is None:
            raise ParentKeyMissingError(
                f"payment {p.get('id')} has no order_id; fix the source row (a child needs its parent key)"
            )
    written = upsert.upsert_rows(
        wh, t.orders, [{c: o[c] for c in ORDER_COLUMNS} for o in orders], ["id"], "version"
    )
    loaded = buffered = 0
    with wh.cursor() as cur:
        for p in payments:
            row = {c: p[c] for c in PAYMENT_COLUMNS}
            cur.execute(sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(ident(t.orders)), (p["order_id"],))
            if cur.fetchone() is not None:
                cur.execute(_upsert_payment_sql(t), {**row, "via": "direct"})
                loaded += cur.rowcount
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE id = %s AND version <= %s").format(ident(t.buffer)),
                    (p["id"], p["version"]),
                )
                continue
            cur.execute(
                sql.SQL(
                    "SELECT 1 FROM {} WHERE payment_id = %s AND resolved_at IS NULL "
                    "AND (payload->>'version')::int >= %s"
                ).format(ident(t.dead_letters)),
                (p["id"], p["version"]),
            )
            if cur.fetchone() is not None:  # already dead-lettered in this version: reconciliation owns it
                continue
            cur.execute(
                sql.SQL(
                    "INSERT INTO {b} (id, order_id, amount, method, paid_at, version, first_seen, last_seen) "
                    "VALUES (%(id)s, %(order_id)s, %(amount)s, %(method)s, %(paid_at)s, %(version)s, "
                    "%(seen)s, %(seen)s) ON CONFLICT (id) DO UPDATE SET order_id = EXCLUDED.order_id, "
                    "amount = EXCLUDED.amount, method = EXCLUDED.method, paid_at = EXCLUDED.paid_at, "
                    "version = EXCLUDED.version, last_seen = EXCLUDED.last_seen "
                    "WHERE {b}.version < EXCLUDED.version"
                ).format(b=ident(t.buffer)),
                {**row, "seen": seen_at},
            )
            buffered += cur.rowcount
    return {
        "orders_inserted": written.inserted,
        "orders_updated": written.updated,
        "payments_loaded": loaded,
        "payments_buffered": buffered,
    }


def release(wh: Any, t: Tables) -> list[int]:
    """Reprocessing trigger: move every buffered payment whose order has arrived into the core table."""
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM {b} b USING {o} o WHERE o.id = b.order_id "
                "RETURNING b.*, o.customer_id) "
                "INSERT INTO {p} (id, order_id, customer_id, amount, method, paid_at, version, via) "
                "SELECT id, order_id, customer_id, amount, method, paid_at, version, 'released' FROM moved "
                "ON CONFLICT (id) DO UPDATE SET order_id = EXCLUDED.order_id, "
                "customer_id = EXCLUDED.customer_id, amount = EXCLUDED.amount, method = EXCLUDED.method, "
                "paid_at = EXCLUDED.paid_at, version = EXCLUDED.version, via = EXCLUDED.via "
                "WHERE {p}.version < EXCLUDED.version RETURNING id"
            ).format(b=ident(t.buffer), o=ident(t.orders), p=ident(t.payments))
        )
        return sorted(r[0] for r in cur.fetchall())


def expire(wh: Any, t: Tables, now: datetime, window: timedelta) -> list[int]:
    """Move payments buffered since ``now - window`` or earlier to the dead letters, with the reason."""
    cutoff = now - window
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL(
                "WITH gone AS (DELETE FROM {b} WHERE first_seen <= %(cutoff)s RETURNING *) "
                "INSERT INTO {d} (payment_id, order_id, payload, reason, expired_at) "
                "SELECT id, order_id, to_jsonb(gone) - 'first_seen' - 'last_seen', "
                "format('order %%s did not arrive within the buffer window of %%s (buffered since %%s)', "
                "order_id, %(window)s::interval, first_seen), %(now)s FROM gone RETURNING payment_id"
            ).format(b=ident(t.buffer), d=ident(t.dead_letters)),
            {"cutoff": cutoff, "window": window, "now": now},
        )
        return sorted(r[0] for r in cur.fetchall())


def _ids_versions(cur: Any, table: str) -> dict[int, int]:
    cur.execute(sql.SQL("SELECT id, version FROM {}").format(ident(table)))
    return dict(cur.fetchall())


def reconcile(
    shop: Any,
    wh: Any,
    t: Tables,
    source_payments: str,
    *,
    repair: bool,
    run_id: str,
    checked_at: datetime,
) -> dict[str, Any]:
    """Compare every source payment with core + buffer; optionally repair; write one report row."""
    with shop.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, PAYMENT_COLUMNS)), ident(source_payments)
            )
        )
        names = [d[0] for d in cur.description]
        source = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
    shop.rollback()
    with wh.cursor() as cur:
        core = _ids_versions(cur, t.payments)
        buffered = _ids_versions(cur, t.buffer)
        missing = sorted(i for i in source if i not in core and i not in buffered)
        stale = sorted(i for i in source if i in core and core[i] < source[i]["version"])
        extra = sorted(i for i in core if i not in source)
        repaired: list[int] = []
        if repair:
            for i in missing + stale:
                cur.execute(_upsert_payment_sql(t), {**source[i], "via": "repaired"})
                if cur.rowcount:
                    repaired.append(i)
            if repaired:
                cur.execute(
                    sql.SQL(
                        "UPDATE {} SET resolved_at = %s, resolved_by = %s "
                        "WHERE payment_id = ANY(%s) AND resolved_at IS NULL"
                    ).format(ident(t.dead_letters)),
                    (checked_at, run_id, repaired),
                )
        report = {
            "source_rows": len(source),
            "core_rows": len(core) + len(repaired) - len(set(repaired) & set(core)),
            "buffered": len(buffered),
            "missing": missing,
            "stale": stale,
            "extra": extra,
            "repaired": sorted(repaired),
        }
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, checked_at, source_rows, core_rows, buffered, missing, stale, extra, "
                "repaired) VALUES (%(run_id)s, %(at)s, %(source_rows)s, %(core_rows)s, %(buffered)s, "
                "%(missing)s, %(stale)s, %(extra)s, %(repaired)s)"
            ).format(ident(t.reconciliation)),
            {**report, "run_id": run_id, "at": checked_at},
        )
    return report
