"""71.3.4: an SCD2 dimension built from the Debezium stream of a customers copy holds, for every key,
exactly the sequence of tracked values the source went through, with effective dates equal to the
source commit times, one current row per live key, no overlapping ranges, and is unchanged by a replay."""

from __future__ import annotations

import datetime as dt

import pendulum
from psycopg2 import sql

from cdclab.cdc.consumer import reset_offsets
from cdclab.cdc.events import Change, parse_debezium
from cdclab.cdc.inspect import wait_for_records
from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, make_source_table, published

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_03_04_scd2"
TRACKED = ("email", "full_name", "tier")
T0 = pendulum.datetime(2026, 6, 1, 8, tz="UTC")


class Source:
    """Writes to the source copy, one statement per transaction, and models the expected history."""

    def __init__(self, shop_db, table: str) -> None:
        self.db, self.table, self.records = shop_db, table, 0
        self.rows: dict[int, dict] = {}
        self.history: dict[int, list[list]] = {}  # id -> [[email, full_name, tier, closed_by_delete]]

    def _run(self, stmt: str, args: tuple) -> None:
        with self.db.cursor() as cur:
            cur.execute(sql.SQL(stmt).format(t=sql.Identifier(self.table)), args)
        self.records += 1

    def insert(self, i: int, tier: str = "basic") -> None:
        row = {
            "email": f"c{i}.{len(self.history.get(i, []))}@shop.test",
            "full_name": f"Customer {i}",
            "tier": tier,
        }
        self._run(
            "INSERT INTO public.{t} (id, email, full_name, tier) VALUES (%s, %s, %s, %s)",
            (i, row["email"], row["full_name"], tier),
        )
        self.rows[i] = row
        self.history.setdefault(i, []).append([row["email"], row["full_name"], tier, False])

    def update(self, i: int, **cols) -> None:
        sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in cols)
        with self.db.cursor() as cur:
            cur.execute(
                sql.SQL("UPDATE public.{t} SET {s} WHERE id = %s").format(
                    t=sql.Identifier(self.table), s=sets
                ),
                (*cols.values(), i),
            )
        self.records += 1
        new = {**self.rows[i], **{c: v for c, v in cols.items() if c in TRACKED}}
        if [new[c] for c in TRACKED] != [self.rows[i][c] for c in TRACKED]:
            self.history[i].append([*(new[c] for c in TRACKED), False])
        self.rows[i] = new

    def delete(self, i: int) -> None:
        self._run("DELETE FROM public.{t} WHERE id = %s", (i,))
        self.records += 1  # the tombstone
        self.history[i][-1][3] = True
        del self.rows[i]

    def expected(self) -> list[tuple]:
        """(id, email, full_name, tier, is_current, _deleted) per version, in history order."""
        out = []
        for i in sorted(self.history):
            versions = self.history[i]
            for n, (email, name, tier, deleted) in enumerate(versions):
                out.append((i, email, name, tier, n == len(versions) - 1 and not deleted, deleted))
        return out


def dimension(warehouse_db, table: str, cols) -> list[tuple]:
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {c} FROM marts.{t} ORDER BY id, _source_position").format(
                c=sql.SQL(", ").join(map(sql.Identifier, cols)), t=sql.Identifier(table)
            )
        )
        return cur.fetchall()


def assert_history(lab, warehouse_db, assert_tables_equal, src: Source, dim: str) -> None:
    versions = dimension(warehouse_db, dim, ["id", *TRACKED, "is_current", "_deleted"])
    assert versions == src.expected()
    # the current versions are the live source rows, every column
    assert_tables_equal(
        f"shop:public.{src.table}",
        f"warehouse:marts.{dim}",
        key="id",
        columns=COLUMNS,
        target_where="is_current",
    )
    # effective dates are the source commit times of the opening and closing changes
    records = wait_for_records(lab.kafka_bootstrap, f"shop.public.{src.table}", src.records, timeout=120)
    changes = [
        c for c in (parse_debezium(m.key(), m.value(), m.topic()) for m in records) if isinstance(c, Change)
    ]
    ts = {c.position: dt.datetime.fromtimestamp(c.ts_ms / 1000, tz=dt.UTC) for c in changes}
    by_key: dict[int, list[int]] = {}
    for c in sorted(changes, key=lambda c: c.position):
        by_key.setdefault(c.key["id"], []).append(c.position)
    rows = dimension(
        warehouse_db, dim, ["id", "valid_from", "valid_to", "_source_position", "_last_position"]
    )
    for i, valid_from, valid_to, opened, last in rows:
        assert valid_from == ts[opened]
        if valid_to is None:
            assert last == max(
                p for p in by_key[i] if p >= opened
            )  # in-place touches move only _last_position
        else:
            assert valid_to == ts[last]
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT count(*) FROM marts.{t} a JOIN marts.{t} b ON a.id = b.id "
                "AND a._source_position < b._source_position "
                "AND tstzrange(a.valid_from, a.valid_to) && tstzrange(b.valid_from, b.valid_to)"
            ).format(t=sql.Identifier(dim))
        )
        assert cur.fetchone()[0] == 0, "validity ranges of one key overlap"
        cur.execute(
            sql.SQL(
                "SELECT id, count(*) FROM marts.{t} WHERE is_current GROUP BY id HAVING count(*) > 1"
            ).format(t=sql.Identifier(dim))
        )
        assert cur.fetchall() == []


