"""Pure parts of the 71.9.4 optimisation comparison: scratch names, variants, the XCom summary."""

from __future__ import annotations

import pytest

from cdclab.lessons import dw_optimisation as opt


def test_each_variant_gets_its_own_scratch_star() -> None:
    s = opt.scratch("core.dc", "core.dp", "core.f", "row_by_row")
    assert s == opt.Scratch("core.dc__row_by_row", "core.dp__row_by_row", "core.f__row_by_row")
    assert opt.scratch("core.dc", "core.dp", "core.f", "set_based").fact == "core.f__set_based"


def test_an_unknown_variant_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="row_by_row"):
        opt.scratch("core.dc", "core.dp", "core.f", "row-by-row")


def test_the_summary_is_keyed_by_variant_and_pass() -> None:
    passes = [
        opt.PassResult("row_by_row", "load", 80, 30, 32, {"uses_index": True, "runs": 24}),
        opt.PassResult("set_based", "replay", 9, 0, 0, {"uses_index": False, "runs": 1}),
    ]
    assert opt.summary(passes) == {
        "row_by_row": {
            "load": {"statements": 80, "rows_returned": 30, "rows_rewritten": 32, "lookup_uses_index": True}
        },
        "set_based": {
            "replay": {"statements": 9, "rows_returned": 0, "rows_rewritten": 0, "lookup_uses_index": False}
        },
    }
