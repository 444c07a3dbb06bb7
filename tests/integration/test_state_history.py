"""The watermark history stays readable after a delete and after a reset that changed the value's type."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg2

from cdclab.state import watermarks as state

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_history_reads_deleted_and_retyped_values(lab, warehouse_db, names) -> None:
    state.ensure_schema(warehouse_db)
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    store = state.TableWatermarkStore(conn)
    key = names("wm")
    try:
        store.advance(key, None, T0, value_type="timestamptz", dag_id="d", run_id="r1")
        store.reset(
            key, 42, value_type="bigint", reason="switch to a version cursor", dag_id="d", run_id="r2"
        )
        store.delete(key, "pipeline retired", dag_id="d", run_id="r3")
        conn.commit()
        history = [(h.old_value, h.new_value) for h in store.history(key)]
    finally:
        conn.close()
    assert history[0] == (None, T0)
    assert history[1] == (
        "2026-01-01T00:00:00.000000+00:00",
        42,
    )  # the old timestamp, under the new type: its text
    assert history[2][1] is None  # the delete
