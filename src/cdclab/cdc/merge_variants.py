"""Apply the same change batches in different ways: ``MERGE`` from a staging table, and batch hooks.

This module sits next to :mod:`cdclab.cdc.merge` (the ``INSERT ... ON CONFLICT`` upsert) and adds
what the 71.3 lessons need on top of it, without changing it.

Vocabulary:
- *staging table*: ``<target>__stage``, an UNLOGGED table holding the latest change per key of one
  batch (source columns, ``_source_position``, ``_source_op``, ``_source_ts`` and ``_unavailable``,
  the TOASTed columns the change did not carry). It is truncated at the start of each batch and kept
  afterwards, so the last staged batch can be looked at.
- *MERGE variant* (:func:`merge_statement`): one Postgres 15 ``MERGE`` from the staging table into
  the target with the *strict* position guard of :mod:`cdclab.cdc.merge`
  (``target._source_position < staged._source_position``) and the same *delete ledger*
  (``<target>__deleted``): a staged insert older than a remembered delete is not inserted.
- *delete mode*: ``hard`` (the row goes, its key goes to the ledger) or ``soft`` (the row stays,
  ``_deleted = true``, ``_deleted_at`` = the delete's commit time).
- *unseen delete*: the delete of a key the target holds no row for (inserted and deleted within one
  batch, or before the target existed). In soft mode it must still leave a flagged row
  (:func:`flag_unseen_deletes`); ``apply_changes(delete_mode="soft")`` alone leaves nothing.
- *source soft delete*: a source row whose ``is_deleted`` flag an UPDATE set; in the warehouse it is
  flagged like a hard delete (:func:`flag_source_soft_deletes`), and un-flagged when the source
  clears it (the upsert writes ``_deleted = false``).
- *archive*: ``<target>__archive``; :func:`archive_deleted` moves rows flagged deleted before a cutoff
  there in one statement, and remembers their keys in the delete ledger so a replayed older change
  cannot bring them back, while a *newer* re-insert still can (*recovery*).
- *batch hook* (:data:`ApplyBatch`): what :func:`replicate_with` calls for each table's changes of a
  batch, inside the transaction that also stores the Kafka offsets (exactly-once effect).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Unpack

import pendulum
from psycopg2 import sql
from psycopg2.extras import execute_values

from cdclab.cdc.consumer import ConsumeResult
from cdclab.cdc.events import UNAVAILABLE, Change, latest_per_key
from cdclab.cdc.merge import (
    BOOKKEEPING,
    DeleteMode,
    MergeResult,
    SchemaDrift,
    ensure_target,
    flag_unseen_deletes,
    keys_match,
    source_columns,
)
from cdclab.cdc.pipeline import (
    ConsumeOptions,
    TableRoute,
    consume_routes,
    debezium_parser,
    keys_per_target,
    routes_for,
    sort_batch,
)
from cdclab.common.db import SHOP, WAREHOUSE, ident, transaction
from cdclab.common.options import one_of

log = logging.getLogger(__name__)

Delivery = Literal["log", "reversed"]
ApplyBatch = Callable[[Any, TableRoute, list[Change]], dict[str, int]]
"""(cursor, route, changes of one table in this batch) -> counts; runs inside the offsets' transaction."""


class TruncateArrived(RuntimeError):
    """A TRUNCATE change arrived; the merge will not guess what to do with the target."""


def _cols(names: Sequence[str], alias: str | None = None) -> sql.Composable:
    if alias is None:
        return sql.SQL(", ").join(map(sql.Identifier, names))
    return sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(n)) for n in names
    )


def _ts(ts_ms: int | None) -> dt.datetime | None:
    return None if ts_ms is None else dt.datetime.fromtimestamp(ts_ms / 1000, tz=dt.UTC)


# --------------------------------------------------------------------------- MERGE from a staging table

STAGE_EXTRA = ("_source_position", "_source_op", "_source_ts", "_unavailable")


def stage_name(target: str) -> str:
    return target + "__stage"


