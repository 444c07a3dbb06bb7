"""Replicate source tables from their Debezium topics into warehouse tables, exactly once.

Vocabulary:
- *source table*: ``schema.table`` in the ``shop`` database; its Debezium topic is
  ``<topic_prefix>.<schema>.<table>``.
- *target table*: ``<target_schema>.<target_prefix><table>`` in ``warehouse``; created from the source
  catalog (same columns, types and primary key) on first use, see :mod:`cdclab.cdc.merge`.
- *consumer group*: names the position of this replication in ``state.kafka_offsets``; two DAGs that
  replicate the same topic into different targets use different groups.

:func:`replicate` is what a DAG task calls (a catch-up run); :func:`stream` runs the same routing and
merge continuously (a follow run, :mod:`cdclab.cdc.consumer`) until told to stop: ``cdclab stream`` on
the command line. Connections come from Airflow connection ids.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, TypeVar, Unpack

from cdclab.cdc import coltypes, ddl, lean
from cdclab.cdc import consumer as kc
from cdclab.cdc.events import (
    Change,
    MalformedEvent,
    Skipped,
    built,
    parse_debezium,
    parse_maxwell,
    unavailable_columns,
)
from cdclab.cdc.merge import (
    DeleteMode,
    MergeResult,
    SchemaDrift,
    SchemaPolicy,
    apply_changes,
    ensure_target,
    primary_key,
)
from cdclab.common.db import SHOP, WAREHOUSE, connect, get_connection, transaction
from cdclab.common.options import one_of

log = logging.getLogger(__name__)


class TruncateArrived(SchemaDrift):
    """A TRUNCATE event (op ``t``) reached a merge: an explicit stop, naming the table, topic, offset and
    the remedy. (Append mode keeps it as a ledger row instead, :mod:`cdclab.cdc.append`.)"""


@dataclass(frozen=True)
class TableRoute:
    source: str  # public.customers
    topic: str  # shop.public.customers
    target: str  # core.customers
    key: tuple[str, ...]
    types: dict[str, str]  # column -> "type [DEFAULT expr]" from the source, used when the schema evolves
    # column -> codec name (cdclab.cdc.coltypes.CODECS): how Debezium's JSON value becomes the source value
    codecs: dict[str, str] = field(default_factory=dict)
    # column -> its number in the source table (survives RENAME COLUMN); see cdclab.cdc.ddl
    attnums: dict[str, int] = field(default_factory=dict)


def keys_per_target(
    routes: Sequence[TableRoute],
    find: Callable[[Any, TableRoute], Sequence[tuple[Any, ...]]],
    *,
    most: int = 20,
    conn_id: str = WAREHOUSE,
) -> dict[str, list[tuple[Any, ...]]]:
    """``find(cur, route)`` for every route, all in one transaction of ``conn_id``: the targets for which
    it found keys (e.g. keys that break a check), each with the first ``most`` of them."""
    found: dict[str, list[tuple[Any, ...]]] = {}
    with transaction(conn_id) as cur:
        for r in routes:
            keys = find(cur, r)
            if keys:
                found[r.target] = list(keys[:most])
    return found


def kafka_bootstrap(kafka_conn_id: str) -> str:
    extra = get_connection(kafka_conn_id).extra_dejson
    servers = extra.get("bootstrap.servers")
    if not servers:
        raise ValueError(f"Airflow connection {kafka_conn_id!r} has no 'bootstrap.servers' in its extra")
    return str(servers)


class Routed(Protocol):
    """What consuming needs of a route: its source table, its topic and its target table."""

    @property
    def source(self) -> str: ...

    @property
    def topic(self) -> str: ...

    @property
    def target(self) -> str: ...


class ConsumeOptions(TypedDict, total=False):
    """How a replication run consumes its topics: the keywords the entry points (:func:`replicate`,
    :func:`replicate_maxwell`, :func:`cdclab.cdc.append.replicate_append`,
    :func:`cdclab.cdc.merge_variants.replicate_with`) pass on unchanged to :func:`consume_routes`, whose
    defaults apply to what a call leaves out."""

    batch_size: int
    max_seconds: float
    kafka_conn_id: str
    who: str
    snapshotted: Collection[str]
    stop_at: Mapping[tuple[str, int], int] | None
    follow: threading.Event | None
    poll_timeout: float


def consume_routes(
    routes: Sequence[Routed],
    handler: kc.BatchHandler,
    *,
    group: str,
    target_conn_id: str = WAREHOUSE,
    batch_size: int = 500,
    max_seconds: float = 300.0,
    kafka_conn_id: str = "kafka_default",
    who: str = "",
    snapshotted: Collection[str] = (),
    stop_at: Mapping[tuple[str, int], int] | None = None,
    follow: threading.Event | None = None,
    poll_timeout: float = 0.5,
    prepare: Callable[[list[Any]], Any] | None = None,
) -> kc.ConsumeResult:
    """Consume the topics of ``routes`` into the target database with ``handler``, each batch's offsets
    stored with its writes (:func:`cdclab.cdc.consumer.consume_into_postgres`); the group is bound to the
    routes' targets. ``snapshotted``: source tables whose snapshot has been requested; ``stop_at``: end
    offsets to stop at (:func:`end_offsets`); ``follow``: a follow run until the event is set (:func:`stream`);
    ``prepare``: the handler's database-free part, run while the batch before is applied."""
    topics = list(dict.fromkeys(r.topic for r in routes))
    return kc.consume_into_postgres(
        bootstrap=kafka_bootstrap(kafka_conn_id),
        topics=topics,
        group=group,
        connect=lambda: connect(target_conn_id),
        handler=handler,
        batch_size=batch_size,
        max_seconds=max_seconds,
        who=who,
        targets={r.topic: r.target for r in routes},
        snapshotted={r.topic for r in routes if r.source in snapshotted},
        stop_at=stop_at,
        follow=follow,
        poll_timeout=poll_timeout,
        prepare=prepare,
    )


