"""Issue 12 (thin DAGs): 71_02_03, 71_03_03/04/05 and 71_08_05 leave transactions, connections and SQL to
the library (``cdclab.arrivals``, ``cdclab.windowagg``, ``cdclab.cdc.merge_variants``, ``cdclab.cdc.scd2``,
``cdclab.lessons.late_data``), and the pure parts of the steps they call."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pendulum
import pytest

from cdclab import arrivals, diagnostics, windowagg
from cdclab.cdc import merge_variants
from cdclab.intervals import Window
from cdclab.lessons import late_data

DAGS = Path(__file__).resolve().parents[2] / "dags"
THIN = [
    "71_02_03_event_time",
    "71_03_03_merge_upsert",
    "71_03_04_scd2",
    "71_03_05_soft_delete",
    "71_08_05_late_data",
]


def database_code(source: str) -> list[str]:
    """``transaction(...)``, ``connect(...)`` and ``.execute(...)`` calls and ``sql.SQL`` references in
    ``source``, by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name in ("transaction", "connect", "execute"):
                found.append((node.lineno, f"line {node.lineno}: {name}(...)"))
        elif isinstance(node, ast.Attribute) and node.attr == "SQL":
            if isinstance(node.value, ast.Name) and node.value.id == "sql":
                found.append((node.lineno, f"line {node.lineno}: sql.SQL"))
    return [text for _, text in sorted(found)]


def test_the_check_finds_each_kind_of_database_code() -> None:
    source = (
        "with transaction(WAREHOUSE) as cur:\n"
        "    cur.execute(sql.SQL('SELECT count(*) FROM {}').format(t))\n"
        "shop = connect(SHOP)\n"
        "lesson.identify_late_rows(run)\n"
    )
    assert database_code(source) == [
        "line 1: transaction(...)",
        "line 2: execute(...)",
        "line 2: sql.SQL",
        "line 3: connect(...)",
    ]


@pytest.mark.parametrize("stem", THIN)
def test_the_dag_leaves_transactions_connections_and_sql_to_the_library(stem: str) -> None:
    assert database_code((DAGS / f"{stem}.py").read_text()) == []


# ----------------------------------------------------------------------------------- 71_02_03

H = [pendulum.datetime(2026, 5, 4, h, tz="UTC") for h in range(24)]


def first(key: int, window: Window, arrival: arrivals.Arrival) -> arrivals.FirstArrival:
    return arrivals.FirstArrival(key, window.start, window.start, window, arrival, "run")


def test_only_windows_with_an_accepted_arrival_are_recomputed_each_once_oldest_first() -> None:
    nine, ten, eleven = Window(H[9], H[10]), Window(H[10], H[11]), Window(H[11], H[12])
    firsts = [
        first(1, eleven, "on_time"),
        first(2, nine, "late"),
        first(3, eleven, "late"),
        first(4, ten, "too_late"),
        first(5, ten, "future"),
    ]
    assert arrivals.windows_to_recompute(firsts) == [nine, eleven]
    assert arrivals.windows_to_recompute([]) == []


def test_windows_survive_the_trip_through_xcom() -> None:
    windows = [Window(H[9], H[10]), Window(H[10], H[11])]
    pairs = arrivals.windows_xcom(windows)
    assert pairs == [
        ["2026-05-04T09:00:00+00:00", "2026-05-04T10:00:00+00:00"],
        ["2026-05-04T10:00:00+00:00", "2026-05-04T11:00:00+00:00"],
    ]
    assert windowagg.windows_from_xcom(pairs) == windows


def test_windows_from_xcom_normalise_any_offset_to_utc() -> None:
    (w,) = windowagg.windows_from_xcom([["2026-05-04T11:00:00+02:00", "2026-05-04T12:00:00+02:00"]])
    assert (w.start, w.end) == (H[9], H[10])
    assert w.start.tzinfo is not None and w.start.utcoffset() == dt.timedelta(0)


# ----------------------------------------------------------------------------------- 71_03_03


@pytest.mark.parametrize("variants", [["merge"], ["upsert"], []])
def test_one_variant_has_nothing_to_compare_with_and_reads_no_database(
    variants: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_database(*args: object, **kwargs: object) -> None:
        raise AssertionError("compare_variants touched the database")

    monkeypatch.setattr(merge_variants, "routes_for", no_database)
    monkeypatch.setattr(merge_variants, "transaction", no_database)
    assert merge_variants.compare_variants(["public.customers"], variants) == 0


# ----------------------------------------------------------------------------------- 71_03_05


def test_the_archive_cutoff_counts_days_back_from_the_interval_end() -> None:
    end = pendulum.datetime(2026, 3, 31, tz="UTC")
    assert merge_variants.archive_cutoff(end, 30) == pendulum.datetime(2026, 3, 1, tz="UTC")
    assert merge_variants.archive_cutoff(end, 0) == end
    assert merge_variants.archive_cutoff(end, 30).isoformat() == "2026-03-01T00:00:00+00:00"


# ----------------------------------------------------------------------------------- 71_08_05

LATE_PARAMS = {
    "events_table": "staging.ev",
    "target_table": "marts.hourly",
    "dead_letter_table": "dlq.late",
    "findings_table": "state.findings",
    "ledger_table": "state.ledger",
    "pipeline": "p/events",
    "grace_minutes": 10,
    "allowed_lateness_minutes": 60,
}


def test_a_late_run_names_its_tables_from_the_params() -> None:
    assert late_data.late_tables(LATE_PARAMS) == diagnostics.LateDataTables(
        events="staging.ev",
        target="marts.hourly",
        dead_letter="dlq.late",
        findings="state.findings",
        ledger="state.ledger",
        pipeline="p/events",
    )


def test_a_late_runs_cutoff_is_the_window_end_plus_the_grace_period() -> None:
    r = late_data.LateRun.from_params(LATE_PARAMS, Window(H[10], H[11]), "dag", "run-1")
    assert (r.start, r.end, r.cutoff) == (H[10], H[11], H[11].add(minutes=10))
    assert r.allowed == dt.timedelta(hours=1) and r.allowed_lateness_minutes == 60
    assert (r.dag_id, r.run_id) == ("dag", "run-1")
    no_grace = late_data.LateRun.from_params(
        {**LATE_PARAMS, "grace_minutes": 0}, Window(H[10], H[11]), "dag", None
    )
    assert no_grace.cutoff == H[11]
