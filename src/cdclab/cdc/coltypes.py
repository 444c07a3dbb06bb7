"""Column types: how each PostgreSQL type travels through Debezium, and how to turn it back, exactly.

The lab connector (``connectors/shop-postgres-source.json``) writes JSON without schemas, so an event
does not say that ``19000`` is a date or that ``"3q2+7w=="`` is a bytea. The *source catalog* does:
:func:`table_columns` reads each column's type (domains resolved to their base type, enums with their
labels) and :func:`plan_column` decides, before any row is written, how the column is replicated.

Vocabulary:
- *target type*: the column's type in the warehouse. Built-in types keep the source's
  ``format_type`` (``numeric(12,2)``, ``character(3)``, ``timestamp(3) without time zone``).
  User-defined **enums map to ``text``** (an explicit choice: the warehouse needs no copy of the
  source's types, a label added in the source needs no DDL in the warehouse, and ``col::text`` is the
  same; the enum's sort order is not kept). **Domains map to their base type** (the source enforces
  the domain's constraints; the warehouse keeps the values). The **hstore** extension's type stays
  ``hstore`` (the warehouse has the extension too).
- *codec*: the function that turns a value as Debezium wrote it into a literal PostgreSQL reads back as
  the same value (see :data:`CODECS`). The settings they assume are the lab connector's:
  ``time.precision.mode=adaptive_time_microseconds``, ``decimal.handling.mode=string``,
  ``interval.handling.mode=string``, ``binary.handling.mode=bytes`` (base64 in JSON),
  ``hstore.handling.mode=json`` (:data:`TYPE_SETTINGS`).
- *refusal*: a type the lab cannot replicate losslessly raises :class:`UnsupportedColumnType` naming
  the table, the column, the type and the remedy, before the target is created or a row written.
  Debezium silently *drops* columns of types it does not know, so anything not in the allowlist is
  refused rather than guessed.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# The Debezium source settings the codecs assume, and Debezium's defaults for those a config leaves out.
# The lab connector (connectors/shop-postgres-source.json) and `make bench` (bench/cdc_sink.py) use them;
# tests/unit/test_cdc_type_settings.py holds both to them.
TYPE_SETTINGS: dict[str, str] = {
    "time.precision.mode": "adaptive_time_microseconds",
    "decimal.handling.mode": "string",
    "interval.handling.mode": "string",
    "binary.handling.mode": "bytes",
    "hstore.handling.mode": "json",
}
DEBEZIUM_DEFAULTS: dict[str, str] = {
    "time.precision.mode": "adaptive",
    "decimal.handling.mode": "precise",
    "interval.handling.mode": "numeric",
    "binary.handling.mode": "bytes",
    "hstore.handling.mode": "json",
}


def type_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The type settings a Debezium source config ends up with (Debezium's default where it sets none)."""
    return {key: str(config.get(key, DEBEZIUM_DEFAULTS[key])) for key in TYPE_SETTINGS}


UNAVAILABLE = "__debezium_unavailable_value"  # same as cdclab.cdc.events.UNAVAILABLE (no import cycle)
UNAVAILABLE_B64 = base64.b64encode(UNAVAILABLE.encode()).decode()


class UnsupportedColumnType(ValueError):
    """A source column has a type the lab cannot replicate without loss. Raised before any row is written."""


@dataclass(frozen=True)
class SourceColumn:
    """One column of a source table, as the source catalog describes it."""

    name: str
    sql_type: str  # format_type(atttypid, atttypmod) of the column itself
    base: str  # pg_type.typname after resolving domains: int4, date, _int4, bytea, ...
    base_sql_type: str  # format_type of the base type with the domain's typmod
    kind: str  # typtype of the base: b (base), e (enum), r (range), c (composite), d never (resolved), ...
    schema: str  # namespace of the base type: pg_catalog for built-ins
    typmod: int
    element: str | None = None  # typname of an array's element (after domains)
    element_kind: str | None = None
    is_domain: bool = False
    attnum: int = 0  # the column's number in the source table: it survives a RENAME COLUMN


@dataclass(frozen=True)
class ColumnPlan:
    name: str
    target_type: str
    codec: str  # a key of CODECS


# ----------------------------------------------------------------------------- value codecs (pure)

