"""Incremental aggregations: keep per-group totals current from a change stream without a full rebuild.

Vocabulary:
- *group*: ``(customer_id, day)`` where ``day`` is the UTC date of ``ordered_at``; an order *contributes*
  ``(1, total)`` to its group unless its status is ``cancelled`` (it then contributes nothing).
- *mirror*: ``<prefix>_orders``, the last version of every order seen; it holds each order's previous
  contribution, which the update strategy must subtract.
- *update* (delta) strategy: for every changed order add ``new contribution - old contribution`` to the
  group totals (``orders = orders + d``); groups that reach zero orders are deleted. Touches only changed
  groups and reads nothing but the changed rows and their mirror rows; wrong forever if one delta is lost
  or applied twice (hence the version guard: a re-read row with a version already mirrored is skipped).
- *replace* strategy: for every *affected group* (old and new group of each changed order) delete the group
  and recompute it from the mirror. Reads more, but heals itself: a group is always recomputed whole.
- *rolling aggregate*: ``<prefix>_rolling_7d``: for each (customer, day) with activity, the totals of
  ``[day - 6, day]``. A change on day d affects the rolling rows of d..d+6, so per affected customer the
  rows from the earliest affected day on are recomputed from the daily table.
- *consistency*: :func:`full_recompute` aggregates the whole source; :func:`check` compares both strategies
  and the rolling table with it and raises :class:`AggregateMismatchError` naming the groups that differ.
- *efficiency*: :class:`Applied` counts changed rows, groups touched and rows written per strategy; the DAG
  stores them (and elapsed ms, never asserted) in ``<prefix>_metrics``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import ident
from cdclab.common.tablenames import PrefixedTables, Table
from cdclab.delta import pull
from cdclab.merge import upsert

Group = tuple[int, date]
Totals = dict[Group, tuple[int, Decimal]]
MIRROR_COLUMNS = ["id", "customer_id", "status", "total", "ordered_at", "version"]


class AggregateMismatchError(AssertionError):
    """An incrementally maintained aggregate differs from the full recompute."""


@dataclass(frozen=True)
class Tables(PrefixedTables):
    """This lesson's tables: ``<prefix>_orders``, ``_daily_update``, ``_daily_replace``, ``_rolling_7d``, ``_metrics``."""

    orders = Table()
    daily_update = Table()
    daily_replace = Table()
    rolling_7d = Table()
    metrics = Table()


@dataclass
class Applied:
    changed_rows: int = 0
    skipped_rows: int = 0
    deleted_rows: int = 0
    groups_touched: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    elapsed_ms: dict[str, float] = field(default_factory=dict)


def ensure(wh: Any, t: Tables) -> None:
    daily = "customer_id bigint, day date, orders integer NOT NULL, amount numeric(14,2) NOT NULL, "
    upsert.ensure_with_orders_copy(
        wh,
        t,
        "CREATE TABLE IF NOT EXISTS {daily_update} (" + daily + "PRIMARY KEY (customer_id, day));"
        "CREATE TABLE IF NOT EXISTS {daily_replace} (" + daily + "PRIMARY KEY (customer_id, day));"
        "CREATE TABLE IF NOT EXISTS {rolling_7d} (customer_id bigint, day date, orders_7d integer NOT NULL, "
        "amount_7d numeric(14,2) NOT NULL, PRIMARY KEY (customer_id, day));"
        "CREATE TABLE IF NOT EXISTS {metrics} (id bigserial PRIMARY KEY, run_id text NOT NULL, "
        "strategy text NOT NULL, changed_rows integer NOT NULL, groups_touched integer NOT NULL, "
        "rows_written integer NOT NULL, elapsed_ms double precision NOT NULL, consistent boolean)",
    )


def contribution(row: dict[str, Any]) -> tuple[Group, int, Decimal] | None:
    if row["status"] == "cancelled":
        return None
    return (row["customer_id"], row["ordered_at"].astimezone(UTC).date()), 1, Decimal(row["total"])


