"""Type-faithful CDC, one test per type group: a table in `shop` per group, with values at the edges,
changed by inserts, updates (edge to edge, NULL to values, values to NULL) and deletes, travels through
the lab's Debezium connector and Kafka into `warehouse` by ``cdclab.cdc.pipeline.replicate`` in two
intervals; after each, ``col::text`` is equal in source and target for every row and column. Types the
lab cannot replicate losslessly are refused before any row is written (the last tests).

All group tables are created and replicated by one module fixture (one run for all of them); each test
asserts its own table. The machinery is in ``_cdc_types_helpers``; docs/cdc_types.md lists the groups.
The tests drop their tables, types, targets, offsets and dead letters; the topics stay (their names are
unique): the connector's producer re-creates a deleted topic when it refreshes its metadata
(``auto.create.topics.enable``), so deleting them does not stick."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql

from cdclab.cdc.coltypes import UnsupportedColumnType, require_target_types
from cdclab.cdc.consumer import end_offsets
from cdclab.cdc.pipeline import replicate
from cdclab.testing.fence import cdc_fence
from tests.integration._cdc_helpers import published

from ._cdc_types_helpers import (
    Group,
    GroupTable,
    dead_letters,
    ident,
    require_lab_connector_settings,
    text_differences,
)

LOG_SERVICES = ["connect"]

BIT64_MIN, BIT64_MAX = "B'" + "0" * 63 + "1'", "B'1" + "0" * 62 + "1'"

GROUPS = [
    Group(
        "integers",
        {"i2": "smallint", "i4": "integer", "i8": "bigint"},
        [
            "-32768, -2147483648, -9223372036854775808",
            "32767, 2147483647, 9223372036854775807",
            "0, -1, 1",
        ],
    ),
    Group(
        "numeric",
        {"n": "numeric", "n2": "numeric(12, 4)", "n38": "numeric(38, 0)", "nf": "numeric(5, 5)"},
        [
            "'NaN', -99999999.9999, -99999999999999999999999999999999999999, -0.99999",
            "'123456789012345678901234567890.123456789012345678901234567890', 99999999.9999, "
            "99999999999999999999999999999999999999, 0.99999",
            "'Infinity', 'NaN', 0, 0.00001",
            "'-Infinity', 1.5, 1, 0",
            "0.000000000000000000000000000001, -0.0001, -1, -0.00001",
            "1.50, 0, 12, 0.1",  # the scale of an unconstrained numeric is kept: 1.50, not 1.5
            "1e300, 0.0001, 10, 0",
            "0.000, 42, -12, 0.5",
        ],
    ),
    Group(
        "floats",
        {"f4": "real", "f8": "double precision"},
        [
            "'NaN', 'NaN'",
            "'Infinity', '-Infinity'",
            "'-Infinity', 'Infinity'",
            "3.4028235e38, 1.7976931348623157e308",
            "-3.4028235e38, -1.7976931348623157e308",
            "1.17549435e-38, 2.2250738585072014e-308",
            "1e-45, 5e-324",  # the smallest subnormals
            "'-0', '-0'",
            "0.1, 0.1",
            "1.2345679, 1.2345678901234567",
        ],
    ),
    Group(
        "money_boolean",
        {"m": "money", "b": "boolean"},
        ["'-92233720368547758.08', false", "'92233720368547758.07', true", "0, true", "'-0.01', false"],
    ),
    Group(
        "text",
        {"t": "text", "vc": "varchar(20)", "ch": "char(5)", "c1": "char"},
        [
            "'', '', '', ''",
            "'Zoë 🐘 \"double\" ''single'' \\ back\nnew line\ttab', 'ünïcödé 🐘 ''q''', 'ab', '🐘'",
            "' padded ', ' ', 'a b', ' '",
            "'NULL', 'null', 'NULL', 'N'",
            "repeat('ü🐘', 5000), repeat('x', 20), 'abcde', '\"'",
        ],
    ),
    Group(
        "bytea",
        {"ba": "bytea", "bb": "bytea"},
        [
            "'\\x', '\\x00'",
            "'\\xdeadbeef00ff', '\\xff'",
            "decode(repeat('00ff5c27', 25000), 'hex'), '\\x5c'",  # 100 kB with backslashes and quotes
        ],
    ),
    Group(
        "temporal",
        {
            "d": "date",
            "tm": "time",
            "tm3": "time(3)",
            "tm0": "time(0)",
            "ts": "timestamp",
            "ts0": "timestamp(0)",
            "ts3": "timestamp(3)",
            "tstz": "timestamptz",
            "tstz3": "timestamptz(3)",
        },
        [
            "'4713-01-01 BC', '00:00:00', '00:00:00', '00:00:00', '4713-01-01 00:00:00 BC', "
            "'4713-01-01 00:00:00 BC', '4713-01-01 00:00:00.001 BC', '4713-01-01 00:00:00+00 BC', "
            "'4713-01-01 00:00:00.001+00 BC'",
            # timestamp(4..6) is exact up to 294246 (Debezium's microseconds in a Java long), the rest
            # up to PostgreSQL's maximum
            "'5874897-12-31', '24:00:00', '23:59:59.999', '23:59:59', '294246-12-31 23:59:59.999999', "
            "'294276-12-31 23:59:59', '294276-12-31 23:59:59.999', '294276-12-31 23:59:59.999999+00', "
            "'294276-12-31 23:59:59.999+00'",
            "'2000-02-29', '12:34:56.000001', '12:34:56.001', '12:34:56', '1999-12-31 23:59:59.999999', "
            "'1970-01-01 00:00:00', '1970-01-01 00:00:00.001', '2026-10-25 01:30:00.000001+02', "
            "'1969-12-31 23:59:59.999+00'",
            "'infinity', '23:59:59.999999', '00:00:00.001', '00:00:01', 'infinity', '-infinity', "
            "'-infinity', '-infinity', 'infinity'",
            "'-infinity', '00:00:00.000001', '12:00:00', '12:00:00', '1969-12-31 23:59:59.999999', "
            "'infinity', 'infinity', 'infinity', '-infinity'",
            "'1970-01-01', '00:00:00', '00:00:00', '00:00:00', '0001-01-01 00:00:00 BC', "
            "'0001-01-01 00:00:00', '1000-01-01 00:00:00.999 BC', '0001-12-31 23:59:59.999999+00 BC', "
            "'2026-03-29 02:30:00.5+05:30'",
        ],
    ),
    Group(
        "interval",
        {"iv": "interval", "ym": "interval year to month"},
        [
            "'-178000000 years', '-178000000 years'",
            "'178000000 years', '178000000 years'",
            "'-1 years -2 mons +3 days -04:05:06.000001', '-1 years +2 mons'",
            "'1 mon 1 day 00:00:00.000001', '0'",
            "'-00:00:00.000001', '1 mon'",
            # hours at the limit of pgjdbc's PGInterval (an int): a larger time part stops the connector
            "'2147483647:59:59.999999', '-1 mon'",
            "'-2147483647:59:59.999999', '1 year'",
            "'-2147483648 days', '11 mons'",
            "'0', '-11 mons'",
        ],
    ),
    Group(
        "uuid_json",
        {"u": "uuid", "js": "json", "jb": "jsonb"},
        [
            "'00000000-0000-0000-0000-000000000000', '{}', '{}'",
            '\'ffffffff-ffff-ffff-ffff-ffffffffffff\', \'{"b": [1, 2.50, null], "a": "ü \\"q\\""}\', '
            '\'{"b": [1, 2.50, null], "a": "ü \\"q\\""}\'',
            "'123e4567-e89b-12d3-a456-426614174000', '\"json string\"', '[1, \"two\", {\"three\": 3}]'",
            # json keeps its text (spaces, duplicate keys, escapes); jsonb normalises it
            '\'00000000-0000-4000-8000-000000000000\', \' {"a":1,  "a" : 2, "\\u00e9": "\\\\"} \', '
            '\'{"a":1, "a":2, "\\u00e9": 1e-7}\'',
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'null', 'null'",
        ],
    ),
    Group(
        "arrays",
        {
            "ai2": "smallint[]",
            "ai": "integer[]",
            "ab": "bigint[]",
            "at": "text[]",
            "av": "varchar(8)[]",
            "ac": "char(2)[]",
        },
        [
            "'{}', '{}', '{}', '{}', '{}', '{}'",
            "'{1,NULL,-32768}', '{1,NULL,-2147483648}', '{9223372036854775807,NULL}', "
            '\'{"a",NULL,"","q\\"uote","ü 🐘","NULL"}\', \'{"x",NULL}\', \'{ab,NULL," "}\'',
            "'{NULL}', '{NULL}', '{NULL,NULL}', '{NULL}', '{NULL}', '{NULL}'",
            "'{32767}', '{0,-1}', '{-9223372036854775808}', '{\"back\\\\slash\",\"com,ma\",\"{br}\",\" \"}', "
            "'{\"\"}', '{\"\"}'",
        ],
    ),
    Group(
        "enums_domains",
        {"mood": "{mood}", "amount": "{amount}", "code": "{code}"},
        [
            "'sad', 0, ''",
            "'it''s \"complicated\" 🙃', 99999999.99, 'ünïcödé 🐘'",
            "'happy', 12.5, 'NULL'",
        ],
    ),
    Group(
        "network_bits",
        {
            "ip": "inet",
            "net": "cidr",
            "mac": "macaddr",
            "mac8": "macaddr8",
            "b1": "bit(1)",
            "b10": "bit(10)",
            "b64": "bit(64)",
        },
        [
            "'0.0.0.0', '0.0.0.0/0', '00:00:00:00:00:00', '00:00:00:00:00:00:00:00', B'0', B'0000000000', "
            f"B'{'0' * 64}'",
            "'ffff:ffff::1/128', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff', B'1', "
            f"B'1000000001', B'{'1' * 64}'",
            "'192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05', B'0', "
            f"B'0101010101', {BIT64_MIN}",
            "'::ffff:1.2.3.4', '::/0', '01:02:03:04:05:06', '01:02:03:04:05:06:07:08', B'1', B'1111111111', "
            f"{BIT64_MAX}",
        ],
    ),
    Group(
        "ranges",
        {
            "r4": "int4range",
            "r8": "int8range",
            "rn": "numrange",
            "rts": "tsrange",
            "rtz": "tstzrange",
            "rd": "daterange",
        },
        [
            "'empty', '(,)', '[-1.5,2.5]', '[4713-01-01 00:00:00 BC,2026-01-01)', '(,infinity)', 'empty'",
            "'[-2147483648,2147483647)', '[1,9223372036854775807)', '(,)', '[2026-03-29 01:00:00,)', "
            "'[2026-01-01 00:00:00.000001+00,2026-01-02 00:00:00+00)', '[2026-01-01,infinity)'",
            "'[0,1)', '[-9223372036854775808,0]', '(-0.5,0.5)', "
            "'[2026-01-01 00:00:00.000001,2026-01-01 00:00:00.000002]', "
            "'[2026-03-29 01:59:59.999999+00,2026-03-29 04:00:00+02)', '[2026-03-29,2026-03-30)'",
            "'(,0)', '(0,)', '[NaN,NaN]', '(,)', '(-infinity,infinity)', '(-infinity,2026-01-01]'",
        ],
    ),
    Group(
        "hstore",
        {"h": "hstore"},
        [
            "''",
            '\'"a"=>"1", "n"=>NULL\'',
            # the text 'NULL' is not NULL; quotes, backslashes, '=>' and commas inside keys and values
            '\'"NULL"=>"NULL", "q\\"k"=>"b\\\\s", ""=>"", "a=>b, c"=>"=>,"\'',
            '\'"ü 🐘"=>"ünïcödé", "sp ace"=>" ", "nl"=>"line\nbreak"\'',
        ],
    ),
]
# NULL in every column: a table with one column of each group's every type
NULLS = Group(
    "nulls",
    {f"{g.name}_{c}": t for g in GROUPS for c, t in g.columns.items()},
    [", ".join(g.rows[i] for g in GROUPS) for i in (0, 1)],
)
TOAST_ROWS = 32768  # md5 chunks of 32 characters: 1 MB


class TypesRun:
    """What the module fixture did: the group tables, the consumer group, the replication summaries."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self.group = f"grp_types_{suffix}"
        self.types = {k: f"{k}_{suffix}" for k in ("mood", "amount", "code")}
        self.tables: dict[str, GroupTable] = {}
        self.summaries: list[dict] = []
        self.seconds = 0.0


