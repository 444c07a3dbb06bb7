"""The lessons' table sets name their tables from their parts, one way for all of them."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass

import pytest
from psycopg2 import sql

from cdclab.common.tablenames import PrefixedTables, Table
from cdclab.lessons import features
from cdclab.merge import aggregates
from cdclab.streams import exactly_once
from cdclab.streams import windows as streams
from cdclab.time import out_of_order as outoforder


@dataclass(frozen=True)
class Lesson(PrefixedTables):
    orders = Table()
    metrics = Table()


def test_a_table_is_named_after_its_attribute_with_the_sets_prefix():
    t = Lesson("marts.lesson")
    assert (t.orders, t.metrics) == ("marts.lesson_orders", "marts.lesson_metrics")
    assert isinstance(Lesson.orders, Table)  # on the class: the table itself, not a name


def test_a_table_set_is_a_value():
    assert Lesson("a") == Lesson("a") != Lesson("b")
    assert len({Lesson("a"), Lesson("a")}) == 1
    assert repr(Lesson("a")) == "Lesson(prefix='a')"
    with pytest.raises(FrozenInstanceError):
        Lesson("a").prefix = "b"  # type: ignore[misc]


def test_the_lessons_table_sets_keep_their_names():
    a = aggregates.Tables("marts.agg")
    assert [a.orders, a.daily_update, a.daily_replace, a.rolling_7d, a.metrics] == [
        "marts.agg_orders",
        "marts.agg_daily_update",
        "marts.agg_daily_replace",
        "marts.agg_rolling_7d",
        "marts.agg_metrics",
    ]
    f = features.Tables("marts.feat")
    assert [f.orders, f.offline, f.online, f.registry, f.training] == [
        "marts.feat_orders",
        "marts.feat_offline",
        "marts.feat_online",
        "marts.feat_registry",
        "marts.feat_training",
    ]
    o = outoforder.Tables("core.ooo", "dlq.ooo_dead")
    assert [o.orders, o.payments, o.buffer, o.reconciliation, o.dead_letters] == [
        "core.ooo_orders",
        "core.ooo_payments",
        "core.ooo_buffer",
        "core.ooo_reconciliation",
        "dlq.ooo_dead",
    ]


def test_the_stream_and_sink_tables_are_identifiers_of_their_schema():
    s = streams.StreamTables()
    assert [s.seen, s.windows, s.too_late, s.checkpoint] == [
        sql.Identifier("marts", "clickstream_seen"),
        sql.Identifier("marts", "clickstream_windows"),
        sql.Identifier("marts", "clickstream_too_late"),
        sql.Identifier("marts", "clickstream_checkpoint"),
    ]
    k = exactly_once.SinkTables("marts", "eo_", "transactional")
    assert (k.deliveries, k.events) == (
        sql.Identifier("marts", "eo_transactional_deliveries"),
        sql.Identifier("marts", "eo_transactional_events"),
    )


def test_schema_tables_identifiers_name_the_schema_every_table_and_the_extras():
    from cdclab.common.tablenames import tables_of

    k = exactly_once.SinkTables("marts", "eo_", "at_least_once")
    assert tables_of(k) == {
        "deliveries": sql.Identifier("marts", "eo_at_least_once_deliveries"),
        "events": sql.Identifier("marts", "eo_at_least_once_events"),
    }
    s = streams.StreamTables("m", "c_")
    assert s.identifiers(extra=sql.Identifier("c_idx")) == {
        "schema": sql.Identifier("m"),
        "seen": sql.Identifier("m", "c_seen"),
        "windows": sql.Identifier("m", "c_windows"),
        "too_late": sql.Identifier("m", "c_too_late"),
        "checkpoint": sql.Identifier("m", "c_checkpoint"),
        "extra": sql.Identifier("c_idx"),
    }