def ensure_stage(cur: Any, target: str) -> list[str]:
    """Create ``<target>__stage`` from the target's source columns; return those columns."""
    types = [(n, t) for n, t in source_columns(cur, target) if n not in BOOKKEEPING]
    cols = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in types]
    cols += [
        sql.SQL("_source_position bigint NOT NULL"),
        sql.SQL("_source_op char(1) NOT NULL"),
        sql.SQL("_source_ts timestamptz"),
        sql.SQL("_unavailable text[] NOT NULL DEFAULT '{}'"),
    ]
    cur.execute(
        sql.SQL("CREATE UNLOGGED TABLE IF NOT EXISTS {} ({})").format(
            ident(stage_name(target)), sql.SQL(", ").join(cols)
        )
    )
    return [n for n, _ in types]


def merge_statement(
    target: str, staging: str, key: Sequence[str], columns: Sequence[str], delete_mode: DeleteMode = "hard"
) -> sql.Composed:
    """``MERGE`` the staged latest change per key into ``target``.

    Like :func:`cdclab.cdc.merge.apply_changes`: the position guard is strict (a replayed
    change is a no-op, not a rewrite), a staged insert/update older than the key's entry in the delete
    ledger is not inserted (no resurrection), TOASTed columns the change did not carry keep the target's
    value, ``_source_ts`` is written, and ``soft`` deletes flag the row (an unseen delete inserts the
    before image, flagged).
    """
    one_of("delete_mode", delete_mode, DeleteMode)
    non_key = [c for c in columns if c not in key]
    ledger = ident(target + "__deleted")

    def keep_toast(c: str) -> sql.Composable:
        return sql.SQL("{c} = CASE WHEN {name} = ANY(s._unavailable) THEN t.{c} ELSE s.{c} END").format(
            c=sql.Identifier(c), name=sql.Literal(c)
        )

    sets = sql.SQL(", ").join([keep_toast(c) for c in non_key])
    book = sql.SQL(
        "_source_position = s._source_position, _source_op = s._source_op, "
        "_source_ts = s._source_ts, _loaded_at = now()"
    )
    insert_cols = [*columns, "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]
    if delete_mode == "hard":
        on_delete = sql.SQL("WHEN MATCHED AND s._source_op = 'd' THEN DELETE ")
        unseen_delete = sql.SQL("")
    else:
        on_delete = sql.SQL(
            "WHEN MATCHED AND s._source_op = 'd' THEN UPDATE SET _deleted = true, "
            "_deleted_at = coalesce(s._source_ts, now()), {book} "
        ).format(book=book)
        unseen_delete = sql.SQL(
            "WHEN NOT MATCHED AND s._source_op = 'd' AND s._blocked_by IS NULL THEN INSERT ({cols}) "
            "VALUES ({vals}, true, coalesce(s._source_ts, now())) "
        ).format(
            cols=_cols(insert_cols),
            vals=_cols([*columns, "_source_position", "_source_op", "_source_ts"], "s"),
        )
    return sql.SQL(
        "MERGE INTO {t} AS t "
        "USING (SELECT st.*, d._source_position AS _blocked_by FROM {s} st "
        "       LEFT JOIN {ledger} d ON {ledger_match} AND d._source_position >= st._source_position) AS s "
        "ON {on} "
        "WHEN MATCHED AND t._source_position >= s._source_position THEN DO NOTHING "
        "{on_delete}"
        "WHEN MATCHED THEN UPDATE SET {sets}, {book}, _deleted = false, _deleted_at = NULL "
        "WHEN NOT MATCHED AND s._source_op <> 'd' AND s._blocked_by IS NULL THEN INSERT ({cols}) "
        "VALUES ({vals}, false, NULL) "
        "{unseen_delete}"
    ).format(
        t=ident(target),
        s=ident(staging),
        ledger=ledger,
        ledger_match=keys_match("d", "st", key),
        on=keys_match("t", "s", key),
        on_delete=on_delete,
        sets=sets,
        book=book,
        cols=_cols(insert_cols),
        vals=_cols([*columns, "_source_position", "_source_op", "_source_ts"], "s"),
        unseen_delete=unseen_delete,
    )


def merge_changes(
    cur: Any, target: str, key: Sequence[str], changes: Sequence[Change], delete_mode: DeleteMode = "hard"
) -> MergeResult:
    """Stage the latest change per key of ``changes`` with its position, then ``MERGE`` (one batch)."""
    one_of("delete_mode", delete_mode, DeleteMode)
    if any(c.op == "t" for c in changes):
        raise TruncateArrived(
            f"{target}: a TRUNCATE arrived; truncate the target deliberately and reset "
            "its offsets, the merge will not guess"
        )
    latest = latest_per_key([c for c in changes if c.op != "t"])
    result = MergeResult()
    if not latest:
        return result
    columns = ensure_stage(cur, target)
    drift = sorted({col for c in latest for col in c.row if col not in columns})
    if drift:
        raise SchemaDrift(
            f"{target}: changes carry column(s) {drift} that the target lacks; "
            "add them to the target (ALTER TABLE) or use the upsert variant with schema_policy='evolve'"
        )
    staging = stage_name(target)
    cur.execute(sql.SQL("TRUNCATE {}").format(ident(staging)))
    types = dict(source_columns(cur, staging))
    stage_cols = [*columns, *STAGE_EXTRA]
    rows = []
    for c in latest:
        image = c.row
        missing = sorted(c.unavailable | {k for k, v in image.items() if v == UNAVAILABLE})
        rows.append(
            tuple(None if col in missing else image.get(col) for col in columns)
            + (c.position, c.op, _ts(c.ts_ms), missing)
        )
    template = "(" + ", ".join(f"(%s)::{types[c]}" for c in stage_cols) + ")"
    execute_values(
        cur,
        sql.SQL("INSERT INTO {} ({}) VALUES %s").format(ident(staging), _cols(stage_cols)).as_string(cur),
        rows,
        template=template,
        page_size=len(rows),
    )
    cur.execute(merge_statement(target, staging, key, columns, delete_mode))
    written = cur.rowcount
    ledger = ident(target + "__deleted")
    # the ledger after the MERGE: newer upserts forget older deletes, hard deletes are remembered
    cur.execute(
        sql.SQL(
            "DELETE FROM {ledger} d USING {s} s WHERE {m} AND s._source_op <> 'd' "
            "AND d._source_position < s._source_position"
        ).format(ledger=ledger, s=ident(staging), m=keys_match("d", "s", key))
    )
    if delete_mode == "hard":
        cur.execute(
            sql.SQL(
                "INSERT INTO {ledger} ({k}, _source_position) SELECT {k}, _source_position FROM {s} "
                "WHERE _source_op = 'd' ON CONFLICT ({k}) DO UPDATE SET _source_position = "
                "greatest({ledger}._source_position, EXCLUDED._source_position), _deleted_at = now()"
            ).format(ledger=ledger, k=_cols(key), s=ident(staging))
        )
    deletes = sum(1 for c in latest if c.op == "d")
    return MergeResult(
        upserted=max(written - deletes, 0) if written else 0,
        deleted=min(deletes, written),
        stale=max(len(latest) - written, 0),
    )


# --------------------------------------------------------------------------- soft-delete hooks


def flag_source_soft_deletes(
    cur: Any,
    target: str,
    key: Sequence[str],
    changes: Sequence[Change],
    flag_column: str = "is_deleted",
    at_column: str = "deleted_at",
) -> int:
    """Flag target rows whose source row carries ``flag_column = true`` (a soft delete by UPDATE).

    ``_deleted_at`` is the source's ``at_column`` when set, else the change's commit time.
    """
    keys = {
        tuple(c.key.get(k) for k in key) for c in changes if c.op != "d" and (c.after or {}).get(flag_column)
    }
    if not keys:
        return 0
    types = dict(source_columns(cur, target))
    stmt = sql.SQL(
        "UPDATE {t} t SET _deleted = true, _deleted_at = coalesce(t.{at}, t._source_ts, now()) "
        "FROM (VALUES %s) AS v ({k}) WHERE {m} AND t.{flag} AND NOT t._deleted"
    ).format(
        t=ident(target),
        at=sql.Identifier(at_column),
        flag=sql.Identifier(flag_column),
        k=_cols(key),
        m=keys_match("t", "v", key),
    )
    template = "(" + ", ".join(f"(%s)::{types[k]}" for k in key) + ")"
    execute_values(cur, stmt.as_string(cur), sorted(keys), template=template, page_size=len(keys))
    return int(cur.rowcount)


def ensure_archive(cur: Any, target: str, key: Sequence[str]) -> str:
    """``<target>__archive``: the target's columns plus ``_archived_at``; one row per (key, position)."""
    archive = target + "__archive"
    cur.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {a} (LIKE {t}, _archived_at timestamptz NOT NULL DEFAULT now(), "
            "PRIMARY KEY ({k}, _source_position))"
        ).format(a=ident(archive), t=ident(target), k=_cols(key))
    )
    return archive


