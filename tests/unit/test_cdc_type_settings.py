"""One set of Debezium type settings for the lab connector, `make bench` and the DAGs' decoding: the codecs
in cdclab.cdc.coltypes assume cdclab.cdc.coltypes.TYPE_SETTINGS, so every Debezium source the lab
registers must end up with exactly those (Debezium's default counts where a config sets none)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.cdc_sink import source_config

from cdclab.cdc.coltypes import DEBEZIUM_DEFAULTS, TYPE_SETTINGS, type_settings

ROOT = Path(__file__).resolve().parents[2]
LAB_CONNECTOR = json.loads((ROOT / "connectors" / "shop-postgres-source.json").read_text())["config"]


def test_the_lab_connector_uses_the_settings_the_codecs_assume():
    assert type_settings(LAB_CONNECTOR) == TYPE_SETTINGS


def test_the_bench_source_has_the_lab_connectors_type_settings():
    bench = source_config(LAB_CONNECTOR, prefix="bench1", slot="bench_1", table="bench_1")
    assert type_settings(bench) == type_settings(LAB_CONNECTOR)
    for key in TYPE_SETTINGS:  # not merely the same by default: the bench sets nothing of its own
        assert bench.get(key) == LAB_CONNECTOR.get(key), key


def test_every_connector_file_uses_the_same_type_settings():
    for path in sorted((ROOT / "connectors").glob("*.json")):
        config = json.loads(path.read_text())["config"]
        if "postgresql" in config.get("connector.class", "").lower():
            assert type_settings(config) == TYPE_SETTINGS, path.name


def test_defaults_are_known_for_every_setting():
    assert set(DEBEZIUM_DEFAULTS) == set(TYPE_SETTINGS)
