"""Pure logic of the 71.5 modules: contributions, full recompute and rolling windows, feature versions."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from cdclab.lessons import features, selfcheck
from cdclab.merge import aggregates


def order(
    oid: int, cust: int, day: int, total: str, status: str = "new", hour: int = 12
) -> dict[str, object]:
    return {
        "id": oid,
        "customer_id": cust,
        "status": status,
        "total": Decimal(total),
        "ordered_at": datetime(2026, 3, day, hour, tzinfo=UTC),
        "version": 1,
    }


def test_a_cancelled_order_contributes_nothing_and_others_count_on_their_utc_day() -> None:
    assert aggregates.contribution(order(1, 7, 2, "5", status="cancelled")) is None
    assert aggregates.contribution(order(1, 7, 2, "5", hour=23)) == ((7, date(2026, 3, 2)), 1, Decimal(5))


def test_full_recompute_and_rolling_window_cover_the_last_seven_days() -> None:
    daily = aggregates.full_recompute(
        [
            order(1, 1, 1, "10"),
            order(2, 1, 1, "5"),
            order(3, 1, 7, "1"),
            order(4, 1, 8, "2"),
            order(5, 2, 8, "3"),
        ]
    )
    assert daily == {
        (1, date(2026, 3, 1)): (2, Decimal(15)),
        (1, date(2026, 3, 7)): (1, Decimal(1)),
        (1, date(2026, 3, 8)): (1, Decimal(2)),
        (2, date(2026, 3, 8)): (1, Decimal(3)),
    }
    assert aggregates.rolling(daily) == {
        (1, date(2026, 3, 1)): (2, Decimal(15)),
        (1, date(2026, 3, 7)): (3, Decimal(16)),
        (1, date(2026, 3, 8)): (2, Decimal(3)),  # March 1 left the window [2nd, 8th]
        (2, date(2026, 3, 8)): (1, Decimal(3)),
    }


def test_an_unknown_feature_version_is_refused_with_the_known_ones() -> None:
    with pytest.raises(features.UnknownFeatureVersionError, match="v1"):
        features.check_version("v9")
    assert features.check_version("v2") == "v2"


def test_every_self_check_has_a_function() -> None:
    assert list(selfcheck.CHECK_FUNCTIONS) == selfcheck.CHECKS


def test_an_unknown_self_check_defect_is_refused_with_the_choices() -> None:
    assert selfcheck.check_defect("drop_rows") == "drop_rows"
    with pytest.raises(selfcheck.UnknownDefectError, match="choose one of"):
        selfcheck.check_defect("drop_row")


def test_the_check_counts_rows_changed_after_the_pull_in_the_version_the_pipeline_has_seen() -> None:
    upper = datetime(2026, 3, 9, 10, tzinfo=UTC)
    before, after = datetime(2026, 3, 9, 9, tzinfo=UTC), datetime(2026, 3, 9, 11, tzinfo=UTC)
    source = [
        {**order(1, 7, 2, "5"), "updated_at": before},  # read by the pull: counts as read
        {**order(2, 7, 2, "9", status="cancelled"), "version": 2, "updated_at": after},  # changed since
        {**order(3, 8, 3, "4"), "updated_at": after},  # arrived since: the next pull's
    ]
    mirror = {2: order(2, 7, 2, "9")}
    expected = aggregates.expected_source(source, mirror, upper)
    assert [r["id"] for r in expected] == [1, 2]
    assert expected[1] == order(2, 7, 2, "9")  # the mirrored (not cancelled) version
    assert "updated_at" not in expected[0]
    assert aggregates.full_recompute(expected) == {(7, date(2026, 3, 2)): (2, Decimal(14))}
