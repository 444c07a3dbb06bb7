"""The file benchmark's throttled store stands in for :class:`cdclab.files.store.ObjectStore`: its reading
methods must take exactly the store's parameters (a full ``make bench`` failed when ``etag`` was added to
the store and not to the stand-in)."""

from __future__ import annotations

import inspect

import pytest
from bench.files import ThrottledStore

from cdclab.files.store import ObjectStore


@pytest.mark.parametrize("method", ["get", "get_range", "stream"])
def test_the_throttled_store_reads_with_the_object_stores_parameters(method: str) -> None:
    ours = inspect.signature(getattr(ThrottledStore, method)).parameters
    theirs = inspect.signature(getattr(ObjectStore, method)).parameters
    assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()]