def _create_types(conn, run: TypesRun) -> None:
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TYPE public.{} AS ENUM ('sad', 'ok', 'happy', 'it''s \"complicated\" 🙃');"
                "CREATE DOMAIN public.{} AS numeric(10, 2) CHECK (VALUE >= 0);"
                "CREATE DOMAIN public.{} AS varchar(10) CHECK (VALUE <> 'forbidden')"
            ).format(*(sql.Identifier(run.types[k]) for k in ("mood", "amount", "code")))
        )


def _create_table(conn, table: str, columns: dict[str, str], run: TypesRun) -> None:
    cols = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t.format(**run.types))) for c, t in columns.items()
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("CREATE TABLE public.{} (id integer PRIMARY KEY, {})").format(sql.Identifier(table), cols)
        )


def _toast_script(conn, gt: GroupTable) -> None:
    """1 MB values in text, bytea, jsonb and hstore, unchanged while another column of the row is
    updated (REPLICA IDENTITY DEFAULT: Debezium sends a placeholder for them)."""
    gt.run(
        conn,
        "INSERT INTO {t} (id, i4, big, bin, doc, h) SELECT 1, 0, string_agg(md5(g::text), ''), "
        "decode(string_agg(md5(g::text), ''), 'hex'), jsonb_object_agg(g, md5(g::text)), "
        "hstore(array_agg(g::text), array_agg(md5(g::text))) FROM generate_series(1, {n}) g",
        n=sql.Literal(TOAST_ROWS),
    )
    gt.run(conn, "INSERT INTO {t} (id, i4, big) VALUES (2, 0, 'small')")
    gt.run(conn, "UPDATE {t} SET i4 = i4 + 1")


