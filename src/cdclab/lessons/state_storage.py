"""71.1.5 Incremental state storage: the same timestamp load of one ``shop`` table four times, each copy
keeping its watermark in another store, for ``dags/71_01_05_state_storage.py``.

Vocabulary:
- *store*: where a copy keeps its watermark, one of :data:`STORES` — an Airflow Variable
  (:class:`cdclab.state.watermarks.VariableWatermarkStore`), the run's XCom, ``state.watermarks``
  (:class:`cdclab.state.watermarks.TableWatermarkStore`) or the asset state store
  (:class:`cdclab.state.watermarks.AssetStateWatermarkStore`).
- *target*: each store's copy of the source, ``<target_prefix>_<store>`` (:func:`target_of`).
- *load result*: ``{"read": rows read, "found": whether a previous watermark was there}``, what each
  load task returns.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any, Final

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import detection as delta
from cdclab.merge import upsert
from cdclab.state import watermarks as state

KEY_COLUMNS = ["id"]
STORES = ("variable", "xcom", "table", "asset")
VALUE_TYPE: Final = "timestamptz"


def target_of(target_prefix: str, store: str) -> str:
    """The copy that ``store`` loads: ``core.customers_71_01_05`` + ``table`` -> ``..._table``."""
    if store not in STORES:
        raise ValueError(f"store {store!r} is not one of {STORES}")
    return f"{target_prefix}_{store}"


def prepare(source: str, target_prefix: str) -> None:
    """The state schema and a mirror of ``source`` for every store's target."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        for store in STORES:
            upsert.ensure_mirror_table(shop, source, wh, target_of(target_prefix, store), KEY_COLUMNS)


def load(source: str, target: str, since: Any) -> tuple[int, Any]:
    """Read the delta of ``source`` since ``since`` (upper bound: now, held back to the oldest open
    transaction) and upsert it into ``target`` guarded by ``version``; returns (rows read, new
    watermark)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        _, result = delta.read_committed_delta(shop, source, key_columns=KEY_COLUMNS, since=since)
        shop.rollback()
        with wh:
            upsert.upsert_rows(wh, target, result.rows, KEY_COLUMNS, "version")
    return len(result.rows), delta.next_watermark(since, result)


def _load_with(store: Any, key: str, source: str, target: str) -> dict[str, Any]:
    """Load from the watermark ``key`` of a get/set store (no compare-and-set) and store the new one."""
    old = store.get(key, VALUE_TYPE)
    read, new = load(source, target, old)
    if new is not None:
        store.set(key, new, VALUE_TYPE)
    return {"read": read, "found": old is not None}


def variable_load(source: str, target_prefix: str, state_key: str) -> dict[str, Any]:
    """The Variable copy: watermark in the Airflow Variable ``<state_key>__watermark`` (last writer
    wins). Call inside a task."""
    store = state.VariableWatermarkStore(prefix=f"{state_key}__")
    return _load_with(store, "watermark", source, target_of(target_prefix, "variable"))


def asset_load(accessor: Any, source: str, target_prefix: str, state_key: str) -> dict[str, Any]:
    """The asset copy: watermark ``<state_key>/watermark`` in the asset state store ``accessor``
    (``context["asset_state_store"][asset]``)."""
    store = state.AssetStateWatermarkStore(accessor)
    return _load_with(store, f"{state_key}/watermark", source, target_of(target_prefix, "asset"))


def xcom_load(previous: Any, source: str, target_prefix: str) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The XCom copy: ``previous`` is what the task pulled (an ``xcom_payload`` of :mod:`cdclab.state.watermarks` or
    None). Returns the load result and the payload to push (None when there is no watermark)."""
    old = state.from_xcom_payload(previous, VALUE_TYPE)
    read, new = load(source, target_of(target_prefix, "xcom"), old)
    payload = None if new is None else state.xcom_payload(new, VALUE_TYPE)
    return {"read": read, "found": old is not None}, payload


def table_load(
    source: str, target_prefix: str, state_key: str, *, dag_id: str, run_id: str
) -> dict[str, Any]:
    """The table copy: watermark ``<state_key>/watermark`` in ``state.watermarks``, advanced by
    compare-and-set from the value the load started from (history in ``state.watermark_history``)."""
    key = f"{state_key}/watermark"
    with closing(connect(WAREHOUSE)) as wh:
        store = state.TableWatermarkStore(wh)
        old = store.read(key, VALUE_TYPE)
        wh.rollback()
        read, new = load(source, target_of(target_prefix, "table"), old)
        if new is not None and new != old:
            with wh:
                store.advance(key, old, new, value_type=VALUE_TYPE, dag_id=dag_id, run_id=run_id)
    return {"read": read, "found": old is not None}
