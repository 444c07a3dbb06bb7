"""Pure logic of cdclab.delta.detection: hashing, diffs, comparison and the NULL cursor policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from cdclab.delta import detection as delta


def test_row_hash_is_stable_across_time_zones_of_equal_instants() -> None:
    a = delta.row_hash([1, datetime(2026, 1, 1, 12, tzinfo=UTC), Decimal("10.50")])
    b = delta.row_hash([1, datetime(2026, 1, 1, 13, tzinfo=timezone(timedelta(hours=1))), Decimal("10.50")])
    assert a == b


def test_row_hash_changes_with_any_column() -> None:
    assert delta.row_hash([1, "a", None]) != delta.row_hash([1, "a", ""])
    assert delta.row_hash([1, "a"]) != delta.row_hash(["1", "a"])


def test_diff_finds_inserts_updates_and_deletes() -> None:
    old = {delta.key_text([1]): "h1", delta.key_text([2]): "h2", delta.key_text([3]): "h3"}
    new = {delta.key_text([1]): "h1", delta.key_text([2]): "h2b", delta.key_text([4]): "h4"}
    changes = delta.diff_hashes(old, new)
    assert changes == delta.ChangeSet(inserted=[(4,)], updated=[(2,)], deleted=[(3,)])
    assert changes.total == 3


def test_comparison_names_missing_extra_and_different_keys() -> None:
    source = {delta.key_text([1, "a"]): "x", delta.key_text([2, "b"]): "y"}
    target = {delta.key_text([2, "b"]): "z", delta.key_text([3, "c"]): "w"}
    result = delta.compare_hashes(source, target)
    assert result.missing == [(1, "a")]
    assert result.extra == [(3, "c")]
    assert result.different == [(2, "b")]
    assert not result.equal
    assert delta.compare_hashes(source, dict(source)).equal


def test_unknown_null_policy_is_refused() -> None:
    with pytest.raises(delta.InvalidNullPolicyError, match="raise"):
        delta.check_null_policy("ignore")


def test_next_watermark_never_moves_back_after_a_lookback_read() -> None:
    old = datetime(2026, 1, 1, 12, tzinfo=UTC)
    reread = delta.DeltaResult(max_cursor=old - timedelta(minutes=5))
    assert delta.next_watermark(old, reread) == old
    assert delta.next_watermark(old, delta.DeltaResult()) == old
    assert delta.next_watermark(None, reread) == reread.max_cursor
    later = delta.DeltaResult(max_cursor=old + timedelta(seconds=1))
    assert delta.next_watermark(old, later) == later.max_cursor


def test_naive_bounds_are_refused_before_any_query() -> None:
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the naive value is the point
    with pytest.raises(delta.DeltaError, match="naive"):
        delta.read_timestamp_delta(
            None, "public.t", cursor_column="updated_at", key_columns=["id"], since=naive
        )


def test_a_keyset_page_continues_after_the_last_cursor_and_key() -> None:
    from psycopg2 import sql

    from tests.unit._sql_text import text

    scan = delta.KeysetScan("public.orders", sql.Identifier("updated_at"), ["region", "id"], lower=1)
    statement, params = scan.page(after=(5, ("eu", 7)), limit=100)
    assert text(statement) == (
        'SELECT *, "updated_at" AS "_cursor" FROM "public"."orders" WHERE "updated_at" IS NOT NULL '
        'AND "updated_at" >= %s AND ("updated_at", "region", "id") > (%s, %s, %s) '
        'ORDER BY "updated_at", "region", "id" LIMIT %s'
    )
    assert params == [1, 5, "eu", 7, 100]


def test_a_keyset_scan_with_an_exclusive_lower_bound_and_an_upper_bound_reads_only_its_columns() -> None:
    from psycopg2 import sql

    from tests.unit._sql_text import text

    scan = delta.KeysetScan("public.orders", sql.Identifier("version"), ["id"], ["id", "total"], 3, False, 9)
    statement, params = scan.page()
    assert text(statement) == (
        'SELECT "id", "total", "version" AS "_cursor" FROM "public"."orders" WHERE "version" IS NOT NULL '
        'AND "version" > %s AND "version" < %s ORDER BY "version", "id" LIMIT %s'
    )
    assert params == [3, 9, 1000]
    with pytest.raises(delta.DeltaError, match="key columns"):
        delta.KeysetScan("public.orders", sql.Identifier("version"), []).page()


def test_the_keyset_bound_takes_one_value_per_column() -> None:
    from psycopg2 import sql

    from tests.unit._sql_text import text

    ts, key = sql.Identifier("ts"), sql.Identifier("id")
    assert text(delta.keyset_after(ts, [key], [sql.Placeholder("a"), sql.Placeholder("b")])) == (
        '("ts", "id") > (%(a)s, %(b)s)'
    )
    with pytest.raises(delta.DeltaError, match="needs 2 values"):
        delta.keyset_after(ts, [key], [sql.Placeholder("a")])
