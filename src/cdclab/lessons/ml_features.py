"""71.5.4 Incremental ML features: customer order features updated from the changed orders only,
versioned in an offline and an online store, and a point-in-time training set, for
``dags/71_05_04_ml_features.py``. The pattern and its vocabulary live in :mod:`cdclab.lessons.features`; these
are the DAG's steps, each opening and closing its own connections.

Vocabulary:
- *as of*: the end of the run's data interval, the instant the feature vectors are computed at.
- *label time*: the instant the training set joins its labels with the vectors valid then
  (:func:`label_time`: the ``training_as_of`` param, or the end of the data interval when it is empty).
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime
from typing import Any

import pendulum

from cdclab.common.db import SHOP, WAREHOUSE, connect
from cdclab.delta import pull
from cdclab.lessons import features
from cdclab.state import watermarks as state


def watermark_key(watermark_key_param: str, orders_table: str) -> str:
    """The orders watermark: the ``watermark_key`` param, else ``71_05_04/<orders_table>``."""
    return watermark_key_param or f"71_05_04/{orders_table}"


def label_time(training_as_of: str, default: datetime) -> datetime:
    """The training set's label time: ``training_as_of`` parsed (ISO 8601) when given, else ``default``."""
    if not training_as_of:
        return default
    parsed = pendulum.parse(training_as_of)
    if not isinstance(parsed, datetime):
        raise ValueError(f"training_as_of={training_as_of!r} is not a timestamp; give an ISO timestamp")
    return parsed


def prepare(target_prefix: str) -> None:
    """The state schema and the feature tables (idempotent)."""
    with closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        features.ensure(wh, features.Tables(target_prefix))


def update_features(
    orders_table: str,
    target_prefix: str,
    key: str,
    *,
    version: str,
    as_of: datetime,
    dag_id: str,
    run_id: str,
) -> tuple[int, dict[str, Any]]:
    """Pull the orders changed since the watermark ``key``, update the affected customers' vectors of
    ``version`` at ``as_of`` (:func:`cdclab.lessons.features.update_features`) and advance the watermark, in one
    warehouse transaction. Returns (orders pulled, the update's result)."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        changed = pull.pull(shop, wh, orders_table, key)
        with wh:  # mirror, features and watermark commit together
            result = features.update_features(
                wh, features.Tables(target_prefix), changed.rows, version=version, as_of=as_of, run_id=run_id
            )
            pull.advance(wh, changed, dag_id=dag_id, run_id=run_id)
    return len(changed.rows), result


def training_set(target_prefix: str, *, version: str, label_time: datetime) -> int:
    """Rebuild the training set of ``version`` at ``label_time`` (:func:`cdclab.lessons.features.
    build_training_set`); returns its rows."""
    with closing(connect(WAREHOUSE)) as wh, wh:
        return features.build_training_set(
            wh, features.Tables(target_prefix), version=version, label_time=label_time
        )