def route_names(
    table: str, *, topic_prefix: str, target_schema: str, target_prefix: str
) -> tuple[str, str, str]:
    """The source (``public`` when ``table`` names no schema), Debezium topic and target of ``table``."""
    source = table if "." in table else f"public.{table}"
    schema, name = source.split(".", 1)
    return source, f"{topic_prefix}.{schema}.{name}", f"{target_schema}.{target_prefix}{name}"


@dataclass(frozen=True)
class CatalogTable:
    """One source table as :func:`catalog_routes` finds it: its route names (:func:`route_names`), its
    columns in the source catalog and how each is replicated (:func:`cdclab.cdc.coltypes.plan_table`)."""

    source: str  # public.customers
    topic: str  # shop.public.customers
    target: str  # core.customers
    columns: list[coltypes.SourceColumn]
    plans: list[coltypes.ColumnPlan]

    @property
    def codecs(self) -> dict[str, str]:
        """Column -> codec name (:data:`cdclab.cdc.coltypes.CODECS`) of the columns whose Debezium value
        needs decoding (``TableRoute.codecs``)."""
        return {p.name: p.codec for p in self.plans if p.codec != "identity"}


RouteT = TypeVar("RouteT")  # the kind of route a build makes: TableRoute, cdclab.cdc.append.AppendRoute


def catalog_routes(
    tables: Sequence[str],
    build: Callable[[Any, CatalogTable], RouteT],
    *,
    topic_prefix: str,
    target_schema: str,
    target_prefix: str = "",
    source_conn_id: str = SHOP,
) -> list[RouteT]:
    """The routes of ``tables``, in one transaction of the source catalog: each table's names, columns and
    column plans, made a route by ``build(cur, table)`` (which may read more of the catalog with ``cur``).
    A column whose type cannot be replicated losslessly is refused here, before anything is written."""
    routes = []
    with transaction(source_conn_id) as cur:
        for table in tables:
            qualified, topic, target = route_names(
                table, topic_prefix=topic_prefix, target_schema=target_schema, target_prefix=target_prefix
            )
            columns = coltypes.table_columns(cur, qualified)
            plans = coltypes.plan_table(qualified, columns)
            routes.append(build(cur, CatalogTable(qualified, topic, target, columns, plans)))
    return routes


