"""The one Kafka Connect client against the lab's real Connect worker."""

from __future__ import annotations

import pytest

from cdclab.cdc.connect import ConnectClient, ConnectError, ConnectorNotRunning

LAB_CONNECTOR = "shop-postgres-source"


def test_reads_the_lab_connector_and_refuses_an_unknown_one(lab):
    client = ConnectClient(lab.connect_url)
    assert any(p["class"].endswith("PostgresConnector") for p in client.plugins())
    assert LAB_CONNECTOR in client.connectors()
    status = client.require_running(LAB_CONNECTOR)
    assert status["connector"]["state"] == "RUNNING" and status["tasks"]
    assert client.config(LAB_CONNECTOR)["name"] == LAB_CONNECTOR
    assert client.status("no-such-connector") is None and client.config("no-such-connector") is None
    client.delete("no-such-connector")  # missing_ok
    with pytest.raises(ConnectorNotRunning, match="not registered"):
        client.require_running("no-such-connector")


def test_registers_idempotently_and_refuses_a_bad_config(lab, names):
    """A config Connect rejects at validation is a ConnectError; the lab's unchanged config is not PUT again."""
    client = ConnectClient(lab.connect_url)
    name = names("connect-client-bad")
    try:
        with pytest.raises(ConnectError, match=f"{name}.*HTTP [45]"):  # 4.3 answers 500 for this one
            client.put_config(
                name,
                {
                    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                    "database.hostname": "127.0.0.1",
                    "database.port": "1",
                    "topic.prefix": name,
                    "plugin.name": "no-such-decoder",
                },
            )
        assert client.status(name) is None
        # the lab's own connector, registered again with its current config: nothing rewritten
        current = client.config(LAB_CONNECTOR)
        assert current is not None
        config = {k: v for k, v in current.items() if k != "name"}
        assert client.register(LAB_CONNECTOR, config, timeout=60) is False
    finally:
        client.delete(name)
