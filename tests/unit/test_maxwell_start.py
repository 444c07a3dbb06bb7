"""The Maxwell-format producer's start rules and GTID bookkeeping (cdclab.cdc.maxwell), no services."""

from __future__ import annotations

import json

from cdclab.cdc import maxwell


def test_no_start_position_means_refuse():
    assert maxwell.start_from_args(False, None, env={}) is None


def test_start_positions_from_flags_and_env():
    assert maxwell.start_from_args(True, None, env={}) == "oldest"
    assert maxwell.start_from_args(False, "0-1-42", env={}) == "0-1-42"
    assert maxwell.start_from_args(False, None, env={maxwell.START_ENV: "oldest"}) == "oldest"
    assert maxwell.start_from_args(False, None, env={maxwell.START_ENV: "0-1-7"}) == "0-1-7"
    assert maxwell.start_from_args(False, None, env={maxwell.START_ENV: "  "}) is None


def test_launchers_pass_from_start_only_until_the_first_checkpoint(tmp_path):
    assert maxwell.first_start_args(tmp_path) == ["--from-start"]
    (tmp_path / "maxwell").mkdir()
    (tmp_path / "maxwell" / maxwell.MARKER_NAME).write_text("{}")
    assert maxwell.first_start_args(tmp_path) == []


def test_advance_gtid_moves_one_domain():
    assert maxwell.advance_gtid("", "0-1-5") == "0-1-5"
    assert maxwell.advance_gtid("0-1-5", "0-1-6") == "0-1-6"
    assert maxwell.advance_gtid("0-1-5,2-1-9", "2-1-10") == "0-1-5,2-1-10"
    assert maxwell.advance_gtid("2-1-9", "0-1-1") == "0-1-1,2-1-9"


def test_records_carry_the_transaction_gtid():
    [(key, value)] = maxwell.maxwell_records(
        "shop", "t", "insert", [{"values": {"id": 1}}], ["id"], 0, "binlog.000003", 400, 0, "0-1-77"
    )
    assert json.loads(key) == {"database": "shop", "table": "t", "pk.id": 1}
    doc = json.loads(value)
    assert doc["gtid"] == "0-1-77" and doc["position"] == "binlog.000003:400"