def archive_deleted(cur: Any, target: str, key: Sequence[str], cutoff: dt.datetime) -> int:
    """Move rows flagged deleted before ``cutoff`` into the archive, in one statement (one transaction).

    The moved keys go into the delete ledger at their position, so a replayed older change cannot
    resurrect them; a newer re-insert passes the ledger and brings the key back live.
    """
    if cutoff.tzinfo is None:
        raise ValueError("archive cutoff must be timezone-aware (pendulum/UTC), not naive")
    archive = ensure_archive(cur, target, key)
    columns = [n for n, _ in source_columns(cur, target)]
    ledger = ident(target + "__deleted")
    cur.execute(
        sql.SQL(
            "WITH moved AS (DELETE FROM {t} WHERE _deleted AND _deleted_at < %s RETURNING {cols}), "
            "archived AS (INSERT INTO {a} ({cols}) SELECT {cols} FROM moved ON CONFLICT DO NOTHING RETURNING 1), "
            "remembered AS (INSERT INTO {ledger} ({k}, _source_position) SELECT {k}, _source_position FROM moved "
            "  ON CONFLICT ({k}) DO UPDATE SET _source_position = "
            "  greatest({ledger}._source_position, EXCLUDED._source_position) RETURNING 1) "
            "SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM archived), (SELECT count(*) FROM remembered)"
        ).format(t=ident(target), cols=_cols(columns), a=ident(archive), ledger=ledger, k=_cols(key)),
        (cutoff,),
    )
    moved, archived, remembered = cur.fetchone()
    if not moved == archived == remembered:
        raise RuntimeError(
            f"{target}: archive moved {moved} rows but archived {archived} and remembered "
            f"{remembered}; the transaction is rolled back"
        )
    return int(moved)


