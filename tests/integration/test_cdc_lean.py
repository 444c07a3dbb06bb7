"""The CDC sink's lean path (:mod:`cdclab.cdc.lean`) against the real stack: a plain Debezium batch takes
it (the run summary counts batches per path) and leaves exactly the end state of the Python path — every
column, the bookkeeping columns and the delete ledger — on a table of several types with NULLs, deletes
and a hot key updated many times in one batch; and a batch it does not take (a TOAST placeholder) goes to
the Python path with the same end state."""

from __future__ import annotations

from typing import Any

from psycopg2 import sql

from cdclab.cdc.inspect import wait_for_records
from cdclab.cdc.pipeline import replicate
from tests.integration._cdc_helpers import Made, made

__all__ = ["made"]  # the fixture, imported for pytest

LOG_SERVICES = ["connect", "kafka", "postgres"]

SOURCE_COLUMNS = [
    ("id", "bigint PRIMARY KEY"),
    ("name", "text NOT NULL"),
    ("amount", "numeric(12,2)"),
    ("day", "date"),
    ("at", "timestamp with time zone"),
    ("local", "timestamp without time zone"),
    ("flag", "boolean"),
    ("qty", "integer"),
    ("note", "text"),
]
NAMES = [n for n, _ in SOURCE_COLUMNS]
WRITTEN = ["_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]


def full(cur: Any, table: str, columns: list[str], key: str = "id") -> list[tuple[Any, ...]]:
    cur.execute(
        sql.SQL("SELECT {} FROM core.{} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)), sql.Identifier(table), sql.Identifier(key)
        )
    )
    return cur.fetchall()


def write(shop_db: Any, table: str, start: int, hot_updates: int, deletes: list[int]) -> int:
    """Inserts of ``start .. start+39`` (every fifth with NULLs), ``hot_updates`` updates of key
    ``start``, an update of each tenth key, then ``deletes``; the number of Kafka records."""
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        for i in range(start, start + 40):
            nulls = i % 5 == 0
            cur.execute(
                sql.SQL(
                    "INSERT INTO public.{} (id, name, amount, day, at, local, flag, qty, note) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(t),
                (
                    i,
                    f"n{i} 'quoted' \\ ünï",
                    None if nulls else f"{i}.{i % 100:02d}",
                    None if nulls else f"2026-01-{i % 28 + 1:02d}",
                    None if nulls else f"2026-02-03 04:05:{i % 60:02d}.123456+02",
                    None if nulls else f"1999-12-31 23:59:{i % 60:02d}.5",
                    None if nulls else i % 2 == 0,
                    None if nulls else -i,
                    None if nulls or i % 3 else f"note\t{i}\n",
                ),
            )
        for n in range(hot_updates):
            cur.execute(
                sql.SQL("UPDATE public.{} SET qty = %s, amount = amount + 1, note = %s WHERE id = %s").format(
                    t
                ),
                (n, f"hot {n}", start),
            )
        for i in range(start, start + 40, 10):
            cur.execute(sql.SQL("UPDATE public.{} SET name = name || ' *' WHERE id = %s").format(t), (i + 1,))
        for i in deletes:
            cur.execute(sql.SQL("DELETE FROM public.{} WHERE id = %s").format(t), (i,))
    return 40 + hot_updates + 4 + 2 * len(deletes)


def test_a_plain_batch_takes_the_lean_path_with_the_python_paths_end_state(
    lab, names, made: Made, shop_db, warehouse_db, monkeypatch, assert_tables_equal
):
    table = names("lean")
    topic = f"shop.public.{table}"
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE public.{} ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in SOURCE_COLUMNS
                ),
            )
        )
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    # "small": the lean path in batches of 7, so one run crosses many transactions (lean.apply's catalog
    # cache: the ledger hint turns when a batch writes deletes, a later batch's re-insert clears them)
    targets = {"lean": f"lean_{table}", "python": f"py_{table}", "small": f"small_{table}"}
    for target in targets.values():
        made.warehouse += [
            f'DROP TABLE IF EXISTS core."{target}"',
            f'DROP TABLE IF EXISTS core."{target}__deleted"',
        ]

    def run(path: str) -> dict[str, Any]:
        if path == "python":
            monkeypatch.setenv("CDCLAB_CDC_LEAN", "0")
        else:
            monkeypatch.delenv("CDCLAB_CDC_LEAN", raising=False)
        return replicate(
            [f"public.{table}"],
            group=names(f"grp-{path}"),
            target_schema="core",
            target_prefix=path.replace("python", "py") + "_",
            batch_size=7 if path == "small" else 5000,
        )

    def compare() -> None:
        ledger = ["id", "_source_position"]
        with warehouse_db.cursor() as cur:
            python_rows = full(cur, targets["python"], [*NAMES, *WRITTEN])
            python_ledger = full(cur, targets["python"] + "__deleted", ledger)
            for path in ("lean", "small"):
                assert full(cur, targets[path], [*NAMES, *WRITTEN]) == python_rows, path
                assert full(cur, targets[path] + "__deleted", ledger) == python_ledger, path
        for target in targets.values():
            assert_tables_equal(f"shop:public.{table}", f"warehouse:core.{target}", key="id", columns=NAMES)

    # first round: one batch with NULLs, a key updated 150 times, deletes (one of the hot key's rows)
    n = write(shop_db, table, 1, 150, [3, 7, 20])
    # then 20 inserted again, ten records later: in batches of 7 its delete and its insert are in two
    # transactions of one run that began with an empty ledger (the delete's ledger row must go again)
    with shop_db.cursor() as cur:
        t = sql.Identifier(table)
        for q in range(10):
            cur.execute(sql.SQL("UPDATE public.{} SET qty = %s WHERE id = 2").format(t), (1000 + q,))
        cur.execute(sql.SQL("INSERT INTO public.{} (id, name) VALUES (20, 'again')").format(t))
    n += 11
    wait_for_records(lab.kafka_bootstrap, topic, n)
    summaries = {path: run(path) for path in ("python", "lean", "small")}
    assert summaries["python"]["paths"] == {"python": 1}, summaries
    assert summaries["lean"]["paths"] == {"lean": 1}, summaries
    assert summaries["small"]["paths"] == {"lean": summaries["small"]["batches"]} and (
        summaries["small"]["batches"] > 20
    ), summaries
    for s in summaries.values():
        assert s["records"] == n and s["dead_letters"] == 0 and s["skipped"] == {"tombstone": 3}
    assert (
        summaries["lean"]["targets"][f"core.lean_{table}"]
        == summaries["python"]["targets"][f"core.py_{table}"]
    )
    compare()
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT qty, note FROM core.{} WHERE id = 1").format(sql.Identifier(targets["lean"]))
        )
        assert cur.fetchone() == (149, "hot 149")
        cur.execute(sql.SQL("SELECT count(*) FROM core.{}").format(sql.Identifier(targets["lean"])))
        assert cur.fetchone()[0] == 38
        cur.execute(
            sql.SQL("SELECT id FROM core.{} ORDER BY id").format(
                sql.Identifier(targets["small"] + "__deleted")
            )
        )
        assert [r[0] for r in cur.fetchall()] == [3, 7]

    # second round on top: the hot key deleted after its updates, an inserted key deleted in the batch,
    # then a key of the first round's deletes and one of this round's inserted again (their ledger rows go)
    n2 = write(shop_db, table, 41, 60, [41, 1, 50])
    with shop_db.cursor() as cur:
        for i in (3, 41):
            cur.execute(
                sql.SQL("INSERT INTO public.{} (id, name) VALUES (%s, 'again')").format(
                    sql.Identifier(table)
                ),
                (i,),
            )
    n2 += 2
    wait_for_records(lab.kafka_bootstrap, topic, n + n2)
    summaries = {path: run(path) for path in ("python", "lean", "small")}
    assert summaries["lean"]["paths"] == {"lean": 1} and summaries["python"]["paths"] == {"python": 1}
    assert summaries["small"]["paths"] == {"lean": summaries["small"]["batches"]}, summaries
    compare()
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id FROM core.{} ORDER BY id").format(
                sql.Identifier(targets["small"] + "__deleted")
            )
        )
        assert [r[0] for r in cur.fetchall()] == [1, 7, 50]

    # a TOAST placeholder (an unchanged big value of an update) is not plain: the Python path keeps the
    # target's value, and the lean run counts that batch as the Python path's
    with shop_db.cursor() as cur:
        t = sql.Identifier(table)
        cur.execute(sql.SQL("ALTER TABLE public.{} ALTER COLUMN note SET STORAGE EXTERNAL").format(t))
        cur.execute(sql.SQL("UPDATE public.{} SET note = repeat('x', 20000) WHERE id = 2").format(t))
        cur.execute(sql.SQL("UPDATE public.{} SET qty = 77 WHERE id = 2").format(t))
    wait_for_records(lab.kafka_bootstrap, topic, n + n2 + 2)
    summaries = {path: run(path) for path in ("python", "lean", "small")}
    assert summaries["lean"]["paths"] == {"python": 1} == summaries["small"]["paths"], summaries
    compare()
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT qty, length(note) FROM core.{} WHERE id = 2").format(
                sql.Identifier(targets["lean"])
            )
        )
        assert cur.fetchone() == (77, 20000)
