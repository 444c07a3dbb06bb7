"""The lab's application log (cdclab.lab.app_log): lines 71_09_02 parses, whole lines only, rotation."""

from __future__ import annotations

from cdclab.files.logs import collect, parse_line
from cdclab.lab.app_log import AppLog, log_path


def test_every_line_parses_and_rotation_keeps_every_line(tmp_path):
    log = AppLog(log_path(tmp_path), rotate_bytes=400, keep=3)
    assert log.path == tmp_path / "applogs" / "71_09_02_log_processing" / "app.log"
    for _ in range(6):
        log.write(3)
    assert log.write(0) == 0
    files = sorted(log.path.parent.iterdir())
    assert [f.name for f in files] == ["app.log", "app.log.1", "app.log.2"]  # rotated twice
    text = "".join(f.read_text() for f in files)
    assert text.endswith("\n")
    seqs = sorted(int(line.rsplit("seq=", 1)[1]) for line in text.splitlines())
    assert seqs == list(range(1, 19))  # nothing lost within the kept generations, nothing doubled
    for line in text.splitlines():
        ts, level, req, _msg = parse_line(line)
        assert ts.tzinfo is not None and level in ("INFO", "WARN") and req.startswith("w")
    lines, cursor, gap = collect(log.path, None)  # the lesson's reader reads them all from scratch
    assert len(lines) == 18 and cursor is not None and gap is None
