"""The CDC sink's lean path: a plain batch of Debezium records turned into the merge's input without a
:class:`~cdclab.cdc.events.Change` per record.

:func:`cdclab.cdc.pipeline.replicate` spends most of its CPU in Python between ``orjson.loads`` and the
rows it sends to Postgres: a frozen ``Change`` per record, a decoded copy of it, the sort and a key tuple
per change in :func:`~cdclab.cdc.events.latest_per_key`, the drift check and the full/partial/delete
split per change. For the common case this module does each per-record step once:

- :func:`prepare` (the consumer's polling thread): per record ``orjson.loads`` of the value and the key,
  op / image / ``source.lsn`` / ``source.ts_ms``; tombstones counted as skipped; the table's codecs
  (:func:`cdclab.cdc.coltypes.codec`, the functions :func:`~cdclab.cdc.coltypes.row_decoder` calls)
  applied to the image in place; the last change per key kept in a dict (a later or equal position
  replaces: the tie rule of ``latest_per_key``, and the winners come out in its order);
- :func:`apply` (the apply thread): one catalog read (:func:`cdclab.cdc.merge._target_facts`), the
  winners' rows in the target's column order, encoded by :func:`cdclab.cdc.merge.json_rows` (what
  ``_json_source`` encodes) and applied by the same statements (``_upsert_staged``, ``_delete_staged``).
  A delete's row is its before image (its key equals the record's Kafka key, checked in ``prepare``).

So the SQL input and the end state are those of the Python path. Whatever the lean path is not sure of
goes to the Python path unchanged (:func:`cdclab.cdc.pipeline.sort_batch` and
:func:`cdclab.cdc.merge.apply_changes`), which then decides as it always has (dead letters,
:class:`~cdclab.cdc.pipeline.TruncateArrived`, schema drift, partial images):

- in :func:`prepare`, the whole batch, when any record of it is not plain: a value or key that is not a
  JSON object orjson reads (malformed, NaN tokens; the converter's schemas wrapper is unwrapped as
  :func:`cdclab.cdc.events.parse_debezium` does), an op outside c/r/u/d (a
  truncate), an image or ``source`` that is not an object, an ``lsn`` that is not an integer (an
  incremental-snapshot read), a Kafka key that is not exactly the image's key columns with the same
  values (a missing or NULL key column, a float or boolean key), a column set that differs from the
  batch's first record's, a source table that differs, Debezium's TOAST placeholder
  (:data:`~cdclab.cdc.events.UNAVAILABLE`) in an image, a value a codec refuses; and every batch of a
  topic with a pending column rename (:func:`cdclab.cdc.ddl.rename_columns`) or named like a heartbeat or
  transaction topic;
- in :func:`apply` (``None``, before anything is written), one topic's batch: when the images' columns
  are not exactly the target's (drift: ``schema_policy`` decides; or a partial image), when a winner
  holds a float or a list (``orjson`` may have rounded an integer past 64 bits, which the Python path
  reads again exactly), or when the rows cannot travel as JSON (a NUL, more than 64 MB: the Python path
  COPYs them).

It is on by default; ``CDCLAB_CDC_LEAN=0`` in the environment (or ``pipeline._run(lean_path=False)``)
turns it off, for comparisons (``bench/raw_probe.py``'s kinds ``python`` and ``lean``). A run's summary
counts the topic batches each path applied (``paths``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any

import orjson

from cdclab.cdc import coltypes, events, merge
from cdclab.cdc.events import UNAVAILABLE
from cdclab.cdc.merge import BOOKKEEPING, DeleteMode, MergeResult

_CRU = frozenset({"c", "r", "u"})
_KEY_TYPES = (int, str)


@dataclass
class LeanTopic:
    """One topic's part of a lean batch: the winners (the last change per key), each
    ``(image, position, op, ts_ms)`` in :func:`~cdclab.cdc.events.latest_per_key`'s order, and the
    images' column set."""

    columns: frozenset[str]
    winners: list[tuple[dict[str, Any], int, str, Any]]


@dataclass
class LeanBatch:
    """What :func:`prepare` makes of a batch: per topic (in the order of their first record) the topics
    that have changes; ``skipped`` the tombstones (already added to the run's counts)."""

    topics: dict[str, LeanTopic] = field(default_factory=dict)
    skipped: int = 0


class _NotPlain(Exception):
    """A record the lean path does not take: the batch goes to the Python path."""


_WRAPPED = b'{"schema":'
_PAYLOAD = b',"payload":'


