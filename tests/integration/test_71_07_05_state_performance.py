"""71_07_05_state_performance: three state stores hold exactly what each run wrote; reads and writes are
counted per store; retention keeps the history of every key bounded while the current values stay; the
scaling curve shows, in counts (rows scanned, buffers), a keyed lookup staying flat while a full scan
grows with the number of keys. No timing is asserted."""

from __future__ import annotations

import pytest

from cdclab.ops import perf
from cdclab.state import watermarks as state
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import drop, hour, scalar

DAG_ID = "71_07_05_state_performance"
KEYS, KV_KEYS, KEEP = 3, 300, 2
SCALE = [1000, 10000, 50000]


@pytest.fixture
def setup(warehouse_db, names):
    exp, kv = names("exp"), f"state.{names('kv')}"
    prefix = names("var") + "__"
    conf = {
        "experiment": exp,
        "watermark_keys": KEYS,
        "variable_prefix": prefix,
        "kv_table": kv,
        "kv_keys": KV_KEYS,
        "keep_history": KEEP,
        "scale_sizes": SCALE,
    }
    yield conf
    from airflow.models.variable import Variable

    for i in range(KEYS):
        Variable.delete(f"{prefix}k{i}")
    drop(warehouse_db, kv, kv + "_history", kv + "_scale")
    with warehouse_db.cursor() as cur:
        cur.execute("DELETE FROM state.watermark_history WHERE key LIKE %s", (exp + "/%",))
        cur.execute("DELETE FROM state.watermarks WHERE key LIKE %s", (exp + "/%",))
        cur.execute("DELETE FROM state.perf_runs WHERE experiment = %s", (exp,))


def kv_value(end, i: int) -> int:  # what the DAG writes for kv key i in the run ending at ``end``
    return int(end.timestamp()) * 1000 + i


def test_every_store_holds_the_last_run_values_and_history_stays_bounded(warehouse_db, setup) -> None:
    from airflow.models.variable import Variable

    conf = setup
    exp, kv = conf["experiment"], conf["kv_table"]
    for run in (1, 2, 3):
        if run == 3:  # a change between runs: another writer moves one kv key; the run overwrites it
            with warehouse_db.cursor() as cur:
                cur.execute(f"UPDATE {kv} SET value = -1 WHERE key = %s", (f"{exp}/p00007",))
        dr = run_dag(DAG_ID, hour(run + 1), conf)  # a manual run covers the interval ending at its date
        end = hour(run + 1)
        assert dr.data_interval_end == end

        store = state.TableWatermarkStore(warehouse_db)
        for i in range(KEYS):
            assert store.get_value(f"{exp}/k{i}") == end
            assert (
                state.parse_typed_document(Variable.get(f"{conf['variable_prefix']}k{i}"), "timestamptz")
                == end
            )
            # history: init + one advance per run, cut to the newest KEEP; the newest is the current value
            history = store.history(f"{exp}/k{i}")
            assert len(history) == min(run, KEEP)
            assert history[-1].new_value == end
        with warehouse_db.cursor() as cur:
            cur.execute(f"SELECT key, value FROM {kv} WHERE key LIKE %s ORDER BY key", (exp + "/%",))
            assert cur.fetchall() == [(f"{exp}/p{i:05d}", kv_value(end, i)) for i in range(KV_KEYS)]
            cur.execute(f"SELECT max(n) FROM (SELECT count(*) AS n FROM {kv}_history GROUP BY key) c")
            assert cur.fetchone()[0] == min(run, KEEP)

        recorded = {m["variant"]: m for m in perf.measurements(warehouse_db, exp, dr.run_id)}
        assert sorted(recorded) == sorted(
            [
                "table/write",
                "table/read",
                "variable/write",
                "variable/read",
                "kv/write_per_key",
                "kv/write_batch",
                "kv/read_per_key",
                "kv/read_batch",
                "cleanup",
                *(f"scale/{n}/{op}" for n in SCALE for op in ("lookup", "scan")),
            ]
        )
        assert (recorded["table/write"]["rows_written"], recorded["table/read"]["rows_read"]) == (KEYS, KEYS)
        assert (recorded["variable/write"]["rows_written"], recorded["variable/read"]["rows_read"]) == (
            KEYS,
            KEYS,
        )
        half = KV_KEYS // 2
        assert recorded["kv/write_per_key"]["rows_written"] == half
        assert recorded["kv/write_batch"]["rows_written"] == KV_KEYS - half
        assert recorded["kv/read_per_key"]["rows_read"] == recorded["kv/read_batch"]["rows_read"] == KV_KEYS
        assert recorded["kv/read_per_key"]["details"]["statements"] == KV_KEYS
        assert recorded["kv/read_batch"]["details"]["statements"] == 1
        removed = recorded["cleanup"]["details"]
        # runs 1-2 keep everything; from run 3 on one row per key goes in each history
        assert (removed["watermark_history"], removed["kv_history"]) == (
            (KEYS, KV_KEYS) if run >= 3 else (0, 0)
        )
        assert all(m["duration_ms"] is not None for m in recorded.values())

        # the scaling curve: one lookup and one scan per size, counted, not timed
        lookups = [recorded[f"scale/{n}/lookup"] for n in SCALE]
        scans = [recorded[f"scale/{n}/scan"] for n in SCALE]
        for n, lookup, scan in zip(SCALE, lookups, scans, strict=True):
            assert lookup["details"]["keys"] == scan["details"]["keys"] == n
            # a primary-key lookup reads one row through the index, whatever the size
            assert lookup["details"]["uses_index"] is True and lookup["rows_read"] == 1
            assert lookup["details"]["index_names"] and 1 <= lookup["details"]["buffers"] <= 5
            # a filter no index serves reads every row and every page of the table
            assert scan["details"]["uses_index"] is False and "Seq Scan" in scan["details"]["scan_nodes"]
            assert scan["rows_read"] == n
            pages = scan["details"]["table_pages"]
            assert pages <= scan["details"]["buffers"] <= pages + 2
        pages = [s["details"]["table_pages"] for s in scans]
        assert pages == sorted(pages) and len(set(pages)) == len(pages)  # the table grows with the keys
        assert scans[-1]["details"]["buffers"] >= 10 * scans[0]["details"]["buffers"]  # 50x the keys
        flat = [m["details"]["buffers"] for m in lookups]
        assert max(flat) - min(flat) <= 1  # at most one more index level over 50x the keys
        # the table holds the last (largest) size
        assert scalar(warehouse_db, f"SELECT count(*) FROM {kv}_scale") == SCALE[-1]
    per_run = 9 + 2 * len(SCALE)
    assert (
        scalar(warehouse_db, "SELECT count(*) FROM state.perf_runs WHERE experiment = %s", (exp,))
        == 3 * per_run
    )