def _toast_phase2(conn, gt: GroupTable) -> None:
    gt.run(conn, "UPDATE {t} SET i4 = i4 + 1 WHERE id = 1")
    gt.run(conn, "UPDATE {t} SET big = big || 'x' WHERE id = 2")


TOAST = Group("toast", {"i4": "integer", "big": "text", "bin": "bytea", "doc": "jsonb", "h": "hstore"}, [])


@pytest.fixture(scope="module")
def types_run(lab) -> Iterator[TypesRun]:
    require_lab_connector_settings(lab)
    run = TypesRun(uuid.uuid4().hex[:6])
    shop = psycopg2.connect(lab.pg_dsn("shop"))
    shop.autocommit = True
    warehouse = psycopg2.connect(lab.pg_dsn("warehouse"))
    warehouse.autocommit = True
    try:
        for db in (shop, warehouse):
            with db.cursor() as cur:
                cur.execute("SELECT current_database() FROM pg_extension WHERE extname = 'hstore'")
                assert cur.fetchone(), (
                    f"the {db.info.dbname} database lacks the hstore extension: infra/postgres/init.sql "
                    "creates it at lab start"
                )
        _create_types(shop, run)
        for g in [*GROUPS, NULLS, TOAST]:
            gt = GroupTable(g, f"types_{g.name}_{run.suffix}")
            _create_table(shop, gt.table, g.columns, run)
            if g is not TOAST:
                gt.run(shop, "ALTER TABLE {t} REPLICA IDENTITY FULL")
            run.tables[g.name] = gt
        started = time.monotonic()
        for interval in (1, 2):
            for gt in run.tables.values():
                if gt.group is TOAST:
                    (_toast_script if interval == 1 else _toast_phase2)(shop, gt)
                else:
                    (gt.phase1 if interval == 1 else gt.phase2)(shop)
            # one CDC fence for all tables (it was a topic read per table, ~1 s each): the connector
            # publishes in commit order with one task, so every change above is on Kafka once the fence
            # row is; each topic's end offset (records + transaction markers) then covers its records
            cdc_fence(lab, timeout=180)
            ends = end_offsets(lab.kafka_bootstrap, [gt.topic for gt in run.tables.values()])
            for gt in run.tables.values():
                end = sum(v for (topic, _), v in ends.items() if topic == gt.topic)
                assert end >= gt.records, f"{gt.topic}: end offset {end}, {gt.records} records written"
            run.summaries.append(
                replicate(
                    [f"public.{gt.table}" for gt in run.tables.values()],
                    group=run.group,
                    target_schema="core",
                )
            )
            for gt in run.tables.values():
                ids, diffs = text_differences(shop, warehouse, f"public.{gt.table}", f"core.{gt.table}")
                gt.ids.append(ids)
                gt.diffs.append(diffs + dead_letters(warehouse, run.group, gt.topic))
        run.seconds = time.monotonic() - started
        print(f"\ncdclab: {len(run.tables)} type tables replicated in two intervals in {run.seconds:.0f} s")
        yield run
    finally:
        tables = [gt.table for gt in run.tables.values()]
        with warehouse.cursor() as cur:
            for t in tables:  # the target and its delete ledger (cdclab.cdc.merge.ensure_target)
                for name in (t, f"{t}__deleted"):
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(f"core.{name}")))
            cur.execute("DELETE FROM state.kafka_offsets WHERE consumer_group = %s", (run.group,))
            cur.execute("DELETE FROM dlq.kafka_records WHERE consumer_group = %s", (run.group,))
        with shop.cursor() as cur:
            for t in tables:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(f"public.{t}")))
            for k in ("mood",):
                cur.execute(sql.SQL("DROP TYPE IF EXISTS {}").format(ident(f"public.{run.types[k]}")))
            for k in ("amount", "code"):
                cur.execute(sql.SQL("DROP DOMAIN IF EXISTS {}").format(ident(f"public.{run.types[k]}")))
        shop.close()
        warehouse.close()


