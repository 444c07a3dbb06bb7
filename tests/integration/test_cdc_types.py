"""Type-faithful CDC: a table in `shop` with every column type the lab replicates, changed by inserts,
updates and deletes, travels through the lab's Debezium connector and Kafka into `warehouse` by
``cdclab.cdc.pipeline.replicate``; afterwards ``col::text`` is equal in source and target for every row
and column. Types the lab cannot replicate losslessly are refused before any row is written."""

from __future__ import annotations

import json

import pytest
from psycopg2 import sql

from cdclab.cdc.coltypes import UnsupportedColumnType
from cdclab.cdc.inspect import wait_for_records
from cdclab.cdc.pipeline import replicate
from cdclab.lab.native import http_json

LOG_SERVICES = ["connect"]
CONNECTOR = "shop-postgres-source"
# the settings the decoding in cdclab.cdc.coltypes relies on
TYPE_SETTINGS = (
    "time.precision.mode",
    "decimal.handling.mode",
    "interval.handling.mode",
    "binary.handling.mode",
)


def require_lab_connector_settings(lab) -> None:
    """The running connector must use the settings of connectors/shop-postgres-source.json."""
    wanted = json.loads((lab.root / "connectors" / f"{CONNECTOR}.json").read_text())["config"]
    status, running = http_json("GET", f"{lab.connect_url}/connectors/{CONNECTOR}/config")
    assert status == 200, f"connector {CONNECTOR} is not registered: {running}"
    differ = {k: (running.get(k), wanted.get(k)) for k in TYPE_SETTINGS if running.get(k) != wanted.get(k)}
    assert not differ, (
        f"the running connector's settings {differ} (running, file) differ: `make up` re-registers it"
    )


def execute(conn, statement: str, *idents: str, params=None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(*map(sql.Identifier, idents)), params)


