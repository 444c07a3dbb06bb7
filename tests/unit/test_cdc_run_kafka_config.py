"""The client settings both checkpointing loops (exactly once into Postgres, at least once) consume with."""

from __future__ import annotations

from cdclab.cdc.consumer import FETCH_KAFKA_CONFIG, run_kafka_config


def test_a_run_commits_its_own_offsets_reads_committed_records_and_never_jumps() -> None:
    config = run_kafka_config("localhost:9092", "g1")
    assert config == {
        "bootstrap.servers": "localhost:9092",
        "group.id": "g1",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "error",
        **FETCH_KAFKA_CONFIG,
    }


def test_each_call_gets_its_own_settings_to_extend() -> None:
    first = run_kafka_config("b", "g")
    first["fetch.wait.max.ms"] = 100
    assert "fetch.wait.max.ms" not in run_kafka_config("b", "g")
