"""Teardown of everything a test named with the ``names`` fixture: tables, topics, groups, connectors.

A test names what it creates with ``names("orders")`` (``orders_<test>_<6 hex>``), and code it calls
derives more names from those (``<name>__deleted``, ``<name>_variant``, a DAG run's targets named from
the test's params). After the test, :func:`drop_named` finds every object whose name contains one of
the test's **markers** (its unique suffix, ``<test name>_<6 hex>``) and drops it, in this order:

1. Kafka Connect connectors (they stop capturing and release their slots);
2. tables, views and materialized views in the shop and warehouse databases, in any schema (and in
   MariaDB when the test used it); a dropped shop table produces no further change events;
3. replication slots (inactive ones) and publications;
4. Kafka topics and consumer groups. A topic that the lab's connector still had events for would be
   re-created by them, so topics go after the tables, once a CDC fence has passed (when a shop table
   was dropped).

Only exact substring matches on the markers are dropped: a marker holds a random hex part, so no other
test's (or the lab's) objects match. Every step is best effort: a failure is collected and reported
as one :class:`NamesTeardownWarning`, never raised, so a teardown cannot hide the test's own result.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from cdclab.lab.config import LabConfig


class NamesTeardownWarning(UserWarning):
    """Teardown could not drop everything named from a test's names (or a name lost its suffix)."""


MIN_MARKER = 10
"""A marker shorter than this is ignored: it could match someone else's names."""


def matches(name: str, markers: Iterable[str]) -> bool:
    """True when ``name`` contains one of ``markers`` (each at least :data:`MIN_MARKER` long)."""
    return any(len(m) >= MIN_MARKER and m in name for m in markers)


def named(candidates: Iterable[str], markers: Iterable[str]) -> list[str]:
    """The candidates that contain a marker, in a stable order."""
    marks = [m for m in markers if len(m) >= MIN_MARKER]
    return sorted({c for c in candidates if matches(c, marks)})


_RELATIONS = """
SELECT n.nspname, c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND EXISTS (SELECT 1 FROM unnest(%s::text[]) m WHERE strpos(c.relname, m) > 0)
"""
_KIND = {"r": "TABLE", "p": "TABLE", "f": "FOREIGN TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}


def drop_postgres(cfg: LabConfig, database: str, markers: list[str]) -> list[str]:
    """Drop every table/view in ``database`` whose name contains a marker; the ``schema.name`` dropped."""
    import psycopg2
    from psycopg2 import sql

    dropped: list[str] = []
    conn = psycopg2.connect(cfg.pg_dsn(database), connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '20s'")
            cur.execute(_RELATIONS, (markers,))
            rows = cur.fetchall()
            # views first (they depend on tables); CASCADE takes what depends on a table anyway
            for schema, rel, kind in sorted(rows, key=lambda r: r[2] not in ("v", "m")):
                cur.execute(
                    sql.SQL("DROP {kind} IF EXISTS {t} CASCADE").format(
                        kind=sql.SQL(_KIND[kind]), t=sql.Identifier(schema, rel)
                    )
                )
                dropped.append(f"{schema}.{rel}")
            if database == "shop":
                cur.execute("SELECT slot_name FROM pg_replication_slots WHERE NOT active")
                for slot in named((r[0] for r in cur.fetchall()), markers):
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                    dropped.append(f"slot {slot}")
            cur.execute("SELECT pubname FROM pg_publication")
            for pub in named((r[0] for r in cur.fetchall()), markers):
                cur.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))
                dropped.append(f"publication {pub}")
    finally:
        conn.close()
    return dropped


