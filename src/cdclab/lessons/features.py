"""Incremental ML features: point-in-time correct customer features in a small offline/online store.

Vocabulary:
- *feature vector*: per customer ``orders_7d, amount_7d, orders_30d, amount_30d``, the orders with
  ``ordered_at`` in ``[as_of - 7 days, as_of)`` and ``[as_of - 30 days, as_of)``.
- *as of*: the end of the run's data interval. Features are computed from what the warehouse knows when the
  run happens, for the instant ``as_of``.
- *feature version*: a named definition in ``<prefix>_registry`` (:data:`VERSIONS`); ``v1`` excludes
  cancelled orders, ``v2`` counts them. Versions live side by side; a version without rows is backfilled for
  every customer on its first run. Each version remembers its ``last_as_of``; a run with an older ``as_of``
  is refused (:class:`FeatureTimeRegressionError`), it would rewrite history.
- *affected customers* (the incremental part): customers with a changed order (old and new customer of the
  order; a row re-read at the watermark whose version is already mirrored is no change), plus customers
  with an order that entered or left a window since ``last_as_of`` (``ordered_at`` in
  ``[last - 30d, as_of - 30d)``, ``[last - 7d, as_of - 7d)`` or ``[last, as_of)``).
  Only they are recomputed.
- *offline store*: ``<prefix>_offline``, one row per customer, version and validity
  ``[valid_from, valid_to)``: a new row is written only when the vector changed, and it closes the previous
  one (SCD2). *online store*: ``<prefix>_online``, the current vector per customer and version (serving).
- *training data*: :func:`build_training_set` joins labels ``(customer, label_time)`` with the row valid at
  ``label_time`` (``valid_from <= t < valid_to``): only values known at ``t``, never a later correction or a
  late order (no leakage). Written to ``<prefix>_training``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.common.tablenames import PrefixedTables, Table
from cdclab.merge import upsert

VERSIONS: dict[str, str] = {
    "v1": "orders and amount over 7 and 30 days before as_of; cancelled orders excluded",
    "v2": "orders and amount over 7 and 30 days before as_of; cancelled orders included",
}
FEATURES = ["orders_7d", "amount_7d", "orders_30d", "amount_30d"]
MIRROR_COLUMNS = ["id", "customer_id", "status", "total", "ordered_at", "version"]


class UnknownFeatureVersionError(ValueError):
    """A feature version that is not in :data:`VERSIONS`."""


class FeatureTimeRegressionError(ValueError):
    """A run whose ``as_of`` is before the version's ``last_as_of``."""


@dataclass(frozen=True)
class Tables(PrefixedTables):
    """This lesson's tables: ``<prefix>_orders``, ``_offline``, ``_online``, ``_registry``, ``_training``."""

    orders = Table()
    offline = Table()
    online = Table()
    registry = Table()
    training = Table()


def check_version(version: str) -> str:
    if version not in VERSIONS:
        raise UnknownFeatureVersionError(
            f"feature version {version!r} is unknown; use one of {sorted(VERSIONS)}"
        )
    return version


def ensure(wh: Any, t: Tables) -> None:
    vec = "orders_7d integer NOT NULL, amount_7d numeric(14,2) NOT NULL, orders_30d integer NOT NULL, "
    vec += "amount_30d numeric(14,2) NOT NULL"
    upsert.ensure_with_orders_copy(
        wh,
        t,
        "CREATE TABLE IF NOT EXISTS {offline} (customer_id bigint, feature_version text, "
        "valid_from timestamptz, valid_to timestamptz, " + vec + ", computed_by text NOT NULL, "
        "PRIMARY KEY (customer_id, feature_version, valid_from));"
        "CREATE TABLE IF NOT EXISTS {online} (customer_id bigint, feature_version text, "
        "as_of timestamptz NOT NULL, " + vec + ", PRIMARY KEY (customer_id, feature_version));"
        "CREATE TABLE IF NOT EXISTS {registry} (feature_version text PRIMARY KEY, definition text NOT NULL, "
        "registered_at timestamptz NOT NULL DEFAULT now(), last_as_of timestamptz);"
        "CREATE TABLE IF NOT EXISTS {training} (label_time timestamptz, customer_id bigint, "
        "feature_version text, " + vec + ", PRIMARY KEY (label_time, customer_id, feature_version))",
    )