# --------------------------------------------------------------------------- the stream driver


@dataclass
class StreamSummary(ConsumeResult):
    """A :func:`replicate_with` run: the consumer's counts, the records skipped by kind and the batch
    hook's counts per target."""

    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def as_dict(self) -> dict[str, Any]:
        """:meth:`ConsumeResult.summary`, the hook's counts last."""
        return self.summary(self.skipped, counts={t: dict(c) for t, c in self.counts.items()})


def replicate_with(
    tables: Sequence[str],
    apply: ApplyBatch,
    *,
    group: str,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "",
    prepare: Callable[[Any, TableRoute], None] | None = None,
    delivery: Delivery = "log",
    source_conn_id: str = SHOP,
    target_conn_id: str = WAREHOUSE,
    **consume: Unpack[ConsumeOptions],
) -> StreamSummary:
    """Like :func:`cdclab.cdc.pipeline.replicate`, with the per-table batch work given as ``apply``.

    ``prepare(cur, route)`` runs once per table before consuming (create targets). Tombstones,
    heartbeats and transaction markers are counted in ``skipped``; malformed records and NULL keys are
    dead-lettered with the reason. ``delivery="reversed"`` hands each batch to ``apply`` in reverse
    arrival order (a demonstration that arrival order does not decide the result; positions do).
    ``consume``: how to consume, as for :func:`cdclab.cdc.pipeline.replicate`; e.g. ``stop_at``: end
    offsets to stop at (:func:`cdclab.cdc.pipeline.end_offsets`), so that several variants process
    exactly the same records while the source keeps changing.
    """
    routes = routes_for(
        tables,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        source_conn_id=source_conn_id,
    )
    by_topic = {r.topic: r for r in routes}
    if prepare is not None:
        with transaction(target_conn_id) as cur:
            for r in routes:
                prepare(cur, r)
    summary = StreamSummary()

    def handle(cur: Any, batch: list[Any]) -> list[tuple[Any, str]]:
        ordered = reversed(batch) if delivery == "reversed" else batch
        per_topic, rejects = sort_batch(ordered, by_topic, debezium_parser, summary.skipped)
        for topic, changes in per_topic.items():
            route = by_topic[topic]
            for name, n in apply(cur, route, changes).items():
                summary.counts[route.target][name] += n
        return rejects

    t0 = time.monotonic()
    result = consume_routes(routes, handle, group=group, target_conn_id=target_conn_id, **consume)
    summary.records, summary.batches, summary.dead_letters = (
        result.records,
        result.batches,
        result.dead_letters,
    )
    summary.seconds = time.monotonic() - t0
    log.info("replicated %s", summary.as_dict())
    return summary