TYPES_DDL = """
CREATE TYPE public.{} AS ENUM ('sad', 'ok', 'happy', 'it''s "complicated" 🙃');
CREATE DOMAIN public.{} AS numeric(10, 2) CHECK (VALUE >= 0);
CREATE TABLE public.{} (
    id integer PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint,
    n numeric, n2 numeric(12, 4),
    f4 real, f8 double precision,
    m money, b boolean,
    t text, vc varchar(20), ch char(5),
    ba bytea,
    d date, tm time, tm3 time(3), ts timestamp, ts3 timestamp(3), tstz timestamptz,
    iv interval,
    u uuid, js json, jb jsonb,
    ai integer[], ab bigint[], at text[], av varchar(8)[],
    mood {}, amount {},
    ip inet, net cidr, mac macaddr, mac8 macaddr8,
    b1 bit(1), b10 bit(10),
    r4 int4range, r8 int8range, rn numrange, rts tsrange, rtz tstzrange, rd daterange,
    big text
)
"""
COLUMNS = """i2, i4, i8, n, n2, f4, f8, m, b, t, vc, ch, ba, d, tm, tm3, ts, ts3, tstz, iv, u, js, jb, ai, ab, at, av,
mood, amount, ip, net, mac, mac8, b1, b10, r4, r8, rn, rts, rtz, rd"""
ROWS = [
    # lower limits, empties, the earliest dates
    """(1, -32768, -2147483648, -9223372036854775808, 'NaN', -99999999.9999, '-Infinity', 'NaN',
        '-92233720368547758.08', false, '', '', '', '\\x', '4713-01-01 BC', '00:00:00', '00:00:00',
        '4713-01-01 00:00:00 BC', '4713-01-01 00:00:00.001 BC', '4713-01-01 00:00:00+00 BC',
        '-178000000 years', '00000000-0000-0000-0000-000000000000', '{}', '{}', '{}', '{}', '{}', '{}',
        'sad', 0, '0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00', B'0', B'0000000000',
        'empty', '(,)', '[-1.5,2.5]', '[4713-01-01 00:00:00 BC,2026-01-01)', '(,infinity)', 'empty')""",
    # upper limits, unicode and quotes, the latest dates
    """(2, 32767, 2147483647, 9223372036854775807,
        '123456789012345678901234567890.123456789012345678901234567890', 99999999.9999,
        'Infinity', 1.7976931348623157e308, '92233720368547758.07', true,
        'Zoë 🐘 "double" ''single'' \\ back
new line', 'ünïcödé 🐘 ''q''', 'ab', '\\xdeadbeef00ff', '5874897-12-31', '24:00:00', '23:59:59.999',
        '294246-12-31 23:59:59.999999', '294276-12-31 23:59:59.999', '294276-12-31 23:59:59.999999+00',
        '178000000 years', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
        '{"b": [1, 2.50, null], "a": "ü \\"q\\""}', '{"b": [1, 2.50, null], "a": "ü \\"q\\""}',
        '{1,NULL,-2147483648}', '{9223372036854775807,NULL}', '{"a",NULL,"","q\\"uote","ü 🐘", "NULL"}',
        '{"x",NULL}', 'it''s "complicated" 🙃', 99999999.99, 'ffff:ffff::1/128', '2001:db8::/32',
        'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff', B'1', B'1000000001',
        '[-2147483648,2147483647)', '[1,9223372036854775807)', '(,)', '[2026-03-29 01:00:00,)',
        '[2026-01-01 00:00:00.000001+00,2026-01-02 00:00:00+00)', '[2026-01-01,infinity)')""",
    # microseconds and negative parts everywhere
    """(3, 0, 0, 0, 0.000000000000000000000000000001, -0.0001, 1.17549435e-38, 2.2250738585072014e-308,
        0.01, true, ' padded ', ' ', 'a b', '\\x00', '2000-02-29', '12:34:56.000001', '12:34:56.001',
        '1999-12-31 23:59:59.999999', '1970-01-01 00:00:00.001', '2026-10-25 01:30:00.000001+02',
        '-1 years -2 mons +3 days -04:05:06.000001', '123e4567-e89b-12d3-a456-426614174000', '"json string"',
        '[1, "two", {"three": 3}]', '{0}', '{-1}', '{""}', '{" "}', 'ok', 12.5, '192.168.0.1/24',
        '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', B'0', B'0101010101',
        '[0,1)', '[-9223372036854775808,0]', '(-0.5,0.5)', '[2026-01-01 00:00:00.000001,2026-01-01 00:00:00.000002]',
        '[2026-03-29 01:59:59.999999+00,2026-03-29 04:00:00+02)', '[2026-03-29,2026-03-30)')""",
    # infinities
    """(4, 1, 1, 1, 'Infinity', 1, 'NaN', '-Infinity', 0, false, 'x', 'x', 'x', '\\xff', 'infinity', '23:59:59.999999',
        '00:00:00.001', 'infinity', '-infinity', '-infinity', '1 mon 1 day 00:00:00.000001',
        '00000000-0000-4000-8000-000000000000', 'null', '{"k": null}', '{NULL}', '{NULL,NULL}', '{NULL}', '{NULL}',
        'happy', 0.01, '::', '::/0', '01:02:03:04:05:06', '01:02:03:04:05:06:07:08', B'1', B'1111111111',
        '(,0)', '(0,)', '[NaN,NaN]', '(,)', '(-infinity,infinity)', '(-infinity,2026-01-01]')""",
]


def insert(conn, table: str, values: str, columns: str = COLUMNS) -> None:
    """INSERT literal rows (their JSON braces must not go through sql.SQL.format)."""
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO public.{} ").format(sql.Identifier(table))
            + sql.SQL(f"(id, {columns}) VALUES {values}")
        )


