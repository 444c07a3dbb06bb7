"""The lab's workload service without a database: its plan, the lesson feed's items, its health."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdclab.lab import lesson_feed, native
from cdclab.lab import shop_workload as sw
from cdclab.lab.config import LabConfig
from cdclab.workload import TABLES, model_after

pytestmark = pytest.mark.unit


def test_the_seed_is_a_fixed_realistic_shop() -> None:
    model = model_after(sw.lab_workload(), sw.SEED_OPS)
    counts = {t: len(model.table_rows(t)) for t in TABLES}
    assert counts == {
        "customers": 1053,
        "products": 578,
        "orders": 1737,
        "order_items": 2010,
        "payments": 994,
    }


def test_the_live_changes_continue_the_seeds_plan() -> None:
    """Operation i never depends on how many come after it: the seed is a prefix of the live plan."""
    small = dataclasses.replace(sw.lab_workload(), ops=sw.SEED_OPS)
    assert model_after(small).table_rows("orders") == model_after(sw.lab_workload(), sw.SEED_OPS).table_rows(
        "orders"
    )


def test_the_feed_seed_spreads_its_items_over_the_last_day() -> None:
    now = dt.datetime(2026, 3, 29, 12, tzinfo=dt.UTC)
    items = lesson_feed.seed_times(now, 0, 10_000)
    assert [k for k, _ in items] == list(range(lesson_feed.SEED_ITEMS))
    assert items[0][1] == now - lesson_feed.SEED_SPAN
    assert items[-1][1] < now
    assert lesson_feed.seed_times(now, lesson_feed.SEED_ITEMS, lesson_feed.SEED_ITEMS + 100) == []  # all in


def test_the_service_is_healthy_once_seeded_and_while_it_reports(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CDCLAB_STATE", str(tmp_path))
    cfg = LabConfig.load()
    svc = native.service("workload")
    assert not svc.healthy(cfg)  # never started
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    proc = subprocess.Popen(argv)
    try:
        # as the launcher records what it started (pid + start time + command line)
        native.write_record(cfg, "workload", native.ProcessRecord.of(proc.pid, argv))
        status = sw.status_file(cfg.state)
        status.parent.mkdir(parents=True)

        def report(seeded: bool, at: float) -> None:
            status.write_text(json.dumps({"seeded": seeded, "pid": proc.pid, "at": at}))

        report(False, time.time())
        assert not svc.healthy(cfg)  # still seeding
        report(True, time.time())
        assert svc.healthy(cfg)
        report(True, time.time() - 120)
        assert not svc.healthy(cfg)  # stopped reporting
    finally:
        proc.kill()
        proc.wait()


def test_set_control_refuses_a_negative_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        sw.set_control(object(), rate=-1)


def test_the_container_serves_and_checks_the_workload(monkeypatch, tmp_path: Path) -> None:
    from cdclab.lab import container

    monkeypatch.setenv("CDCLAB_STATE", str(tmp_path))
    assert container.main(["check", "workload"]) == 1  # not running here


def test_the_container_entry_point_records_the_workload_process_as_the_launcher_does(
    tmp_path: Path, monkeypatch
) -> None:
    """Under compose the healthcheck compares the runner's status pid with the recorded process: a bare
    pid file (no record) counts as stale, so the container must write the record too."""
    from cdclab.lab import container

    monkeypatch.setenv("CDCLAB_STATE", str(tmp_path))
    cfg = LabConfig.load()
    monkeypatch.setattr(sw, "main", lambda argv: 0)  # the runner itself needs the database
    with pytest.raises(SystemExit):
        container.serve(cfg, "workload")
    assert native.service("workload").pid(cfg) == os.getpid()
