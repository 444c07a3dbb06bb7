"""Choosing an incremental strategy per source table from what the table *is* and what the business *needs*.

Vocabulary:
- *profile* (:class:`TableProfile`): the data characteristics and source capabilities read from the
  source catalog: row count (``pg_class.reltuples`` refreshed by ``ANALYZE``, else ``count(*)``), primary
  key, a cursor column (``updated_at``) and whether an index serves it, a globally monotonic version
  column (``change_seq``: a sequence default, unlike the per-row ``version``), hard deletes observed
  (``pg_stat_user_tables.n_tup_del``), replica identity and membership in the Debezium publication.
- *requirements* (:class:`Requirements`): business requirements (tables known to hard-delete rows,
  the staleness the consumers accept) and resource constraints (the largest table a full reload may
  copy every run, the schedule's period).
- *strategy*: one of :data:`STRATEGIES`: ``full`` (reload everything), ``timestamp`` (cursor column +
  watermark), ``version`` (monotonic version + watermark), ``hash`` (row hashes compared with the target:
  sees deletes, reads every row), ``log_cdc`` (Debezium from the WAL: sees every change and delete,
  needs a key or REPLICA IDENTITY FULL and the publication).
- *recommendation*: the strategy and every reason that led to it (rules fire in a fixed order, the first
  decisive rule wins; the reasons list also records the rules that were considered and rejected).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from psycopg2 import sql
from psycopg2.extras import Json

from cdclab.common.db import ident
from cdclab.common.ddl import require
from cdclab.delta import detection as delta
from cdclab.merge import upsert
from cdclab.state import watermarks as state

Strategy = Literal["full", "timestamp", "version", "hash", "log_cdc"]
STRATEGIES: tuple[str, ...] = ("full", "timestamp", "version", "hash", "log_cdc")
RECOMMENDATIONS = "state.strategy_recommendations"


class StrategyError(Exception):
    """Base class of this module's errors."""


class UnknownTableError(StrategyError, LookupError):
    """The table to profile does not exist in the source."""


class NotLoadableHereError(StrategyError):
    """The recommended strategy is run by another pipeline (log-based CDC runs on Kafka Connect)."""


@dataclass(frozen=True)
class TableProfile:
    table: str
    row_count: int
    primary_key: list[str]
    cursor_column: str | None
    cursor_indexed: bool
    version_column: str | None
    deletes_observed: int
    replica_identity: str  # default | full | nothing | index
    in_publication: bool


@dataclass(frozen=True)
class Requirements:
    hard_delete_tables: Sequence[str] = ()
    max_staleness_seconds: int = 3600
    schedule_seconds: int = 3600
    full_load_max_rows: int = 10_000


@dataclass
class Recommendation:
    table: str
    strategy: Strategy
    reasons: list[str] = field(default_factory=list)


_IDENTITY = {"d": "default", "f": "full", "n": "nothing", "i": "index"}


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    return schema or "public", name


def profile(
    conn: Any,
    table: str,
    *,
    publication: str = "cdclab_shop",
    cursor_columns: Sequence[str] = ("updated_at",),
    version_columns: Sequence[str] = ("change_seq",),
) -> TableProfile:
    """Read the table's characteristics from the source catalog (counts rows exactly when small)."""
    schema, name = _split(table)
    with conn.cursor() as cur:
        cur.execute(
            "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, name),
        )
        found = cur.fetchone()
        if found is None:
            raise UnknownTableError(
                f"{table} does not exist in the source; create it or fix the `tables` param"
            )
        oid, identity = found
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(f"{schema}.{name}")))
        row_count = int(cur.fetchone()[0])
        cur.execute(
            "SELECT a.attname FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n",
            (oid,),
        )
        pk = [r[0] for r in cur.fetchall()]
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (oid,),
        )
        columns = {n: (t, default) for n, t, default in cur.fetchall()}
        cursor = next((c for c in cursor_columns if c in columns and "timestamp" in columns[c][0]), None)
        cursor_indexed = False
        if cursor is not None:
            cur.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND a.attname = %s)",
                (oid, cursor),
            )
            cursor_indexed = bool(cur.fetchone()[0])
        version = next(
            (
                c
                for c in version_columns
                if c in columns
                and columns[c][0] in ("bigint", "integer")
                and "nextval" in (columns[c][1] or "")
            ),
            None,
        )
        cur.execute(
            "SELECT coalesce(s.n_tup_del, 0) + coalesce(x.n_tup_del, 0) FROM pg_class c "
            "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "LEFT JOIN pg_stat_xact_user_tables x ON x.relid = c.oid WHERE c.oid = %s",
            (oid,),
        )
        deletes = int(cur.fetchone()[0])
        cur.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = %s "
            "AND schemaname = %s AND tablename = %s)",
            (publication, schema, name),
        )
        in_pub = bool(cur.fetchone()[0])
    conn.rollback()
    return TableProfile(
        table=f"{schema}.{name}",
        row_count=row_count,
        primary_key=pk,
        cursor_column=cursor,
        cursor_indexed=cursor_indexed,
        version_column=version,
        deletes_observed=deletes,
        replica_identity=_IDENTITY.get(identity, identity),
        in_publication=in_pub,
    )