# --------------------------------------------------------------------------- both variants side by side

Variant = Literal["merge", "upsert"]
VARIANTS: tuple[Variant, ...] = ("merge", "upsert")


class VariantsDiverged(AssertionError):
    """Two variants applied the same batches and ended with different rows: one of them is wrong."""


def variant_target(target: str, variant: str) -> str:
    return f"{target}__{variant}"


def variants_group(group: str, variants: Sequence[str]) -> str:
    """One consumer group per *set* of variants: every selected target gets every batch. Choosing
    another set starts a new group from the beginning of the topic, which the position guard makes
    harmless for targets that already hold the changes."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        raise ValueError(f"unknown variant(s) {unknown or variants}; choose from {list(VARIANTS)}")
    return f"{group}.{'+'.join(sorted(set(variants)))}"


def apply_variants(variants: Sequence[str], delete_mode: DeleteMode = "hard") -> ApplyBatch:
    """A batch hook applying each batch to ``<target>__merge`` (MERGE) and/or ``<target>__upsert``
    (``INSERT ... ON CONFLICT``, :func:`cdclab.cdc.merge.apply_changes`) in the same transaction."""
    from cdclab.cdc.merge import apply_changes

    one_of("delete_mode", delete_mode, DeleteMode)
    chosen = [v for v in VARIANTS if v in variants]

    def apply(cur: Any, route: TableRoute, changes: list[Change]) -> dict[str, int]:
        out: dict[str, int] = {}
        for variant in chosen:
            target = variant_target(route.target, variant)
            t0 = time.perf_counter()
            if variant == "merge":
                r = merge_changes(cur, target, route.key, changes, delete_mode=delete_mode)
            else:
                r = apply_changes(cur, target, route.key, changes, delete_mode=delete_mode)
            out[f"{variant}_us"] = int((time.perf_counter() - t0) * 1e6)
            out[f"{variant}_upserted"], out[f"{variant}_deleted"], out[f"{variant}_stale"] = (
                r.upserted,
                r.deleted,
                r.stale,
            )
        return out

    return apply


def differing_keys(cur: Any, a: str, b: str, key: Sequence[str]) -> list[tuple[Any, ...]]:
    """Keys whose rows differ between tables ``a`` and ``b`` (all columns but ``_loaded_at``)."""
    cols = [n for n, _ in source_columns(cur, a) if n != "_loaded_at"]
    stmt = sql.SQL(
        "SELECT DISTINCT {k} FROM ((SELECT {c} FROM {a} EXCEPT SELECT {c} FROM {b}) "
        "UNION ALL (SELECT {c} FROM {b} EXCEPT SELECT {c} FROM {a})) AS diff ORDER BY {k}"
    ).format(k=_cols(key), c=_cols(cols), a=ident(a), b=ident(b))
    cur.execute(stmt)
    return [tuple(r) for r in cur.fetchall()]


def apply_soft_deletes(flag_column: str = "is_deleted", at_column: str = "deleted_at") -> ApplyBatch:
    """A batch hook: every delete becomes a soft delete in the warehouse.

    ``apply_changes(..., delete_mode="soft")`` flags rows the target holds, :func:`flag_unseen_deletes`
    adds flagged rows for deletes of keys it does not hold, and :func:`flag_source_soft_deletes` flags
    rows the source soft-deleted by UPDATE (when the table has ``flag_column`` and ``at_column``). A row
    un-deleted or re-inserted in the source by a newer change comes back live (``_deleted = false``).
    """
    from cdclab.cdc.merge import apply_changes

    def apply(cur: Any, route: TableRoute, changes: list[Change]) -> dict[str, int]:
        r = apply_changes(
            cur, route.target, route.key, changes, delete_mode="soft"
        )  # flags unseen deletes too
        unseen = flag_unseen_deletes(
            cur, route.target, route.key, changes
        )  # 0 unless apply_changes missed one
        flagged = 0
        if flag_column in route.types and at_column in route.types:
            flagged = flag_source_soft_deletes(cur, route.target, route.key, changes, flag_column, at_column)
        return {
            "upserted": r.upserted,
            "hard_deletes_flagged": r.deleted + unseen,
            "unseen_deletes": unseen,
            "source_soft_deletes": flagged,
            "stale": r.stale,
        }

    return apply


# --------------------------------------------------------------------------- the 71.3 DAGs' steps


def replicate_variants(
    tables: Sequence[str],
    variants: Sequence[str],
    *,
    consumer_group: str,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "",
    delivery: Delivery = "log",
    **consume: Unpack[ConsumeOptions],
) -> StreamSummary:
    """Create ``<target>__<variant>`` for each table and variant, then apply every batch to each chosen
    variant in the batch's transaction (:func:`apply_variants`), consuming as the group
    :func:`variants_group` names for the variant set (``consume``: as for :func:`replicate_with`)."""

    def prepare(cur: Any, route: TableRoute) -> None:
        for variant in variants:
            ensure_target(cur, variant_target(route.target, variant), list(route.types.items()), route.key)

    return replicate_with(
        tables,
        apply_variants(variants),
        prepare=prepare,
        group=variants_group(consumer_group, variants),
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        delivery=delivery,
        **consume,
    )


def compare_variants(
    tables: Sequence[str],
    variants: Sequence[str],
    *,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "",
) -> int:
    """Both variants saw the same batches in the same transactions: their targets must hold the same rows.
    Compares ``<target>__merge`` with ``<target>__upsert`` for every table in one transaction and raises
    :class:`VariantsDiverged` naming up to 20 differing keys per table. Returns how many tables it
    compared: 0 (and no database read) when fewer than two variants ran."""
    if len(variants) < 2:
        return 0
    routes = routes_for(
        tables, topic_prefix=topic_prefix, target_schema=target_schema, target_prefix=target_prefix
    )
    diverged = keys_per_target(
        routes,
        lambda cur, r: differing_keys(
            cur, variant_target(r.target, "merge"), variant_target(r.target, "upsert"), r.key
        ),
    )
    if diverged:
        raise VariantsDiverged(f"MERGE and upsert targets differ for keys {diverged}")
    return len(routes)


def replicate_soft_deletes(
    tables: Sequence[str],
    *,
    flag_column: str = "is_deleted",
    at_column: str = "deleted_at",
    consumer_group: str,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "soft_",
    **consume: Unpack[ConsumeOptions],
) -> StreamSummary:
    """Create each table's target, then apply every batch with all deletes as soft deletes
    (:func:`apply_soft_deletes`) in the transaction that also stores the Kafka offsets (``consume``: as
    for :func:`replicate_with`)."""

    def prepare(cur: Any, route: TableRoute) -> None:
        ensure_target(cur, route.target, list(route.types.items()), route.key)

    return replicate_with(
        tables,
        apply_soft_deletes(flag_column, at_column),
        prepare=prepare,
        group=consumer_group,
        topic_prefix=topic_prefix,
        target_schema=target_schema,
        target_prefix=target_prefix,
        **consume,
    )


def archive_cutoff(interval_end: dt.datetime, archive_after_days: int) -> dt.datetime:
    """Rows deleted before this instant are archived: ``archive_after_days`` days before the end of the
    run's data interval (scheduler time, never the wall clock)."""
    return interval_end - pendulum.duration(days=archive_after_days)


def archive_deleted_tables(
    tables: Sequence[str],
    cutoff: dt.datetime,
    *,
    topic_prefix: str = "shop",
    target_schema: str = "core",
    target_prefix: str = "soft_",
) -> dict[str, int]:
    """:func:`archive_deleted` for every table's target, all in one transaction: a row is either in its
    target or in its archive, never both or neither. Returns the rows moved per target."""
    routes = routes_for(
        tables, topic_prefix=topic_prefix, target_schema=target_schema, target_prefix=target_prefix
    )
    moved: dict[str, int] = {}
    with transaction(WAREHOUSE) as cur:
        for r in routes:
            moved[r.target] = archive_deleted(cur, r.target, r.key, cutoff)
    return moved
