"""71.4.3 trigger strategies: each strategy's checking cadence and the pick-up tick it predicts (pure logic;
the replay against MinIO is tests/integration/test_71_04_03_streaming.py)."""

from __future__ import annotations

import pytest

from cdclab.lessons import trigger_strategies as ts

PLAN = ts.Plan(drop_ticks=(1, 2, 7, 12, 13, 14, 22), ticks=30, schedule_ticks=8, poke_ticks=3)


def test_polling_strategies_check_on_their_cadence_and_events_never_list() -> None:
    def count(strategy: str) -> int:
        return sum(ts.checks_at(strategy, t, PLAN) for t in range(PLAN.ticks))

    assert {s: count(s) for s in ts.STRATEGIES} == {
        "schedule": 4,
        "in_run_polling": 30,
        "sensor": 10,
        "deferrable": 10,
        "event": 0,
    }


def test_a_file_is_picked_at_the_next_check_or_at_once_when_announced() -> None:
    picks = {s: [ts.predicted_pick_tick(s, t, PLAN) for t in PLAN.drop_ticks] for s in ts.STRATEGIES}
    assert picks["schedule"] == [8, 8, 8, 16, 16, 16, 24]
    assert picks["sensor"] == picks["deferrable"] == [3, 3, 9, 12, 15, 15, 24]
    assert picks["in_run_polling"] == picks["event"] == list(PLAN.drop_ticks)


def test_only_polling_runs_and_poke_mode_sensors_hold_a_worker_while_idle() -> None:
    idle = 5  # no check of the cron schedule, nothing to load
    assert [ts.holds_worker(s, idle, PLAN, loads=False) for s in ts.STRATEGIES] == [
        False,
        True,
        True,
        False,
        False,
    ]


def test_a_plan_whose_last_drop_no_strategy_would_see_is_refused() -> None:
    with pytest.raises(ValueError, match="would not check again"):
        ts.Plan(drop_ticks=(25,), ticks=30, schedule_ticks=10, poke_ticks=3)
    with pytest.raises(ValueError, match="outside"):
        ts.Plan(drop_ticks=(30,), ticks=30, schedule_ticks=10, poke_ticks=3)