def cdc_capable(p: TableProfile) -> tuple[bool, str]:
    """Can Debezium stream every update and delete of this table with its key?"""
    if not p.in_publication:
        return False, "not in the Debezium publication"
    if p.replica_identity == "nothing":
        return False, "REPLICA IDENTITY NOTHING: updates and deletes carry no key in the WAL"
    if p.replica_identity == "default" and not p.primary_key:
        return False, "REPLICA IDENTITY DEFAULT without a primary key: deletes carry no key"
    return True, f"in the publication with replica identity {p.replica_identity}"


def recommend(p: TableProfile, req: Requirements) -> Recommendation:
    """Apply the selection rules in order; the first decisive rule wins."""
    r = Recommendation(p.table, "full")
    if not p.primary_key:
        r.reasons.append("no primary key: changes cannot be matched to target rows, reload the whole table")
        return r
    deletes = p.table in req.hard_delete_tables or p.deletes_observed > 0
    capable, why = cdc_capable(p)
    if deletes:
        source = "declared by the business" if p.table in req.hard_delete_tables else "observed"
        r.reasons.append(f"hard deletes {source} ({p.deletes_observed} seen): cursor polling would miss them")
        if capable:
            r.strategy = "log_cdc"
            r.reasons.append(f"log-based CDC sees deletes: {why}")
        elif p.row_count <= req.full_load_max_rows:
            r.strategy = "full"
            r.reasons.append(f"CDC impossible ({why}); {p.row_count} rows fit a full reload")
        else:
            r.strategy = "hash"
            r.reasons.append(
                f"CDC impossible ({why}); {p.row_count} rows > {req.full_load_max_rows}: "
                "compare row hashes with the target to find deletes"
            )
        return r
    r.reasons.append("no hard deletes")
    if req.max_staleness_seconds < req.schedule_seconds:
        if capable:
            r.strategy = "log_cdc"
            r.reasons.append(
                f"staleness {req.max_staleness_seconds}s < schedule {req.schedule_seconds}s: "
                f"only streaming is fresh enough; {why}"
            )
            return r
        r.reasons.append(f"staleness wants streaming but CDC is impossible ({why})")
    if p.row_count <= req.full_load_max_rows:
        r.reasons.append(
            f"{p.row_count} rows <= full_load_max_rows {req.full_load_max_rows}: a reload is cheap"
        )
        return r
    r.reasons.append(f"{p.row_count} rows > full_load_max_rows {req.full_load_max_rows}: load only changes")
    if p.version_column:
        r.strategy = "version"
        r.reasons.append(f"monotonic version column {p.version_column}: exact, no equal-timestamp ties")
    elif p.cursor_column and p.cursor_indexed:
        r.strategy = "timestamp"
        r.reasons.append(f"cursor column {p.cursor_column} with an index: range reads stay cheap")
    else:
        r.strategy = "hash"
        missing = "no cursor column" if not p.cursor_column else f"{p.cursor_column} has no index"
        r.reasons.append(f"{missing}: polling would scan the table anyway, so hash-compare every row")
    return r


