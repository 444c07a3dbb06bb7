"""71.9.4 performance optimisation, shown: one batch loaded into two scratch copies of the star schema,
row by row (``row_by_row``, the naive load) and set-based (``set_based``, the load the DAG uses,
:mod:`cdclab.merge.star_schema`), then loaded a second time (a *replay*: a retried task, a re-read
interval). For ``dags/71_09_04_dw_loading.py``.

Vocabulary:
- *batch*: the source rows changed in the run's data interval ``[start, end)`` (customers, products, and
  every line of each order whose row or lines changed), capped at :data:`MAX_ORDERS` orders.
- *scratch star*: ``<dim_customer>__<variant>``, ``<dim_product>__<variant>``, ``<fact_table>__<variant>``,
  recreated empty by every run, so both variants start from the same (empty) state and get the same batch.
- *statements*: SQL statements the variant sent to the warehouse (each one a client round trip), counted
  by a cursor that counts its ``execute`` calls. *rows returned*: rows those statements sent back.
- *row version*: a table row's ``xmin`` (the transaction that wrote it). A row whose ``xmin`` changes
  was rewritten (a new row version: WAL, dead tuple, index entries), even when its values did not change.
  *rewritten on replay*: rows of the scratch star whose ``xmin`` changed when the same batch was loaded
  again.
- *lookup plan*: ``EXPLAIN (ANALYZE, BUFFERS)`` of how the variant finds a fact line's customer version:
  one indexed lookup per line (row by row; multiply by the lines) against one join of all staged lines.

What the optimisations are, each visible in the counters: set-based statements instead of one (or four)
per row; dimension lookups batched into one join; natural keys indexed (the lookups' ``Index Scan``);
unchanged rows skipped (version guard on the dimensions, ``IS DISTINCT FROM`` on the fact) instead of
rewritten. :data:`COMPARE_COLUMNS` are logged per variant and pass to ``<fact_table>__loading_compare``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg2.extensions
from psycopg2 import sql

from cdclab.common.db import SHOP, WAREHOUSE, connect, ident
from cdclab.merge import star_schema as dwload
from cdclab.merge import upsert
from cdclab.ops import perf

LoadVariant = Literal["row_by_row", "set_based"]
LOAD_VARIANTS: tuple[LoadVariant, ...] = ("row_by_row", "set_based")
MAX_ORDERS = 2000  # a lab hour under a heavy workload stays a few seconds of row-by-row load

COMPARE_COLUMNS = (
    "id bigserial PRIMARY KEY, run_id text NOT NULL, variant text NOT NULL, pass text NOT NULL, "
    "customers integer NOT NULL, products integer NOT NULL, lines integer NOT NULL, "
    "statements integer NOT NULL, rows_returned integer NOT NULL, rows_rewritten integer NOT NULL, "
    "lookup_plan jsonb, recorded_at timestamptz NOT NULL DEFAULT now()"
)


class StarMismatchError(dwload.DwLoadError):
    """The two variants produced different star schemas from the same batch."""


@dataclass
class Counter:
    """Statements sent and rows they returned, on one connection."""

    statements: int = 0
    rows_returned: int = 0


def counting_cursor(counter: Counter) -> type[psycopg2.extensions.cursor]:
    """A cursor class that counts every ``execute`` (``execute_values`` runs one per page) in ``counter``."""

    class CountingCursor(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> None:
            super().execute(query, vars)
            counter.statements += 1
            if self.description is not None and self.rowcount > 0:
                counter.rows_returned += self.rowcount

    return CountingCursor


@dataclass(frozen=True)
class Batch:
    customers: list[dict[str, Any]]
    products: list[dict[str, Any]]
    lines: list[dict[str, Any]]


@dataclass(frozen=True)
class PassResult:
    """One load of the batch by one variant."""

    variant: str
    pass_: str  # "load" | "replay"
    statements: int
    rows_returned: int
    rows_rewritten: int  # rows whose xmin changed (replay), rows written (load)
    lookup_plan: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scratch:
    dim_customer: str
    dim_product: str
    fact: str


def scratch(dim_customer: str, dim_product: str, fact: str, variant: str) -> Scratch:
    """The scratch star of ``variant``."""
    if variant not in LOAD_VARIANTS:
        raise ValueError(f"unknown load variant {variant!r}; choose one of {LOAD_VARIANTS}")
    return Scratch(f"{dim_customer}__{variant}", f"{dim_product}__{variant}", f"{fact}__{variant}")


def _dicts(cur: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


CUSTOMER_COLUMNS = "id, email, full_name, home_tz, tier, updated_at, version"
PRODUCT_COLUMNS = "id, sku, name, price, version"


def _changed(cur: Any, table: str, columns: str, window: tuple[datetime, datetime]) -> list[dict[str, Any]]:
    """``columns`` of the rows of ``table`` with ``updated_at`` in ``window`` (``[start, end)``), by id."""
    cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE updated_at >= %s AND updated_at < %s ORDER BY id").format(
            sql.SQL(columns), ident(table)
        ),
        window,
    )
    return _dicts(cur)


def read_batch(
    shop: Any, tables: Mapping[str, str], start: datetime, end: datetime, max_orders: int = MAX_ORDERS
) -> Batch:
    """The rows of ``tables`` (keys ``customers``, ``products``, ``orders``, ``items``) changed in
    ``[start, end)``, and every line of the orders changed in it (the first ``max_orders`` by id)."""
    window = (start, end)
    with shop.cursor() as cur:
        customers = _changed(cur, tables["customers"], CUSTOMER_COLUMNS, window)
        products = _changed(cur, tables["products"], PRODUCT_COLUMNS, window)
        cur.execute(
            sql.SQL(
                "SELECT id FROM {o} WHERE updated_at >= %s AND updated_at < %s UNION "
                "SELECT order_id FROM {i} WHERE updated_at >= %s AND updated_at < %s ORDER BY 1 LIMIT %s"
            ).format(o=ident(tables["orders"]), i=ident(tables["items"])),
            (*window, *window, max_orders),
        )
        order_ids = [r[0] for r in cur.fetchall()]
    lines = dwload.read_order_lines(shop, tables["orders"], tables["items"], order_ids)
    shop.rollback()
    return Batch(customers, products, lines)


# ----------------------------------------------------------------------------------------- naive


def _one(cur: Any, statement: sql.Composable, params: Sequence[Any]) -> Any:
    cur.execute(statement, params)
    row = cur.fetchone()
    return None if row is None else row


def load_row_by_row(conn: Any, star: Scratch, batch: Batch) -> None:
    """The naive load: every source row and every fact line is its own round trips — look the row up,
    then write it, unconditionally (an unchanged row is written again as a new row version)."""
    dc, dp, f = ident(star.dim_customer), ident(star.dim_product), ident(star.fact)
    tracked = dwload.CUSTOMER_TRACKED
    newest, _ = upsert.dedupe_by_key(batch.customers, ["id"], "version")
    with conn.cursor() as cur:
        for c in sorted(newest, key=lambda r: r["id"]):
            current = _one(
                cur,
                sql.SQL(
                    "SELECT customer_sk, email, full_name, home_tz, tier, source_version, is_inferred "
                    "FROM {} WHERE customer_id = %s AND is_current"
                ).format(dc),
                (c["id"],),
            )
            attrs = tuple(c[a] for a in tracked)
            insert = sql.SQL(
                "INSERT INTO {} (customer_id, email, full_name, home_tz, tier, source_version, valid_from, "
                "valid_to, is_current, is_inferred) VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, true, false)"
            ).format(dc)
            if current is None:
                seen = _one(
                    cur, sql.SQL("SELECT 1 FROM {} WHERE customer_id = %s LIMIT 1").format(dc), (c["id"],)
                )
                valid_from = c["updated_at"] if seen else "-infinity"
                cur.execute(insert, (c["id"], *attrs, c["version"], valid_from))
            elif current[6]:  # inferred member: complete it in place
                cur.execute(
                    sql.SQL(
                        "UPDATE {} SET email = %s, full_name = %s, home_tz = %s, tier = %s, source_version = %s, "
                        "is_inferred = false WHERE customer_sk = %s"
                    ).format(dc),
                    (*attrs, c["version"], current[0]),
                )
            elif c["version"] > current[5] and attrs != tuple(current[1:5]):
                cur.execute(
                    sql.SQL("UPDATE {} SET valid_to = %s, is_current = false WHERE customer_sk = %s").format(
                        dc
                    ),
                    (c["updated_at"], current[0]),
                )
                cur.execute(insert, (c["id"], *attrs, c["version"], c["updated_at"]))
            else:  # no tracked change: written anyway
                cur.execute(
                    sql.SQL(
                        "UPDATE {} SET source_version = greatest(source_version, %s) WHERE customer_sk = %s"
                    ).format(dc),
                    (c["version"], current[0]),
                )
        for p in batch.products:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (product_id, sku, name, price, source_version, is_inferred) "
                    "VALUES (%s, %s, %s, %s, %s, false) ON CONFLICT (product_id) DO UPDATE SET sku = EXCLUDED.sku, "
                    "name = EXCLUDED.name, price = EXCLUDED.price, source_version = EXCLUDED.source_version, "
                    "is_inferred = false"
                ).format(dp),
                (p["id"], p["sku"], p["name"], p["price"], p["version"]),
            )
        for line in batch.lines:
            customer_sk = _customer_sk(cur, dc, line)
            product = _one(
                cur,
                sql.SQL("SELECT product_sk FROM {} WHERE product_id = %s").format(dp),
                (line["product_id"],),
            )
            if product is None:
                product = _one(
                    cur,
                    sql.SQL(
                        "INSERT INTO {} (product_id, source_version, is_inferred) VALUES (%s, 0, true) "
                        "RETURNING product_sk"
                    ).format(dp),
                    (line["product_id"],),
                )
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (order_id, line_no, customer_sk, product_sk, customer_id, product_id, status, "
                    "ordered_at, quantity, unit_price, amount, line_version, order_version) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (order_id, line_no) DO UPDATE SET customer_sk = EXCLUDED.customer_sk, "
                    "product_sk = EXCLUDED.product_sk, customer_id = EXCLUDED.customer_id, "
                    "product_id = EXCLUDED.product_id, status = EXCLUDED.status, ordered_at = EXCLUDED.ordered_at, "
                    "quantity = EXCLUDED.quantity, unit_price = EXCLUDED.unit_price, amount = EXCLUDED.amount, "
                    "line_version = EXCLUDED.line_version, order_version = EXCLUDED.order_version"
                ).format(f),
                (
                    line["order_id"],
                    line["line_no"],
                    customer_sk,
                    product[0],
                    line["customer_id"],
                    line["product_id"],
                    line["status"],
                    line["ordered_at"],
                    line["quantity"],
                    line["unit_price"],
                    line["quantity"] * line["unit_price"],
                    line["line_version"],
                    line["order_version"],
                ),
            )


CUSTOMER_LOOKUP = (
    "SELECT customer_sk FROM {} WHERE customer_id = %s AND valid_from <= %s "
    "AND %s < COALESCE(valid_to, 'infinity')"
)


def _customer_sk(cur: Any, dc: sql.Composable, line: Mapping[str, Any]) -> Any:
    """The customer version valid at the line's ``ordered_at``: one lookup, an inferred member when the
    customer is unknown."""
    params = (line["customer_id"], line["ordered_at"], line["ordered_at"])
    found = _one(cur, sql.SQL(CUSTOMER_LOOKUP).format(dc), params)
    if found is not None:
        return found[0]
    if _one(
        cur, sql.SQL("SELECT 1 FROM {} WHERE customer_id = %s LIMIT 1").format(dc), (line["customer_id"],)
    ):
        raise dwload.DimensionLookupError(
            f"fact line {line['order_id']}/{line['line_no']} has no customer version valid at "
            f"{line['ordered_at']}; repair the dimension's validity ranges, then rerun the interval."
        )
    row = _one(
        cur,
        sql.SQL(
            "INSERT INTO {} (customer_id, tier, source_version, valid_from, valid_to, is_current, is_inferred) "
            "VALUES (%s, %s, 0, '-infinity', NULL, true, true) RETURNING customer_sk"
        ).format(dc),
        (line["customer_id"], dwload.UNKNOWN),
    )
    return row[0]


# -------------------------------------------------------------------------------------- optimised


def load_set_based(conn: Any, star: Scratch, batch: Batch) -> None:
    """The DAG's own load (:mod:`cdclab.merge.star_schema`): staged with one ``execute_values``, then a few
    set-based statements; unchanged rows are skipped."""
    dwload.apply_scd2_customers(conn, star.dim_customer, batch.customers)
    dwload.apply_scd1_products(conn, star.dim_product, batch.products)
    dwload.load_fact_lines(conn, star.fact, star.dim_customer, star.dim_product, batch.lines)


LOADERS: dict[str, Callable[[Any, Scratch, Batch], None]] = {
    "row_by_row": load_row_by_row,
    "set_based": load_set_based,
}


# ------------------------------------------------------------------------------------ measuring


def row_versions(conn: Any, star: Scratch) -> dict[tuple[str, Any], str]:
    """``xmin`` of every row of the scratch star, keyed by (table, surrogate or fact key)."""
    out: dict[tuple[str, Any], str] = {}
    with conn.cursor() as cur:
        for table, key in (
            (star.dim_customer, "customer_sk"),
            (star.dim_product, "product_sk"),
            (star.fact, "(order_id, line_no)::text"),
        ):
            cur.execute(sql.SQL("SELECT {}, xmin::text FROM {}").format(sql.SQL(key), ident(table)))
            out.update({(table, k): x for k, x in cur.fetchall()})
    return out


def lookup_plan(conn: Any, star: Scratch, variant: str, batch: Batch) -> dict[str, Any]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of how ``variant`` finds fact lines' customer versions: the row-by-row
    lookup of the first line (run once per line), or the set-based join of all staged lines (run once).
    Call inside the load's transaction (the set-based stage is a temp table dropped at commit)."""
    if not batch.lines:
        return {}
    with conn.cursor() as cur:
        if variant == "row_by_row":
            line = batch.lines[0]
            plan = perf.explain(
                cur,
                sql.SQL(CUSTOMER_LOOKUP).format(ident(star.dim_customer)),
                (line["customer_id"], line["ordered_at"], line["ordered_at"]),
            )
            runs = len(batch.lines)
        else:
            plan = perf.explain(
                cur,
                sql.SQL(
                    "SELECT s.order_id, c.customer_sk FROM _dw_stg_line s JOIN {} c ON c.customer_id = s.customer_id "
                    "AND c.valid_from <= s.ordered_at AND s.ordered_at < COALESCE(c.valid_to, 'infinity')"
                ).format(ident(star.dim_customer)),
            )
            runs = 1
    stats = perf.plan_stats(plan)
    return {**stats.as_dict(), "runs": runs}


