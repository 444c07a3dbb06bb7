"""Where clients reach the lab's services: one host:port rule for every address and URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdclab.lab.config import LabConfig


def test_every_service_address_is_its_host_and_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    values = {
        "LAB_HOST": "127.0.0.1",
        "KAFKA_PORT": "19092",
        "CONNECT_PORT": "18083",
        "MINIO_PORT": "19000",
        "AIRFLOW_PORT": "18080",
        "PARTNER_API_PORT": "18099",
        "POSTGRES_PORT": "15432",
        "SHOP_USER": "shop",
        "SHOP_PASSWORD": "p w",
        **{
            k: "x"
            for k in ("POSTGRES_SUPERUSER_PASSWORD", "WAREHOUSE_USER", "WAREHOUSE_PASSWORD", "CDC_USER")
        },
        **{k: "x" for k in ("CDC_PASSWORD", "AIRFLOW_DB_USER", "AIRFLOW_DB_PASSWORD")},
    }
    for name in ("KAFKA_HOST", "CONNECT_HOST", "MINIO_HOST", "AIRFLOW_HOST", "PARTNER_API_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POSTGRES_HOST", "postgres")  # inside the compose network
    cfg = LabConfig(root=tmp_path, state=tmp_path / "state", cache=tmp_path / "cache", values=values)
    assert cfg.kafka_bootstrap == "127.0.0.1:19092"
    assert cfg.connect_url == "http://127.0.0.1:18083"
    assert cfg.minio_url == "http://127.0.0.1:19000"
    assert cfg.airflow_url == "http://127.0.0.1:18080"
    assert cfg.partner_api_url == "http://127.0.0.1:18099"
    assert cfg.address("postgres") == "postgres:15432"
    assert cfg.pg_uri("shop") == "postgresql://shop:p%20w@postgres:15432/shop"
