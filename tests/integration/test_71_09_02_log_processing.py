"""71_09_02: rotating logs are read incrementally — every line exactly once through rename and
copytruncate rotations and missed rotations; a generation lost to retention is recorded as a gap."""

from __future__ import annotations

import shutil

import pytest

from cdclab.files.logs import LogWriter
from tests.dagrun import run_dag

DAG = "71_09_02_log_processing"
LOG_SERVICES = ["postgres"]


@pytest.fixture
def conf(lab, names, warehouse_db):
    folder = lab.state / "applogs" / names.suffix
    c = {
        "pipeline": f"t_{names.suffix}",
        "log_dir": str(folder),
        "log_name": "app.log",
        "target": f"staging.{names('logs')}",
    }
    yield c
    shutil.rmtree(folder, ignore_errors=True)
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{names("logs")}"')


def loaded_seqs(db, target: str) -> list[int]:
    with db.cursor() as cur:
        cur.execute(f'SELECT message FROM staging."{target[8:]}" ORDER BY ts')
        return [int(m.rsplit("seq=", 1)[1]) for (m,) in cur.fetchall()]


def test_every_line_is_loaded_once_through_rotations_and_partial_lines(conf, warehouse_db):
    from pathlib import Path

    app = LogWriter(Path(conf["log_dir"]) / "app.log")
    written = app.write(5)
    run_dag(DAG, conf=conf)
    assert loaded_seqs(warehouse_db, conf["target"]) == written

    written += app.write(3)  # appended before a rename rotation, never seen by a run
    app.rotate_rename()
    written += app.write(4)
    run_dag(DAG, conf=conf)
    assert loaded_seqs(warehouse_db, conf["target"]) == written

    written += app.write(2)
    app.rotate_copytruncate()
    written += app.write(3, partial_tail="2026-03-29T01:00:00.000+00:00 INFO req=r99999 half a li")
    run_dag(DAG, conf=conf)
    assert loaded_seqs(warehouse_db, conf["target"]) == written, "the partial line must wait"

    with app.log.open("a") as f:  # the application finishes the half-written line
        f.write("ne seq=99999\n")
    written += app.write(2)
    app.rotate_rename()  # missed rotation: three rotations between two runs
    written += app.write(2)
    app.rotate_copytruncate()
    written += app.write(2)
    app.rotate_rename()
    written += app.write(1)
    run_dag(DAG, conf=conf)
    got = loaded_seqs(warehouse_db, conf["target"])
    assert sorted(got) == sorted([*written, 99999])
    assert len(got) == len(set(got))
    with warehouse_db.cursor() as cur:
        cur.execute("SELECT count(*) FROM dlq.log_gap WHERE pipeline = %s", (conf["pipeline"],))
        assert cur.fetchone() == (0,)


def test_a_generation_rotated_out_of_retention_is_recorded_as_a_gap(conf, warehouse_db):
    from pathlib import Path

    app = LogWriter(Path(conf["log_dir"]) / "app.log")
    first = app.write(3)
    run_dag(DAG, conf=conf)
    lost = app.write(2)  # appended to the generation the cursor points at ...
    app.rotate_rename(keep=1)
    middle = app.write(2)
    app.rotate_rename(keep=1)  # ... which is deleted by the second rotation (keep one generation)
    last = app.write(2)
    run_dag(DAG, conf=conf)

    assert loaded_seqs(warehouse_db, conf["target"]) == first + middle + last
    assert set(lost).isdisjoint(loaded_seqs(warehouse_db, conf["target"]))
    with warehouse_db.cursor() as cur:
        cur.execute(
            "SELECT lost_from_offset, detail FROM dlq.log_gap WHERE pipeline = %s", (conf["pipeline"],)
        )
        gaps = cur.fetchall()
    assert len(gaps) == 1
    assert gaps[0][0] == sum(len(app.line(s)) + 1 for s in first)
    assert "rotated away" in gaps[0][1]
