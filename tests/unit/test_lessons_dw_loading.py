"""Pure parts of :mod:`cdclab.lessons.dw_loading` (71_09_04): watermark keys and metrics pipelines derived
from the params, the sources' keys, the orders a change touches."""

from __future__ import annotations

import datetime as dt

from cdclab.lessons import dw_loading

T0 = dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)


def star(prefix: str = "") -> dw_loading.StarLoad:
    return dw_loading.StarLoad(
        "public.c",
        "public.p",
        "public.o",
        "public.i",
        "core.dc",
        "core.dp",
        "core.f",
        prefix,
        "d",
        "r",
        T0,
        T0 + dt.timedelta(hours=1),
    )


def test_each_source_has_its_own_watermark_under_the_fact_table_unless_a_prefix_is_given() -> None:
    assert [star().key(s) for s in dw_loading.SOURCES] == [
        "71_09_04/core.f/customers_table",
        "71_09_04/core.f/products_table",
        "71_09_04/core.f/orders_table",
        "71_09_04/core.f/items_table",
    ]
    assert star("t1").key("orders_table") == "t1/orders_table"


def test_a_source_names_its_table_and_each_step_its_metrics_pipeline() -> None:
    assert [star().table(s) for s in dw_loading.SOURCES] == ["public.c", "public.p", "public.o", "public.i"]
    assert star("t1").pipeline("dim_customer") == "71_09_04/core.f/dim_customer"


def test_order_items_are_keyed_by_order_and_line_the_other_sources_by_id() -> None:
    assert dw_loading.key_columns("items_table") == ["order_id", "line_no"]
    assert dw_loading.key_columns("orders_table") == ["id"]


def test_an_order_is_reloaded_once_when_its_row_or_any_of_its_lines_changed() -> None:
    orders = [{"id": 7}, {"id": 3}]
    items = [{"order_id": 3, "line_no": 1}, {"order_id": 3, "line_no": 2}, {"order_id": 9, "line_no": 1}]
    assert dw_loading.changed_orders(orders, items) == [3, 7, 9]
    assert dw_loading.changed_orders([], []) == []