def full_recompute(rows: list[dict[str, Any]]) -> Totals:
    totals: dict[Group, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for row in rows:
        c = contribution(row)
        if c is not None:
            totals[c[0]][0] += c[1]
            totals[c[0]][1] += c[2]
    return {g: (n, a) for g, (n, a) in totals.items()}


def rolling(daily: Totals, days: int = 7) -> Totals:
    out: Totals = {}
    for cust, day in daily:
        window = [
            daily[(cust, day - timedelta(i))] for i in range(days) if (cust, day - timedelta(i)) in daily
        ]
        out[(cust, day)] = (sum(n for n, _ in window), sum((a for _, a in window), Decimal(0)))
    return out


def _mirror_rows(cur: Any, t: Tables, ids: list[int]) -> dict[int, dict[str, Any]]:
    cur.execute(
        sql.SQL(
            "SELECT id, customer_id, status, total, ordered_at, version FROM {} WHERE id = ANY(%s)"
        ).format(ident(t.orders)),
        (ids,),
    )
    return {r[0]: dict(zip(MIRROR_COLUMNS, r, strict=True)) for r in cur.fetchall()}


def apply(wh: Any, t: Tables, changed: list[dict[str, Any]], deleted: Sequence[int] = ()) -> Applied:
    """Apply changed source orders, and the ids of orders deleted from the source, to both strategies
    and the rolling table (caller's transaction). A deleted order contributes nothing, like a cancelled
    one, and leaves the mirror."""
    result = Applied()
    with wh.cursor() as cur:
        gone = sorted(set(deleted))
        old = _mirror_rows(cur, t, [r["id"] for r in changed] + gone)
        fresh = [
            {c: r[c] for c in MIRROR_COLUMNS}
            for r in changed
            if r["id"] not in gone and (r["id"] not in old or r["version"] > old[r["id"]]["version"])
        ]
        result.changed_rows, result.skipped_rows = len(fresh), len(changed) - len(fresh)
        removed = [old[i] for i in gone if i in old]
        result.deleted_rows = len(removed)

        # update: add the difference of contributions
        started = time.perf_counter()
        deltas: dict[Group, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
        for row in [*fresh, *removed]:
            for c, sign in (
                (contribution(old[row["id"]]) if row["id"] in old else None, -1),
                (contribution(row) if row["id"] not in gone else None, 1),
            ):
                if c is not None:
                    deltas[c[0]][0] += sign * c[1]
                    deltas[c[0]][1] += sign * c[2]
        touched = [(g[0], g[1], n, a) for g, (n, a) in deltas.items() if n or a]
        if touched:
            execute_values(
                cur,
                sql.SQL(
                    "INSERT INTO {u} AS t (customer_id, day, orders, amount) VALUES %s "
                    "ON CONFLICT (customer_id, day) DO UPDATE SET orders = t.orders + EXCLUDED.orders, "
                    "amount = t.amount + EXCLUDED.amount"
                )
                .format(u=ident(t.daily_update))
                .as_string(cur),
                touched,
            )
            cur.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE orders = 0 AND (customer_id, day) IN "
                    "(SELECT * FROM unnest(%s::bigint[], %s::date[]))"
                ).format(ident(t.daily_update)),
                ([g[0] for g in touched], [g[1] for g in touched]),
            )
        result.groups_touched["update"], result.rows_written["update"] = len(touched), len(touched)
        result.elapsed_ms["update"] = (time.perf_counter() - started) * 1000

        upsert.upsert_rows(wh, t.orders, fresh, ["id"], "version")
        if removed:
            cur.execute(sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(ident(t.orders)), (gone,))

        # replace: recompute every affected group from the mirror
        started = time.perf_counter()
        affected = sorted(
            {c[0] for row in fresh for c in (contribution(row),) if c}
            | {
                c[0]
                for row in [*fresh, *removed]
                if row["id"] in old
                for c in (contribution(old[row["id"]]),)
                if c
            }
        )
        custs, days = [g[0] for g in affected], [g[1] for g in affected]
        cur.execute(
            sql.SQL(
                "DELETE FROM {r} WHERE (customer_id, day) IN (SELECT * FROM unnest(%(c)s::bigint[], %(d)s::date[]));"
                "INSERT INTO {r} (customer_id, day, orders, amount) "
                "SELECT customer_id, (ordered_at AT TIME ZONE 'UTC')::date, count(*), sum(total) FROM {o} "
                "WHERE status <> 'cancelled' AND (customer_id, (ordered_at AT TIME ZONE 'UTC')::date) IN "
                "(SELECT * FROM unnest(%(c)s::bigint[], %(d)s::date[])) GROUP BY 1, 2"
            ).format(r=ident(t.daily_replace), o=ident(t.orders)),
            {"c": custs, "d": days},
        )
        result.groups_touched["replace"], result.rows_written["replace"] = len(affected), cur.rowcount
        result.elapsed_ms["replace"] = (time.perf_counter() - started) * 1000

        # rolling 7 days: from each affected customer's earliest affected day on
        started = time.perf_counter()
        first: dict[int, date] = {}
        for cust, day in affected:
            first[cust] = min(day, first.get(cust, day))
        cur.execute(
            sql.SQL(
                "DELETE FROM {w} w USING unnest(%(c)s::bigint[], %(d)s::date[]) f(c, d) "
                "WHERE w.customer_id = f.c AND w.day >= f.d;"
                "INSERT INTO {w} (customer_id, day, orders_7d, amount_7d) "
                "SELECT a.customer_id, a.day, sum(x.orders), sum(x.amount) "
                "FROM {r} a JOIN unnest(%(c)s::bigint[], %(d)s::date[]) f(c, d) "
                "ON a.customer_id = f.c AND a.day >= f.d "
                "JOIN {r} x ON x.customer_id = a.customer_id AND x.day BETWEEN a.day - 6 AND a.day "
                "GROUP BY 1, 2"
            ).format(w=ident(t.rolling_7d), r=ident(t.daily_replace)),
            {"c": list(first), "d": list(first.values())},
        )
        result.groups_touched["rolling_7d"], result.rows_written["rolling_7d"] = len(first), cur.rowcount
        result.elapsed_ms["rolling_7d"] = (time.perf_counter() - started) * 1000
    return result


