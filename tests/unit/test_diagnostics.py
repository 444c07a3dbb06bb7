"""cdclab.ops.diagnostics: the pure parts (gap grid, root cause, ledger holes, watermark verdicts, lateness)."""

from __future__ import annotations

import datetime as dt

from cdclab.ops import diagnostics as d
from cdclab.state.watermarks import HistoryEntry, Watermark

H = dt.timedelta(hours=1)


def t(h: int, m: int = 0) -> dt.datetime:
    return dt.datetime(2026, 4, 1, h, m, tzinfo=dt.UTC)


def entry(h: int, rows: int = 1) -> d.LedgerEntry:
    return d.LedgerEntry(t(h), t(h + 1), rows, t(h + 1), f"load-{h}", "load")


def hist(old, new) -> HistoryEntry:
    return HistoryEntry("k", old, new, "timestamptz", t(0), "dag", "run-x", "advance")


def test_a_window_of_the_grid_is_half_open():
    assert d.floor_to(t(11, 59), H) == t(11)
    assert d.floor_to(t(12), H) == t(12)


def test_a_gap_under_a_ledger_entry_was_loaded_incompletely():
    cause, detail = d.classify_gap(d.Gap(t(11), t(12), [3]), [entry(11)], [hist(t(10), t(13))])
    assert cause == "loaded_incompletely" and detail["ledger_run_id"] == "load-11"


def test_a_gap_spanned_by_a_watermark_move_without_a_load_is_a_jump():
    cause, detail = d.classify_gap(d.Gap(t(11), t(12), [3]), [entry(10), entry(12)], [hist(t(10), t(13))])
    assert cause == "watermark_jumped" and detail["run_id"] == "run-x"


def test_a_gap_nothing_explains_is_an_interval_never_run():
    assert d.classify_gap(d.Gap(t(11), t(12)), [entry(10), entry(12)], [hist(None, t(10))])[0] == (
        "interval_never_run"
    )


def test_ledger_holes_are_the_uncovered_stretches_between_entries():
    assert d.ledger_holes([entry(10), entry(13), entry(11)]) == [(t(12), t(13))]
    assert d.ledger_holes([entry(10), entry(11)]) == []


def test_watermark_verdicts():
    src = {1: t(10), 2: t(11)}
    wm = Watermark("k", t(12), "timestamptz")
    assert d.check_watermark(wm, t(10), src, {1: t(10)}).verdict == "ahead_of_data"
    assert d.check_watermark(wm, t(10), src, {1: t(10)}).skipped_keys == [2]
    assert d.check_watermark(Watermark("k", 42, "bigint"), t(11), src, src).verdict == "wrong_type"
    assert d.check_watermark(Watermark("k", t(9), "timestamptz"), t(11), src, src).verdict == "behind_data"
    assert d.check_watermark(Watermark("k", t(11), "timestamptz"), t(11), src, src).verdict == "ok"
    assert d.check_watermark(None, None, src, {}).verdict == "missing"


def test_a_backwards_move_is_a_regression():
    assert d.regressions([hist(t(10), t(11)), hist(t(11), t(9))]) == [hist(t(11), t(9))]


def test_late_rows_within_the_allowed_lateness_are_reprocessed_later_ones_dead_lettered():
    assert d.handle_late(t(11), t(11, 40), dt.timedelta(minutes=60)) == "reprocess"
    assert d.handle_late(t(11), t(12, 30), dt.timedelta(minutes=60)) == "dead_letter"


def test_percentile_interpolates_like_postgres():
    assert d.percentile([900, 1200], 0.5) == 1050
    assert d.percentile([60], 0.95) == 60


def test_the_grid_accepts_pendulum_instants():
    import pendulum

    assert d.floor_to(pendulum.datetime(2026, 4, 1, 15, 59, tz="Europe/Berlin"), H) == t(13)