_EPOCH_OFFSET = 719468  # days from 0000-03-01 to 1970-01-01 (proleptic Gregorian)
# Debezium turns 'infinity'/'-infinity' dates into PostgreSQL's internal sentinels read as epoch days
# (INT_MAX/INT_MIN days from 2000-01-01, wrapped to 32 bits): LocalDate -5877611-06-21 and -06-22.
DATE_POS_INFINITY = -2147472692
DATE_NEG_INFINITY = -2147472691
# pgjdbc's PGStatement.DATE_POSITIVE_INFINITY / DATE_NEGATIVE_INFINITY, read as micros (MicroTimestamp)
TS_POS_INFINITY_MICROS = 9223372036825200000
TS_NEG_INFINITY_MICROS = -9223372036832400000


def civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of a count of days since 1970-01-01 in the proleptic Gregorian calendar, for any
    integer (astronomical years: 0 is 1 BC). Howard Hinnant's algorithm."""
    z = days + _EPOCH_OFFSET
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if month <= 2 else 0), month, day


def days_from_civil(year: int, month: int, day: int) -> int:
    y = year - (1 if month <= 2 else 0)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - _EPOCH_OFFSET


PG_MIN_TIMESTAMP_MICROS = -210866803200000000  # 4714-11-24 00:00:00 BC
PG_MAX_TIMESTAMP_MICROS = 9224318015999999999  # 294276-12-31 23:59:59.999999
# Debezium saturates some overflowing timestamps to Long.MAX_VALUE (294247-01-10 04:00:54.775807)
JAVA_LONG_LIMITS = (2**63 - 1, -(2**63))


def _pg_date(year: int, month: int, day: int) -> tuple[str, str]:
    """(date text, era suffix) as PostgreSQL reads it: astronomical year 0 is '0001 ... BC'."""
    if year <= 0:
        return f"{1 - year:04d}-{month:02d}-{day:02d}", " BC"
    return f"{year:04d}-{month:02d}-{day:02d}", ""


def _literal(value: Any, positive: int, negative: int, finite: Callable[[int], str]) -> Any:
    """A Debezium integer temporal value as PostgreSQL text: ``None`` stays ``None``, the sentinels
    ``positive`` / ``negative`` become 'infinity' / '-infinity', any other number ``finite(number)``."""
    if value is None:
        return None
    number = int(value)
    if number == positive:
        return "infinity"
    if number == negative:
        return "-infinity"
    return finite(number)


@functools.lru_cache(maxsize=1 << 16)
def _date(days: int) -> str:
    """The text of a day number (cached: a date column repeats few distinct days across a batch)."""
    text, era = _pg_date(*civil_from_days(days))
    return text + era


def date_from_days(value: Any) -> Any:
    """io.debezium.time.Date (days since the epoch) -> 'YYYY-MM-DD[ BC]' or '[-]infinity'."""
    return _literal(value, DATE_POS_INFINITY, DATE_NEG_INFINITY, _date)


