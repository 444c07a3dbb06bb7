"""One catalog lookup for both kinds of route: merge routes (key mode) and ledger routes (append mode)."""

from __future__ import annotations

import inspect

from cdclab.cdc.append import AppendRoute, ledger_route
from cdclab.cdc.coltypes import SourceColumn, plan_table
from cdclab.cdc.pipeline import CatalogTable, catalog_routes, routes_for


def _column(name: str, sql_type: str, base: str, attnum: int) -> SourceColumn:
    return SourceColumn(
        name=name,
        sql_type=sql_type,
        base=base,
        base_sql_type=sql_type,
        kind="b",
        schema="pg_catalog",
        typmod=-1,
        attnum=attnum,
    )


def _people() -> CatalogTable:
    columns = [
        _column("id", "integer", "int4", 1),
        _column("born", "date", "date", 2),
        _column("note", "text", "text", 3),
    ]
    return CatalogTable(
        "public.people", "shop.public.people", "core.people", columns, plan_table("public.people", columns)
    )


def test_a_catalog_table_lists_only_the_columns_whose_values_need_decoding() -> None:
    assert _people().codecs == {"born": "date"}


def test_a_ledger_route_takes_the_names_target_types_and_codecs_of_the_catalog_table() -> None:
    assert ledger_route(None, _people()) == AppendRoute(
        source="public.people",
        topic="shop.public.people",
        target="core.people",
        types={"id": "integer", "born": "date", "note": "text"},
        codecs={"born": "date"},
    )


def test_routes_for_names_its_tables_as_the_catalog_lookup_does() -> None:
    naming = ["topic_prefix", "target_schema", "target_prefix", "source_conn_id"]
    lookup = inspect.signature(catalog_routes).parameters
    merge = inspect.signature(routes_for).parameters
    for name in naming:
        assert lookup[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert (merge[name].kind, merge[name].default) == (lookup[name].kind, lookup[name].default)
