"""The pieces the replication entry points share: one run summary, one set of consuming options."""

from __future__ import annotations

import inspect
import typing

from cdclab.cdc.append import replicate_append
from cdclab.cdc.consumer import ConsumeResult
from cdclab.cdc.merge_variants import (
    StreamSummary,
    replicate_soft_deletes,
    replicate_variants,
    replicate_with,
)
from cdclab.cdc.pipeline import ConsumeOptions, consume_routes, replicate, replicate_maxwell, route_names
from cdclab.cdc.scd2 import replicate_scd2


def test_a_run_summary_holds_the_counts_then_what_the_run_wrote() -> None:
    result = ConsumeResult(records=7, batches=2, dead_letters=1, positions={("t", 0): 7}, seconds=1.23456)
    summary = result.summary({"tombstone": 3}, appended={"core.x": 6})
    assert summary == {
        "records": 7,
        "batches": 2,
        "dead_letters": 1,
        "skipped": {"tombstone": 3},
        "seconds": 1.235,
        "appended": {"core.x": 6},
    }
    assert list(summary)[:5] == ["records", "batches", "dead_letters", "skipped", "seconds"]


def test_a_stream_summary_is_the_run_summary_with_the_hook_counts_last() -> None:
    summary = StreamSummary(records=5, batches=2, seconds=1.23456)
    summary.skipped["tombstone"] += 2
    summary.counts["core.x"]["inserted"] += 3
    assert summary.as_dict() == {
        "records": 5,
        "batches": 2,
        "dead_letters": 0,
        "skipped": {"tombstone": 2},
        "seconds": 1.235,
        "counts": {"core.x": {"inserted": 3}},
    }
    assert list(summary.as_dict())[-1] == "counts"


def test_the_summary_copies_the_skipped_counts() -> None:
    skipped = {"heartbeat": 1}
    summary = ConsumeResult().summary(skipped)
    skipped["heartbeat"] = 2
    assert summary["skipped"] == {"heartbeat": 1}
    assert summary["seconds"] == 0.0


def test_every_consume_option_is_a_keyword_of_consume_routes_with_its_default() -> None:
    params = inspect.signature(consume_routes).parameters
    options = typing.get_type_hints(ConsumeOptions)
    assert set(options) <= set(params)
    assert {n: params[n].default for n in ("batch_size", "max_seconds", "kafka_conn_id", "who")} == {
        "batch_size": 500,
        "max_seconds": 300.0,
        "kafka_conn_id": "kafka_default",
        "who": "",
    }


def test_the_entry_points_take_the_consume_options_as_keywords() -> None:
    for entry in (
        replicate,
        replicate_maxwell,
        replicate_append,
        replicate_with,
        replicate_variants,
        replicate_soft_deletes,
        replicate_scd2,
    ):
        params = inspect.signature(entry).parameters
        assert params["consume"].kind is inspect.Parameter.VAR_KEYWORD, entry.__name__
        assert not set(typing.get_type_hints(ConsumeOptions)) & set(params), entry.__name__


def test_route_names_default_to_the_public_schema_and_keep_the_source_schema_in_the_topic() -> None:
    naming = {"topic_prefix": "shop", "target_schema": "core", "target_prefix": "soft_"}
    assert route_names("customers", **naming) == (
        "public.customers",
        "shop.public.customers",
        "core.soft_customers",
    )
    assert route_names("sales.orders", **naming) == ("sales.orders", "shop.sales.orders", "core.soft_orders")