def run_pass(conn: Any, star: Scratch, variant: str, batch: Batch, pass_: str) -> PassResult:
    """Load ``batch`` with ``variant`` in one transaction; count statements and rows returned; for a
    replay, count the rows rewritten (``xmin`` changed)."""
    before = row_versions(conn, star)
    counter = Counter()
    old_factory = conn.cursor_factory
    conn.cursor_factory = counting_cursor(counter)
    try:
        LOADERS[variant](conn, star, batch)
    finally:
        conn.cursor_factory = old_factory
    plan = lookup_plan(conn, star, variant, batch)
    conn.commit()
    after = row_versions(conn, star)
    conn.rollback()
    rewritten = sum(1 for k, x in after.items() if before.get(k) != x)
    return PassResult(variant, pass_, counter.statements, counter.rows_returned, rewritten, plan)


def star_content(conn: Any, star: Scratch) -> dict[str, list[tuple[Any, ...]]]:
    """The scratch star by natural keys (surrogate keys differ between two loads): customer versions,
    products, and fact lines with the natural key and ``valid_from`` of the customer version they point at."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT customer_id, valid_from, valid_to, email, full_name, home_tz, tier, source_version, "
                "is_current, is_inferred FROM {} ORDER BY customer_id, valid_from"
            ).format(ident(star.dim_customer))
        )
        customers = cur.fetchall()
        cur.execute(
            sql.SQL(
                "SELECT product_id, sku, name, price, source_version, is_inferred FROM {} ORDER BY product_id"
            ).format(ident(star.dim_product))
        )
        products = cur.fetchall()
        cur.execute(
            sql.SQL(
                "SELECT f.order_id, f.line_no, c.customer_id, c.valid_from, p.product_id, f.status, f.ordered_at, "
                "f.quantity, f.unit_price, f.amount, f.line_version, f.order_version FROM {f} f "
                "JOIN {dc} c ON c.customer_sk = f.customer_sk JOIN {dp} p ON p.product_sk = f.product_sk "
                "ORDER BY f.order_id, f.line_no"
            ).format(f=ident(star.fact), dc=ident(star.dim_customer), dp=ident(star.dim_product))
        )
        facts = cur.fetchall()
    conn.rollback()
    return {"dim_customer": customers, "dim_product": products, "fact": facts}


def _reset(conn: Any, star: Scratch) -> None:
    with conn.cursor() as cur:
        for t in (star.fact, star.dim_customer, star.dim_product):
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(t)))
    dwload.ensure_star(conn, star.dim_customer, star.dim_product, star.fact)
    conn.commit()


def compare(
    *,
    tables: Mapping[str, str],
    dim_customer: str,
    dim_product: str,
    fact: str,
    run_id: str,
    start: datetime,
    end: datetime,
) -> list[PassResult]:
    """Read the run's batch once; for each variant recreate its scratch star, load the batch, then load
    it again (replay); check both stars are equal (:class:`StarMismatchError` if not) and append every
    pass to ``<fact>__loading_compare``. Returns the passes, load then replay per variant."""
    log = f"{fact}__loading_compare"
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        batch = read_batch(shop, tables, start, end)
        passes: list[PassResult] = []
        stars = {v: scratch(dim_customer, dim_product, fact, v) for v in LOAD_VARIANTS}
        for variant, star in stars.items():
            _reset(wh, star)
            for pass_ in ("load", "replay"):
                passes.append(run_pass(wh, star, variant, batch, pass_))
        contents = {v: star_content(wh, s) for v, s in stars.items()}
        for part in ("dim_customer", "dim_product", "fact"):
            if contents["row_by_row"][part] != contents["set_based"][part]:
                raise StarMismatchError(
                    f"{part}: the row-by-row and set-based loads of the same batch differ "
                    f"({len(contents['row_by_row'][part])} vs {len(contents['set_based'][part])} rows); "
                    "a load variant is wrong: compare the scratch tables "
                    f"{stars['row_by_row']} and {stars['set_based']}."
                )
        with wh:
            with wh.cursor() as cur:
                cur.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident(log), sql.SQL(COMPARE_COLUMNS))
                )
                for p in passes:
                    cur.execute(
                        sql.SQL(
                            "INSERT INTO {} (run_id, variant, pass, customers, products, lines, statements, "
                            "rows_returned, rows_rewritten, lookup_plan) "
                            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                        ).format(ident(log)),
                        (
                            run_id,
                            p.variant,
                            p.pass_,
                            len(batch.customers),
                            len(batch.products),
                            len(batch.lines),
                            p.statements,
                            p.rows_returned,
                            p.rows_rewritten,
                            json.dumps(p.lookup_plan),
                        ),
                    )
    return passes


def summary(passes: Sequence[PassResult]) -> dict[str, Any]:
    """Passes as a JSON-able dict for XCom: ``{variant: {pass: {statements, rows_returned, ...}}}``."""
    out: dict[str, Any] = {}
    for p in passes:
        d = asdict(p)
        d.pop("variant")
        d.pop("pass_")
        plan = d.pop("lookup_plan")
        d["lookup_uses_index"] = plan.get("uses_index")
        out.setdefault(p.variant, {})[p.pass_] = d
    return out