def payload(raw: bytes) -> Any:
    """A key or value written by Kafka Connect's JSON converter, parsed, its schemas wrapper removed
    (as :func:`cdclab.cdc.events.parse_debezium` does), without parsing the wrapper's schema when it can.

    The converter writes ``{"schema":S,"payload":P}`` with no white space; S is most of the bytes (on the
    benchmark's records 3,193 of 3,856) and parsing it costs about two thirds of ``orjson.loads``. The
    first ``,"payload":`` in the bytes is a key of some object (inside a JSON string a quote is always
    escaped, so the sequence cannot occur there). If it is the top-level key, what follows up to the
    final ``}`` is exactly P. If it belongs to an object inside S, what follows is that key's value and
    then more of S and the real ``,"payload":P``, which is not one JSON value: orjson refuses it, and the
    bytes are parsed whole. Anything else (no wrapper, other spacing or key order) is parsed whole.
    Raises what ``orjson.loads`` raises for bytes that are not JSON."""
    if raw.startswith(_WRAPPED) and raw.endswith(b"}"):
        at = raw.find(_PAYLOAD)
        if at > 0:
            try:
                return orjson.loads(memoryview(raw)[at + len(_PAYLOAD) : -1])
            except orjson.JSONDecodeError:
                pass
    return events.unwrap(orjson.loads(raw))


def _plan(codecs: Mapping[str, str]) -> tuple[tuple[str, Any], ...]:
    return tuple((col, coltypes.codec(name)) for col, name in codecs.items() if name != "identity")


def prepare(batch: Sequence[Any], routes: Mapping[str, Any], skipped: dict[str, int]) -> LeanBatch | None:
    """The lean form of ``batch`` (Kafka records; ``routes``: topic ->
    :class:`~cdclab.cdc.pipeline.TableRoute` of the topics the lean path may take), or ``None`` when a
    record is not plain or its topic is not in ``routes`` (see the module's docstring). Tombstones are added to ``skipped`` only when the batch is taken."""
    per_topic: dict[str, list[Any]] = {}
    for msg in batch:
        topic = msg.topic()
        msgs = per_topic.get(topic)
        if msgs is None:
            msgs = per_topic[topic] = []
        msgs.append(msg)
    out = LeanBatch()
    try:
        for topic, msgs in per_topic.items():
            route = routes.get(topic)
            if route is None or topic.startswith("__debezium-heartbeat"):
                return None
            if topic.endswith((".heartbeat", ".transaction")):
                return None
            lean, tombstones = _topic(msgs, route)
            out.skipped += tombstones
            if lean is not None:
                out.topics[topic] = lean
    except (_NotPlain, ValueError, TypeError):
        return None
    if out.skipped:
        skipped["tombstone"] = skipped.get("tombstone", 0) + out.skipped
    return out


def _topic(msgs: list[Any], route: Any) -> tuple[LeanTopic | None, int]:
    """One topic's records: (its winners, or ``None`` when it has only tombstones; the tombstones).
    Raises :class:`_NotPlain` (or the error of a codec) for a record that is not plain."""
    unwrap = payload
    plan = _plan(route.codecs)
    bytea = any(name == "bytea" for name in route.codecs.values())
    key_cols = tuple(route.key)
    single = len(key_cols) == 1
    k0 = key_cols[0]
    n_key = len(key_cols)
    best: dict[Any, tuple[dict[str, Any], int, str, Any]] = {}
    keys: list[Any] = []
    positions: list[int] = []
    monotone = True
    last = -(2**63)
    columns: Any = None
    table: Any = None
    tombstones = 0
    for msg in msgs:
        value = msg.value()
        if not value:
            tombstones += 1
            continue
        doc = unwrap(value)  # the JSON converter with schemas.enable=true: its payload
        if doc is None:
            tombstones += 1
            continue
        if type(doc) is not dict or "payload" in doc:
            raise _NotPlain("not a plain envelope")
        op = doc.get("op")
        if op == "d":
            image = doc.get("before")
        elif op in _CRU:
            image = doc.get("after")
            before = doc.get("before")
            if before is not None:  # REPLICA IDENTITY FULL: decoded as the Python path does (it may refuse)
                if type(before) is not dict or UNAVAILABLE in before.values():
                    raise _NotPlain("before image")
                before = dict(before)
                for col, fn in plan:
                    v = before.get(col)
                    if v is not None:
                        before[col] = fn(v)
        else:
            raise _NotPlain(f"op {op!r}")
        source = doc.get("source")
        if type(image) is not dict or type(source) is not dict:
            raise _NotPlain("no image or source")
        lsn = source.get("lsn")
        if type(lsn) is not int:
            raise _NotPlain("lsn")
        if columns is None:
            columns = frozenset(image)
            table = (source.get("schema", "public"), source.get("table", ""))
        elif image.keys() != columns or (source.get("schema", "public"), source.get("table", "")) != table:
            raise _NotPlain("columns or table differ")
        if UNAVAILABLE in image.values():
            raise _NotPlain("TOAST placeholder")
        # the Kafka key: exactly the key columns, with the image's values (before decoding)
        key = unwrap(msg.key() or b"null")
        if type(key) is not dict or len(key) != n_key:
            raise _NotPlain("key")
        for col in key_cols:
            kv, iv = key.get(col), image.get(col)
            if iv is None or kv != iv or type(kv) is not type(iv) or type(iv) not in _KEY_TYPES:
                raise _NotPlain("key value")
        for col, fn in plan:
            v = image.get(col)
            if v is not None:
                image[col] = fn(v)
        if bytea and UNAVAILABLE in image.values():
            raise _NotPlain("TOAST placeholder")
        k = image[k0] if single else tuple(map(image.__getitem__, key_cols))
        keys.append(k)
        positions.append(lsn)
        if lsn < last:
            monotone = False
        last = lsn
        current = best.get(k)
        if current is None or lsn >= current[1]:
            best[k] = (image, lsn, op, source.get("ts_ms"))
    if not best:
        return None, tombstones
    if monotone:
        winners = list(best.values())
    else:  # latest_per_key's order: keys by their first change in position order (stable)
        order = sorted(range(len(keys)), key=positions.__getitem__)
        winners = [best[k] for k in dict.fromkeys(keys[i] for i in order)]
    return LeanTopic(columns, winners), tombstones