def routes_for(
    tables: Sequence[str],
    *,
    topic_prefix: str,
    target_schema: str,
    target_prefix: str = "",
    source_conn_id: str = SHOP,
) -> list[TableRoute]:
    """Look the source tables up in the source catalog (columns, types, primary key)."""
    return catalog_routes(
        tables,
        _table_route,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        source_conn_id=source_conn_id,
    )


def _table_route(cur: Any, table: CatalogTable) -> TableRoute:
    """The merge route of ``table``: its primary key, and target types with the source's defaults."""
    qualified = table.source
    cur.execute(
        """SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                   JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
                   WHERE d.adrelid = %s::regclass""",
        (qualified,),
    )
    defaults = dict(cur.fetchall())
    key = primary_key(cur, qualified)
    if not key:
        raise ValueError(
            f"source table {qualified} has no primary key: CDC merges need one; add a primary "
            "key, or replicate it as an insert-only ledger in append mode "
            "(cdclab.cdc.append.replicate_append)"
        )
    return TableRoute(
        source=qualified,
        topic=table.topic,
        target=table.target,
        key=tuple(key),
        types={
            p.name: p.target_type + _default(defaults.get(p.name), p.target_type, p.target_type != c.sql_type)
            for p, c in zip(table.plans, table.columns, strict=True)
        },
        codecs=table.codecs,
        attnums={c.name: c.attnum for c in table.columns},
    )


def _default(expr: str | None, target_type: str, mapped: bool) -> str:
    """`` DEFAULT expr`` for the target, or ``""``. Sequences stay in the source. For a column whose type
    is mapped (an enum becomes text, a domain its base type) a constant cast to the source's type
    (``'happy'::mood``) is cast to the target type instead; any other default of such a column is left
    out, since it may name types or functions the warehouse lacks."""
    if expr is None or "nextval(" in expr:
        return ""
    if not mapped:
        return f" DEFAULT {expr}"
    literal = re.fullmatch(r"('(?:[^']|'')*')(?:::[\w.\" ]+(?:\[\])?)?", expr)
    return f" DEFAULT {literal.group(1)}::{target_type}" if literal else ""


def decode_change(change: Change, codecs: Mapping[str, str]) -> Change:
    """Turn Debezium's JSON values of a change back into the source's values (see :mod:`cdclab.cdc.coltypes`)."""
    if not codecs:
        return change
    return decoded(change, coltypes.row_decoder(codecs))


def decoded(change: Change, decode: coltypes.RowDecoder) -> Change:
    """:func:`decode_change` with the table's decoder built once (:func:`cdclab.cdc.coltypes.row_decoder`).

    The copy is :func:`cdclab.cdc.events.built` (no frozen ``__init__``, no :func:`dataclasses.replace`):
    together those were a tenth of the sink's CPU. A bytea placeholder decodes to the TOAST placeholder, so
    ``unavailable`` is read from the decoded image."""
    after = decode(change.after)
    return built(
        **{
            **change.__dict__,
            "key": decode(change.key) or {},
            "before": decode(change.before),
            "after": after,
            "unavailable": unavailable_columns(after),
        }
    )


Parser = Callable[[Any, TableRoute], "Change | Skipped"]


def _maxwell(msg: Any, route: TableRoute) -> Change | Skipped:
    return parse_maxwell(msg.value(), route.key)


