"""The staged merge (a batch's rows as one jsonb literal, or COPY into a temporary table, + set-based
statements) keeps every guarantee of the row-by-row one: the last change per key wins inside a batch, an older position never overwrites a newer
row, a hard delete is remembered against older inserts, values of every kind land exactly as the
``VALUES`` statements wrote them, a poison record in a staged batch is dead-lettered with its SQLSTATE
while the rest applies, and a replay from offset 0 changes nothing."""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql

from cdclab.cdc.consumer import reset_offsets
from cdclab.cdc.events import Change
from cdclab.cdc.merge import _upsert, apply_changes, ensure_target
from cdclab.cdc.pipeline import replicate
from tests.integration._cdc_helpers import COLUMNS as CUSTOMER_COLUMNS
from tests.integration._cdc_helpers import Made, made, make_source_table, published, stored

__all__ = ["made"]  # the fixture, imported for pytest

LOG_SERVICES = ["connect", "kafka", "postgres"]

COLUMNS: list[tuple[str, str]] = [
    ("id", "bigint"),
    ("d", "date"),
    ("n", "numeric(40,10)"),
    ("j", "jsonb"),
    ("tags", "text[]"),
    ("b", "bytea"),
    ("ts", "timestamp with time zone"),
    ("local", "timestamp without time zone"),
    ("t", "text"),
    ("f", "double precision"),
    ("ok", "boolean"),
]
NAMES = [n for n, _ in COLUMNS]
HUGE = ('tab\there, newline\nthere, back\\slash, \\N, quote\' "dq" , ünï €, ' * 40_000)[:2_000_000]


def change(op: str, pos: int, key: int, **row: Any) -> Change:
    image = {**dict.fromkeys(NAMES), "id": key, **row}  # a full image: the staged path
    return Change(
        op=op,  # type: ignore[arg-type]
        table="public.staged",
        key={"id": key},
        before=image if op == "d" else None,
        after=None if op == "d" else image,
        position=pos,
        ts_ms=1_767_225_600_123 + pos,
    )


def apply(conn: Any, target: str, changes: list[Change], **kw: Any) -> Any:
    with conn, conn.cursor() as cur:
        return apply_changes(cur, target, ["id"], changes, **kw)


def table_rows(conn: Any, target: str, with_loaded_at: bool = False) -> list[tuple[Any, ...]]:
    cols = [*NAMES, "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]
    if with_loaded_at:
        cols.append("_loaded_at")
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {} FROM {} ORDER BY id").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(*target.split("."))
            )
        )
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in cur.fetchall()]


def text_rows(conn: Any, target: str) -> list[str]:
    """Every column but ``_loaded_at`` as PostgreSQL's own text (NaN equals NaN there)."""
    cols = [*NAMES, "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT ROW({})::text FROM {} ORDER BY id").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(*target.split("."))
            )
        )
        return [r[0] for r in cur.fetchall()]


def ledger(conn: Any, target: str) -> list[tuple[int, int]]:
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT id, _source_position FROM {} ORDER BY id").format(
                sql.Identifier(*(target + "__deleted").split("."))
            )
        )
        return [tuple(r) for r in cur.fetchall()]  # type: ignore[misc]


def make_targets(lab: Any, made: Made, *targets: str) -> Any:
    conn = psycopg2.connect(lab.pg_dsn("warehouse"))
    with conn, conn.cursor() as cur:
        for target in targets:
            made.warehouse += [f"DROP TABLE IF EXISTS {target}", f"DROP TABLE IF EXISTS {target}__deleted"]
            ensure_target(cur, target, COLUMNS, ["id"])
    return conn