def read_totals(cur: Any, table: str, cols: tuple[str, str] = ("orders", "amount")) -> Totals:
    cur.execute(
        sql.SQL("SELECT customer_id, day, {}, {} FROM {}").format(
            sql.Identifier(cols[0]), sql.Identifier(cols[1]), ident(table)
        )
    )
    return {(c, d): (n, a) for c, d, n, a in cur.fetchall()}


def _diff(name: str, got: Totals, want: Totals) -> list[str]:
    return [
        f"{name} {g}: {got.get(g)} != {want.get(g)}"
        for g in sorted(set(got) | set(want))
        if got.get(g) != want.get(g)
    ]


def check(wh: Any, t: Tables, source_rows: list[dict[str, Any]]) -> dict[str, int]:
    """Compare both strategies and the rolling table with a full recompute of ``source_rows``."""
    want = full_recompute(source_rows)
    with wh.cursor() as cur:
        problems = _diff("update", read_totals(cur, t.daily_update), want)
        problems += _diff("replace", read_totals(cur, t.daily_replace), want)
        problems += _diff(
            "rolling_7d", read_totals(cur, t.rolling_7d, ("orders_7d", "amount_7d")), rolling(want)
        )
    if problems:
        raise AggregateMismatchError(
            "incremental aggregates differ from the full recompute (a lost or doubled delta, or a source delete "
            "the timestamp pull cannot see); to rebuild, drop the <prefix>_* tables and reset the "
            "watermark. " + "; ".join(problems[:20])
        )
    return {"groups": len(want)}


# ---------------------------------------------------------------------------------------------------
# one run: pull, detect hard deletes, apply, and (for the check) compare against the same source read

SOURCE_COLUMNS = [*MIRROR_COLUMNS, "updated_at"]


@dataclass
class Synced:
    """What :func:`sync` did: the pull, the orders found deleted, what :func:`apply` changed, and the
    source as read after the pull (``source`` only when asked for)."""

    pulled: pull.Pull
    deleted: list[int]
    applied: Applied
    source: list[dict[str, Any]] | None = None


def read_source(shop: Any, table: str, full: bool) -> list[dict[str, Any]]:
    """Every order of ``table`` in one statement (one snapshot): all :data:`SOURCE_COLUMNS`, or ids only."""
    columns = SOURCE_COLUMNS if full else ["id"]
    with shop.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, columns)), ident(table)
            )
        )
        rows = [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]
    shop.rollback()
    return rows


def mirror_ids(wh: Any, t: Tables) -> set[int]:
    with wh.cursor() as cur:
        cur.execute(sql.SQL("SELECT id FROM {}").format(ident(t.orders)))
        return {r[0] for r in cur.fetchall()}


def sync(
    shop: Any, wh: Any, t: Tables, table: str, key: str, *, dag_id: str, run_id: str | None, full_source: bool
) -> Synced:
    """Pull the orders changed since the watermark, then read every source key **after** the pull and
    treat the mirrored or pulled orders it no longer holds as hard deletes (a key-set comparison: a
    timestamp pull cannot see a row that is gone, so this reads every key, the price of finding deletes
    without CDC). Applies both and moves the watermark in the caller's warehouse transaction (no commit).

    ``full_source``: read whole rows instead of keys, for :func:`expected_source` (the check)."""
    changed = pull.pull(shop, wh, table, key)
    source = read_source(shop, table, full_source)
    present = {r["id"] for r in source}
    deleted = sorted((mirror_ids(wh, t) | {r["id"] for r in changed.rows}) - present)
    applied = apply(wh, t, changed.rows, deleted)
    pull.advance(wh, changed, dag_id=dag_id, run_id=run_id)
    return Synced(changed, deleted, applied, source if full_source else None)