def source_and_target_text(shop_db, warehouse_db, table: str, target: str) -> tuple[list, list, list[str]]:
    with shop_db.cursor() as cur:
        cur.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (f"public.{table}",),
        )
        columns = [r[0] for r in cur.fetchall()]
    as_text = sql.SQL(", ").join(sql.SQL("{c}::text").format(c=sql.Identifier(c)) for c in columns)
    out = []
    for conn, name in ((shop_db, f"public.{table}"), (warehouse_db, target)):
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(
                sql.SQL("SELECT {c} FROM {t} ORDER BY id").format(
                    c=as_text, t=sql.SQL(".").join(map(sql.Identifier, name.split(".")))
                )
            )
            out.append(cur.fetchall())
    return out[0], out[1], columns


def assert_equal_as_text(source: list, target: list, columns: list[str]) -> None:
    assert [r[0] for r in target] == [r[0] for r in source], "the same ids"
    diffs = [
        (row[0], col, s, t)
        for row, trow in zip(source, target, strict=True)
        for col, s, t in zip(columns, row, trow, strict=True)
        if s != t
    ]
    assert not diffs, "\n".join(f"id={i} {c}: source {s!r:.120} target {t!r:.120}" for i, c, s, t in diffs)


def test_every_column_type_replicates_exactly_as_text(lab, names, shop_db, warehouse_db):
    require_lab_connector_settings(lab)
    table, mood, amount, group = names("types"), names("mood"), names("amount"), names("grp")
    topic, target = f"shop.public.{table}", f"core.{table}"
    execute(shop_db, TYPES_DDL, mood, amount, table, mood, amount)
    execute(shop_db, "ALTER TABLE public.{} REPLICA IDENTITY FULL", table)
    for row in ROWS:
        insert(shop_db, table, row)
    execute(shop_db, "INSERT INTO public.{} (id) VALUES (5)", table)  # NULL in every column
    # a 1 MB TOASTed value that stays unchanged when another column of its row is updated
    execute(
        shop_db,
        "INSERT INTO public.{} (id, t, big) SELECT 6, 'toast', string_agg(md5(g::text), '') "
        "FROM generate_series(1, 32768) g",
        table,
    )
    events = len(ROWS) + 2
    # updates: swap lower and upper limits, NULL a full row, change the TOAST row's other column
    execute(
        shop_db,
        f"UPDATE public.{{}} t SET ({COLUMNS}) = (SELECT {COLUMNS} FROM public.{{}} s WHERE s.id = 3 - t.id) "
        "WHERE id IN (1, 2)",
        table,
        table,
    )
    execute(shop_db, f"UPDATE public.{{}} SET ({COLUMNS}) = (SELECT {COLUMNS} FROM public.{{}} WHERE id = 5) "
            "WHERE id = 3", table, table)  # fmt: skip
    execute(shop_db, "UPDATE public.{} SET t = 'toast, updated', i4 = 42 WHERE id = 6", table)
    insert(shop_db, table, ROWS[2].replace("(3,", "(7,", 1))
    execute(shop_db, "DELETE FROM public.{} WHERE id = 4", table)
    events += 2 + 1 + 1 + 1 + 2
    wait_for_records(lab.kafka_bootstrap, topic, events, timeout=120)

    summary = replicate([f"public.{table}"], group=group, target_schema="core")
    assert summary["dead_letters"] == 0, summary
    source, warehouse, columns = source_and_target_text(shop_db, warehouse_db, table, target)
    assert [r[0] for r in source] == ["1", "2", "3", "5", "6", "7"]
    assert_equal_as_text(source, warehouse, columns)
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT length(big), md5(big) FROM core.{} WHERE id = 6").format(sql.Identifier(table))
        )
        (length, _digest) = cur.fetchone()
    assert length == 32768 * 32

    # a second interval: more changes after the first load, same result
    execute(shop_db, f"UPDATE public.{{}} t SET ({COLUMNS}) = (SELECT {COLUMNS} FROM public.{{}} s WHERE s.id = 1) "
            "WHERE id IN (5, 7)", table, table)  # fmt: skip
    execute(shop_db, "UPDATE public.{} SET i8 = -1 WHERE id = 6", table)
    execute(shop_db, "DELETE FROM public.{} WHERE id = 2", table)
    events += 2 + 1 + 2
    wait_for_records(lab.kafka_bootstrap, topic, events, timeout=120)
    replicate([f"public.{table}"], group=group, target_schema="core")
    source, warehouse, columns = source_and_target_text(shop_db, warehouse_db, table, target)
    assert [r[0] for r in source] == ["1", "3", "5", "6", "7"]
    assert_equal_as_text(source, warehouse, columns)
    # the enum arrives as text, the domain as its base type (cdclab.cdc.coltypes)
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname IN ('mood', 'amount') ORDER BY attname",
            (target,),
        )
        assert cur.fetchall() == [("amount", "numeric(10,2)"), ("mood", "text")]


