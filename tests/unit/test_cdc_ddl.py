"""DDL mid-stream: telling renames, drops and type changes apart by the source's column numbers."""

from __future__ import annotations

from cdclab.cdc.ddl import plan, rename_columns
from cdclab.cdc.events import UNAVAILABLE, Change


def test_a_rename_keeps_its_column_number_a_drop_loses_it_and_a_type_change_is_seen():
    target = {
        "id": ("bigint", 1),
        "a": ("integer", 2),
        "c": ("text", 3),
        "d": ("integer", 4),
        "b": ("text", 5),
    }
    source = {
        "id": "bigint",
        "a": "bigint",
        "d2": "integer",
        "b": "character varying(50)",
        "e": "integer DEFAULT 7",
    }
    attnums = {"id": 1, "a": 2, "d2": 4, "b": 5, "e": 6}
    renames, dropped, retyped = plan(target, source, attnums)
    assert renames == {"d": "d2"}
    assert dropped == ["c"]
    assert retyped == {"a": ("integer", "bigint"), "b": ("text", "character varying(50)")}


def test_without_remembered_numbers_names_decide_and_nothing_is_a_rename():
    renames, dropped, retyped = plan(
        {"id": ("bigint", None), "old": ("text", None)}, {"id": "bigint", "new": "text"}, {}
    )
    assert (renames, dropped, retyped) == ({}, ["old"], {})


def test_an_add_and_a_drop_of_the_same_type_are_not_a_rename():
    renames, dropped, _ = plan(
        {"id": ("int", 1), "x": ("text", 2)}, {"id": "int", "y": "text"}, {"id": 1, "y": 3}
    )
    assert renames == {} and dropped == ["x"]


def test_in_flight_changes_are_read_under_the_new_names():
    change = Change(
        op="u", table="public.t", key={"id": 1}, before={"id": 1, "d": 5}, after={"id": 1, "d": UNAVAILABLE},
        position=1, unavailable=frozenset({"d"}),
    )  # fmt: skip
    out = rename_columns(change, {"d": "d2"})
    assert out.before == {"id": 1, "d2": 5} and out.after == {"id": 1, "d2": UNAVAILABLE}
    assert out.unavailable == frozenset({"d2"}) and out.key == {"id": 1}