def expected_source(
    source: list[dict[str, Any]], mirror: dict[int, dict[str, Any]], upper: Any
) -> list[dict[str, Any]]:
    """The source as the pipeline has seen it, for :func:`check`, from a read taken after the pull
    bounded by ``upper``: a row with ``updated_at < upper`` is unchanged since that pull and counts as
    read; a row with ``updated_at >= upper`` changed (or arrived) after it and belongs to the next pull,
    so it counts in its mirrored version, or not at all when it is new. Without this the check would
    fail on every change the live workload commits between the pull and the check."""
    rows = []
    for r in source:
        if upper is None or r["updated_at"] < upper:
            rows.append({c: r[c] for c in MIRROR_COLUMNS})
        elif r["id"] in mirror:
            rows.append(mirror[r["id"]])
    return rows


def mirror_rows(wh: Any, t: Tables, ids: list[int]) -> dict[int, dict[str, Any]]:
    with wh.cursor() as cur:
        return _mirror_rows(cur, t, ids)


def record_metrics(wh: Any, t: Tables, run_id: str, applied: Applied) -> None:
    """One ``<prefix>_metrics`` row per strategy (caller's transaction)."""
    with wh.cursor() as cur:
        for strategy, groups in applied.groups_touched.items():
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (run_id, strategy, changed_rows, groups_touched, rows_written, elapsed_ms) "
                    "VALUES (%s, %s, %s, %s, %s, %s)"
                ).format(ident(t.metrics)),
                (
                    run_id,
                    strategy,
                    applied.changed_rows,
                    groups,
                    applied.rows_written[strategy],
                    applied.elapsed_ms[strategy],
                ),
            )


def verify(wh: Any, t: Tables, done: Synced, run_id: str) -> dict[str, int]:
    """:func:`check` against :func:`expected_source` of a :func:`sync` with ``full_source``; sets
    ``consistent`` on the run's metrics rows either way (committed)."""
    if done.source is None:
        raise ValueError("verify needs sync(..., full_source=True)")
    late = [
        r["id"] for r in done.source if done.pulled.upper is not None and r["updated_at"] >= done.pulled.upper
    ]
    expected = expected_source(done.source, mirror_rows(wh, t, late), done.pulled.upper)
    consistent = False
    try:
        result = check(wh, t, expected)
        consistent = True
    finally:
        wh.rollback()
        with wh, wh.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE {} SET consistent = %s WHERE run_id = %s").format(ident(t.metrics)),
                (consistent, run_id),
            )
    return result


# ---------------------------------------------------------------------------------------------------
# the 71_05_03 tasks (connections from Airflow: cdclab.common.db)


def watermark_key(orders_table: str, key: str = "") -> str:
    return key or f"71_05_03/{orders_table}"


def prepare(prefix: str) -> None:
    """The lesson's tables (and the watermark store) exist."""
    from cdclab.common.db import WAREHOUSE, connect
    from cdclab.state import watermarks as state

    wh = connect(WAREHOUSE)
    try:
        state.ensure_schema(wh)
        ensure(wh, Tables(prefix))
    finally:
        wh.close()


def _sync_with(orders_table: str, prefix: str, key: str, dag_id: str, run_id: str, *, check: bool) -> Any:
    from cdclab.common.db import SHOP, WAREHOUSE, connect

    t = Tables(prefix)
    shop, wh = connect(SHOP), connect(WAREHOUSE)
    try:
        with wh:  # aggregates, mirror, metrics and watermark commit together
            done = sync(
                shop,
                wh,
                t,
                orders_table,
                watermark_key(orders_table, key),
                dag_id=dag_id,
                run_id=run_id,
                full_source=check,
            )
            if not check:
                record_metrics(wh, t, run_id, done.applied)
        result = verify(wh, t, done, run_id) if check else None
    finally:
        shop.close()
        wh.close()
    return done, result


def run_step(orders_table: str, prefix: str, key: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """71_05_03's ``apply``: one :func:`sync` and its metrics; the counts for XCom."""
    done, _ = _sync_with(orders_table, prefix, key, dag_id, run_id, check=False)
    print(f"pulled {len(done.pulled.rows)} orders, {len(done.deleted)} deleted in the source: {done.applied}")
    return {
        "changed_rows": done.applied.changed_rows,
        "skipped_rows": done.applied.skipped_rows,
        "deleted_rows": done.applied.deleted_rows,
        "groups_touched": done.applied.groups_touched,
    }


def run_check(orders_table: str, prefix: str, key: str, dag_id: str, run_id: str) -> dict[str, int]:
    """71_05_03's ``check``: catch up (a :func:`sync` reading whole source rows), then :func:`verify`."""
    done, result = _sync_with(orders_table, prefix, key, dag_id, run_id, check=True)
    print(f"caught up: {len(done.pulled.rows)} changed, {len(done.deleted)} deleted since apply")
    print(f"update, replace and rolling_7d equal the full recompute ({result['groups']} groups)")
    return dict(result)