@pytest.mark.parametrize(
    ("ddl", "column", "type_"),
    [
        ("flags bit varying(8)", "flags", "bit varying(8)"),
        ("at_local time with time zone", "at_local", "time with time zone"),
        ("spot point", "spot", "point"),
        ("spans tsrange[]", "spans", "tsrange[]"),
    ],
)
def test_a_type_that_cannot_be_replicated_is_refused_before_any_row_is_written(
    lab, names, shop_db, warehouse_db, ddl, column, type_
):
    table, group = names("refused"), names("grp")
    execute(shop_db, f"CREATE TABLE public.{{}} (id integer PRIMARY KEY, ok text, {ddl})", table)
    execute(shop_db, "INSERT INTO public.{} (id, ok) VALUES (1, 'a')", table)
    wait_for_records(lab.kafka_bootstrap, f"shop.public.{table}", 1, timeout=120)
    with pytest.raises(UnsupportedColumnType) as err:
        replicate([f"public.{table}"], group=group, target_schema="core")
    message = str(err.value)
    assert f"public.{table}.{column} has type {type_}" in message
    assert "Remedy:" in message
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f"core.{table}",))
        assert cur.fetchone() == (None,), "no target was created"
        cur.execute("SELECT count(*) FROM state.kafka_offsets WHERE consumer_group = %s", (group,))
        assert cur.fetchone() == (0,), "no offset was stored"


def test_a_value_debezium_cannot_carry_is_dead_lettered_not_written_wrong(lab, names, shop_db, warehouse_db):
    """Two values no column type announces: a two-dimensional text array (Debezium writes Java object
    names as its elements) and a timestamp past 294247-01-10 (its microseconds overflow a Java long)."""
    table, group = names("values"), names("grp")
    execute(shop_db, "CREATE TABLE public.{} (id integer PRIMARY KEY, tags text[], at timestamp)", table)
    with shop_db.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO public.{} VALUES (1, %s, %s), (2, %s, %s), (3, %s, %s)").format(
                sql.Identifier(table)
            ),
            (
                ["a", None],
                "2026-01-01 00:00:00.000001",
                [["a", "b"], ["c", None]],
                None,
                None,
                "294270-01-01",
            ),
        )
    wait_for_records(lab.kafka_bootstrap, f"shop.public.{table}", 3, timeout=120)
    summary = replicate([f"public.{table}"], group=group, target_schema="core")
    assert summary["dead_letters"] == 2, summary
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT record_key, reason FROM dlq.kafka_records WHERE consumer_group = %s ORDER BY kafka_offset",
            (group,),
        )
        letters = cur.fetchall()
        cur.execute(
            sql.SQL("SELECT id, tags::text, at::text FROM core.{} ORDER BY id").format(sql.Identifier(table))
        )
        assert cur.fetchall() == [(1, "{a,NULL}", "2026-01-01 00:00:00.000001")]
    assert '"id":2' in letters[0][0] and "multi-dimensional" in letters[0][1]
    assert '"id":3' in letters[1][0] and "overflowed" in letters[1][1]