def assert_group_replicated(run: TypesRun, name: str) -> None:
    gt = run.tables[name]
    n = len(gt.group.rows)
    expected = [
        [str(i) for i in [*range(1, n + 2), n + 3]],  # row n+2 was deleted
        [str(i) for i in [*range(2, n + 2), n + 3]],  # then row 1
    ]
    for interval, (ids, diffs) in enumerate(zip(gt.ids, gt.diffs, strict=True), start=1):
        assert ids == expected[interval - 1], f"{name}: source rows after interval {interval}: {ids}"
        assert not diffs, f"{name} ({gt.table}), after replication interval {interval}:\n" + "\n".join(diffs)


def test_integers_at_their_limits(types_run):
    assert_group_replicated(types_run, "integers")


def test_numeric_with_and_without_precision_nan_and_infinity(types_run):
    assert_group_replicated(types_run, "numeric")


def test_real_and_double_nan_infinity_subnormals_and_negative_zero(types_run):
    assert_group_replicated(types_run, "floats")


def test_money_and_boolean(types_run):
    assert_group_replicated(types_run, "money_boolean")


def test_text_varchar_char_unicode_empty_and_quotes(types_run):
    assert_group_replicated(types_run, "text")


def test_bytea_empty_and_binary(types_run):
    assert_group_replicated(types_run, "bytea")