def replicate(
    tables: Sequence[str],
    *,
    group: str,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "",
    delete_mode: DeleteMode = "hard",
    schema_policy: SchemaPolicy = "fail",
    source_conn_id: str = SHOP,
    target_conn_id: str = WAREHOUSE,
    **consume: Unpack[ConsumeOptions],
) -> dict[str, Any]:
    """Catch ``tables`` up from their Debezium topics into the warehouse; returns counts for logs and XCom.

    ``consume``: how to consume (:class:`ConsumeOptions`: ``batch_size`` 500, ``max_seconds`` 300,
    ``kafka_conn_id``, ``who``, ...; the defaults of :func:`consume_routes`).
    ``snapshotted``: tables whose snapshot has been requested (71_09_01's initial snapshot), for which a
    new consumer group may start at a log start above 0: the snapshot re-reads their rows.
    ``stop_at``: end offsets (:func:`end_offsets`) to stop at instead of the current end.
    ``follow``: do not stop at the end, follow until the event is set (:func:`stream`)."""
    one_of("delete_mode", delete_mode, DeleteMode)
    one_of("schema_policy", schema_policy, SchemaPolicy)
    routes = routes_for(
        tables,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        source_conn_id=source_conn_id,
    )
    return _run(
        routes,
        debezium_parser,
        group=group,
        delete_mode=delete_mode,
        schema_policy=schema_policy,
        target_conn_id=target_conn_id,
        **consume,
    )


def stream(
    tables: Sequence[str],
    *,
    group: str,
    stop: threading.Event,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "",
    delete_mode: DeleteMode = "hard",
    schema_policy: SchemaPolicy = "fail",
    batch_size: int = 500,
    poll_timeout: float = 0.1,
    max_seconds: float = math.inf,
    source_conn_id: str = SHOP,
    target_conn_id: str = WAREHOUSE,
    kafka_conn_id: str = "kafka_default",
    who: str = "stream",
    snapshotted: Sequence[str] = (),
) -> dict[str, Any]:
    """Replicate ``tables`` continuously: the merge of :func:`replicate`, exactly once, batch after batch,
    until ``stop`` is set (or ``max_seconds`` pass); returns the same counts as :func:`replicate`.

    Each poll waits up to ``poll_timeout`` seconds for a record and applies what has arrived (at most
    ``batch_size`` records) in one transaction with the offsets, so a change reaches the warehouse about
    one Debezium poll plus one warehouse transaction after its source commit. A table whose topic does
    not exist yet is picked up when Debezium creates it. A follow run holds the group's lock: a
    :func:`replicate` of the same ``group`` waits for it, so give a follower its own group."""
    return replicate(
        tables,
        group=group,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        delete_mode=delete_mode,
        schema_policy=schema_policy,
        batch_size=batch_size,
        max_seconds=max_seconds,
        source_conn_id=source_conn_id,
        target_conn_id=target_conn_id,
        kafka_conn_id=kafka_conn_id,
        who=who,
        snapshotted=snapshotted,
        follow=stop,
        poll_timeout=poll_timeout,
    )


class Follower(threading.Thread):
    """:func:`stream` in a background thread (a test, a benchmark, a service): ``start()``, then
    :meth:`stop` ends it cleanly and returns its summary, or raises what ended it. :meth:`check` raises
    while it runs if it has already died."""

    def __init__(self, tables: Sequence[str], *, group: str, **options: Any) -> None:
        super().__init__(daemon=True, name=f"follower-{group}")
        self.tables, self.group, self.options = list(tables), group, options
        self.halt = threading.Event()
        self.summary: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.summary = stream(self.tables, group=self.group, stop=self.halt, **self.options)
        except BaseException as exc:  # surfaced by check() and stop()
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the follower failed: {self.error!r}") from self.error
        if not self.is_alive():
            raise RuntimeError("the follower stopped unexpectedly")

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        self.halt.set()
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError(f"the follower did not stop within {timeout:.0f} s of being told")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def end_offsets(
    tables: Sequence[str], *, topic_prefix: str = "shop", kafka_conn_id: str = "kafka_default"
) -> dict[tuple[str, int], int]:
    """The current end offsets of ``tables``' Debezium topics: pass them as ``stop_at`` to several
    :func:`replicate` runs that must process exactly the same records while the source keeps changing."""
    return kc.end_offsets(kafka_bootstrap(kafka_conn_id), [f"{topic_prefix}.{t}" for t in tables])


