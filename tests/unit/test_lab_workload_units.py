"""The lab's workload service without a database: its plan, the lesson feed's items, its health."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cdclab.lab import lesson_feed, native
from cdclab.lab import partner_drops as pd
from cdclab.lab import shop_workload as sw
from cdclab.lab.config import LabConfig
from cdclab.workload import DST_ZONES, TABLES, dst_changes, iter_plan, model_after

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


# ---- the wall-clock anchor: the seed ends at the first start, live times never in the future ----

FIRST_START = dt.datetime(2026, 12, 1, 10, 30, tzinfo=dt.UTC)


def test_the_anchored_plan_ends_its_seed_at_the_first_start_and_covers_yesterday() -> None:
    start = sw.anchored_start(FIRST_START, applied=0)
    assert start == FIRST_START - sw.STEP * sw.SEED_OPS
    wl = sw.lab_workload(start=start)
    assert wl.at(sw.SEED_OPS) == FIRST_START
    orders = model_after(wl, sw.SEED_OPS).table_rows("orders")
    yesterday = FIRST_START.date() - dt.timedelta(days=1)
    assert sum(o["ordered_at"].date() == yesterday for o in orders) > 100
    assert all(o["ordered_at"] < FIRST_START for o in orders)  # DST orders too: last year's changes
    near_dst = [o for o in orders if o["ordered_at"].year == sw.dst_year(start)]
    assert sw.dst_year(start) == 2026 and len(near_dst) > 10


def test_dst_orders_lie_near_changes_that_are_history_at_the_plans_start() -> None:
    for start in (dt.datetime(2027, 1, 5, tzinfo=dt.UTC), dt.datetime(2027, 11, 2, tzinfo=dt.UTC)):
        assert sw.dst_year(start) == 2026
        for zone in DST_ZONES:
            assert max(dst_changes(zone, sw.dst_year(start))) < start
    assert sw.dst_year(dt.datetime(2027, 12, 1, tzinfo=dt.UTC)) == 2027
    assert sw.lab_workload().dst_year is None  # the fixed plan (tests) is unchanged


def test_a_lab_seeded_before_the_anchor_resumes_at_the_wall_clock() -> None:
    assert sw.anchored_start(FIRST_START, applied=11_110) == FIRST_START - sw.STEP * 11_110


def test_the_anchor_changes_only_times_so_a_restart_resumes_the_same_operations() -> None:
    def shape(wl: Any) -> list[tuple[Any, ...]]:
        return [
            (
                op.seq,
                op.kind,
                op.table,
                op.key,
                {k: v for k, v in op.values.items() if not isinstance(v, dt.datetime)},
            )
            for op in itertools.islice(iter_plan(wl), 3000)
        ]

    anchored = sw.lab_workload(start=sw.anchored_start(FIRST_START, 0))
    assert shape(anchored) == shape(sw.lab_workload())
    assert list(itertools.islice(iter_plan(anchored), 3000)) == list(
        itertools.islice(iter_plan(sw.lab_workload(start=anchored.start)), 3000)
    )


def test_clamp_puts_business_times_no_later_than_now_and_keeps_the_rest() -> None:
    wl = sw.lab_workload(start=sw.anchored_start(FIRST_START, 0))
    ops = list(itertools.islice(iter_plan(wl), sw.SEED_OPS, sw.SEED_OPS + 50))
    now = FIRST_START + dt.timedelta(seconds=10)  # live: 50 operations ahead of a 10 s wall clock
    clamped = [sw.clamp(op, now) for op in ops]
    for op, c in zip(ops, clamped, strict=True):
        assert (c.seq, c.kind, c.table, c.key, c.duplicate_of) == (
            op.seq,
            op.kind,
            op.table,
            op.key,
            op.duplicate_of,
        )
        assert c.at == min(op.at, now)
        assert set(c.values) == set(op.values)
        for k, v in op.values.items():
            assert c.values[k] == (min(v, now) if isinstance(v, dt.datetime) else v)
    new_orders = [c for c in clamped if c.kind == "insert" and c.table == "orders"]
    assert new_orders and all(c.values["ordered_at"] <= now for c in new_orders)
    assert any(c.values["ordered_at"] == now for c in new_orders)
    past = ops[0]
    assert sw.clamp(past, past.at + dt.timedelta(days=1)) is past  # nothing ahead: unchanged


def test_the_runner_refuses_a_plan_that_does_not_start_where_its_row_says() -> None:
    runner = sw.Runner(None, sw.lab_workload(), "x")
    ctl = sw.Control("x", sw.LAB_SEED, 0, 1.0, False, 0, FIRST_START)
    with pytest.raises(sw.PlanStartMismatchError, match="plan_of"):
        runner._check_plan(ctl)
    assert sw.plan_of(ctl).start == FIRST_START
    with pytest.raises(sw.ControlRowMissingError, match="plan_start"):
        sw.plan_of(dataclasses.replace(ctl, plan_start=None))


# ---- partner files for the 71.4 lessons ----


def test_partner_drops_are_deterministic_per_number_and_feed_every_71_4_prefix() -> None:
    import csv
    import io

    from cdclab.files import manifest

    first, again, second = pd.drop_objects(3), pd.drop_objects(3), pd.drop_objects(4)
    assert first == again
    keys = [k for k, _ in first]
    assert keys == [
        "71_04_01_file_detection/partner-000003.csv",
        "71_04_03_streaming/partner-000003.csv",
        "71_04_04_chunking/partner-000003.csv",
        "71_04_05_archive/partner-000003.csv",
        "71_04_02_manifest/batch-000003/part-0001.csv",
        "71_04_02_manifest/batch-000003/_manifest.json",  # last: the batch's commit marker
    ]
    assert not set(keys) & {k for k, _ in second}
    files = dict(first)
    rows = list(csv.DictReader(io.StringIO(files[keys[0]].decode())))
    assert len(rows) == pd.ROWS and rows[0]["event_id"] == str(3 * pd.ROWS + 1)
    ids = [r["event_id"] for k in keys[:5] for r in csv.DictReader(io.StringIO(files[k].decode()))]
    assert len(set(ids)) == len(ids) == 5 * pd.ROWS  # unique across pipelines
    doc = json.loads(files[keys[5]])
    assert doc["files"] == [
        {
            "key": "part-0001.csv",
            "size": len(files[keys[4]]),
            "sha256": manifest_sha(files[keys[4]]),
            "rows": pd.ROWS,
        }
    ]
    assert manifest.MANIFEST_NAME == "_manifest.json"
    assert next(k for k, _ in pd.drop_objects(0, "t1/")) == "t1/71_04_01_file_detection/partner-000000.csv"


def manifest_sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_seeded_inserts_arrive_after_their_business_time_some_hours_late_never_in_the_future() -> None:
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    ops = list(itertools.islice(iter_plan(sw.lab_workload(start=now - sw.STEP * sw.SEED_OPS)), sw.SEED_OPS))
    inserts = [sw.with_history_arrival(op, now) for op in ops if op.kind == "insert"]
    delays = [op.values["updated_at"] - op.at for op in inserts]
    assert all(dt.timedelta(0) <= d <= dt.timedelta(hours=6, minutes=30) for d in delays)
    assert all(op.values["updated_at"] <= now for op in inserts)
    late = sum(d > dt.timedelta(minutes=15) for d in delays) / len(delays)
    too_late = sum(d > dt.timedelta(hours=2) for d in delays) / len(delays)
    assert 0.05 < late < 0.15 and 0.01 < too_late < 0.06
    # the seed's arrivals cover the last hours, so an hourly interval of a young lab finds some
    last_hour = [
        op
        for op in inserts
        if now - dt.timedelta(hours=2) <= op.values["updated_at"] < now - dt.timedelta(hours=1)
    ]
    assert len(last_hour) > 10
    update = next(op for op in ops if op.kind == "update")
    assert sw.with_history_arrival(update, now) is update  # an update's updated_at is the trigger's now()