def rows(lean: LeanTopic, columns: Sequence[str]) -> tuple[list[list[Any]], list[list[Any]]] | None:
    """The winners as the rows :func:`cdclab.cdc.merge.json_rows` takes (``[*values of columns,
    position, op, ts_ms]``), upserts and deletes apart, each in the winners' order; ``None`` when the
    images' columns are not exactly ``columns`` or a winner holds a float or a list."""
    if lean.columns != frozenset(columns):
        return None
    # every image has exactly these keys (prepare checked each against the batch's first)
    values = itemgetter(*columns) if len(columns) > 1 else lambda image: (image[columns[0]],)
    upserts: list[list[Any]] = []
    deletes: list[list[Any]] = []
    for image, position, op, ts_ms in lean.winners:
        (deletes if op == "d" else upserts).append([*values(image), position, op, ts_ms])
    kinds = set(map(type, chain.from_iterable(chain(upserts, deletes))))  # in C
    if float in kinds or list in kinds:
        return None
    return upserts, deletes


def apply(
    cur: Any,
    target: str,
    key: Sequence[str],
    lean: LeanTopic,
    delete_mode: DeleteMode,
    facts: dict[str, tuple[dict[str, str], bool]] | None = None,
) -> MergeResult | None:
    """Apply one topic's lean batch to ``target`` (:func:`cdclab.cdc.merge.apply_changes`'s statements),
    or ``None``, having written nothing, when the Python path must decide (see the module's docstring).

    ``facts``, a run's cache (target -> its column types and whether its delete ledger is empty), saves
    the catalog read per batch: the run's consumer group holds the target (``bind_targets`` and the
    group lock), so only this run writes it, and only through the lean path (which keeps the cache
    right: a delete it writes to the ledger marks it not empty; an empty-ledger hint that is stale the
    safe way only costs a ``DELETE`` that finds nothing) or the Python path (which may change the table:
    the caller drops the target's entry). Columns added or dropped behind the run's back make the
    images differ from the cached columns, and the batch goes to the Python path."""
    cached = facts.get(target) if facts is not None else None
    if cached is None:
        cached = merge._target_facts(cur, target)
        if facts is not None:
            facts[target] = cached
    types, ledger_empty = cached
    columns = [n for n in types if n not in BOOKKEEPING]
    split = rows(lean, columns)
    if split is None:
        return None
    upserts, deletes = split
    upsert_src = merge.json_rows(key, columns, upserts) if upserts else None
    delete_src = merge.json_rows(key, columns, deletes) if deletes else None
    if (upserts and upsert_src is None) or (deletes and delete_src is None):
        return None
    result = MergeResult()
    if upsert_src is not None:
        result += merge._upsert_staged(
            cur, target, key, columns, types, upsert_src, len(upserts), ledger_empty
        )
    if delete_src is not None:
        result += merge._delete_staged(cur, target, key, columns, types, delete_src, delete_mode)
        if facts is not None and delete_mode != "soft":
            facts[target] = (types, False)  # the ledger now holds (or held) this batch's deletes
    return result
