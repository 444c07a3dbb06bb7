"""Producer-manifest parsing: a valid manifest resolves keys inside its folder; each defect is refused
with a message that names the field."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cdclab.files.errors import ManifestInvalid
from cdclab.files.manifest import parse_manifest, render_manifest

SHA = "a" * 64
KEY = "landing-prefix/batch-7/_manifest.json"


def doc(**over):
    d = {
        "version": 1,
        "batch_id": "batch-7",
        "producer": "partner-a",
        "created_at": "2026-11-25T10:00:00+00:00",
        "files": [{"key": "part-0.csv", "size": 10, "sha256": SHA, "rows": 2}],
    }
    d.update(over)
    return json.dumps(d).encode()


def test_a_valid_manifest_resolves_file_keys_relative_to_its_folder() -> None:
    m = parse_manifest(
        KEY,
        render_manifest(
            "batch-7",
            "p",
            datetime(2026, 11, 25, tzinfo=UTC),
            [
                {"key": "part-0.csv", "size": 10, "sha256": SHA, "rows": 2},
                {"key": "sub/part-1.jsonl.gz", "size": 0, "sha256": SHA, "rows": 0},
            ],
        ),
    )
    assert m.batch_id == "batch-7"
    assert [f.key for f in m.files] == [
        "landing-prefix/batch-7/part-0.csv",
        "landing-prefix/batch-7/sub/part-1.jsonl.gz",
    ]
    assert m.expectations["landing-prefix/batch-7/part-0.csv"] == (2, SHA)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (doc(version=2), "version 2 is not supported"),
        (doc(batch_id=""), "batch_id must be a non-empty string"),
        (doc(created_at="2026-11-25T10:00:00"), "created_at needs a UTC offset"),
        (doc(created_at="yesterday"), "is not ISO 8601"),
        (doc(files=[]), "files must be a non-empty list"),
        (
            doc(files=[{"key": "../other/x.csv", "size": 1, "sha256": SHA, "rows": 1}]),
            "inside the batch folder",
        ),
        (doc(files=[{"key": "/abs.csv", "size": 1, "sha256": SHA, "rows": 1}]), "inside the batch folder"),
        (doc(files=[{"key": "x.csv", "size": -1, "sha256": SHA, "rows": 1}]), "size=-1"),
        (doc(files=[{"key": "x.csv", "size": 1, "sha256": SHA, "rows": True}]), "rows=True"),
        (doc(files=[{"key": "x.csv", "size": 1, "sha256": "ABC", "rows": 1}]), "64 lowercase hex"),
        (doc(files=[{"key": "x.csv", "size": 1, "sha256": SHA, "rows": 1}] * 2), "listed twice"),
    ],
)
def test_each_manifest_defect_is_refused_with_a_clear_message(data: bytes, message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message) as info:
        parse_manifest(KEY, data)
    assert info.value.reason == "manifest_invalid"
    assert "producer must rewrite the manifest" in str(info.value)
