"""Loading a small star schema incrementally: SCD2 and SCD1 dimensions, an interval-batched fact.

Vocabulary:
- *natural key*: the source's id (``customer_id``, ``product_id``); *surrogate key* (``*_sk``): the
  warehouse's own id for one dimension row (one *version* in an SCD2 dimension).
- *SCD2* (``dim_customer``): a change of a tracked attribute (email, full_name, home_tz, tier) retires
  the current row (``valid_to`` = the change's ``updated_at``, ``is_current`` = false) and inserts a new
  version valid from that instant. The first version of a customer is valid from ``-infinity``, so every
  order finds a version. A newer source version that changes nothing tracked only moves ``source_version``.
- *SCD1* (``dim_product``): one row per product, overwritten in place by a version-guarded upsert
  (``cdclab.merge.upsert``): history is not kept, the surrogate key never changes.
- *inferred member*: a fact arrives before its dimension row (late-arriving dimension). The load inserts
  a placeholder row (``is_inferred`` = true, unknown attributes, ``source_version`` 0) so the fact gets a
  surrogate key now; when the real row arrives it *completes* the placeholder in place (same key), so
  facts already loaded need no update.
- *fact line*: one ``order_items`` row joined to its order, keyed ``(order_id, line_no)``, holding the
  customer version valid at ``ordered_at`` and the product row. Re-deriving a line is idempotent.

Everything is set-based: the changed source rows are staged into a temporary table in the warehouse with
one ``execute_values`` and the dimension/fact changes are a handful of ``UPDATE ... FROM`` /
``INSERT ... SELECT`` statements, whatever the batch size. Functions never commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.merge import upsert

CUSTOMER_TRACKED = ("email", "full_name", "home_tz", "tier")
CUSTOMER_STAGE = (
    ("customer_id", "bigint"),
    ("email", "text"),
    ("full_name", "text"),
    ("home_tz", "text"),
    ("tier", "text"),
    ("updated_at", "timestamptz"),
    ("version", "integer"),
)
LINE_STAGE = (
    ("order_id", "bigint"),
    ("line_no", "integer"),
    ("customer_id", "bigint"),
    ("product_id", "bigint"),
    ("status", "text"),
    ("ordered_at", "timestamptz"),
    ("quantity", "integer"),
    ("unit_price", "numeric(12, 2)"),
    ("line_version", "integer"),
    ("order_version", "integer"),
)
UNKNOWN = "unknown"


class DwLoadError(Exception):
    """Bad input for a warehouse load."""


class DimensionLookupError(DwLoadError):
    """A fact line found no dimension version valid at its order time."""


@dataclass(frozen=True)
class Scd2Result:
    completed: int = 0  # inferred members filled in place
    retired: int = 0  # current versions closed
    inserted: int = 0  # new versions (new customers + successors of retired rows)
    touched: int = 0  # newer source version without a tracked change

    @property
    def written(self) -> int:
        return self.completed + self.retired + self.inserted + self.touched


@dataclass(frozen=True)
class FactResult:
    lines: int = 0  # lines staged
    written: int = 0  # fact rows inserted or changed
    inferred_customers: int = 0
    inferred_products: int = 0


def _i(name: str) -> sql.Composable:
    return sql.Identifier(name)


def ensure_star(conn: Any, dim_customer: str, dim_product: str, fact: str) -> None:
    """Create the three tables and their natural-key indexes (idempotent, no commit)."""
    with conn.cursor() as cur:
        ensure_ddl(
            cur,
            fact,
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {dc} (
                    customer_sk    bigserial PRIMARY KEY,
                    customer_id    bigint NOT NULL,
                    email          text,
                    full_name      text,
                    home_tz        text,
                    tier           text NOT NULL,
                    source_version integer NOT NULL,
                    valid_from     timestamptz NOT NULL,
                    valid_to       timestamptz,
                    is_current     boolean NOT NULL,
                    is_inferred    boolean NOT NULL DEFAULT false,
                    UNIQUE (customer_id, valid_from)
                );
                CREATE UNIQUE INDEX IF NOT EXISTS {dc_cur} ON {dc} (customer_id) WHERE is_current;
                CREATE TABLE IF NOT EXISTS {dp} (
                    product_sk     bigserial PRIMARY KEY,
                    product_id     bigint NOT NULL UNIQUE,
                    sku            text,
                    name           text,
                    price          numeric(12, 2),
                    source_version integer NOT NULL,
                    is_inferred    boolean NOT NULL DEFAULT false
                );
                CREATE TABLE IF NOT EXISTS {f} (
                    order_id       bigint NOT NULL,
                    line_no        integer NOT NULL,
                    customer_sk    bigint NOT NULL,
                    product_sk     bigint NOT NULL,
                    customer_id    bigint NOT NULL,
                    product_id     bigint NOT NULL,
                    status         text NOT NULL,
                    ordered_at     timestamptz NOT NULL,
                    quantity       integer NOT NULL,
                    unit_price     numeric(12, 2) NOT NULL,
                    amount         numeric(14, 2) NOT NULL,
                    line_version   integer NOT NULL,
                    order_version  integer NOT NULL,
                    PRIMARY KEY (order_id, line_no)
                );
                CREATE INDEX IF NOT EXISTS {f_ord} ON {f} (ordered_at);
                """
            ).format(
                dc=ident(dim_customer),
                dc_cur=_i(dim_customer.split(".")[-1] + "_current"),
                dp=ident(dim_product),
                f=ident(fact),
                f_ord=_i(fact.split(".")[-1] + "_ordered_at"),
            ),
        )