def ensure_schema(conn: Any) -> None:
    """Check ``state.strategy_recommendations`` (declared by infra/postgres/warehouse/V001__state.sql)."""
    require(conn, "state.strategy_recommendations")
    conn.commit()  # as when it created them: callers may rely on it


def record(conn: Any, pipeline: str, run_id: str | None, p: TableProfile, r: Recommendation) -> None:
    """Append one recommendation (does not commit)."""
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO state.strategy_recommendations (pipeline, run_id, source_table, strategy, reasons, "
            "profile) VALUES (%s, %s, %s, %s, %s, %s)",
            (pipeline, run_id, p.table, r.strategy, Json(r.reasons), Json(asdict(p))),
        )


@dataclass
class LoadResult:
    strategy: str
    rows_read: int
    inserted: int
    updated: int
    deleted: int


def load(
    shop: Any,
    wh: Any,
    p: TableProfile,
    strategy: str,
    target: str,
    *,
    watermark_key: str,
    dag_id: str | None = None,
    run_id: str | None = None,
) -> LoadResult:
    """Run ``strategy`` for one table into ``target`` (a mirror with the source's key); one warehouse
    transaction for rows, deletes and watermark. ``log_cdc`` is Kafka Connect's job (71_03_02)."""
    if strategy == "log_cdc":
        raise NotLoadableHereError(
            f"{p.table}: log-based CDC runs continuously on Kafka Connect (topic shop.{p.table}); "
            "replicate it with 71_03_02_kafka_cdc or choose another table to load here"
        )
    started = time.monotonic()
    key = p.primary_key
    columns = upsert.ensure_mirror_table(shop, p.table, wh, target, key)
    store = state.TableWatermarkStore(wh)
    deleted = 0
    with wh:
        if strategy == "full":
            with shop.cursor() as cur:
                cur.execute(sql.SQL("SELECT * FROM {}").format(ident(p.table)))
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            with wh.cursor() as cur:
                cur.execute(sql.SQL("DELETE FROM {}").format(ident(target)))
                deleted = cur.rowcount
            res = upsert.upsert_rows(wh, target, rows, key)
        elif strategy in ("timestamp", "version"):
            vtype: state.ValueType = "timestamptz" if strategy == "timestamp" else "bigint"
            old = store.read(watermark_key, vtype)
            if strategy == "timestamp":
                assert p.cursor_column is not None
                _, result = delta.read_committed_delta(
                    shop, p.table, cursor_column=p.cursor_column, key_columns=key, since=old
                )
            else:
                assert p.version_column is not None
                result = delta.read_version_delta(
                    shop, p.table, version_column=p.version_column, key_columns=key, since=old
                )
            rows = result.rows
            res = upsert.upsert_rows(wh, target, rows, key)
            new = delta.next_watermark(old, result)
            if new is not None and new != old:
                store.advance(watermark_key, old, new, value_type=vtype, dag_id=dag_id, run_id=run_id)
        elif strategy == "hash":
            src = delta.table_hashes(shop, p.table, key_columns=key, columns=columns)
            tgt = delta.table_hashes(wh, target, key_columns=key, columns=columns)
            changes = delta.diff_hashes(tgt, src)
            rows = delta.fetch_rows_by_keys(shop, p.table, key, [*changes.inserted, *changes.updated])
            res = upsert.upsert_rows(wh, target, rows, key)
            deleted = upsert.delete_keys(wh, target, key, changes.deleted)
        else:
            raise StrategyError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
        rows_read = len(src) if strategy == "hash" else len(rows)
        state.record_run_metrics(
            wh,
            pipeline=f"71_10_01/{p.table}->{target}",
            strategy=strategy,
            rows_read=rows_read,
            rows_written=res.written + deleted,
            duration_ms=(time.monotonic() - started) * 1000,
            dag_id=dag_id,
            run_id=run_id,
        )
    shop.rollback()
    return LoadResult(strategy, rows_read, res.inserted, res.updated, deleted)