def test_dates_times_and_timestamps_microseconds_extreme_years_and_infinity(types_run):
    """time with time zone is refused (see the refusal test): Debezium normalises it to UTC."""
    assert_group_replicated(types_run, "temporal")


def test_interval_negative_and_microseconds(types_run):
    assert_group_replicated(types_run, "interval")


def test_uuid_json_and_jsonb(types_run):
    assert_group_replicated(types_run, "uuid_json")


def test_arrays_with_null_elements_and_empty(types_run):
    assert_group_replicated(types_run, "arrays")


def test_enums_map_to_text_and_domains_to_their_base_type(types_run, warehouse_db):
    assert_group_replicated(types_run, "enums_domains")
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attname IN ('mood', 'amount', 'code') ORDER BY attname",
            (f"core.{types_run.tables['enums_domains'].table}",),
        )
        assert cur.fetchall() == [
            ("amount", "numeric(10,2)"),
            ("code", "character varying(10)"),
            ("mood", "text"),
        ]


def test_network_addresses_and_fixed_bit_strings(types_run):
    """bit varying is refused (see the refusal test): Debezium drops its length."""
    assert_group_replicated(types_run, "network_bits")


def test_built_in_ranges(types_run):
    assert_group_replicated(types_run, "ranges")


def test_hstore_with_null_values_quotes_backslashes_and_empty(types_run):
    assert_group_replicated(types_run, "hstore")


def test_null_in_every_column_of_every_type(types_run):
    assert_group_replicated(types_run, "nulls")


