"""Where the lab keeps the Postgres and MariaDB data directories: the override variable, the root case
(outside the checkout, named after the state directory) and the default under the state directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cdclab.lab.config import LabConfig


def _config(tmp_path: Path) -> LabConfig:
    return LabConfig(root=tmp_path, state=tmp_path / "state", cache=tmp_path / "cache")


@pytest.mark.parametrize(
    ("prop", "var", "prefix", "folder"),
    [
        ("pg_data", "CDCLAB_PG_DATA", "pg", "postgres"),
        ("mariadb_data", "CDCLAB_MARIADB_DATA", "mariadb", "mariadb"),
    ],
)
def test_data_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prop: str, var: str, prefix: str, folder: str
):
    monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert getattr(_config(tmp_path), prop) == tmp_path / "state" / folder
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    digest = hashlib.sha256(str(tmp_path / "state").encode()).hexdigest()[:12]
    assert getattr(_config(tmp_path), prop) == Path("/var/lib/cdclab") / f"{prefix}-{digest}"
    monkeypatch.setenv(var, str(tmp_path / "elsewhere"))
    assert getattr(_config(tmp_path), prop) == tmp_path / "elsewhere"
