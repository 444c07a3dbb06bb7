"""SQL text of the time-based loads: keyset cursor, guarded upsert, window aggregates, local-day totals;
and the EXPLAIN plan summary."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from cdclab.delta import last_modified as lm
from cdclab.time import window_aggregates as windowagg
from cdclab.time.intervals import Window
from cdclab.time.timezones import day_totals_sql
from tests.unit._sql_text import text


def utc(*args: int) -> pendulum.DateTime:
    return pendulum.datetime(*args, tz="UTC")


def test_the_keyset_batch_query_breaks_timestamp_ties_by_key():
    q = text(lm.batch_sql("public.orders", ["id", "updated_at"]))
    assert q == (
        'SELECT "id", "updated_at" FROM "public"."orders" WHERE "updated_at" >= %(lo)s AND "updated_at" < %(hi)s '
        'AND ("updated_at", "id") > (%(after_ts)s, %(after_key)s) ORDER BY "updated_at", "id" LIMIT %(limit)s'
    )


def test_the_timestamp_only_anti_pattern_compares_the_timestamp_alone():
    q = text(lm.batch_sql("public.orders", ["id", "updated_at"], mode="timestamp_only"))
    assert '"updated_at" > %(after_ts)s ORDER BY' in q


def test_first_batch_parameters_start_at_the_read_window():
    w = Window(utc(2026, 1, 1, 10), utc(2026, 1, 1, 11))
    assert lm.first_params(w, 5) == {
        "lo": w.start,
        "hi": w.end,
        "after_ts": w.start,
        "after_key": lm.MIN_KEY,
        "limit": 5,
    }
    assert lm.first_params(w, 5, "timestamp_only")["after_ts"] == w.start - dt.timedelta(microseconds=1)
    with pytest.raises(ValueError, match="at least 1"):
        lm.first_params(w, 0)


def test_an_unknown_cursor_mode_is_refused():
    with pytest.raises(lm.UnknownCursorModeError, match="keyset"):
        lm.batch_sql("public.orders", ["id"], mode="offset")  # type: ignore[arg-type]


def test_the_upsert_only_replaces_older_rows():
    q = text(lm.upsert_sql("staging.o", ["id", "total", "updated_at", "version"], extra=["loaded_by_run"]))
    assert q == (
        'INSERT INTO "staging"."o" AS t ("id", "total", "updated_at", "version", "loaded_by_run") VALUES %s '
        'ON CONFLICT ("id") DO UPDATE SET "total" = EXCLUDED."total", "updated_at" = EXCLUDED."updated_at", '
        '"version" = EXCLUDED."version", "loaded_by_run" = EXCLUDED."loaded_by_run" '
        "WHERE (t.updated_at, t.version) < (EXCLUDED.updated_at, EXCLUDED.version)"
    )


INDEX_PLAN = [
    {
        "Plan": {
            "Node Type": "Limit",
            "Plans": [
                {
                    "Node Type": "Incremental Sort",
                    "Plans": [
                        {
                            "Node Type": "Index Scan",
                            "Relation Name": "orders",
                            "Index Name": "orders_updated_at_idx",
                        }
                    ],
                }
            ],
        }
    }
]
SEQ_PLAN = [
    {
        "Plan": {
            "Node Type": "Limit",
            "Plans": [{"Node Type": "Sort", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders"}]}],
        }
    }
]
BITMAP_PLAN = [
    {
        "Plan": {
            "Node Type": "Bitmap Heap Scan",
            "Relation Name": "orders",
            "Plans": [{"Node Type": "Bitmap Index Scan", "Index Name": "orders_updated_at_idx"}],
        }
    }
]


def test_plan_summary_finds_the_index_scan():
    s = lm.plan_summary(INDEX_PLAN, "orders")
    assert (s.scan_nodes, s.index_names, s.uses_index) == (("Index Scan",), ("orders_updated_at_idx",), True)
    assert s.text == "Index Scan using orders_updated_at_idx"


def test_plan_summary_finds_the_seq_scan():
    s = lm.plan_summary(SEQ_PLAN, "orders")
    assert (s.scan_nodes, s.index_names, s.uses_index) == (("Seq Scan",), (), False)


def test_plan_summary_counts_a_bitmap_scan_as_index_use():
    s = lm.plan_summary(BITMAP_PLAN, "orders")
    assert s.scan_nodes == ("Bitmap Heap Scan", "Bitmap Index Scan")
    assert s.uses_index


def test_window_aggregate_applies_lateness_and_skew_in_sql():
    q = text(windowagg.aggregate_sql("public.orders", accepted_only=True))
    assert q == (
        'SELECT count(*), coalesce(sum("total"), 0), count(*) FILTER (WHERE "updated_at" >= %(w_end)s) '
        'FROM "public"."orders" WHERE "ordered_at" >= %(w_start)s AND "ordered_at" < %(w_end)s '
        'AND "updated_at" < %(w_end)s + %(lateness)s AND "ordered_at" <= "updated_at" + %(skew)s'
    )
    plain = text(windowagg.aggregate_sql("public.orders"))
    assert plain.endswith('WHERE "ordered_at" >= %(w_start)s AND "ordered_at" < %(w_end)s')


def test_window_aggregate_parameters():
    w = Window(utc(2026, 1, 1, 10), utc(2026, 1, 1, 11))
    assert windowagg.aggregate_params(w) == {"w_start": w.start, "w_end": w.end}
    p = windowagg.aggregate_params(w, dt.timedelta(hours=1), dt.timedelta(minutes=5))
    assert (p["lateness"], p["skew"]) == (dt.timedelta(hours=1), dt.timedelta(minutes=5))


def test_a_sliding_window_is_the_sum_of_its_panes():
    q = text(windowagg.sliding_from_panes_sql("marts.panes"))
    assert 'FROM "marts"."panes" WHERE window_start >= %(w_start)s AND window_end <= %(w_end)s' in q


def test_local_day_totals_compare_utc_instants_with_the_day_bounds():
    assert text(day_totals_sql("public.orders")) == (
        'SELECT count(*), coalesce(sum(o.total), 0) FROM "public"."orders" o '
        "WHERE o.ordered_at >= %(utc_start)s AND o.ordered_at < %(utc_end)s"
    )
    per_zone = text(day_totals_sql("public.orders", "public.customers"))
    assert 'JOIN "public"."customers" c ON c.id = o.customer_id WHERE c.home_tz = %(tz)s' in per_zone


def test_write_window_upserts_the_window_row_and_returns_it() -> None:
    calls: list[tuple[str, dict[str, object]]] = []

    class Cursor:
        def execute(self, statement: object, params: dict[str, object]) -> None:
            calls.append((text(statement), params))  # type: ignore[arg-type]

    w = Window(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    row = windowagg.write_window(Cursor(), "marts.daily", w, 3, 12.5, 1, "r1")
    assert row == {
        "w_start": w.start,
        "w_end": w.end,
        "orders": 3,
        "revenue": 12.5,
        "late_orders": 1,
        "run_id": "r1",
    }
    assert calls == [(text(windowagg.upsert_window_sql("marts.daily")), row)]


def test_a_windows_source_events_are_the_half_open_event_time_range_with_its_parameters() -> None:
    w = Window(utc(2026, 3, 1, 9), utc(2026, 3, 1, 10))
    assert text(windowagg.window_rows("public.orders", "ordered_at")) == (
        'FROM "public"."orders" WHERE "ordered_at" >= %(w_start)s AND "ordered_at" < %(w_end)s'
    )
    assert windowagg.window_params(w) == {"w_start": w.start, "w_end": w.end}