def test_one_megabyte_toasted_values_stay_when_another_column_is_updated(types_run, warehouse_db):
    gt = types_run.tables["toast"]
    for interval, (ids, diffs) in enumerate(zip(gt.ids, gt.diffs, strict=True), start=1):
        assert ids == ["1", "2"], ids
        assert not diffs, f"toast ({gt.table}), after replication interval {interval}:\n" + "\n".join(diffs)
    with warehouse_db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT i4, length(big), length(bin) FROM {} WHERE id = 1").format(
                ident(f"core.{gt.table}")
            )
        )
        assert cur.fetchone() == (2, TOAST_ROWS * 32, TOAST_ROWS * 16)
    assert all(s["dead_letters"] == 0 for s in types_run.summaries), types_run.summaries


def test_an_hstore_target_in_a_database_without_the_extension_is_refused_with_the_remedy(lab, warehouse_db):
    """The check runs before the target is created; the airflow database has no hstore."""
    types = {"id": "integer", "h": "hstore"}
    with warehouse_db.cursor() as cur:
        require_target_types(cur, "core.t", types)  # the warehouse has it: no error
    conn = psycopg2.connect(lab.pg_dsn("airflow"))
    try:
        with conn.cursor() as cur, pytest.raises(UnsupportedColumnType) as err:
            require_target_types(cur, "core.t", types)
    finally:
        conn.close()
    assert "core.t.h has type hstore" in str(err.value)
    assert "CREATE EXTENSION IF NOT EXISTS hstore" in str(err.value)


def execute(conn, statement: str, *idents: str) -> None:
    with conn.cursor() as cur:
        cur.execute(sql.SQL(statement).format(*map(sql.Identifier, idents)))


@pytest.mark.parametrize(
    ("ddl", "column", "type_"),
    [
        ("flags bit varying(8)", "flags", "bit varying(8)"),
        ("at_local time with time zone", "at_local", "time with time zone"),
        ("spot point", "spot", "point"),
        ("spans tsrange[]", "spans", "tsrange[]"),
        ("maps hstore[]", "maps", "hstore[]"),
    ],
)
def test_a_type_that_cannot_be_replicated_is_refused_before_any_row_is_written(
    lab, names, shop_db, warehouse_db, ddl, column, type_
):
    table, group = names("refused"), names("grp")
    execute(shop_db, f"CREATE TABLE public.{{}} (id integer PRIMARY KEY, ok text, {ddl})", table)
    try:
        execute(shop_db, "INSERT INTO public.{} (id, ok) VALUES (1, 'a')", table)
        published(lab, f"shop.public.{table}", 1)
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
    finally:
        execute(shop_db, "DROP TABLE IF EXISTS public.{}", table)


def test_a_value_debezium_cannot_carry_is_dead_lettered_not_written_wrong(lab, names, shop_db, warehouse_db):
    """Two values no column type announces: a two-dimensional text array (Debezium writes Java object
    names as its elements) and a timestamp past 294247-01-10 (its microseconds overflow a Java long)."""
    table, group = names("values"), names("grp")
    execute(shop_db, "CREATE TABLE public.{} (id integer PRIMARY KEY, tags text[], at timestamp)", table)
    try:
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
        published(lab, f"shop.public.{table}", 3)
        summary = replicate([f"public.{table}"], group=group, target_schema="core")
        assert summary["dead_letters"] == 2, summary
        with warehouse_db.cursor() as cur:
            cur.execute(
                "SELECT record_key, reason FROM dlq.kafka_records WHERE consumer_group = %s ORDER BY kafka_offset",
                (group,),
            )
            letters = cur.fetchall()
            cur.execute(
                sql.SQL("SELECT id, tags::text, at::text FROM core.{} ORDER BY id").format(
                    sql.Identifier(table)
                )
            )
            assert cur.fetchall() == [(1, "{a,NULL}", "2026-01-01 00:00:00.000001")]
        assert '"id":2' in letters[0][0] and "multi-dimensional" in letters[0][1]
        assert '"id":3' in letters[1][0] and "overflowed" in letters[1][1]
    finally:
        execute(shop_db, "DROP TABLE IF EXISTS public.{}", table)
        with warehouse_db.cursor() as cur:
            for name in (table, f"{table}__deleted"):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS core.{}").format(sql.Identifier(name)))
