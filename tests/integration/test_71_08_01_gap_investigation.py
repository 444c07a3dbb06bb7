"""71.8.1: a skipped interval, a jumped watermark and late commits each leave a gap; the DAG finds each
gap, names its cause from the ledger and the watermark history, backfills exactly it and proves none is left."""

from __future__ import annotations

import pendulum
from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.ops import diagnostics as d
from cdclab.state import watermarks as state
from tests.dagrun import run_dag

DAG_ID = "71_08_01_gap_investigation"


def at(h: int, m: int = 0) -> pendulum.DateTime:
    return pendulum.datetime(2026, 4, 1, h, m, tz="UTC")


class Setup:
    def __init__(self, lab, shop_db, warehouse_db, names) -> None:
        self.lab, self.shop, self.wh = lab, shop_db, warehouse_db
        self.table, self.pipeline, self.wm_key = names("gapsrc"), names("gappipe"), names("gapwm")
        self.findings = f"state.{names('gapfind')}"
        for conn, schema in ((shop_db, "public"), (warehouse_db, "core")):
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE {} (id bigint PRIMARY KEY, amount int NOT NULL, "
                        "event_at timestamptz NOT NULL)"
                    ).format(ident(f"{schema}.{self.table}"))
                )
        with warehouse_db.cursor() as cur:
            d.ensure_ledger(cur)

    @property
    def conf(self) -> dict:
        return {
            "source_table": f"public.{self.table}",
            "target_table": f"core.{self.table}",
            "pipeline": self.pipeline,
            "watermark_key": self.wm_key,
            "grain_minutes": 60,
            "findings_table": self.findings,
            "ledger_table": "state.processed_intervals",
        }

    def insert(self, rows) -> None:
        with self.shop.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(ident(f"public.{self.table}")), rows
            )

    def load(self, start, end, run_id: str) -> int:
        """The pipeline under investigation: one window, rows + ledger entry in one transaction."""
        import psycopg2

        shop = psycopg2.connect(self.lab.pg_dsn("shop"))
        wh = psycopg2.connect(self.lab.pg_dsn("warehouse"))
        try:
            with wh, wh.cursor() as cur:
                n = d.load_window(
                    shop, wh, f"public.{self.table}", f"core.{self.table}", "id", "event_at", start, end
                )
                d.record_interval(cur, self.pipeline, start, end, n, run_id=run_id)
            return n
        finally:
            shop.close()
            wh.close()

    def assert_complete(self, assert_tables_equal) -> None:
        """The target holds exactly the source's rows."""
        assert_tables_equal(
            f"shop:public.{self.table}",
            f"warehouse:core.{self.table}",
            key="id",
            columns=["amount", "event_at"],
        )

    def rows(self, conn, schema):
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, amount, event_at FROM {} ORDER BY id").format(
                    ident(f"{schema}.{self.table}")
                )
            )
            return cur.fetchall()

    def findings_of(self, run_id):
        with self.wh.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT check_name, subject, verdict, detail FROM {} WHERE run_id = %s ORDER BY id"
                ).format(ident(self.findings)),
                (run_id,),
            )
            return [(c, s, v, det) for c, s, v, det in cur.fetchall()]


def window(h: int) -> str:
    return f"[{at(h).isoformat()}, {at(h + 1).isoformat()})"


def test_each_gap_is_found_explained_backfilled_and_verified_over_three_runs(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    s = Setup(lab, shop_db, warehouse_db, names)
    # interval 10:00 and 12:00 load, 11:00 is never run
    s.insert(
        [
            (1, 10, at(10, 5)),
            (2, 20, at(10, 40)),
            (3, 30, at(11, 10)),
            (4, 40, at(11, 50)),
            (5, 50, at(12, 30)),
        ]
    )
    s.load(at(10), at(11), "load-10")
    s.load(at(12), at(13), "load-12")
    dr = run_dag(DAG_ID, at(14), s.conf)
    f = s.findings_of(dr.run_id)
    assert [(c, sub, v) for c, sub, v, _ in f] == [
        ("gap_detection", window(11), "gap"),
        ("root_cause", window(11), "interval_never_run"),
        ("recovery", window(11), "backfilled"),
        ("verify", f"core.{s.table}", "ok"),
        ("prevention", s.pipeline, "ledger_contiguous"),
    ]
    assert f[0][3]["keys"] == [3, 4] and f[2][3]["rows"] == 2
    s.assert_complete(assert_tables_equal)

    # a watermark-driven load: the watermark jumps 13:00 -> 15:00 while only 14:00-15:00 was read
    s.insert([(6, 60, at(13, 15)), (7, 70, at(14, 20))])
    with warehouse_db.cursor() as cur:
        cur.execute("BEGIN")
        store = state.TableWatermarkStore(warehouse_db)
        store.reset(s.wm_key, at(13), "start of the watermark load", value_type="timestamptz")
        cur.execute("COMMIT")
    s.load(at(14), at(15), "load-14")
    with warehouse_db.cursor() as cur:
        cur.execute("BEGIN")
        state.TableWatermarkStore(warehouse_db).advance(
            s.wm_key, at(13), at(15), value_type="timestamptz", run_id="load-14"
        )
        cur.execute("COMMIT")
    dr = run_dag(DAG_ID, at(16), s.conf)
    f = s.findings_of(dr.run_id)
    assert [(c, sub, v) for c, sub, v, _ in f] == [
        ("gap_detection", window(13), "gap"),
        ("root_cause", window(13), "watermark_jumped"),
        ("recovery", window(13), "backfilled"),
        ("verify", f"core.{s.table}", "ok"),
        ("prevention", s.pipeline, "ledger_contiguous"),
    ]
    assert f[1][3]["run_id"] == "load-14" and f[0][3]["keys"] == [6]
    s.assert_complete(assert_tables_equal)

    # 15:00 is loaded, then two rows stamped 15:xx commit late
    s.insert([(8, 80, at(15, 5))])
    s.load(at(15), at(16), "load-15")
    s.insert(
        [
            (9, 90, at(15, 30)),
            (
                10,
                100,
                at(
                    15,
                    59,
                ),
            ),
        ]
    )
    dr = run_dag(DAG_ID, at(17), s.conf)
    f = s.findings_of(dr.run_id)
    assert [(c, sub, v) for c, sub, v, _ in f] == [
        ("gap_detection", window(15), "gap"),
        ("root_cause", window(15), "loaded_incompletely"),
        ("recovery", window(15), "backfilled"),
        ("verify", f"core.{s.table}", "ok"),
        ("prevention", s.pipeline, "ledger_contiguous"),
    ]
    assert (
        f[0][3]["keys"] == [9, 10] and f[1][3]["ledger_run_id"] == "load-15" and f[1][3]["rows_loaded"] == 1
    )

    # a fourth run over a complete target finds nothing and changes nothing
    before = s.rows(warehouse_db, "core")
    dr = run_dag(DAG_ID, at(18), s.conf)
    assert [(c, v) for c, _, v, _ in s.findings_of(dr.run_id)] == [
        ("gap_detection", "ok"),
        ("verify", "ok"),
        ("prevention", "ledger_contiguous"),
    ]
    assert s.rows(warehouse_db, "core") == before
    s.assert_complete(assert_tables_equal)
    assert len(before) == 10
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT kind, count(*) FROM state.processed_intervals WHERE pipeline = %s GROUP BY kind ORDER BY kind",
            (s.pipeline,),
        )
        assert cur.fetchall() == [("backfill", 3), ("load", 4)]
