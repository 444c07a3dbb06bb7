"""71.1.1 when to use each: the catch/miss evaluation and the decision table derived from it (pure logic;
the DAG's run against the lab is tests/integration/test_71_01_basics.py)."""

from __future__ import annotations

from cdclab.lessons import when_to_use as w


def _source() -> dict[int, dict[str, str]]:
    src = {i: {"tier": "basic"} for i in range(1, w.BASELINE_ROWS + 2) if i != 3}
    src[2], src[5] = {"tier": "silver"}, {"tier": "platinum"}
    return src


def test_a_target_equal_to_the_source_catches_all_but_the_reverted_state_unless_it_was_seen() -> None:
    src = _source()
    assert w.evaluate("full", src, dict(src), ["basic"], 20).missed == ("reverted",)
    assert w.evaluate("cdc", src, dict(src), ["gold", "basic"], 6).missed == ()


def test_a_target_that_kept_the_deleted_and_the_silent_row_misses_them() -> None:
    src = _source()
    stale = {**src, 3: {"tier": "basic"}, 5: {"tier": "basic"}}
    outcome = w.evaluate("incremental", src, stale, ["basic"], 3)
    assert outcome.caught == ("insert", "update")
    assert outcome.missed == ("hard_delete", "reverted", "no_updated_at")


def test_the_decision_table_is_derived_from_the_outcomes() -> None:
    outcomes = [
        w.Outcome("full", 20, ("insert", "update", "hard_delete", "no_updated_at"), ("reverted",)),
        w.Outcome("incremental", 3, ("insert", "update"), ("hard_delete", "reverted", "no_updated_at")),
        w.Outcome("cdc", 6, w.SCENARIOS, ()),
    ]
    table = {need: strategies for need, strategies, _ in w.decisions(outcomes)}
    assert table["target must mirror hard deletes"] == ["full", "cdc"]
    assert table["every intermediate change needed (audit, history)"] == ["cdc"]
    assert table["large table, frequent runs: read only the changes"] == ["incremental", "cdc"]
    assert table["small table, first load or repair: no state to keep"] == ["full"]