VALUES = [  # as the column codecs hand them over (cdclab.cdc.coltypes): text for dates, numerics, times
    dict(
        d="2024-02-29",
        n="123456789012345678901234567890.0123456789",
        j='{"a": [1, 2.5, null], "ü": "x\\ty"}',
        tags=["a", None, 'q"uote', "back\\slash", "", "NULL", "with,comma {}"],
        b=b"\x00\x01\\x\xff" * 1000,
        ts="2026-03-29 01:30:00.123456+01:00",
        local="2026-10-25 02:30:00.5",
        t=HUGE,
        f=-1.2345678901234567e-300,
        ok=True,
    ),
    dict(
        d="infinity",
        n="NaN",
        j="[]",
        tags=[],
        b=b"",
        ts="infinity",
        local="1900-01-01 00:00:00",
        t="",
        f=float("inf"),
        ok=False,
    ),
    dict(d=None, n=None, j=None, tags=None, b=None, ts=None, local=None, t=None, f=None, ok=None),
    dict(
        d="-infinity",
        n="-0.0000000001",
        j='"plain"',
        tags=["x"],
        b=b"\n\t\r",
        ts="1970-01-01 00:00:00+00",
        local="2020-01-01",
        t="x",
        f=0.5,
        ok=True,
    ),
]


def test_values_of_every_kind_land_exactly_as_the_row_by_row_statements_wrote_them(lab, names, made):
    staged, rowwise = f"core.{names('stg')}", f"core.{names('row')}"
    conn = make_targets(lab, made, staged, rowwise)
    try:
        changes = [change("c", 100 + i, i + 1, **v) for i, v in enumerate(VALUES)]
        result = apply(conn, staged, changes)
        assert (result.upserted, result.stale, result.deleted) == (4, 0, 0)
        with conn, conn.cursor() as cur:
            _upsert(cur, rowwise, ["id"], NAMES, changes)  # the row-by-row VALUES statement
        assert text_rows(conn, staged) == text_rows(conn, rowwise)  # the same values, to the last byte
        got = {r[0]: r for r in table_rows(conn, staged)}
        assert got[1][1] == dt.date(2024, 2, 29)
        assert got[1][2] == Decimal("123456789012345678901234567890.0123456789")
        assert got[1][3] == {"a": [1, 2.5, None], "ü": "x\ty"}
        assert got[1][4] == ["a", None, 'q"uote', "back\\slash", "", "NULL", "with,comma {}"]
        assert got[1][5] == b"\x00\x01\\x\xff" * 1000
        assert got[1][8] == HUGE
        assert got[1][9] == -1.2345678901234567e-300
        assert got[2][2].is_nan() and (got[2][1], got[2][3], got[2][4]) == (dt.date.max, [], [])
        assert got[2][9] == float("inf")
        assert got[3][1:11] == (None,) * 10
        assert got[4][1] == dt.date.min  # psycopg2 reads -infinity as date.min
    finally:
        conn.close()


def test_insert_update_delete_of_one_key_in_one_batch_and_older_positions_never_win(lab, names, made):
    target = f"core.{names('stg')}"
    conn = make_targets(lab, made, target)
    try:
        batch = [
            change("c", 10, 1, t="one", d="2026-01-01"),
            change("c", 11, 2, t="two", d="2026-01-02"),
            change("u", 20, 1, t="one v2", d="2026-01-03"),
            change("u", 21, 2, t="two v2", d="2026-01-04"),
            change("d", 30, 1, t="one v2", d="2026-01-03"),  # key 1: insert, update, delete
            change("c", 12, 3, t="three", d="2026-01-05"),
            # arrives last but is older than the update of key 2 above: the update wins
            change("u", 15, 2, t="two (older)", d="2026-01-06"),
        ]
        result = apply(conn, target, batch)
        assert (result.upserted, result.deleted) == (2, 0)  # key 1's delete found no committed row
        rows = table_rows(conn, target, with_loaded_at=True)
        assert [(r[0], r[8], r[1], r[11], r[12]) for r in rows] == [
            (2, "two v2", dt.date(2026, 1, 4), 21, "u"),
            (3, "three", dt.date(2026, 1, 5), 12, "c"),
        ]
        assert ledger(conn, target) == [(1, 30)]

        # a later batch: replays and late, older changes of every key; none may change a row
        late = [
            change("c", 10, 1, t="one (resurrected?)"),
            change("u", 20, 2, t="two (older)"),
            change("d", 11, 3, t="three"),
        ]
        result = apply(conn, target, late)
        assert (result.upserted, result.deleted, result.stale) == (0, 0, 2)
        assert table_rows(conn, target, with_loaded_at=True) == rows  # _loaded_at unchanged: not rewritten
        assert ledger(conn, target) == [(1, 30), (3, 11)]

        # newer changes win: key 1 re-inserted after its delete (ledger cleared), key 3 deleted
        result = apply(conn, target, [change("c", 40, 1, t="one again"), change("d", 41, 3, t="three")])
        assert (result.upserted, result.deleted) == (1, 1)
        assert [(r[0], r[8], r[11]) for r in table_rows(conn, target)] == [
            (1, "one again", 40),
            (2, "two v2", 21),
        ]
        assert ledger(conn, target) == [(3, 41)]
    finally:
        conn.close()


