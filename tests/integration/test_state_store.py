"""cdclab.state.watermarks's external table against the real warehouse: CAS, history, reset, validation."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from cdclab.state import watermarks as state

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def store(lab, warehouse_db):
    state.ensure_schema(warehouse_db)
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    yield state.TableWatermarkStore(conn)
    conn.rollback()
    conn.close()


def test_ensure_schema_is_idempotent(warehouse_db) -> None:
    state.ensure_schema(warehouse_db)
    state.ensure_schema(warehouse_db)


def test_advance_writes_value_type_and_history(store, names) -> None:
    key = names("wm")
    store.advance(key, None, T0, value_type="timestamptz", dag_id="d", run_id="r1")
    store.advance(key, T0, T0 + timedelta(hours=1), value_type="timestamptz", dag_id="d", run_id="r2")
    store.conn.commit()
    wm = store.get(key)
    assert (wm.value, wm.value_type, wm.updated_by_run_id) == (T0 + timedelta(hours=1), "timestamptz", "r2")
    history = [(h.old_value, h.new_value, h.run_id, h.reason) for h in store.history(key)]
    assert history == [(None, T0, "r1", "init"), (T0, T0 + timedelta(hours=1), "r2", "advance")]


def test_advance_from_a_stale_value_raises_a_conflict(store, names) -> None:
    key = names("wm")
    store.advance(key, None, 10, value_type="bigint")
    store.advance(key, 10, 20, value_type="bigint")
    store.conn.commit()
    with pytest.raises(state.WatermarkConflictError, match="another run moved it"):
        store.advance(key, 10, 30, value_type="bigint")
    store.conn.rollback()
    with pytest.raises(state.WatermarkConflictError):
        store.advance(key, None, 5, value_type="bigint")  # a second "first run"
    store.conn.rollback()
    assert store.get_value(key) == 20


def test_two_concurrent_runs_cannot_both_advance(lab, store, names) -> None:
    key = names("wm")
    store.advance(key, None, 100, value_type="bigint")
    store.conn.commit()
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def run(new: int) -> None:
        conn = psycopg2.connect(lab.pg_dsn("warehouse"))
        try:
            mine = state.TableWatermarkStore(conn)
            barrier.wait()
            try:
                mine.advance(key, 100, new, value_type="bigint", run_id=f"run-{new}")
                conn.commit()
                outcomes.append("advanced")
            except state.WatermarkConflictError:
                conn.rollback()
                outcomes.append("conflict")
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in (200, 300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["advanced", "conflict"]
    store.conn.rollback()
    assert store.get_value(key) in {200, 300}
    assert len(store.history(key)) == 2  # init + exactly one advance


def test_advance_refuses_to_move_backwards_but_reset_may(store, names) -> None:
    key = names("wm")
    store.advance(key, None, T0, value_type="timestamptz")
    with pytest.raises(state.WatermarkRegressionError, match="reset"):
        store.advance(key, T0, T0 - timedelta(days=1), value_type="timestamptz")
    store.reset(key, T0 - timedelta(days=1), "reprocess January", run_id="ops")
    store.conn.commit()
    assert store.get_value(key) == T0 - timedelta(days=1)
    last = store.history(key)[-1]
    assert (last.old_value, last.new_value, last.reason, last.run_id) == (
        T0,
        T0 - timedelta(days=1),
        "reset: reprocess January",
        "ops",
    )


def test_reset_needs_a_reason_and_an_existing_key_or_a_type(store, names) -> None:
    with pytest.raises(ValueError, match="reason"):
        store.reset(names("wm"), 1, " ")
    with pytest.raises(state.WatermarkNotFoundError):
        store.reset(names("wm"), 1, "why not")


def test_a_wrong_type_or_future_value_is_refused_and_nothing_is_stored(store, names) -> None:
    key = names("wm")
    store.advance(key, None, T0, value_type="timestamptz")
    store.conn.commit()
    with pytest.raises(state.WatermarkTypeError):
        store.advance(key, T0, "2026-02-01", value_type="timestamptz")
    with pytest.raises(state.WatermarkInFutureError):
        store.advance(key, T0, datetime.now(UTC) + timedelta(days=1), value_type="timestamptz")
    with pytest.raises(state.WatermarkTypeError, match="holds a timestamptz"):
        store.advance(key, 5, 6, value_type="bigint")
    store.conn.rollback()
    assert store.get_value(key) == T0
    assert len(store.history(key)) == 1


def test_a_corrupted_stored_value_is_reported_on_read(store, names) -> None:
    key = names("wm")
    with store.conn.cursor() as cur:
        cur.execute(
            "INSERT INTO state.watermarks (key, value, value_type) VALUES (%s, 'soon', 'timestamptz')", (key,)
        )
    with pytest.raises(state.WatermarkTypeError, match="not a valid timestamptz"):
        store.get(key)
