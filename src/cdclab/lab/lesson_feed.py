"""Rows for the 71.6 anti-pattern lessons' default source tables, written by the workload service.

The five 71.6 DAGs read their own source tables (``public.rows_71_06_01`` ... in ``shop``,
``staging.changes_71_06_05`` in the warehouse; shapes in :data:`cdclab.lessons.antipatterns.SOURCE_SHAPES`).
On a fresh lab they would be empty and the DAGs would "succeed" doing nothing; the workload service
seeds them (:data:`SEED_ITEMS` items spread over the last day) and then adds one *item* per tick, so
every hourly run from the UI has rows, and each lesson's failure can happen on the lab's own data:

- 71_06_01 / 71_06_03 (``rows``): 300 ids updated over and over (``updated_at`` = the item's time);
- 71_06_02 (``events``): one event per item; one in five arrives 90 minutes to 4 hours *late*
  (``event_time`` well before ``arrived_at``), the rows an hour computed once never counts;
- 71_06_04 (``deliveries``): one delivery per item; one in five re-delivers an earlier ``event_id``
  (the duplicates a dedup table must remember);
- 71_06_05 (``changes``): 40 ids changing version after version; one in six changes arrives *after*
  a newer version of its id (out of order: applying in arrival order keeps the stale one).

An *item* ``k`` is deterministic in ``k`` (its random choices come from ``Random(k)``); only its time is
the wall clock. Writes are idempotent: rows are upserted by id, events/deliveries/changes inserted
with ``ON CONFLICT DO NOTHING`` on their key, so replaying an item after a crash duplicates nothing.
The service counts items in ``lab.workload.feed_applied`` (committed with the shop's rows).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident

SEED_ITEMS = 720  # one item every 2 minutes over the last day
SEED_SPAN = dt.timedelta(hours=24)
ROW_IDS = 300
CHANGE_IDS = 40


@dataclass(frozen=True)
class FeedTables:
    """Where the items go: ``shop_schema`` for four tables, ``warehouse_schema`` for the changes."""

    rows_71_06_01: str = "public.rows_71_06_01"
    events_71_06_02: str = "public.events_71_06_02"
    rows_71_06_03: str = "public.rows_71_06_03"
    deliveries_71_06_04: str = "public.deliveries_71_06_04"
    changes_71_06_05: str = "staging.changes_71_06_05"  # in the warehouse

    @classmethod
    def in_schemas(cls, shop_schema: str, warehouse_schema: str) -> FeedTables:
        return cls(
            f"{shop_schema}.rows_71_06_01",
            f"{shop_schema}.events_71_06_02",
            f"{shop_schema}.rows_71_06_03",
            f"{shop_schema}.deliveries_71_06_04",
            f"{warehouse_schema}.changes_71_06_05",
        )


def ensure_tables(shop: Any, wh: Any, tables: FeedTables) -> None:
    """The five source tables (the DAGs' own shapes); commits on both connections."""
    from cdclab.lessons import antipatterns as ap

    ap.ensure_source(shop, tables.rows_71_06_01, "rows")
    ap.ensure_source(shop, tables.events_71_06_02, "events")
    ap.ensure_source(shop, tables.rows_71_06_03, "rows")
    ap.ensure_source(shop, tables.deliveries_71_06_04, "deliveries")
    with wh.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(tables.changes_71_06_05.split(".")[0])
            )
        )
    wh.commit()
    ap.ensure_source(wh, tables.changes_71_06_05, "changes")


def _amount(rng: random.Random) -> float:
    return round(rng.uniform(1, 500), 2)


def write_items(shop_cur: Any, wh_cur: Any, tables: FeedTables, items: list[tuple[int, dt.datetime]]) -> None:
    """Write items ``(k, at)`` in the callers' transactions (shop: four tables; warehouse: changes)."""
    rows_upsert = (
        "INSERT INTO {} (id, amount, updated_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount, updated_at = EXCLUDED.updated_at"
    )
    for k, at in items:
        rng = random.Random(k)
        row_id, amount = k % ROW_IDS + 1, _amount(rng)
        for table in (tables.rows_71_06_01, tables.rows_71_06_03):
            shop_cur.execute(sql.SQL(rows_upsert).format(ident(table)), (row_id, amount, at))
        late = rng.random() < 0.2
        lag = (
            dt.timedelta(minutes=rng.uniform(90, 240)) if late else dt.timedelta(seconds=rng.uniform(0, 240))
        )
        shop_cur.execute(
            sql.SQL(
                "INSERT INTO {} (id, amount, event_time, arrived_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING"
            ).format(ident(tables.events_71_06_02)),
            (k + 1, _amount(rng), at - lag, at),
        )
        event = k - rng.randint(1, 30) if k > 30 and rng.random() < 0.2 else k  # a re-delivery
        shop_cur.execute(
            sql.SQL(
                "INSERT INTO {} (seq, event_id, event_time, arrived_at, payload) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (seq) DO NOTHING"
            ).format(ident(tables.deliveries_71_06_04)),
            (k + 1, f"evt-{event}", at - dt.timedelta(seconds=30), at, f"delivery of evt-{event}"),
        )
        change_id, version = k % CHANGE_IDS + 1, k // CHANGE_IDS + 1
        stale = version > 2 and rng.random() < 1 / 6  # an old version arriving after a newer one
        wh_cur.execute(
            sql.SQL(
                "INSERT INTO {} (seq, id, version, status, arrived_at) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (seq) DO NOTHING"
            ).format(ident(tables.changes_71_06_05)),
            (k + 1, change_id, version - 2 if stale else version, rng.choice(("new", "paid", "shipped")), at),
        )


def seed_times(now: dt.datetime, start: int, stop: int) -> list[tuple[int, dt.datetime]]:
    """Items ``start..stop-1`` of the seed, spread evenly over the :data:`SEED_SPAN` before ``now``."""
    step = SEED_SPAN / SEED_ITEMS
    return [(k, now - SEED_SPAN + step * k) for k in range(start, min(stop, SEED_ITEMS))]
