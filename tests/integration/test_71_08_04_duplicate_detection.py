"""71.8.4: an append-only load rerun duplicates rows; the DAG finds them by key and by row hash, charges
them to the load run that wrote them, keeps the latest row per key and adds a unique key so the next
rerun fails loudly instead of duplicating."""

from __future__ import annotations

import pendulum
import psycopg2
import pytest

from cdclab.ops import diagnostics as d
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import (
    CUSTOMER_COLS,
    create_customers_copy,
    execute,
    insert_customers,
    rows,
    same_customers,
)

DAG_ID = "71_08_04_duplicate_detection"


def test_rerun_duplicates_are_found_attributed_removed_and_prevented(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table = names("dupsrc")
    src, tgt, findings = f"public.{table}", f"core.{table}", f"state.{names('dupfind')}"
    conf = {
        "target_table": tgt,
        "key_column": "id",
        "order_columns": ["version", "updated_at"],
        "findings_table": findings,
    }
    create_customers_copy(shop_db, src)
    execute(
        warehouse_db,
        f"CREATE TABLE {tgt} (id bigint, email text, full_name text, home_tz text, tier text, "
        "created_at timestamptz, updated_at timestamptz, version integer, is_deleted boolean, "
        "deleted_at timestamptz, _load_run_id text, _loaded_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )

    def append(where: str, run: str) -> int:
        """The broken load: plain INSERT of the selected source rows."""
        with shop_db.cursor() as cur:
            cur.execute(f"SELECT {CUSTOMER_COLS} FROM {src} WHERE {where} ORDER BY id")
            names_ = [c.name for c in cur.description]
            data = [dict(zip(names_, r, strict=True)) for r in cur.fetchall()]
        with warehouse_db.cursor() as cur:
            cur.execute("BEGIN")
            d.append_rows(cur, tgt, data, run)
            cur.execute("COMMIT")
        return len(data)

    def findings_of(dr):
        with warehouse_db.cursor() as cur:
            cur.execute(
                f"SELECT check_name, subject, verdict, detail FROM {findings} WHERE run_id = %s ORDER BY id",
                (dr.run_id,),
            )
            return cur.fetchall()

    def target():
        return rows(warehouse_db, tgt)

    insert_customers(shop_db, src, [1, 2, 3, 4])
    append("true", "load-1#try1")
    append("true", "load-1#try2")  # the retry after a "failed" task that had in fact committed
    execute(shop_db, f"UPDATE {src} SET tier = 'gold' WHERE id = 2")
    insert_customers(shop_db, src, [5])
    append("id IN (2, 5)", "load-2#try1")  # changes appended instead of upserted

    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 3, 1, tz="UTC"), {**conf, "add_constraint": False})
    f = findings_of(dr)
    assert [(c, s, v) for c, s, v, _ in f] == [
        ("finding_duplicates", "1", "exact_duplicate"),
        ("finding_duplicates", "2", "version_duplicate"),
        ("finding_duplicates", "3", "exact_duplicate"),
        ("finding_duplicates", "4", "exact_duplicate"),
        ("summary", tgt, "duplicates"),
        ("source_analysis", "load-1#try2", "rerun_append"),
        ("source_analysis", "load-2#try1", "append_of_changes"),
        ("deduplication", tgt, "deduplicated"),
        ("prevention", tgt, "skipped"),
    ]
    assert (
        f[1][3]["load_runs"] == ["load-1#try1", "load-1#try2", "load-2#try1"]
        and f[1][3]["distinct_rows"] == 2
    )
    assert f[4][3] == {"rows": 10, "duplicated_keys": 4, "extra_rows": 5}
    assert f[5][3] == {"exact": 4, "changed": 0} and f[6][3] == {"exact": 0, "changed": 1}
    assert f[7][3] == {"before": 10, "deleted": 5, "after": 5}
    same_customers(assert_tables_equal, src, tgt)  # the latest version of id 2 was kept

    # without a key the same mistake happens again
    append("id IN (2, 5)", "load-2#try2")
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 3, 2, tz="UTC"), {**conf, "add_constraint": True})
    f = findings_of(dr)
    assert [(c, s, v) for c, s, v, _ in f] == [
        ("finding_duplicates", "2", "exact_duplicate"),
        ("finding_duplicates", "5", "exact_duplicate"),
        ("summary", tgt, "duplicates"),
        ("source_analysis", "load-2#try2", "rerun_append"),
        ("deduplication", tgt, "deduplicated"),
        ("prevention", tgt, "unique_constraint_added"),
    ]
    assert f[4][3] == {"before": 7, "deleted": 2, "after": 5}
    same_customers(assert_tables_equal, src, tgt)

    # now the rerun fails loudly (and writes nothing); the fixed load upserts
    execute(shop_db, f"UPDATE {src} SET tier = 'silver' WHERE id = 3")
    with pytest.raises(psycopg2.errors.UniqueViolation):
        append("id = 3", "load-3#try1")
    execute(warehouse_db, "ROLLBACK")
    with shop_db.cursor() as cur:
        cur.execute(f"SELECT {CUSTOMER_COLS} FROM {src} WHERE id = 3")
        r = cur.fetchone()
    execute(
        warehouse_db,
        f"INSERT INTO {tgt} ({CUSTOMER_COLS}, _load_run_id) VALUES ({', '.join(['%s'] * 11)}) "
        "ON CONFLICT (id) DO UPDATE SET tier = EXCLUDED.tier, updated_at = EXCLUDED.updated_at, "
        "version = EXCLUDED.version, _load_run_id = EXCLUDED._load_run_id",
        [*r, "load-3#try1"],
    )
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 3, 3, tz="UTC"), conf)
    assert [(c, v) for c, _, v, _ in findings_of(dr)] == [
        ("summary", "ok"),
        ("deduplication", "nothing_to_do"),
        ("prevention", "already_present"),
    ]
    same_customers(assert_tables_equal, src, tgt)
    assert len(target()) == 5
