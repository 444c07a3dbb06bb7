"""71.3.5: source soft deletes (UPDATE is_deleted) and hard deletes (DELETE + tombstone) both end as
flagged rows in the warehouse; old deletions move to the archive in one transaction; un-deleted and
re-inserted rows come back live, even after they were archived; a replay changes nothing."""

from __future__ import annotations

import datetime as dt

import pendulum
from psycopg2 import sql

from cdclab.cdc.consumer import reset_offsets
from cdclab.cdc.events import Change, parse_debezium
from cdclab.cdc.inspect import wait_for_records
from tests.dagrun import run_dag
from tests.integration._71_01_helpers import xcom
from tests.integration._71_03_helpers import Source
from tests.integration._cdc_helpers import COLUMNS, make_source_table, published

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_03_05_soft_delete"


def target(warehouse_db, table: str, cols, where: str = "true") -> list[tuple]:
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {c} FROM core.{t} WHERE " + where + " ORDER BY id").format(
                c=sql.SQL(", ").join(map(sql.Identifier, cols)), t=sql.Identifier(table)
            )
        )
        return cur.fetchall()


def delete_times(lab, src: Source) -> dict[int, dt.datetime]:
    """Commit time of each key's last hard delete, from the Debezium records themselves."""
    records = wait_for_records(lab.kafka_bootstrap, f"shop.public.{src.table}", src.records, timeout=120)
    out = {}
    for m in records:
        c = parse_debezium(m.key(), m.value(), m.topic())
        if isinstance(c, Change) and c.op == "d":
            out[c.key["id"]] = dt.datetime.fromtimestamp(c.ts_ms / 1000, tz=dt.UTC)
    return out


def assert_state(lab, warehouse_db, src: Source, archived: set[int]) -> None:
    """Live rows equal live source rows; every deleted, unarchived key is flagged with its deletion time."""
    table = f"soft_{src.table}"
    assert target(warehouse_db, table, COLUMNS, "NOT _deleted") == src.rows("NOT is_deleted")
    soft = {r[0]: r for r in src.rows("is_deleted")}
    deleted_at = delete_times(lab, src)
    expected = sorted(
        [(i, soft[i][COLUMNS.index("deleted_at")]) for i in soft if i not in archived]
        + [(i, deleted_at[i]) for i in src.hard_deleted if i not in archived]
    )
    assert target(warehouse_db, table, ["id", "_deleted_at"], "_deleted") == expected
    # a soft-deleted row keeps the source's columns; a hard-deleted one its last image
    assert [r for r in target(warehouse_db, table, COLUMNS, "_deleted") if r[0] in soft] == [
        soft[i] for i in sorted(soft) if i not in archived
    ]
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT DISTINCT id FROM core.{a} ORDER BY id").format(
                a=sql.Identifier(f"{table}__archive")
            )
        )
        assert {r[0] for r in cur.fetchall()} == archived


def test_soft_and_hard_deletes_become_flags_old_ones_are_archived_and_undeletes_recover(
    lab, names, shop_db, warehouse_db
):
    table, group = names("sd"), names("grp")
    topic = f"shop.public.{table}"
    conf = {  # every param that matters, every run: dag.test() can carry conf over between runs
        "tables": [f"public.{table}"],
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "soft_",
        "archive_after_days": 30,
        "batch_size": 500,
    }
    base = pendulum.now("UTC").start_of("day")
    make_source_table(shop_db, table)
    src = Source(shop_db, table)

    # interval 1: soft deletes (one long ago), hard deletes, a key inserted and deleted before any run
    for i in range(1, 11):
        src.insert(i)
    src.soft_delete(2, base.subtract(days=40))
    src.soft_delete(3, base.subtract(days=5))
    src.delete(4)
    src.insert(11)
    src.delete(11)
    published(lab, topic, src.records)
    dr = run_dag(DAG_ID, base.add(days=1), conf)
    apply = xcom(dr, "apply")
    assert apply["skipped"] == {"tombstone": 2}
    assert apply["dead_letters"] == 0
    assert xcom(dr, "archive")["archived"] == {f"core.soft_{table}": 1}
    assert_state(lab, warehouse_db, src, archived={2})

    # interval 2: recovery — un-delete an archived and a flagged row, re-insert a hard-deleted key
    src.undelete(2)
    src.undelete(3)
    src.insert(4, tag=".again")
    src.delete(5)
    src.insert(5, tag=".back")
    src.delete(6)
    src.soft_delete(8, base.subtract(days=1))
    published(lab, topic, src.records)
    dr = run_dag(DAG_ID, base.add(days=2), conf)
    assert xcom(dr, "apply")["skipped"] == {"tombstone": 2}
    assert_state(lab, warehouse_db, src, archived={2})
    assert target(warehouse_db, f"soft_{table}", ["id", "_deleted"], "id IN (2, 3, 4, 5)") == [
        (2, False),
        (3, False),
        (4, False),
        (5, False),
    ]

    # interval 3: everything deleted before (interval end - 2 days) moves to the archive
    src.delete(7)
    src.soft_delete(9, base.add(days=2, hours=6))
    src.run("UPDATE public.{t} SET full_name = 'Ten' WHERE id = %s", 10)
    published(lab, topic, src.records)
    dr = run_dag(DAG_ID, base.add(days=3), {**conf, "archive_after_days": 2})
    assert xcom(dr, "archive")["archived"] == {f"core.soft_{table}": 4}
    assert_state(lab, warehouse_db, src, archived={2, 6, 7, 8, 11})

    # interval 4: an archived key re-inserted by a newer change passes the delete ledger and is live again
    src.insert(7, tag=".recovered")
    src.run("UPDATE public.{t} SET tier = 'gold' WHERE id = %s", 1)
    published(lab, topic, src.records)
    run_dag(DAG_ID, base.add(days=4), {**conf, "archive_after_days": 2})
    assert_state(lab, warehouse_db, src, archived={2, 6, 7, 8, 11})
    assert target(warehouse_db, f"soft_{table}", ["id", "email", "_deleted"], "id = 7") == [
        (7, "c7.recovered@shop.test", False)
    ]

    # replay from offset 0: older changes of archived keys are stopped by the ledger, nothing changes
    def snapshot():
        with warehouse_db.cursor() as cur:
            out = []
            for t in (f"soft_{table}", f"soft_{table}__archive", f"soft_{table}__deleted"):
                cur.execute(sql.SQL("SELECT * FROM core.{t} ORDER BY 1, 2").format(t=sql.Identifier(t)))
                out.append(cur.fetchall())
            return out

    before = snapshot()
    with warehouse_db.cursor() as cur:
        reset_offsets(cur, group, topic, {0: 0}, who="test replay")
    dr = run_dag(DAG_ID, base.add(days=5), {**conf, "archive_after_days": 3, "batch_size": 4})
    assert xcom(dr, "apply")["skipped"] == {"tombstone": 5}
    assert snapshot() == before
