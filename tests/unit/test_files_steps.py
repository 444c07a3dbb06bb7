"""The pure parts of ``cdclab.files.steps`` (the file-pipeline DAGs' task bodies): chunk table name, mapped
chunk items, one entry per file for assembly. That the DAGs hold no database code:
tests/unit/test_thin_dags.py."""

from __future__ import annotations

from datetime import UTC, datetime

from cdclab.files import steps
from cdclab.files.chunking import Chunk
from cdclab.files.store import ObjectInfo

OBJ = ObjectInfo("landing", "p/part-1.csv", 300, "e1", datetime(2026, 1, 1, 9, tzinfo=UTC))


def test_the_chunk_table_defaults_to_the_target_with_a_chunks_suffix() -> None:
    assert steps.chunk_table_of("staging.partner_events") == "staging.partner_events_chunks"
    assert steps.chunk_table_of("staging.partner_events", "") == "staging.partner_events_chunks"
    assert steps.chunk_table_of("staging.partner_events", "scratch.c") == "scratch.c"


def test_a_file_plan_maps_one_item_per_chunk_each_carrying_its_file() -> None:
    plan = steps.FilePlan(OBJ, 10, [Chunk(0, 10, 150), Chunk(1, 150, 300)])
    items = plan.items()
    assert [(i["chunk_no"], i["start"], i["end"], i["data_start"]) for i in items] == [
        (0, 10, 150, 10),
        (1, 150, 300, 10),
    ]
    assert all(ObjectInfo.from_dict(i["obj"]) == OBJ for i in items)
    assert plan.summary == "s3://landing/p/part-1.csv: 300 bytes -> 2 chunk(s) from byte 10"


def test_assembly_visits_each_file_once_in_plan_order() -> None:
    other = ObjectInfo("landing", "p/part-0.csv", 50, "e0", datetime(2026, 1, 1, 8, tzinfo=UTC))
    items = (
        steps.FilePlan(OBJ, 10, [Chunk(0, 10, 150), Chunk(1, 150, 300)]).items()
        + steps.FilePlan(other, 0, [Chunk(0, 0, 50)]).items()
    )
    files = steps.files_of(items)
    assert [(f["obj"]["key"], f["data_start"]) for f in files] == [("p/part-1.csv", 10), ("p/part-0.csv", 0)]
    assert steps.files_of([]) == []
