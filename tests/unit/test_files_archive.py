"""The archive day written into an archive key is read back from it: the date retention compares."""

from __future__ import annotations

from datetime import date

import pendulum
import pytest

from cdclab.files.archive import archive_day, archive_key


def test_the_archive_day_is_read_back_from_the_key_the_archiving_run_wrote() -> None:
    key = archive_key("p/x", "drop/2026/a.csv", pendulum.datetime(2026, 3, 9, 23, tz="UTC"))
    assert key == "p/x/2026/03/09/drop/2026/a.csv"
    assert archive_day("p/x", key) == date(2026, 3, 9)


def test_a_key_of_another_pipeline_is_refused() -> None:
    with pytest.raises(ValueError, match="is not under"):
        archive_day("p", "q/2026/03/09/a.csv")
