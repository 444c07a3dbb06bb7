"""The broken situations the 71.8 / 71.10 debugging lessons investigate, built by the DAGs' own ``setup`` task.

A debugging DAG needs something broken to look at: a gap, duplicates, late rows, a lying watermark, a
poison row. On a freshly started lab nothing is broken, so each of these DAGs, run with its **default
params** (its own demo tables), first (re)builds its demo situation here; with any other table names
(a user's real pipeline, a test's own tables) ``setup`` does nothing (:func:`uses_demo_tables`).

Every builder is idempotent: it brings the demo tables to the same broken state however often it runs
(fixed rows, upserted; derived rows deleted and re-inserted), in one transaction per database, under an
advisory lock, so two runs started together do not interleave.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident

UTC = dt.UTC


def uses_demo_tables(params: Mapping[str, Any], defaults: Mapping[str, Any], names: Iterable[str]) -> bool:
    """True when every one of ``names`` is the DAG's default: the run works on the lab's demo tables."""
    return all(params.get(n) == defaults[n] for n in names)


def _lock(cur: Any, name: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cdclab.lessons.demos.{name}",))


# --- 71.8.1 gap investigation ----------------------------------------------------------------------

GAP_DAY = dt.datetime(2026, 1, 1, tzinfo=UTC)
GAP_ROWS = [  # (id, amount, event_at): three hours of events
    (1, 10, GAP_DAY.replace(hour=10, minute=5)),
    (2, 20, GAP_DAY.replace(hour=10, minute=40)),
    (3, 30, GAP_DAY.replace(hour=11, minute=10)),
    (4, 40, GAP_DAY.replace(hour=11, minute=50)),
    (5, 50, GAP_DAY.replace(hour=12, minute=30)),
]
GAP_LOADED_HOURS = (10, 12)  # 11:00-12:00 was never run: rows 3 and 4 are missing from the target


def build_gap(shop: Any, wh: Any, source: str, target: str, pipeline: str, ledger_table: str) -> None:
    """Source rows over 10:00-13:00; a target and a ledger that hold 10:00 and 12:00 only (a skipped run)."""
    from cdclab.ops import diagnostics as d

    ddl = "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, amount int NOT NULL, event_at timestamptz NOT NULL)"
    upsert = (
        "INSERT INTO {} (id, amount, event_at) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET amount = EXCLUDED.amount, event_at = EXCLUDED.event_at"
    )
    with shop, shop.cursor() as cur:
        _lock(cur, source)
        cur.execute(sql.SQL(ddl).format(ident(source)))
        cur.executemany(sql.SQL(upsert).format(ident(source)), GAP_ROWS)
    with wh, wh.cursor() as cur:
        _lock(cur, target)
        cur.execute("CREATE SCHEMA IF NOT EXISTS core")
        cur.execute(sql.SQL(ddl).format(ident(target)))
        d.ensure_ledger(cur, ledger_table)
        cur.execute(
            sql.SQL("DELETE FROM {} WHERE id = ANY(%s)").format(ident(target)), ([r[0] for r in GAP_ROWS],)
        )
        cur.execute(sql.SQL("DELETE FROM {} WHERE pipeline = %s").format(ident(ledger_table)), (pipeline,))
        for h in GAP_LOADED_HOURS:
            start, end = GAP_DAY.replace(hour=h), GAP_DAY.replace(hour=h + 1)
            rows = [r for r in GAP_ROWS if start <= r[2] < end]
            cur.executemany(sql.SQL(upsert).format(ident(target)), rows)
            d.record_interval(
                cur, pipeline, start, end, len(rows), run_id=f"demo-load-{h:02d}", table=ledger_table
            )


# --- 71.8.2 watermark debugging --------------------------------------------------------------------


def break_watermark(wh: Any, key: str, dag_id: str, run_id: str) -> None:
    """A bad deploy wrote the watermark as a bigint (``wrong_type``), audited in the watermark history."""
    from cdclab.state import watermarks as state

    state.ensure_schema(wh)
    with wh, wh.cursor() as cur:
        _lock(cur, key)
        state.TableWatermarkStore(wh).reset(
            key,
            42,
            "demo (setup): a bad deploy wrote the watermark as a bigint",
            value_type="bigint",
            dag_id=dag_id,
            run_id=run_id,
        )


# --- 71.8.4 duplicate detection --------------------------------------------------------------------

DUP_T0 = dt.datetime(2026, 1, 1, 9, tzinfo=UTC)


def _customer(i: int, version: int = 1, tier: str = "basic") -> dict[str, Any]:
    at = DUP_T0 + dt.timedelta(minutes=i + 10 * (version - 1))
    return {
        "id": i,
        "email": f"c{i}@shop.test",
        "full_name": f"Customer {i}",
        "home_tz": "UTC",
        "tier": tier,
        "created_at": DUP_T0,
        "updated_at": at,
        "version": version,
        "is_deleted": False,
        "deleted_at": None,
    }


def build_duplicates(wh: Any, target: str) -> None:
    """An append-only load of customers 1-5, a retry that appended 1-3 again, and a changed customer 2
    appended instead of upserted: 3 exact and 1 version duplicate. The table is rebuilt (the lesson's
    ``prevent`` step adds a unique key, which a rebuild removes again)."""
    from cdclab.ops import diagnostics as d

    with wh, wh.cursor() as cur:
        _lock(cur, target)
        cur.execute("CREATE SCHEMA IF NOT EXISTS core")
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(target)))
        cur.execute(
            sql.SQL(
                "CREATE TABLE {} (id bigint, email text, full_name text, home_tz text, tier text, "
                "created_at timestamptz, updated_at timestamptz, version integer, is_deleted boolean, "
                "deleted_at timestamptz, _load_run_id text, "
                "_loaded_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(ident(target))
        )
        d.append_rows(cur, target, [_customer(i) for i in range(1, 6)], "demo-load-1")
        d.append_rows(cur, target, [_customer(i) for i in range(1, 4)], "demo-load-1-retry")
        d.append_rows(cur, target, [_customer(2, version=2, tier="gold")], "demo-load-2")


# --- 71.8.5 late data ------------------------------------------------------------------------------


def build_late_events(cur: Any, events: str, ledger_table: str, pipeline: str, start: dt.datetime) -> None:
    """For the run's window ``[start, start + 1h)``: the previous window was computed at its cutoff
    (``start + 10 min``, a ``load`` ledger entry, once); events of this window on time; two events of the
    previous window that arrived after it was computed, one within the allowed lateness (reprocessed), one
    from a buffering mobile client beyond it (dead-lettered). Event ids are derived from ``start``. Runs in
    the caller's transaction (``cur``), under an advisory lock on ``events``."""
    from cdclab.ops import diagnostics as d

    hour = dt.timedelta(hours=1)
    prev, tag = start - hour, f"{start:%Y%m%dT%H}"
    rows = [
        (f"demo-{tag}-web-1", "web", start + dt.timedelta(minutes=5), start + dt.timedelta(minutes=6), 10),
        (f"demo-{tag}-web-2", "web", start + dt.timedelta(minutes=35), start + dt.timedelta(minutes=36), 20),
        (f"demo-{tag}-pos-1", "pos", start + dt.timedelta(minutes=50), start + dt.timedelta(minutes=52), 30),
        # previous window, arrived 20 min after its cutoff: late, 30 min after its end -> reprocess
        (f"demo-{tag}-pos-late", "pos", prev + dt.timedelta(minutes=40), start + dt.timedelta(minutes=30), 5),
        # previous window, arrived 65 min after its end (> 60 min allowed) -> dead letter
        (
            f"demo-{tag}-mobile-late",
            "mobile",
            prev + dt.timedelta(minutes=15),
            start + dt.timedelta(minutes=65),
            7,
        ),
    ]
    _lock(cur, events)
    cur.execute("CREATE SCHEMA IF NOT EXISTS staging")
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (event_id text PRIMARY KEY, source text NOT NULL, "
            "event_time timestamptz NOT NULL, ingested_at timestamptz NOT NULL, amount bigint NOT NULL)"
        ).format(ident(events))
    )
    d.ensure_ledger(cur, ledger_table)
    cur.execute(
        sql.SQL("SELECT 1 FROM {} WHERE pipeline = %s AND interval_start = %s").format(ident(ledger_table)),
        (pipeline, prev),
    )
    if cur.fetchone() is None:
        d.record_interval(
            cur,
            pipeline,
            prev,
            start,
            0,
            run_id="demo-previous-window",
            cutoff=start + dt.timedelta(minutes=10),
            table=ledger_table,
        )
    cur.executemany(
        sql.SQL(
            "INSERT INTO {} (event_id, source, event_time, ingested_at, amount) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (event_id) DO NOTHING"
        ).format(ident(events)),
        rows,
    )


# --- 71.10.3 error recovery ------------------------------------------------------------------------


def build_recovery_source(shop: Any, source: str, start: dt.datetime) -> None:
    """The source table (``id, event_time, amount text``) with four events in ``[start, start + 1h)``, one
    of them a poison row (amount ``'n/a'``) that must go to the dead-letter table. Ids come from ``start``."""
    base = int(start.timestamp()) // 3600 * 10
    rows = [
        (base + 1, start + dt.timedelta(minutes=5), "12.50"),
        (base + 2, start + dt.timedelta(minutes=20), "3.00"),
        (base + 3, start + dt.timedelta(minutes=40), "n/a"),
        (base + 4, start + dt.timedelta(minutes=55), "7.25"),
    ]
    with shop, shop.cursor() as cur:
        _lock(cur, source)
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY, event_time timestamptz NOT NULL, amount text)"
            ).format(ident(source))
        )
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (id, event_time, amount) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING"
            ).format(ident(source)),
            rows,
        )