def replicate_maxwell(
    tables: Sequence[str],
    *,
    group: str,
    model: str = "public.customers",
    topic_prefix: str = "maxwell",
    target_schema: str = "core",
    target_prefix: str = "mysql_",
    delete_mode: DeleteMode = "hard",
    model_conn_id: str = SHOP,
    target_conn_id: str = WAREHOUSE,
    **consume: Unpack[ConsumeOptions],
) -> dict[str, Any]:
    """Catch MariaDB tables (``database.table``) up from their Maxwell topics into the warehouse.
    ``consume``: as for :func:`replicate`.

    The target takes the columns, types and key of ``model``, a table of the Postgres ``shop`` with the
    same logical shape, so both CDC paths land in the same warehouse model."""
    one_of("delete_mode", delete_mode, DeleteMode)
    (model_route,) = routes_for(
        [model], topic_prefix="-", target_schema=target_schema, source_conn_id=model_conn_id
    )
    routes = [
        TableRoute(
            source=t,
            topic=f"{topic_prefix}.{t}",
            target=f"{target_schema}.{target_prefix}{t.split('.')[-1]}",
            key=model_route.key,
            types=model_route.types,
        )
        for t in tables
    ]
    return _run(
        routes,
        _maxwell,
        group=group,
        delete_mode=delete_mode,
        schema_policy="fail",
        target_conn_id=target_conn_id,
        **consume,
    )


def sort_batch(
    batch: Iterable[Any], by_topic: Mapping[str, TableRoute], parse: Parser, skipped: dict[str, int]
) -> tuple[dict[str, list[Change]], list[tuple[Any, str]]]:
    """Parse a batch of Kafka records into changes per topic, in the order given. Tombstones, heartbeats
    and transaction markers are counted in ``skipped``; malformed and key-less records come back as
    (record, reason) rejects for the dead-letter table; a TRUNCATE event raises :class:`TruncateArrived`."""
    rejects: list[tuple[Any, str]] = []
    per_topic: dict[str, list[Change]] = defaultdict(list)
    decoders: dict[str, coltypes.RowDecoder | None] = {}
    for msg in batch:
        route = by_topic[msg.topic()]
        try:
            event = parse(msg, route)
        except MalformedEvent as exc:
            rejects.append((msg, f"malformed: {exc}"))
            continue
        if isinstance(event, Skipped):
            skipped[event.kind] = skipped.get(event.kind, 0) + 1
            continue
        if route.topic not in decoders:
            decoders[route.topic] = coltypes.row_decoder(route.codecs) if route.codecs else None
        decode = decoders[route.topic]
        try:
            event = decoded(event, decode) if decode is not None else event
        except (ValueError, TypeError) as exc:
            rejects.append((msg, f"undecodable value: {exc}"))
            continue
        if event.op == "t":
            raise TruncateArrived(
                f"{route.source} was TRUNCATEd in the source: the event is at {msg.topic()}"
                f"[{msg.partition()}] offset {msg.offset()}. A merge does not guess what a TRUNCATE means for "
                f"{route.target}, so the run stops here (nothing of this batch is applied). Remedy: reload "
                f"{route.target} from a snapshot of the source (TRUNCATE it, then a Debezium incremental "
                f"snapshot), and move the group past the event: cdclab offsets reset --group <group> "
                f"--topic {msg.topic()} --to {msg.offset() + 1}"
            )
        missing = [k for k in route.key if event.key.get(k) is None]
        if missing:
            rejects.append((msg, f"NULL key column(s) {missing}"))
            continue
        per_topic[msg.topic()].append(event)
    return per_topic, rejects


def debezium_parser(msg: Any, route: TableRoute) -> Change | Skipped:
    """The :data:`Parser` for Debezium topics."""
    return parse_debezium(msg.key(), msg.value(), msg.topic())