def drop_mariadb(cfg: LabConfig, markers: list[str]) -> list[str]:
    """Drop the MariaDB ``shop`` tables whose name contains a marker (only when the test imported
    pymysql: a test that never touched MariaDB costs nothing)."""
    if "pymysql" not in sys.modules:
        return []
    import pymysql

    conn = pymysql.connect(
        host=cfg.host,
        port=cfg.port("mariadb"),
        user="shop",
        password=cfg["SHOP_PASSWORD"],
        database="shop",
        autocommit=True,
        connect_timeout=5,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW FULL TABLES")
            rows = {r[0]: r[1] for r in cur.fetchall()}
            dropped = named(rows, markers)
            for name in dropped:
                kind = "VIEW" if rows[name] == "VIEW" else "TABLE"
                cur.execute(f"DROP {kind} IF EXISTS `{name}`")
    finally:
        conn.close()
    return [f"mariadb.{n}" for n in dropped]


def drop_connectors(cfg: LabConfig, markers: list[str]) -> list[str]:
    from cdclab.cdc.connect import ConnectClient

    client = ConnectClient(cfg.connect_url, timeout=15)
    gone = named(client.connectors(), markers)
    for name in gone:
        client.delete(name)
    return [f"connector {n}" for n in gone]


def drop_kafka(cfg: LabConfig, markers: list[str]) -> list[str]:
    """Delete the topics and consumer groups whose name contains a marker."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
    dropped: list[str] = []
    topics = named(admin.list_topics(timeout=15).topics, markers)
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(60)
        dropped += [f"topic {t}" for t in topics]
    listing = admin.list_consumer_groups(request_timeout=15).result(30)
    groups = named((g.group_id for g in listing.valid), markers)
    if groups:
        for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
            try:
                future.result(60)
            except Exception as exc:  # a group with live members cannot be deleted; say so, go on
                raise RuntimeError(f"consumer group: {exc}") from exc
        dropped += [f"group {g}" for g in groups]
    return dropped


def _pass_fence(cfg: LabConfig, fence: Callable[[], Any] | None) -> list[str]:
    if fence is None:
        from cdclab.testing.fence import cdc_fence

        cdc_fence(cfg, timeout=60)
    else:
        fence()
    return []


def drop_named(
    cfg: LabConfig,
    markers: Iterable[str],
    fence: Callable[[], Any] | None = None,
    kafka: bool = True,
) -> list[str]:
    """Drop everything named from ``markers`` (see the module docstring); what was dropped.

    ``fence`` (no arguments) is called before topics are deleted when a ``shop`` table was dropped, so
    the connector has published what it still held for it (default: :func:`cdclab.testing.fence.cdc_fence`
    with a 60 s limit). ``kafka=False`` leaves steps 4 (fence, topics, groups) to a later call, e.g. one
    :class:`KafkaSweep` at the end of a session: one fence for all tests instead of one per test.
    Errors become one :class:`NamesTeardownWarning`."""
    marks = sorted({m for m in markers if len(m) >= MIN_MARKER})
    if not marks:
        return []
    dropped: list[str] = []
    errors: list[str] = []

    def step(what: str, action: Callable[[], list[str]]) -> list[str]:
        try:
            done = action()
        except Exception as exc:
            errors.append(f"{what}: {type(exc).__name__}: {exc}")
            return []
        dropped.extend(done)
        return done

    step("connectors", lambda: drop_connectors(cfg, marks))
    shop = step("shop", lambda: drop_postgres(cfg, "shop", marks))
    step("warehouse", lambda: drop_postgres(cfg, "warehouse", marks))
    step("mariadb", lambda: drop_mariadb(cfg, marks))
    if kafka:
        if any(not d.startswith(("slot ", "publication ")) for d in shop):
            step("cdc fence", lambda: _pass_fence(cfg, fence))
        step("kafka", lambda: drop_kafka(cfg, marks))
    if errors:
        warnings.warn(
            "cdclab names teardown: could not drop everything named "
            f"{', '.join(marks)}: " + "; ".join(errors),
            NamesTeardownWarning,
            stacklevel=2,
        )
    return dropped


class KafkaSweep:
    """The Kafka part of many tests' teardowns, done once: :meth:`add` collects each test's markers
    (after :func:`drop_named` with ``kafka=False`` dropped its tables), :meth:`run` passes one CDC
    fence and deletes every topic and consumer group named from any of them. A test's topics carry its
    unique marker, so leaving them until the end of the session affects no other test."""

    def __init__(self, cfg: LabConfig) -> None:
        self.cfg = cfg
        self.markers: set[str] = set()

    def add(self, markers: Iterable[str]) -> None:
        self.markers.update(m for m in markers if len(m) >= MIN_MARKER)

    def run(self, fence: Callable[[], Any] | None = None) -> list[str]:
        if not self.markers:
            return []
        marks = sorted(self.markers)
        errors: list[str] = []
        dropped: list[str] = []
        for what, action in (
            ("cdc fence", lambda: _pass_fence(self.cfg, fence)),
            ("kafka", lambda: drop_kafka(self.cfg, marks)),
        ):
            try:
                dropped += action()
            except Exception as exc:
                errors.append(f"{what}: {type(exc).__name__}: {exc}")
        if errors:
            warnings.warn(
                f"cdclab names teardown: could not drop the topics of {len(marks)} test(s): "
                + "; ".join(errors),
                NamesTeardownWarning,
                stacklevel=2,
            )
        self.markers.clear()
        return dropped