def test_soft_mode_flags_deletes_from_the_staged_batch(lab, names, made):
    target = f"core.{names('soft')}"
    conn = make_targets(lab, made, target)
    try:
        apply(conn, target, [change("c", 10, 1, t="one"), change("c", 11, 2, t="two")], delete_mode="soft")
        # key 2 deleted; key 5 inserted and deleted before this batch was cut: still a flagged row
        result = apply(
            conn,
            target,
            [change("d", 20, 2, t="two"), change("c", 21, 5, t="five"), change("d", 22, 5, t="five")],
            delete_mode="soft",
        )
        assert result.deleted == 2
        got = [(r[0], r[8], r[11], r[12], r[14]) for r in table_rows(conn, target)]
        assert got == [(1, "one", 10, "c", False), (2, "two", 20, "d", True), (5, "five", 22, "d", True)]
    finally:
        conn.close()


def test_a_poison_record_in_a_staged_batch_is_dead_lettered_and_a_replay_changes_nothing(
    lab, names, made, shop_db, warehouse_db, caplog, assert_tables_equal
):
    table, group = names("stgpoison"), names("grp")
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    made.shop.append(f'DROP TABLE IF EXISTS public."{table}"')
    made.warehouse += [
        f'DROP TABLE IF EXISTS core."{table}"',
        f'DROP TABLE IF EXISTS core."{table}__deleted"',
    ]
    replicate([f"public.{table}"], group=group, target_schema="core")  # creates the target
    with warehouse_db.cursor() as cur:  # a rule the target has and the source lacks
        cur.execute(
            sql.SQL("ALTER TABLE core.{} ADD CONSTRAINT no_poison CHECK (full_name <> 'Poison')").format(
                sql.Identifier(table)
            )
        )
    t = sql.Identifier(table)
    with shop_db.cursor() as cur:
        for i in range(1, 41):
            cur.execute(
                sql.SQL("INSERT INTO public.{} (id, email, full_name) VALUES (%s, %s, %s)").format(t),
                (i, f"c{i}@shop.test", "Poison" if i == 17 else f"Customer {i}"),
            )
        # one key inserted, updated twice and deleted, all inside the same batch
        cur.execute(sql.SQL("INSERT INTO public.{} (id, email, full_name) VALUES (99, 'x@y', 'a')").format(t))
        cur.execute(sql.SQL("UPDATE public.{} SET full_name = 'b' WHERE id = 99").format(t))
        cur.execute(sql.SQL("UPDATE public.{} SET full_name = 'c', tier = 'gold' WHERE id = 5").format(t))
        cur.execute(sql.SQL("UPDATE public.{} SET full_name = 'd' WHERE id = 99").format(t))
        cur.execute(sql.SQL("DELETE FROM public.{} WHERE id = 99").format(t))
        cur.execute(sql.SQL("DELETE FROM public.{} WHERE id = 6").format(t))
    n = 40 + 1 + 2 + 1 + 2 * 2  # inserts, key 99's updates, key 5's update, two deletes + tombstones
    published(lab, topic, n)

    with caplog.at_level(logging.WARNING, logger="cdclab.cdc.consumer"):
        summary = replicate([f"public.{table}"], group=group, target_schema="core", batch_size=5000)

    # the staged batch holding the poison failed as a whole and was retried record by record
    retried = [r.args[1] for r in caplog.records if "retrying record by record" in r.getMessage()]
    assert retried and max(retried) > 1, caplog.text
    assert summary["dead_letters"] == 1
    # the target holds every source row but the poison one (read whole: a row 17 there would be extra)
    source, target = f"shop:public.{table}", f"warehouse:core.{table}"
    good = assert_tables_equal(source, target, key="id", columns=CUSTOMER_COLUMNS, source_where="id <> 17")
    assert good.source_count == 38
    with warehouse_db.cursor() as cur:  # the deleted keys and the poison are not in the target
        cur.execute(sql.SQL("SELECT id FROM core.{} WHERE id IN (6, 17, 99)").format(sql.Identifier(table)))
        assert cur.fetchall() == []
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT kafka_offset, reason, record_value FROM dlq.kafka_records WHERE consumer_group = %s",
            (group,),
        )
        letters = cur.fetchall()
        cur.execute(
            sql.SQL("SELECT id, _source_position FROM core.{} ORDER BY id").format(
                sql.Identifier(table + "__deleted")
            )
        )
        deleted = [r[0] for r in cur.fetchall()]
    assert len(letters) == 1
    assert "23514" in letters[0][1] and "no_poison" in letters[0][1], letters[0][1]
    assert '"Poison"' in letters[0][2]
    assert deleted == [6, 99]
    offsets_after = stored(warehouse_db, group)
    assert offsets_after[(topic, 0)] >= n

    def full(table_: str) -> list[tuple[Any, ...]]:
        with warehouse_db.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM core.{} ORDER BY id").format(sql.Identifier(table_)))
            return cur.fetchall()

    before = full(table)
    rerun = replicate([f"public.{table}"], group=group, target_schema="core")
    assert rerun["records"] == 0 and rerun["dead_letters"] == 0
    # a replay of the whole topic from offset 0: nothing is rewritten (_loaded_at unchanged)
    with warehouse_db.cursor() as cur:
        reset_offsets(cur, group, topic, {0: 0}, who="test")
    replay = replicate([f"public.{table}"], group=group, target_schema="core", batch_size=5000)
    assert replay["records"] >= n and replay["dead_letters"] == 1  # the poison fails again, same row
    assert full(table) == before
    assert_tables_equal(source, target, key="id", columns=CUSTOMER_COLUMNS, source_where="id <> 17")
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM dlq.kafka_records WHERE consumer_group = %s", (group,))
        assert cur.fetchone()[0] == 1
    assert stored(warehouse_db, group) == offsets_after


def test_values_json_cannot_carry_exactly_are_copied_with_copy_s_results_and_errors(lab, names, made):
    """A batch normally travels as one jsonb literal; an integer past 64 bits (orjson refuses it) or a NUL
    in a string (jsonb refuses it with another error) sends the batch through the staging COPY instead:
    the integer lands exactly, the NUL fails with COPY's SQLSTATE 22021 as it always did."""
    target = f"core.{names('stgcopy')}"
    conn = make_targets(lab, made, target)
    try:
        result = apply(conn, target, [change("c", 10, 1, n=2**70, t="big"), change("c", 11, 2, t="plain")])
        assert (result.upserted, result.stale) == (2, 0)
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT id, n::text, t FROM {} ORDER BY id").format(
                    sql.Identifier(*target.split("."))
                )
            )
            assert cur.fetchall() == [(1, f"{2**70}.0000000000", "big"), (2, None, "plain")]
        with pytest.raises(psycopg2.errors.CharacterNotInRepertoire):  # 22021, COPY's "0x00"
            apply(conn, target, [change("c", 12, 3, t="nul\x00here")])
        assert [r[0] for r in table_rows(conn, target)] == [1, 2]
    finally:
        conn.close()