def _run(
    routes: Sequence[TableRoute],
    parse: Parser,
    *,
    group: str,
    delete_mode: DeleteMode,
    schema_policy: SchemaPolicy,
    target_conn_id: str,
    lean_path: bool | None = None,
    **consume: Unpack[ConsumeOptions],
) -> dict[str, Any]:
    """The run behind :func:`replicate` and :func:`replicate_maxwell`. ``lean_path``: take
    :mod:`cdclab.cdc.lean` for plain batches of Debezium topics (default: on, unless the environment
    sets ``CDCLAB_CDC_LEAN=0``); the summary's ``paths`` counts the topic batches applied by each path."""
    one_of("delete_mode", delete_mode, DeleteMode)  # before anything is read or written
    one_of("schema_policy", schema_policy, SchemaPolicy)
    by_topic = {r.topic: r for r in routes}
    with transaction(target_conn_id) as cur:
        for r in routes:
            coltypes.require_target_types(cur, r.target, r.types)
            ensure_target(cur, r.target, list(r.types.items()), r.key)
        # DDL the source ran since the last run: `fail` stops here, `evolve` alters the target
        renames = {r.topic: ddl.reconcile(cur, r, schema_policy) for r in routes if r.attnums}
    totals: dict[str, MergeResult] = defaultdict(MergeResult)
    skipped: dict[str, int] = defaultdict(int)
    paths: dict[str, int] = defaultdict(int)  # topic batches applied by each path (lean.py)
    if lean_path is None:
        lean_path = os.environ.get("CDCLAB_CDC_LEAN", "1") not in ("0", "off", "false")
    # the lean path (cdclab.cdc.lean) for Debezium topics without a pending column rename
    lean_ok = lean_path and parse is debezium_parser
    lean_routes = {t: r for t, r in by_topic.items() if not renames.get(t)}
    facts: dict[str, tuple[dict[str, str], bool]] = {}  # the lean path's catalog cache (lean.apply)

    def prepare(batch: list[Any]) -> lean.LeanBatch | tuple[dict[str, list[Change]], list[tuple[Any, str]]]:
        if lean_ok:
            taken = lean.prepare(batch, lean_routes, skipped)
            if taken is not None:
                return taken
        return sort_batch(batch, by_topic, parse, skipped)

    def handle(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        # decoded already (kc.PreparedBatch) while the batch before was applied, or here (a retry)
        prepared = getattr(batch, "prepared", None)
        if prepared is None:
            prepared = prepare(batch)
        if isinstance(prepared, lean.LeanBatch):
            rejects: list[tuple[Any, str]] = []
            for topic, taken in prepared.topics.items():
                route = by_topic[topic]
                done = lean.apply(cur, route.target, route.key, taken, delete_mode, facts)
                if done is None:  # the Python path decides (drift, a partial image, a value JSON cannot hold)
                    own = [m for m in batch if m.topic() == topic]
                    per_topic, own_rejects = sort_batch(own, by_topic, parse, defaultdict(int))  # counted
                    python_path(cur, per_topic)
                    rejects += own_rejects
                else:
                    paths["lean"] += 1
                    totals[route.target] += done
            return rejects
        per_topic, rejects = prepared
        python_path(cur, per_topic)
        return rejects

    def python_path(cur: Any, per_topic: dict[str, list[Change]]) -> None:
        for topic, changes in per_topic.items():
            paths["python"] += 1
            route = by_topic[topic]
            facts.pop(route.target, None)  # it may alter the target or write its ledger
            if renames.get(topic):
                changes = [ddl.rename_columns(c, renames[topic]) for c in changes]
            totals[route.target] += apply_changes(
                cur,
                route.target,
                route.key,
                changes,
                delete_mode=delete_mode,
                schema_policy=schema_policy,
                source_types=route.types,
            )

    result = consume_routes(
        routes, handle, group=group, target_conn_id=target_conn_id, prepare=prepare, **consume
    )
    summary = result.summary(
        skipped,
        targets={t: vars(m) for t, m in totals.items()},
        positions={f"{t}[{p}]": o for (t, p), o in result.positions.items()},
        paths=dict(paths),
    )
    log.info("replicated %s", summary)
    return summary
