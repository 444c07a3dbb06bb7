"""Pure helpers of cdclab.lessons.antipatterns (71.6)."""

from __future__ import annotations

import pytest

from cdclab.lessons import antipatterns as ap


def test_missing_keys_are_the_source_keys_absent_from_the_target() -> None:
    assert ap.missing_keys([3, 1, 2, 4], [1, 2]) == [3, 4]
    assert ap.missing_keys([1], [1, 2]) == []


def test_regressed_rows_are_target_versions_older_than_the_newest_delivered() -> None:
    changes = [(1, 1), (1, 3), (1, 2), (2, 2), (2, 1)]
    assert ap.regressed_rows([(1, 2), (2, 2), (9, 1)], changes) == [(1, 2, 3)]
    assert ap.regressed_rows([(1, 3), (2, 2)], changes) == []


def test_an_unknown_variant_is_refused_with_the_allowed_ones() -> None:
    assert ap.check_variant("fixed") == "fixed"
    with pytest.raises(ap.UnknownVariantError, match="anti_pattern"):
        ap.check_variant("fix")


def test_an_unknown_source_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown source shape"):
        ap.ensure_source(None, "public.x", "nope")


def test_default_table_names_are_made_per_variant_and_explicit_names_stay() -> None:
    assert ap.for_variant("core.rows_71_06_01_{variant}", "fixed") == "core.rows_71_06_01_fixed"
    assert ap.for_variant("core.mine", "anti_pattern") == "core.mine"