def _clock(micros_of_day: int) -> str:
    hours, rest = divmod(micros_of_day, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, micros = divmod(rest, 1_000_000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{micros:06d}"


def time_from_micros(value: Any) -> Any:
    """io.debezium.time.MicroTime (microseconds since midnight; 24:00:00 allowed) -> 'HH:MM:SS.ffffff'."""
    return None if value is None else _clock(int(value))


def _timestamp(micros: int) -> str:
    if not PG_MIN_TIMESTAMP_MICROS <= micros <= PG_MAX_TIMESTAMP_MICROS or micros in JAVA_LONG_LIMITS:
        # Debezium computes microseconds in a Java long: past 294247-01-10 the value overflows into
        # nonsense rather than failing; such a record is dead-lettered, never written wrong
        raise ValueError(
            f"timestamp value {micros} is outside PostgreSQL's range: Debezium overflowed it (timestamps "
            "after 294247-01-10 do not fit its microseconds)"
        )
    days, of_day = divmod(micros, 86_400_000_000)
    text, era = _pg_date(*civil_from_days(days))
    return f"{text} {_clock(of_day)}{era}"


def timestamp_from_micros(value: Any) -> Any:
    """io.debezium.time.MicroTimestamp (microseconds since the epoch, no zone) -> timestamp literal."""
    return _literal(value, TS_POS_INFINITY_MICROS, TS_NEG_INFINITY_MICROS, _timestamp)


def timestamp_from_millis(value: Any) -> Any:
    """io.debezium.time.Timestamp (milliseconds; columns declared timestamp(0..3)) -> timestamp literal."""
    return _literal(
        value,
        TS_POS_INFINITY_MICROS // 1000,
        -(-TS_NEG_INFINITY_MICROS // 1000),
        lambda millis: _timestamp(millis * 1000),
    )


_ISO = re.compile(
    r"^([+-]?)(\d{4,})-(\d{2})-(\d{2})T(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)(Z|[+-]\d{2}(?::?\d{2}){0,2})?$"
)


def zoned_timestamp(value: Any) -> Any:
    """io.debezium.time.ZonedTimestamp (ISO 8601, java.time's proleptic years: '+10000-...', '-4712-...')
    -> a literal PostgreSQL reads (years past 9999 without '+', year <= 0 as '... BC')."""
    if value is None or not isinstance(value, str):
        return value
    m = _ISO.match(value)
    if m is None:
        return value  # 'infinity', '-infinity', or already PostgreSQL's own text
    sign, year, month, day, clock, zone = m.groups()
    if not sign and len(year) == 4 and year != "0000":  # the common case: PostgreSQL reads the date as it is
        text, era = f"{year}-{month}-{day}", ""
    else:
        text, era = _pg_date(int(year) * (-1 if sign == "-" else 1), int(month), int(day))
    zone = "+00" if zone in (None, "Z") else zone
    return f"{text} {clock}{zone}{era}"


def bytea_from_base64(value: Any) -> Any:
    """binary.handling.mode=bytes through the JSON converter: base64 text -> the bytes."""
    if value is None:
        return None
    if value == UNAVAILABLE_B64:
        return UNAVAILABLE
    return base64.b64decode(value, validate=True)


def bits_codec(length: int) -> Callable[[Any], Any]:
    """io.debezium.data.Bits of a bit(n) column: little-endian bytes of the bit string read as a number
    (last character = bit 0), trimmed to the highest set bit -> the n-character bit string. bit(1) arrives
    as a boolean."""

    def decode(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool):
            return "1" if value else "0"
        number = int.from_bytes(base64.b64decode(value), "little")
        if number >= 1 << length:
            raise ValueError(f"a bit({length}) value has {number.bit_length()} bits")
        return format(number, f"0{length}b")

    return decode


# decimal.handling.mode=string writes numeric's special values as Java enum names
NUMERIC_SPECIALS = {"NAN": "NaN", "POSITIVE_INFINITY": "Infinity", "NEGATIVE_INFINITY": "-Infinity"}


def numeric_text(value: Any) -> Any:
    """numeric with decimal.handling.mode=string: exact text; ``NAN``/``POSITIVE_INFINITY``/... -> NaN/±Infinity."""
    return NUMERIC_SPECIALS.get(value, value) if isinstance(value, str) else value


_JAVA_ARRAY = re.compile(r"^\[+L[\w.$]+;@[0-9a-f]+$")


def text_array(value: Any) -> Any:
    """A one-dimensional text/varchar/char array as it is. Debezium cannot carry a multi-dimensional
    array: it writes Java object names (``[Ljava.lang.String;@3f8c94d9``) as the elements; such a record
    is refused (dead-lettered) rather than written wrong."""
    if isinstance(value, list) and any(isinstance(v, str) and _JAVA_ARRAY.match(v) for v in value):
        raise ValueError("a multi-dimensional array: Debezium sends only one-dimensional arrays intact")
    return value


def float_value(value: Any) -> Any:
    """real / double precision: JSON numbers as they are, except negative zero, which PostgreSQL reads as
    ``0`` when written as the literal ``-0.0`` (unary minus of a numeric zero): sent as the text ``-0``."""
    if isinstance(value, float) and value == 0.0 and math.copysign(1.0, value) < 0:
        return "-0"
    return value


HSTORE_TYPE = "hstore"
# Debezium's placeholder for an unchanged TOASTed hstore (hstore.handling.mode=json): a one-pair map
_HSTORE_UNAVAILABLE = {UNAVAILABLE: UNAVAILABLE}


def _hstore_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hstore_from_json(value: Any) -> Any:
    """hstore with ``hstore.handling.mode=json`` (Debezium's default): a JSON object as a string, values
    text or null (``map`` mode arrives as the object itself) -> hstore's text form, every key and value
    quoted and escaped (``"k"=>"v", "n"=>NULL``); ``{}`` -> the empty hstore. hstore prints its pairs in
    its own order, so the order of the JSON object does not matter."""
    if value is None:
        return None
    pairs = json.loads(value) if isinstance(value, str) else value
    if not isinstance(pairs, dict) or not all(isinstance(v, str) or v is None for v in pairs.values()):
        raise ValueError(f"an hstore value is not a JSON object of text or null values: {value!r:.200}")
    if pairs == _HSTORE_UNAVAILABLE:
        return UNAVAILABLE
    return ", ".join(
        f"{_hstore_quote(k)}=>{'NULL' if v is None else _hstore_quote(v)}" for k, v in pairs.items()
    )


def identity(value: Any) -> Any:
    return value


CODECS: dict[str, Callable[[Any], Any]] = {
    "identity": identity,
    "float": float_value,
    "hstore": hstore_from_json,
    "numeric": numeric_text,
    "text_array": text_array,
    "date": date_from_days,
    "time": time_from_micros,
    "timestamp_micros": timestamp_from_micros,
    "timestamp_millis": timestamp_from_millis,
    "timestamptz": zoned_timestamp,
    "bytea": bytea_from_base64,
}


_BITS: dict[str, Callable[[Any], Any]] = {}


def codec(name: str) -> Callable[[Any], Any]:
    if name.startswith("bits:"):
        if name not in _BITS:
            _BITS[name] = bits_codec(int(name.split(":", 1)[1]))
        return _BITS[name]
    return CODECS[name]


RowDecoder = Callable[[Mapping[str, Any] | None], "dict[str, Any] | None"]


def row_decoder(codecs: Mapping[str, str]) -> RowDecoder:
    """:func:`decode_row` for many rows of one table: the codecs are looked up once, and the columns
    whose codec is ``identity`` are not visited (the CDC sink decodes every image of every change)."""
    plan = tuple((col, codec(name)) for col, name in codecs.items() if name != "identity")

    def decode(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        out = dict(row)
        for col, fn in plan:
            value = out.get(col)
            if value is None or value == UNAVAILABLE:  # absent, NULL, or the unchanged-TOAST placeholder
                continue
            out[col] = fn(value)
        return out

    return decode


def decode_row(row: Mapping[str, Any] | None, codecs: Mapping[str, str]) -> dict[str, Any] | None:
    """Apply the columns' codecs to one row image; the unchanged-TOAST placeholder is left as it is."""
    return row_decoder(codecs)(row)


# ----------------------------------------------------------------------------- the plan per column

# built-in types whose Debezium JSON value PostgreSQL reads back as the same value, as it is
IDENTITY_TYPES = frozenset(
    {
        "int2", "int4", "int8", "oid",
        "money", "bool",
        "text", "varchar", "bpchar", "name",
        "uuid", "json", "jsonb", "xml",
        "inet", "cidr", "macaddr", "macaddr8",
        "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange",
    }
)  # fmt: skip
# arrays (one dimension) of these element types arrive as JSON arrays with NULL elements kept
ARRAY_ELEMENTS = frozenset({"int2", "int4", "int8", "text", "varchar", "bpchar"})

REFUSALS: dict[str, str] = {
    "varbit": "Debezium sends a bit varying as the bits' number without its length, so leading zeros are "
    "lost; use bit(n) or store the bits as text",
    "timetz": "Debezium sends a time with time zone normalised to UTC, so the source's offset is lost; "
    "use timestamptz, or time plus a separate offset column",
    "interval": "",  # decided by the connector's interval.handling.mode, see plan_column
    "tsvector": "Debezium's tsvector text is not guaranteed to keep positions and weights; "
    "replicate the document and rebuild the tsvector in the warehouse",
}


def _refuse(table: str, col: SourceColumn, why: str) -> UnsupportedColumnType:
    return UnsupportedColumnType(
        f"{table}.{col.name} has type {col.sql_type}, which the lab cannot replicate losslessly: {why}. "
        f"Remedy: change the column's type in the source (or exclude the table), then replicate again."
    )


def plan_column(table: str, col: SourceColumn) -> ColumnPlan:
    """The target type and codec of one source column, or :class:`UnsupportedColumnType`."""
    if col.kind == "e":
        return ColumnPlan(col.name, "text", "identity")
    if col.element is not None:
        if col.element in ARRAY_ELEMENTS:
            codec = "text_array" if col.element in ("text", "varchar", "bpchar") else "identity"
            return ColumnPlan(col.name, col.base_sql_type, codec)
        raise _refuse(
            table,
            col,
            f"arrays of {col.element} are not among the arrays the lab replicates exactly "
            f"({', '.join(sorted(ARRAY_ELEMENTS))}; Debezium sends arrays of enums as NULL)",
        )
    if col.base == HSTORE_TYPE and col.kind == "b":
        # the hstore extension's type (Debezium recognises it by this name): the warehouse needs the
        # extension too (infra/postgres/init.sql creates it in both databases)
        return ColumnPlan(col.name, HSTORE_TYPE, "hstore")
    if col.schema != "pg_catalog" or col.kind not in ("b", "r"):
        raise _refuse(
            table,
            col,
            "it is not a built-in type (Debezium drops or re-encodes extension, composite and "
            "user-defined types other than enums and domains)",
        )
    target = col.base_sql_type
    if col.base in IDENTITY_TYPES:
        return ColumnPlan(col.name, target, "identity")
    if col.base in ("float4", "float8"):
        return ColumnPlan(col.name, target, "float")
    if col.base == "numeric":
        return ColumnPlan(col.name, target, "numeric")
    if col.base == "bytea":
        return ColumnPlan(col.name, target, "bytea")
    if col.base == "date":
        return ColumnPlan(col.name, target, "date")
    if col.base == "time":
        return ColumnPlan(col.name, target, "time")
    if col.base == "timestamp":
        # adaptive_time_microseconds: timestamp(0..3) -> milliseconds, otherwise microseconds
        return ColumnPlan(
            col.name, target, "timestamp_millis" if 0 <= col.typmod <= 3 else "timestamp_micros"
        )
    if col.base == "timestamptz":
        return ColumnPlan(col.name, target, "timestamptz")
    if col.base == "bit":
        length = col.typmod if col.typmod > 0 else 1
        return ColumnPlan(col.name, target, f"bits:{length}")
    if col.base == "interval":
        return ColumnPlan(col.name, target, "identity")
    why = REFUSALS.get(col.base) or "Debezium has no lossless representation of it in the lab's settings"
    raise _refuse(table, col, why)


def require_target_types(cur: Any, target: str, types: Mapping[str, str]) -> None:
    """The warehouse must know every extension type a target uses (hstore): otherwise
    :class:`UnsupportedColumnType` with the remedy, before the target is created."""
    for name, sql_type in types.items():
        if sql_type.split()[0] != HSTORE_TYPE:
            continue
        cur.execute("SELECT to_regtype(%s)", (HSTORE_TYPE,))
        if cur.fetchone()[0] is None:
            raise UnsupportedColumnType(
                f"{target}.{name} has type hstore, which the target database does not have. Remedy: "
                "CREATE EXTENSION IF NOT EXISTS hstore in the target database (infra/postgres/init.sql "
                "does it at lab start), then replicate again."
            )


def plan_table(table: str, columns: list[SourceColumn]) -> list[ColumnPlan]:
    """Plans for every column; one error listing every refused column, so it is fixed in one go."""
    plans, errors = [], []
    for col in columns:
        try:
            plans.append(plan_column(table, col))
        except UnsupportedColumnType as exc:
            errors.append(str(exc))
    if errors:
        raise UnsupportedColumnType("\n".join(errors))
    return plans


CATALOG_SQL = """
WITH RECURSIVE cols AS (
    SELECT a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS sql_type,
           a.atttypid AS typid, a.atttypmod AS typmod, false AS is_domain
    FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
), resolved AS (
    SELECT attnum, attname, sql_type, typid, typmod, is_domain FROM cols
    UNION ALL
    SELECT r.attnum, r.attname, r.sql_type, t.typbasetype,
           CASE WHEN t.typtypmod >= 0 THEN t.typtypmod ELSE r.typmod END, true
    FROM resolved r JOIN pg_type t ON t.oid = r.typid WHERE t.typtype = 'd'
)
SELECT r.attname, r.sql_type, t.typname, format_type(t.oid, r.typmod), t.typtype, n.nspname, r.typmod,
       e.typname, e.typtype, bool_or(r.is_domain) OVER (PARTITION BY r.attnum), r.attnum
FROM resolved r
JOIN pg_type t ON t.oid = r.typid
JOIN pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
WHERE t.typtype <> 'd'
ORDER BY r.attnum
"""


def table_columns(cur: Any, table: str) -> list[SourceColumn]:
    """The columns of ``table`` from the catalog of the connection's database, domains resolved."""
    cur.execute(CATALOG_SQL, (table,))
    return [
        SourceColumn(
            name=r[0],
            sql_type=r[1],
            base=r[2],
            base_sql_type=r[3],
            kind=r[4],
            schema=r[5],
            typmod=int(r[6]),
            element=r[7],
            element_kind=r[8],
            is_domain=bool(r[9]),
            attnum=int(r[10]),
        )
        for r in cur.fetchall()
    ]
