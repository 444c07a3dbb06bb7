"""The `names` fixture's teardown matches only names made from this test's unique suffix."""

from __future__ import annotations

from cdclab.testing.cleanup import MIN_MARKER, matches, named
from cdclab.testing.plugin import Names


def test_markers_are_the_suffix_and_the_names_cut_before_it():
    n = Names("test_something[param-1]")
    assert n.markers == []  # nothing handed out: nothing to drop
    short = n("orders")
    long = n("a_very_long_prefix_that_leaves_no_room_for_the_unique_suffix_at_all")
    assert len(long) == 63 and n.suffix not in long
    assert n.markers == [n.suffix]  # a name without its random part could be someone else's
    assert n.cut_short == [long]
    assert short.endswith(n.suffix) and n.handed_out == [short, long]


def test_only_names_holding_a_marker_match():
    n = Names("test_x")
    t = n("orders")
    other = Names("test_x")  # the same test name, another run: another hex part
    candidates = [
        t,
        f"{t}__deleted",
        f"stg_{t}_variant",
        f"shop.public.{t}",
        other("orders"),
        "orders",
        "customers",
        n.suffix[:-1],
    ]
    assert named(candidates, [n.suffix]) == sorted(
        [t, f"{t}__deleted", f"stg_{t}_variant", f"shop.public.{t}"]
    )


def test_a_short_marker_matches_nothing():
    assert not matches("orders_ab", ["ab"])
    assert MIN_MARKER >= 10
