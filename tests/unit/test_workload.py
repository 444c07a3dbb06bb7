"""The change generator without a database: plans, the model, clickstream events, the CLI's pure parts."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from cdclab import workload as wk
from cdclab.workload import (
    COLUMNS,
    ID_SPAN,
    TABLES,
    InvalidWorkloadError,
    ModelError,
    Operation,
    ShopModel,
    TableMappingError,
    Workload,
)

AT = datetime(2026, 3, 1, tzinfo=UTC)
RICH = {"soft_deletes": 0.5, "restores": 0.3, "duplicates": 0.1, "long_tx": 0.02, "dst": 0.3}


def _insert(seq: int, table: wk.TableName, key: tuple[int, ...], **values: object) -> Operation:
    return Operation(seq, "insert", table, key, values, AT)


def _customer(seq: int, cid: int) -> Operation:
    return _insert(
        seq,
        "customers",
        (cid,),
        id=cid,
        email=f"c{cid}@x",
        full_name="A B",
        home_tz="UTC",
        tier="basic",
        created_at=AT,
        is_deleted=False,
        deleted_at=None,
    )


# -- determinism -----------------------------------------------------------------------------------


def test_the_same_seed_and_parameters_give_the_same_operations() -> None:
    assert wk.plan(Workload(seed=42, ops=400, **RICH)) == wk.plan(Workload(seed=42, ops=400, **RICH))


def test_a_different_seed_gives_different_operations() -> None:
    assert wk.plan(Workload(seed=1, ops=200)) != wk.plan(Workload(seed=2, ops=200))


def test_a_longer_plan_starts_with_the_shorter_one() -> None:
    short = wk.plan(Workload(seed=9, ops=150, **RICH))
    assert wk.plan(Workload(seed=9, ops=300, **RICH))[:150] == short


def test_the_expected_state_is_the_same_for_the_same_seed() -> None:
    a = wk.expected_state(Workload(seed=5, ops=300, **RICH))
    assert a == wk.expected_state(Workload(seed=5, ops=300, **RICH))
    assert a != wk.expected_state(Workload(seed=6, ops=300, **RICH))


def test_every_operation_stays_in_the_id_range() -> None:
    wl = Workload(seed=3, ops=500, id_base=7 * ID_SPAN, **RICH)
    first, last = wl.id_range
    for op in wk.plan(wl):
        assert first <= op.key[0] <= last
        for column in ("customer_id", "order_id", "product_id"):
            if column in op.values:
                assert first <= op.values[column] <= last


def test_id_base_for_a_name_is_stable_and_leaves_the_lab_range_alone() -> None:
    assert wk.id_base_for("wl_test_a_1234") == wk.id_base_for("wl_test_a_1234")
    assert wk.id_base_for("wl_test_a_1234") != wk.id_base_for("wl_test_b_1234")
    assert wk.id_base_for("x") % ID_SPAN == 0
    assert wk.id_base_for("x") > 0


def test_the_whole_plan_uses_every_kind_of_operation_with_anomalies_on() -> None:
    ops = wk.plan(Workload(seed=11, ops=2000, **RICH))
    assert {op.kind for op in ops} == set(wk.OP_KINDS)
    assert {op.table for op in ops} == set(TABLES)
    assert any(op.duplicate_of is not None for op in ops)
    assert any(op.hold_seconds > 0 for op in ops)


def test_without_anomalies_there_are_no_duplicates_long_transactions_or_soft_deletes() -> None:
    ops = wk.plan(Workload(seed=11, ops=1000))
    assert not [op for op in ops if op.duplicate_of is not None or op.hold_seconds > 0]
    assert not [op for op in ops if op.kind in ("soft_delete", "restore")]


# -- model semantics -------------------------------------------------------------------------------


def test_an_insert_starts_at_version_1_and_an_update_bumps_the_version() -> None:
    m = ShopModel()
    m.apply(_customer(0, 1))
    assert m.table_rows("customers")[0]["version"] == 1
    m.apply(Operation(1, "update", "customers", (1,), {"tier": "gold"}, AT))
    row = m.table_rows("customers")[0]
    assert (row["tier"], row["version"]) == ("gold", 2)


def test_a_duplicate_update_keeps_the_values_and_bumps_the_version_again() -> None:
    m = ShopModel()
    m.apply(_customer(0, 1))
    update = Operation(1, "update", "customers", (1,), {"tier": "gold"}, AT)
    m.apply(update)
    m.apply(Operation(2, "update", "customers", (1,), {"tier": "gold"}, AT, duplicate_of=1))
    row = m.table_rows("customers")[0]
    assert (row["tier"], row["version"]) == ("gold", 3)


def test_a_delete_removes_the_row() -> None:
    m = ShopModel()
    m.apply(_customer(0, 1))
    m.apply(_customer(1, 2))
    m.apply(Operation(2, "delete", "customers", (1,), {}, AT))
    assert [r["id"] for r in m.table_rows("customers")] == [2]


def test_a_soft_delete_keeps_the_row_flagged_and_a_restore_clears_the_flag() -> None:
    m = ShopModel()
    m.apply(_customer(0, 1))
    m.apply(Operation(1, "soft_delete", "customers", (1,), {"is_deleted": True, "deleted_at": AT}, AT))
    row = m.table_rows("customers")[0]
    assert (row["is_deleted"], row["deleted_at"], row["version"]) == (True, AT, 2)
    m.apply(Operation(2, "restore", "customers", (1,), {"is_deleted": False, "deleted_at": None}, AT))
    row = m.table_rows("customers")[0]
    assert (row["is_deleted"], row["deleted_at"], row["version"]) == (False, None, 3)


def test_deleting_an_order_deletes_its_items_and_payments() -> None:
    m = ShopModel()
    m.apply(_customer(0, 1))
    m.apply(
        _insert(
            1,
            "products",
            (1,),
            id=1,
            sku="S1",
            name="P",
            price=Decimal("2.50"),
            description=None,
            is_deleted=False,
            deleted_at=None,
        )
    )
    m.apply(_insert(2, "orders", (1,), id=1, customer_id=1, status="new", ordered_at=AT, total=Decimal(0)))
    m.apply(
        _insert(
            3,
            "order_items",
            (1, 1),
            order_id=1,
            line_no=1,
            product_id=1,
            quantity=2,
            unit_price=Decimal("2.50"),
        )
    )
    m.apply(_insert(4, "payments", (1,), id=1, order_id=1, amount=Decimal(5), method="card", paid_at=AT))
    assert m.order_total(1) == Decimal("5.00")
    m.apply(Operation(5, "delete", "orders", (1,), {}, AT))
    assert [m.table_rows(t) for t in ("orders", "order_items", "payments")] == [[], [], []]
    m.apply(Operation(6, "delete", "products", (1,), {}, AT))  # no longer referenced
    m.apply(Operation(7, "delete", "customers", (1,), {}, AT))


def test_the_model_refuses_what_postgres_would_refuse() -> None:
    m = ShopModel()
    m.apply(_customer(0, 1))
    with pytest.raises(ModelError, match="existing key"):
        m.apply(_customer(1, 1))
    with pytest.raises(ModelError, match="missing"):
        m.apply(Operation(2, "update", "customers", (9,), {"tier": "gold"}, AT))
    with pytest.raises(ModelError, match="version belongs to the trigger"):
        m.apply(Operation(3, "update", "customers", (1,), {"version": 7}, AT))
    m.apply(_insert(4, "orders", (1,), id=1, customer_id=1, status="new", ordered_at=AT, total=Decimal(0)))
    with pytest.raises(ModelError, match="still has orders"):
        m.apply(Operation(5, "delete", "customers", (1,), {}, AT))


def test_expected_rows_have_exactly_the_model_columns_in_key_order() -> None:
    state = wk.expected_state(Workload(seed=8, ops=600, **RICH))
    for table, rows in state.items():
        assert rows, table
        assert all(tuple(r) == COLUMNS[table] for r in rows)
        keys = [tuple(r[c] for c in wk.KEY_COLUMNS[table]) for r in rows]
        assert keys == sorted(keys)
        assert "updated_at" not in COLUMNS[table]


def test_expected_state_after_a_prefix_matches_replaying_that_prefix() -> None:
    wl = Workload(seed=4, ops=300, **RICH)
    m = ShopModel()
    for op in wk.plan(wl)[:120]:
        m.apply(op)
    assert wk.expected_state(wl, upto=120) == {t: m.table_rows(t) for t in TABLES}
    assert wk.expected_state(wl, upto=0) == {t: [] for t in TABLES}


def test_soft_deleted_rows_are_not_updated_or_referenced_by_new_orders() -> None:
    wl = Workload(seed=12, ops=1500, soft_deletes=1.0)
    m = ShopModel()
    for op in wk.plan(wl):
        if (
            op.table in wk.SOFT_DELETE_TABLES
            and op.kind in ("update", "soft_delete")
            and op.key in m.rows[op.table]
        ):
            assert not m.rows[op.table][op.key]["is_deleted"], op
        if op.kind == "insert" and op.table == "orders":
            assert not m.rows["customers"][(op.values["customer_id"],)]["is_deleted"]
        m.apply(op)
    assert not [op for op in wk.plan(wl) if op.kind == "delete" and op.table in wk.SOFT_DELETE_TABLES]


# -- anomalies -------------------------------------------------------------------------------------


def test_dst_changes_are_the_2026_clock_changes() -> None:
    assert wk.dst_changes("America/New_York", 2026) == (
        datetime(2026, 3, 8, 7, tzinfo=UTC),
        datetime(2026, 11, 1, 6, tzinfo=UTC),
    )
    assert wk.dst_changes("Europe/Berlin", 2026) == (
        datetime(2026, 3, 29, 1, tzinfo=UTC),
        datetime(2026, 10, 25, 1, tzinfo=UTC),
    )
    assert wk.dst_changes("UTC", 2026) == ()
    for zone in wk.DST_ZONES:
        for instant in wk.dst_changes(zone, 2026):
            tz = ZoneInfo(zone)
            assert (instant - timedelta(seconds=1)).astimezone(tz).utcoffset() != instant.astimezone(
                tz
            ).utcoffset()


def test_dst_orders_are_placed_near_a_clock_change_of_their_customers_zone() -> None:
    wl = Workload(seed=21, ops=800, dst=0.5)
    m = ShopModel()
    near = 0
    for op in wk.plan(wl):
        if op.kind == "insert" and op.table == "orders" and op.values["ordered_at"] != op.at:
            zone = m.rows["customers"][(op.values["customer_id"],)]["home_tz"]
            changes = wk.dst_changes(zone if zone in wk.DST_ZONES else wk.DST_ZONES[0], 2026)
            assert min(abs(op.values["ordered_at"] - c) for c in changes) <= wk.DST_WINDOW
            near += 1
        m.apply(op)
    assert near > 20
    zones = Counter(r["home_tz"] for r in m.table_rows("customers"))
    assert zones["America/New_York"] + zones["Europe/Berlin"] > sum(zones.values()) / 3


def test_long_transactions_and_duplicates_are_plain_updates() -> None:
    ops = wk.plan(Workload(seed=13, ops=1000, duplicates=0.2, long_tx=0.05, long_tx_seconds=1.5))
    long = [op for op in ops if op.hold_seconds]
    dups = [op for op in ops if op.duplicate_of is not None]
    assert long
    assert dups
    assert all(op.kind == "update" and op.hold_seconds == 1.5 for op in long)
    for dup in dups:
        original = ops[dup.duplicate_of]
        assert dup.seq == original.seq + 1
        assert (dup.kind, dup.table, dup.key, dup.values) == (
            "update",
            original.table,
            original.key,
            original.values,
        )


def test_business_timestamps_follow_the_business_clock() -> None:
    wl = Workload(
        seed=2,
        ops=200,
        start=datetime(2026, 10, 24, 22, tzinfo=ZoneInfo("Europe/Berlin")),
        step=timedelta(seconds=30),
    )
    for op in wk.plan(wl):
        assert op.at == datetime(2026, 10, 24, 20, tzinfo=UTC) + timedelta(seconds=30) * op.seq
        assert op.at.tzinfo is UTC
        for column in ("created_at", "paid_at"):
            if column in op.values:
                assert op.values[column] == op.at


# -- parameters and mapping ------------------------------------------------------------------------


def test_mapping_a_table_to_a_copy_changes_only_the_mapped_tables() -> None:
    wl = Workload(seed=1, ops=100, tables={"customers": "public.customers_t_ab12"})
    assert wl.touched == ("customers",)
    assert wl.physical("customers") == "public.customers_t_ab12"
    assert {op.table for op in wk.plan(wl)} == {"customers"}
    assert Workload(seed=1, ops=1).physical("orders") == "public.orders"


def test_a_child_in_the_shop_table_with_its_parent_in_a_copy_is_refused() -> None:
    with pytest.raises(TableMappingError, match="Map orders to a copy too"):
        Workload(seed=1, ops=10, tables={"customers": "public.c_copy"}, only=("customers", "orders"))


def test_a_table_without_its_parents_is_refused() -> None:
    with pytest.raises(InvalidWorkloadError, match="add 'customers' to only"):
        Workload(seed=1, ops=10, only=("orders",))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ops": -1},
        {"ops": ID_SPAN + 1},
        {"duplicates": 1.5},
        {"soft_deletes": -0.1},
        {"start": datetime(2026, 3, 1)},  # noqa: DTZ001 - the naive datetime under test
        {"step": timedelta(0)},
        {"id_base": -5},
    ],
)
def test_bad_parameters_are_refused_with_a_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidWorkloadError):
        Workload(**{"seed": 1, "ops": 10, **kwargs})  # type: ignore[arg-type]


def test_unknown_tables_are_refused() -> None:
    with pytest.raises(TableMappingError):
        Workload(seed=1, ops=10, tables={"clients": "public.x"})
    with pytest.raises(TableMappingError):
        Workload(seed=1, ops=10, tables={"customers": "a.b.c"})


# -- clickstream -----------------------------------------------------------------------------------


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_clickstream_is_deterministic() -> None:
    def events(seed: int) -> list[wk.ClickEvent]:
        return wk.clickstream_events(
            seed, 500, late_fraction=0.1, duplicate_fraction=0.05, out_of_order_fraction=0.1
        )

    assert events(3) == events(3)
    assert events(3) != events(4)


def test_clickstream_has_exactly_the_requested_late_and_duplicate_events() -> None:
    events = wk.clickstream_events(
        7, 1000, late_fraction=0.1, duplicate_fraction=0.05, out_of_order_fraction=0.1
    )
    assert len(events) == 1050
    ids = Counter(e["event_id"] for e in events)
    assert len(ids) == 1000
    assert sorted(Counter(ids.values()).items()) == [(1, 950), (2, 50)]
    late = {
        e["event_id"]
        for e in events
        if _parse(e["ingest_time"]) - _parse(e["event_time"]) >= timedelta(minutes=10)
    }
    assert len(late) == 100
    for e in events:
        assert e["event_time"].endswith("Z")
        assert e["ingest_time"].endswith("Z")
        assert _parse(e["ingest_time"]) > _parse(e["event_time"])
        assert e["event_type"] in wk.EVENT_TYPES
        assert 1 <= e["user_id"] <= 100


def test_clickstream_is_in_ingest_order_and_a_duplicate_arrives_after_its_original() -> None:
    events = wk.clickstream_events(
        8, 400, late_fraction=0.05, duplicate_fraction=0.2, out_of_order_fraction=0.1
    )
    ingest = [_parse(e["ingest_time"]) for e in events]
    assert ingest == sorted(ingest)
    first_seen: dict[str, int] = {}
    for i, e in enumerate(events):
        if e["event_id"] in first_seen:
            original = events[first_seen[e["event_id"]]]
            assert {k: v for k, v in e.items() if k != "ingest_time"} == {
                k: v for k, v in original.items() if k != "ingest_time"
            }
            assert e["ingest_time"] > original["ingest_time"]
        else:
            first_seen[e["event_id"]] = i


def _out_of_order(events: list[wk.ClickEvent]) -> int:
    latest = datetime.min.replace(tzinfo=UTC)
    count = 0
    for e in events:
        t = _parse(e["event_time"])
        if t < latest:
            count += 1
        latest = max(latest, t)
    return count


def test_clickstream_out_of_order_events_arrive_after_later_events_but_are_not_late() -> None:
    assert _out_of_order(wk.clickstream_events(5, 1000)) == 0
    events = wk.clickstream_events(5, 1000, out_of_order_fraction=0.1)
    assert 80 <= _out_of_order(events) <= 100
    assert max(_parse(e["ingest_time"]) - _parse(e["event_time"]) for e in events) < timedelta(seconds=5)


def test_clickstream_without_anomalies_arrives_in_event_time_order() -> None:
    events = wk.clickstream_events(1, 300, start=datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    assert [e["event_time"] for e in events] == sorted(e["event_time"] for e in events)
    assert events[0]["event_time"] == "2026-03-29T00:30:00.000Z"


def test_clickstream_refuses_impossible_fractions() -> None:
    with pytest.raises(InvalidWorkloadError):
        wk.clickstream_events(1, 10, late_fraction=0.7, out_of_order_fraction=0.5)
    with pytest.raises(InvalidWorkloadError):
        wk.clickstream_events(1, 10, duplicate_fraction=2)


# -- CLI (no database) -----------------------------------------------------------------------------


def test_cli_expected_prints_the_expected_rows_as_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from cdclab.cli import main

    assert (
        main(
            [
                "workload",
                "expected",
                "--seed",
                "3",
                "--ops",
                "80",
                "--id-base",
                "5000000",
                "--table",
                "customers",
                "--soft-deletes",
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    expected = wk.expected_state(Workload(seed=3, ops=80, id_base=5_000_000, soft_deletes=1.0))["customers"]
    assert rows == [json.loads(json.dumps(r, default=wk.json_default)) for r in expected]
    assert rows
    assert all(5_000_000 < r["id"] <= 6_000_000 for r in rows)


def test_cli_plan_prints_every_operation(capsys: pytest.CaptureFixture[str]) -> None:
    from cdclab.cli import main

    assert main(["workload", "plan", "--seed", "3", "--ops", "25", "--only", "customers", "products"]) == 0
    ops = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["seq"] for o in ops] == list(range(25))
    assert {o["table"] for o in ops} <= {"customers", "products"}