def test_the_dimension_holds_every_tracked_version_with_source_commit_times_through_three_intervals(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    table, group = names("s2"), names("grp")
    dim = f"dim_{table}"
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "tracked_columns": {f"public.{table}": list(TRACKED)},
        "target_schema": "marts",
        "target_prefix": "dim_",
        "batch_size": 500,
    }
    make_source_table(shop_db, table)
    src = Source(shop_db, table)

    for i in range(1, 9):
        src.insert(i)
    src.update(2, tier="gold")
    src.update(3, full_name="Customer Three")
    src.update(4, home_tz="Asia/Tokyo")  # untracked: the current version changes in place
    src.delete(5)
    published(lab, f"shop.public.{table}", src.records)
    run_dag(DAG_ID, T0, conf)
    assert_history(lab, warehouse_db, assert_tables_equal, src, dim)

    # interval 2, in batches of 3 so that versions of one key span batches
    src.update(2, tier="silver")
    src.update(1, email="one@shop.test", tier="gold")
    src.insert(5, tier="gold")  # a re-insert opens a new current version after the closed one
    src.delete(3)
    src.update(6, home_tz="Europe/Berlin")
    src.insert(9)
    src.update(9, tier="gold")
    src.update(9, home_tz="America/New_York")
    src.delete(9)
    published(lab, f"shop.public.{table}", src.records)
    run_dag(DAG_ID, T0.add(minutes=5), {**conf, "batch_size": 3})
    assert_history(lab, warehouse_db, assert_tables_equal, src, dim)

    # interval 3: a touch with the same tracked values, more versions of old and re-inserted keys
    src.update(7, tier="basic")
    src.update(5, tier="platinum")
    src.update(2, email="two@shop.test")
    src.update(4, tier="gold", home_tz="UTC")
    published(lab, f"shop.public.{table}", src.records)
    run_dag(DAG_ID, T0.add(minutes=10), conf)
    assert_history(lab, warehouse_db, assert_tables_equal, src, dim)
    assert len(src.expected()) == 18

    # replay the topic from offset 0: every change is at or below its key's guard, nothing is written
    before = dimension(warehouse_db, dim, ["id", "_source_position", "_last_position", "_loaded_at"])
    with warehouse_db.cursor() as cur:
        reset_offsets(cur, group, f"shop.public.{table}", {0: 0}, who="test replay")
    run_dag(DAG_ID, T0.add(minutes=15), conf)
    assert dimension(warehouse_db, dim, ["id", "_source_position", "_last_position", "_loaded_at"]) == before
    assert_history(lab, warehouse_db, assert_tables_equal, src, dim)


def test_a_tracked_column_that_the_source_lacks_fails_the_run(lab, names, shop_db, warehouse_db):
    table = names("s2bad")
    make_source_table(shop_db, table)
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO public.{t} (id, email, full_name) VALUES (1, 'x@shop.test', 'X')").format(
                t=sql.Identifier(table)
            )
        )
    published(lab, f"shop.public.{table}", 1)
    conf = {
        "tables": [f"public.{table}"],
        "consumer_group": names("grp"),
        "tracked_columns": {f"public.{table}": ["nope"]},
        "target_schema": "marts",
        "target_prefix": "dim_",
        "batch_size": 500,
    }
    run_dag(DAG_ID, T0, conf, expect="failed")
    with warehouse_db.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM marts.{t}").format(t=sql.Identifier(f"dim_{table}")))
        assert cur.fetchone()[0] == 0, "nothing is written when the settings are wrong"
