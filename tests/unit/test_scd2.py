"""SCD2 planning: versions, effective dates, tracked columns, deletes and the position guard (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from cdclab.cdc.events import UNAVAILABLE, Change
from cdclab.cdc.scd2 import (
    KeyState,
    MissingCommitTime,
    ReservedColumn,
    TruncateArrived,
    UnknownTrackedColumn,
    Version,
    dimension_ddl,
    plan_versions,
    resolve_tracked,
    row_hash,
)

COLUMNS = ["id", "email", "tier", "home_tz"]
TRACKED = ["email", "tier"]
KEY = ["id"]
BASE = 1_780_000_000_000


def at(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp((BASE + ms) / 1000, tz=dt.UTC)


def change(op: str, pos: int, row: dict | None = None, key: int = 1, ms: int | None = None, **kw) -> Change:
    image = {"id": key, "email": "a@x", "tier": "basic", "home_tz": "UTC", **(row or {})}
    return Change(
        op=op,  # type: ignore[arg-type]
        table="public.c",
        key={"id": key},
        before=image if op in ("u", "d") else None,
        after=None if op == "d" else image,
        position=pos,
        ts_ms=BASE + (pos if ms is None else ms),
        **kw,
    )


def history(plan):
    return [
        (v.values["tier"], v.valid_from, v.valid_to, v.is_current, v.deleted, v.source_position)
        for v in plan.insert
    ]


def test_each_change_of_a_tracked_column_opens_a_version_that_closes_the_previous_one():
    plan = plan_versions(
        [change("c", 10), change("u", 20, {"tier": "gold"}), change("u", 30, {"tier": "silver"})],
        {},
        KEY,
        COLUMNS,
        TRACKED,
    )
    assert history(plan) == [
        ("basic", at(10), at(20), False, False, 10),
        ("gold", at(20), at(30), False, False, 20),
        ("silver", at(30), None, True, False, 30),
    ]
    assert plan.retire == []


def test_a_change_of_untracked_columns_only_updates_the_current_version_in_place():
    plan = plan_versions(
        [change("c", 10), change("u", 20, {"home_tz": "Europe/Berlin"})], {}, KEY, COLUMNS, TRACKED
    )
    assert [(v.values["home_tz"], v.valid_from, v.last_position, v.source_position) for v in plan.insert] == [
        ("Europe/Berlin", at(10), 20, 10)
    ]
    assert plan.touched == 1


def test_a_delete_closes_the_current_version_and_flags_it_and_a_reinsert_opens_a_new_one():
    plan = plan_versions(
        [change("c", 10), change("d", 20), change("c", 30, {"tier": "basic"})], {}, KEY, COLUMNS, TRACKED
    )
    assert history(plan) == [
        ("basic", at(10), at(20), False, True, 10),
        ("basic", at(30), None, True, False, 30),
    ]


def stored(pos: int, tier: str = "basic", last: int | None = None) -> KeyState:
    values = {"id": 1, "email": "a@x", "tier": tier, "home_tz": "UTC"}
    version = Version(
        key=(1,),
        values=values,
        valid_from=at(pos),
        row_hash=row_hash(values, TRACKED),
        source_position=pos,
        last_position=last or pos,
        stored=True,
    )
    return KeyState(guard=last or pos, current=version)


def test_a_stored_current_version_is_retired_by_update_and_the_successor_inserted():
    plan = plan_versions([change("u", 50, {"tier": "gold"})], {(1,): stored(40)}, KEY, COLUMNS, TRACKED)
    assert [(v.source_position, v.valid_to, v.last_position, v.touched) for v in plan.retire] == [
        (40, at(50), 50, False)
    ]
    assert history(plan) == [("gold", at(50), None, True, False, 50)]


def test_changes_at_or_below_the_guard_are_stale_so_a_replay_plans_nothing():
    batch = [change("c", 10), change("u", 20, {"tier": "gold"}), change("d", 30)]
    plan = plan_versions(batch, {(1,): KeyState(guard=30)}, KEY, COLUMNS, TRACKED)
    assert (plan.insert, plan.retire, plan.stale) == ([], [], 3)
    # a batch that straddles the guard applies only the newer part
    plan = plan_versions([*batch, change("c", 40)], {(1,): KeyState(guard=30)}, KEY, COLUMNS, TRACKED)
    assert history(plan) == [("basic", at(40), None, True, False, 40)]


def test_arrival_order_inside_a_batch_does_not_matter():
    batch = [
        change("c", 10),
        change("u", 20, {"tier": "gold"}),
        change("u", 30, {"home_tz": "X", "tier": "gold"}),
    ]
    assert history(plan_versions(list(reversed(batch)), {}, KEY, COLUMNS, TRACKED)) == history(
        plan_versions(batch, {}, KEY, COLUMNS, TRACKED)
    )


def test_a_touch_of_a_stored_version_is_planned_as_an_in_place_update():
    plan = plan_versions(
        [change("u", 50, {"home_tz": "Asia/Tokyo"})], {(1,): stored(40)}, KEY, COLUMNS, TRACKED
    )
    assert [(v.valid_to, v.touched, v.values["home_tz"], v.last_position) for v in plan.retire] == [
        (None, True, "Asia/Tokyo", 50)
    ]
    assert plan.insert == []


def test_an_unavailable_toasted_value_is_taken_from_the_current_version():
    plan = plan_versions(
        [change("u", 50, {"email": UNAVAILABLE, "tier": "gold"}, unavailable=frozenset({"email"}))],
        {(1,): stored(40)},
        KEY,
        COLUMNS,
        TRACKED,
    )
    assert plan.insert[0].values["email"] == "a@x"


def test_effective_dates_never_run_backwards_when_a_commit_time_is_earlier_than_valid_from():
    plan = plan_versions(
        [change("r", 10, ms=500), change("u", 20, {"tier": "gold"}, ms=400)], {}, KEY, COLUMNS, TRACKED
    )
    assert [(v.valid_from, v.valid_to) for v in plan.insert] == [(at(500), at(500)), (at(500), None)]


def test_bad_settings_and_inputs_raise_errors_that_say_what_to_fix():
    with pytest.raises(UnknownTrackedColumn, match="tracked_columns"):
        resolve_tracked(COLUMNS, KEY, ["tier", "nope"])
    assert resolve_tracked(COLUMNS, KEY, None) == ["email", "tier", "home_tz"]
    with pytest.raises(MissingCommitTime, match="ts_ms"):
        plan_versions([Change("c", "public.c", {"id": 1}, None, {"id": 1}, 5)], {}, KEY, COLUMNS, TRACKED)
    with pytest.raises(TruncateArrived, match="reset"):
        plan_versions([Change("t", "public.c", {}, None, None, 5, ts_ms=1)], {}, KEY, COLUMNS, TRACKED)
    with pytest.raises(ReservedColumn, match="valid_from"):
        dimension_ddl("core.d", [("id", "bigint"), ("valid_from", "date")], KEY)