def update_features(
    wh: Any, t: Tables, changed: list[dict[str, Any]], *, version: str, as_of: datetime, run_id: str
) -> dict[str, Any]:
    """Mirror the changed orders, recompute the affected customers' vectors at ``as_of`` and write the
    vectors that changed to the offline and online stores (caller's transaction)."""
    check_version(version)
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL(
                "INSERT INTO {r} (feature_version, definition) VALUES (%s, %s) ON CONFLICT DO NOTHING; "
                "SELECT last_as_of FROM {r} WHERE feature_version = %s FOR UPDATE"
            ).format(r=ident(t.registry)),
            (version, VERSIONS[version], version),
        )
        last = cur.fetchone()[0]
        if last is not None and as_of < last:
            raise FeatureTimeRegressionError(
                f"feature version {version} is computed up to {last}; a run as of {as_of} would rewrite its "
                "history. Run intervals in order (catchup) or register a new feature version"
            )
        ids = [r["id"] for r in changed]
        cur.execute(
            sql.SQL("SELECT id, customer_id, version FROM {} WHERE id = ANY(%s)").format(ident(t.orders)),
            (ids,),
        )
        mirrored = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        # a row re-read at the watermark with a version already mirrored is not a change
        fresh = [r for r in changed if r["id"] not in mirrored or r["version"] > mirrored[r["id"]][1]]
        affected = {mirrored[r["id"]][0] for r in fresh if r["id"] in mirrored} | {
            r["customer_id"] for r in fresh
        }
        upsert.upsert_rows(
            wh, t.orders, [{c: r[c] for c in MIRROR_COLUMNS} for r in fresh], ["id"], "version"
        )
        if last is None:  # new version: backfill every customer
            cur.execute(sql.SQL("SELECT DISTINCT customer_id FROM {}").format(ident(t.orders)))
        else:  # orders that crossed a window edge since the last run
            cur.execute(
                sql.SQL(
                    "SELECT DISTINCT customer_id FROM {} WHERE "
                    "ordered_at >= %(last)s - interval '30 days' AND ordered_at < %(now)s - interval '30 days' "
                    "OR ordered_at >= %(last)s - interval '7 days' AND ordered_at < %(now)s - interval '7 days' "
                    "OR ordered_at >= %(last)s AND ordered_at < %(now)s"
                ).format(ident(t.orders)),
                {"last": last, "now": as_of},
            )
        affected |= {r[0] for r in cur.fetchall()}
        customers = sorted(affected)
        cur.execute(
            sql.SQL(
                "SELECT c, count(o.id) FILTER (WHERE o.ordered_at >= %(t)s - interval '7 days'), "
                "coalesce(sum(o.total) FILTER (WHERE o.ordered_at >= %(t)s - interval '7 days'), 0), "
                "count(o.id), coalesce(sum(o.total), 0) "
                "FROM unnest(%(c)s::bigint[]) c LEFT JOIN {o} o ON o.customer_id = c "
                "AND o.ordered_at >= %(t)s - interval '30 days' AND o.ordered_at < %(t)s "
                "AND (%(all)s OR o.status <> 'cancelled') GROUP BY c"
            ).format(o=ident(t.orders)),
            {"t": as_of, "c": customers, "all": version == "v2"},
        )
        vectors = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
        cur.execute(
            sql.SQL(
                "SELECT customer_id, orders_7d, amount_7d, orders_30d, amount_30d, valid_from FROM {} "
                "WHERE feature_version = %s AND valid_to IS NULL AND customer_id = ANY(%s)"
            ).format(ident(t.offline)),
            (version, customers),
        )
        found = cur.fetchall()
        current = {r[0]: tuple(r[1:5]) for r in found}
        since = {r[0]: r[5] for r in found}
        written = []
        for cust in customers:
            vec = vectors[cust]
            if current.get(cust) == vec or (cust not in current and not any(vec)):
                continue
            # a rerun at the same as_of (two manual runs in one interval) corrects that version in place:
            # closing it at its own valid_from would leave an empty validity range and a duplicate key
            offline = (
                "UPDATE {f} SET orders_7d = %(a)s, amount_7d = %(b)s, orders_30d = %(d)s, amount_30d = %(e)s, "
                "computed_by = %(run)s WHERE customer_id = %(c)s AND feature_version = %(v)s "
                "AND valid_to IS NULL;"
                if since.get(cust) == as_of
                else "UPDATE {f} SET valid_to = %(t)s WHERE customer_id = %(c)s AND feature_version = %(v)s "
                "AND valid_to IS NULL;"
                "INSERT INTO {f} (customer_id, feature_version, valid_from, orders_7d, amount_7d, orders_30d, "
                "amount_30d, computed_by) VALUES (%(c)s, %(v)s, %(t)s, %(a)s, %(b)s, %(d)s, %(e)s, %(run)s);"
            )
            online = sql.SQL(
                "INSERT INTO {n} (customer_id, feature_version, as_of, orders_7d, amount_7d, orders_30d, "
                "amount_30d) VALUES (%(c)s, %(v)s, %(t)s, %(a)s, %(b)s, %(d)s, %(e)s) "
                "ON CONFLICT (customer_id, feature_version) DO UPDATE SET as_of = EXCLUDED.as_of, "
                "orders_7d = EXCLUDED.orders_7d, amount_7d = EXCLUDED.amount_7d, "
                "orders_30d = EXCLUDED.orders_30d, amount_30d = EXCLUDED.amount_30d"
            ).format(n=ident(t.online))
            cur.execute(
                sql.Composed([sql.SQL(offline).format(f=ident(t.offline)), online]),
                dict(zip("abde", vec, strict=True), t=as_of, c=cust, v=version, run=run_id),
            )
            written.append(cust)
        cur.execute(
            sql.SQL("UPDATE {} SET last_as_of = %s WHERE feature_version = %s").format(ident(t.registry)),
            (as_of, version),
        )
    return {"version": version, "backfill": last is None, "recomputed": customers, "written": written}


def build_training_set(wh: Any, t: Tables, *, version: str, label_time: datetime) -> int:
    """Point-in-time join: every customer with a vector valid at ``label_time`` gets that vector (replaces an
    earlier build for the same label time and version). Returns the number of rows."""
    check_version(version)
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL(
                "DELETE FROM {x} WHERE label_time = %(t)s AND feature_version = %(v)s;"
                "INSERT INTO {x} (label_time, customer_id, feature_version, orders_7d, amount_7d, orders_30d, "
                "amount_30d) SELECT %(t)s, customer_id, feature_version, orders_7d, amount_7d, orders_30d, "
                "amount_30d FROM {f} WHERE feature_version = %(v)s AND valid_from <= %(t)s "
                "AND (valid_to IS NULL OR valid_to > %(t)s)"
            ).format(x=ident(t.training), f=ident(t.offline)),
            {"t": label_time, "v": version},
        )
        return int(cur.rowcount)
