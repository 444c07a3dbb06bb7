"""The merge ÷ COPY benchmark's inputs and the latency benchmark's pairing, without a database: the
same rows on both sides, batches that cover every row once, and latencies only of observed events.
(No timing is asserted anywhere.)"""

from __future__ import annotations

import pytest
from bench.latency import latencies, ratios
from bench.merge_copy import DATA, batches, copy_rows, images


def test_the_images_are_deterministic_and_the_updates_come_later():
    inserts, updates = images(50), images(50, update=True)
    assert inserts == images(50)
    assert [c.key["id"] for c in inserts] == [c.key["id"] for c in updates] == list(range(1, 51))
    assert {c.op for c in inserts} == {"c"} and {c.op for c in updates} == {"u"}
    assert max(c.position for c in inserts) < min(c.position for c in updates)
    assert all(set(c.row) == set(DATA) for c in inserts + updates)
    assert inserts[0].row["total"] == "0.01" and updates[0].row["total"] == "1.01"


def test_the_copy_rows_are_the_merge_s_staged_text_of_the_same_changes():
    from cdclab.cdc.merge import _ts

    (line,) = copy_rows(images(1))
    fields = line.split("\t")
    assert len(fields) == len(DATA) + 3
    assert fields[0] == "1" and fields[-3:] == ["16", "c", _ts(images(1)[0].ts_ms)]


def test_batches_cover_every_row_once_in_order():
    assert batches(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert batches([], 3) == []
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        batches([1], 0)


def test_latencies_pair_each_observed_event_with_its_source_commit():
    seen = {1: (10.1, 10.3), 2: (11.0, 11.5), 4: (0.0, 0.0)}
    source_ts = {1: 10.0, 2: 10.5, 3: 12.0}
    upper, lower = latencies(seen, source_ts, events=3)  # 3 was not seen, 4 is past N
    assert upper == pytest.approx([0.3, 1.0]) and lower == pytest.approx([0.1, 0.5])


def test_ratios_are_ours_over_the_jdbc_sink_and_none_without_a_figure():
    ours = {"p50_ms": 100.0, "p90_ms": 200.0, "p99_ms": 300.0, "max_ms": 400.0}
    jdbc = {"p50_ms": 200.0, "p90_ms": 400.0, "p99_ms": 0.0}
    assert ratios(ours, jdbc) == {
        "p50_ours_over_jdbc": 0.5,
        "p90_ours_over_jdbc": 0.5,
        "p99_ours_over_jdbc": None,
        "max_ours_over_jdbc": None,
    }