def stage(conn: Any, name: str, columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]) -> int:
    """(Re)create temp table ``name`` with ``columns`` and bulk-insert ``rows`` into it."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_i(name)))
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                _i(name), sql.SQL(", ").join(sql.SQL("{} {}").format(_i(c), sql.SQL(t)) for c, t in columns)
            )
        )
        if rows:
            try:
                values = [tuple(r[c] for c, _ in columns) for r in rows]
            except KeyError as exc:
                raise upsert.MissingColumnError(f"a staged row has no column {exc}") from exc
            execute_values(
                cur,
                sql.SQL("INSERT INTO {} VALUES %s").format(_i(name)).as_string(cur),
                values,
                page_size=1000,
            )
    return len(rows)


# the steps of apply_scd2_customers, in order: the Scd2Result count -> its statement ({dc} the dimension,
# {d} / {s} the tracked attributes of the dimension row / of the staged row, {cols} their names, {newer}
# a staged customer with a newer version than the dimension's current, non-inferred row)
_SCD2_STEPS = {
    "completed": "UPDATE {dc} d SET {set_attrs}, source_version = s.version, is_inferred = false "
    "FROM _dw_stg_customer s WHERE d.customer_id = s.customer_id AND d.is_current AND d.is_inferred",
    "touched": "UPDATE {dc} d SET source_version = s.version {newer} AND ROW({d}) IS NOT DISTINCT FROM ROW({s})",
    "retired": "UPDATE {dc} d SET valid_to = s.updated_at, is_current = false {newer} "
    "AND ROW({d}) IS DISTINCT FROM ROW({s})",
    "inserted": "INSERT INTO {dc} (customer_id, {cols}, source_version, valid_from, valid_to, is_current, "
    "is_inferred) SELECT s.customer_id, {s}, s.version, CASE WHEN EXISTS (SELECT 1 FROM {dc} o "
    "WHERE o.customer_id = s.customer_id) THEN s.updated_at ELSE '-infinity' END, NULL, true, false "
    "FROM _dw_stg_customer s WHERE NOT EXISTS (SELECT 1 FROM {dc} d "
    "WHERE d.customer_id = s.customer_id AND d.is_current)",
}


def apply_scd2_customers(conn: Any, dim_customer: str, customers: Sequence[Mapping[str, Any]]) -> Scd2Result:
    """Apply changed source customers (``id`` or ``customer_id`` plus attributes, ``updated_at``,
    ``version``) to the SCD2 dimension: complete inferred members, retire changed versions, insert new."""
    rows = [{**r, "customer_id": r.get("customer_id", r.get("id"))} for r in customers]
    newest, _ = upsert.dedupe_by_key(rows, ["customer_id"], "version")
    stage(conn, "_dw_stg_customer", CUSTOMER_STAGE, newest)
    dc = ident(dim_customer)
    d_attrs = sql.SQL(", ").join(sql.SQL("d.{}").format(_i(c)) for c in CUSTOMER_TRACKED)
    s_attrs = sql.SQL(", ").join(sql.SQL("s.{}").format(_i(c)) for c in CUSTOMER_TRACKED)
    set_attrs = sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=_i(c)) for c in CUSTOMER_TRACKED)
    cols = sql.SQL(", ").join(_i(c) for c in CUSTOMER_TRACKED)
    newer = sql.SQL(
        "FROM _dw_stg_customer s WHERE d.customer_id = s.customer_id AND d.is_current AND NOT d.is_inferred "
        "AND s.version > d.source_version"
    )
    parts = {"dc": dc, "set_attrs": set_attrs, "d": d_attrs, "s": s_attrs, "cols": cols, "newer": newer}
    counts = {}
    with conn.cursor() as cur:
        for step, statement in _SCD2_STEPS.items():
            cur.execute(sql.SQL(statement).format(**parts))
            counts[step] = cur.rowcount
    return Scd2Result(**counts)


def apply_scd1_products(
    conn: Any, dim_product: str, products: Sequence[Mapping[str, Any]]
) -> upsert.UpsertResult:
    """Overwrite products in place (version guard: an older or re-read version is skipped)."""
    rows = [
        {
            "product_id": r.get("product_id", r.get("id")),
            "sku": r["sku"],
            "name": r["name"],
            "price": r["price"],
            "source_version": r["version"],
            "is_inferred": False,
        }
        for r in products
    ]
    return upsert.upsert_rows(conn, dim_product, rows, ["product_id"], "source_version")


def read_order_lines(
    conn: Any, orders_table: str, items_table: str, order_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """All lines of ``order_ids`` joined to their order (one set-based query on the source)."""
    if not order_ids:
        return []
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT o.id AS order_id, i.line_no, o.customer_id, i.product_id, o.status, o.ordered_at, "
                "i.quantity, i.unit_price, i.version AS line_version, o.version AS order_version "
                "FROM {o} o JOIN {i} i ON i.order_id = o.id WHERE o.id = ANY(%s) ORDER BY o.id, i.line_no"
            ).format(o=ident(orders_table), i=ident(items_table)),
            (list(order_ids),),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def load_fact_lines(
    conn: Any, fact: str, dim_customer: str, dim_product: str, lines: Sequence[Mapping[str, Any]]
) -> FactResult:
    """Insert inferred members for unknown customers/products, then upsert the lines keyed to the
    customer version valid at ``ordered_at`` and the product row."""
    stage(conn, "_dw_stg_line", LINE_STAGE, lines)
    dc, dp, f = ident(dim_customer), ident(dim_product), ident(fact)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {dc} (customer_id, tier, source_version, valid_from, valid_to, is_current, "
                "is_inferred) SELECT DISTINCT s.customer_id, %s, 0, '-infinity'::timestamptz, NULL::timestamptz, "
                "true, true FROM _dw_stg_line s "
                "WHERE NOT EXISTS (SELECT 1 FROM {dc} d WHERE d.customer_id = s.customer_id)"
            ).format(dc=dc),
            (UNKNOWN,),
        )
        inferred_customers = cur.rowcount
        cur.execute(
            sql.SQL(
                "INSERT INTO {dp} (product_id, source_version, is_inferred) "
                "SELECT DISTINCT s.product_id, 0, true FROM _dw_stg_line s ON CONFLICT (product_id) DO NOTHING"
            ).format(dp=dp)
        )
        inferred_products = cur.rowcount
        cur.execute(
            sql.SQL(
                "SELECT s.order_id, s.line_no, s.customer_id, s.ordered_at FROM _dw_stg_line s "
                "WHERE NOT EXISTS (SELECT 1 FROM {dc} c WHERE c.customer_id = s.customer_id "
                "AND c.valid_from <= s.ordered_at AND s.ordered_at < COALESCE(c.valid_to, 'infinity'))"
            ).format(dc=dc)
        )
        orphans = cur.fetchall()
        if orphans:
            raise DimensionLookupError(
                f"{len(orphans)} fact lines have no {dim_customer} version valid at ordered_at, e.g. "
                f"{orphans[:3]}; the versions of these customers leave a gap (valid_to < next valid_from). "
                "Repair the dimension's validity ranges, then rerun the interval."
            )
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {f} AS t (order_id, line_no, customer_sk, product_sk, customer_id, product_id,
                                      status, ordered_at, quantity, unit_price, amount, line_version,
                                      order_version)
                SELECT s.order_id, s.line_no, c.customer_sk, p.product_sk, s.customer_id, s.product_id,
                       s.status, s.ordered_at, s.quantity, s.unit_price, s.quantity * s.unit_price,
                       s.line_version, s.order_version
                FROM _dw_stg_line s
                JOIN {dc} c ON c.customer_id = s.customer_id AND c.valid_from <= s.ordered_at
                           AND s.ordered_at < COALESCE(c.valid_to, 'infinity')
                JOIN {dp} p ON p.product_id = s.product_id
                ON CONFLICT (order_id, line_no) DO UPDATE SET
                    customer_sk = EXCLUDED.customer_sk, product_sk = EXCLUDED.product_sk,
                    customer_id = EXCLUDED.customer_id, product_id = EXCLUDED.product_id,
                    status = EXCLUDED.status, ordered_at = EXCLUDED.ordered_at, quantity = EXCLUDED.quantity,
                    unit_price = EXCLUDED.unit_price, amount = EXCLUDED.amount,
                    line_version = EXCLUDED.line_version, order_version = EXCLUDED.order_version
                WHERE (t.customer_sk, t.product_sk, t.line_version, t.order_version)
                      IS DISTINCT FROM (EXCLUDED.customer_sk, EXCLUDED.product_sk, EXCLUDED.line_version,
                                        EXCLUDED.order_version)
                """
            ).format(f=f, dc=dc, dp=dp)
        )
        written = cur.rowcount
    return FactResult(
        lines=len(lines),
        written=written,
        inferred_customers=inferred_customers,
        inferred_products=inferred_products,
    )


def window_bounds(since: datetime | None, until: datetime) -> str:
    """A readable ``[since, until)`` for logs."""
    return f"[{'beginning' if since is None else since.isoformat()}, {until.isoformat()})"
