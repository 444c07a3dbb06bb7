"""Pure parts of the lesson steps that the thinned 71.6-71.9 DAGs call: the dedup TTL cut-off, the
merge variants' target names and key partitions, the duplicate findings and their charge to load runs."""

from __future__ import annotations

import datetime as dt

import pytest

from cdclab.antipatterns import UnknownVariantError
from cdclab.lessons import antipattern_runs

END = dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)


def test_the_fixed_dedup_forgets_ids_first_seen_more_than_the_ttl_before_the_interval_end() -> None:
    assert antipattern_runs.expire_before("fixed", END, 60) == dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)


def test_the_anti_pattern_dedup_never_forgets_an_id() -> None:
    assert antipattern_runs.expire_before("anti_pattern", END, 60) is None


def test_an_unknown_variant_is_refused_before_anything_runs() -> None:
    with pytest.raises(UnknownVariantError, match="anti_pattern"):
        antipattern_runs.expire_before("fix", END, 60)
