"""The CDC lab page's pure parts: sections render their rows, their charts, or a clear "unavailable"
message; gathering degrades a section instead of raising; the plugin module stays cheap to import."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from cdclab.ops import labpage
from cdclab.ops.labpage import Section

UTC = dt.UTC
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)


def h(n: int) -> dt.datetime:
    return T0 + dt.timedelta(hours=n)


def test_a_section_renders_its_rows_escaped_with_state_classes():
    s = Section("connectors", "Connectors", ("name", "state"), [("<shop>", "RUNNING"), ("b", "FAILED")])
    out = labpage.render_section(s)
    assert 'id="connectors"' in out and 'data-status="up"' in out
    assert "&lt;shop&gt;" in out and "<shop>" not in out
    assert '<td class="state-running">RUNNING</td>' in out and '<td class="state-failed">FAILED</td>' in out
    assert out.count("<tr>") == 3  # header + two rows


def test_a_down_section_says_which_service_and_why_and_shows_no_table():
    s = Section("slots", "Replication slots", error="Postgres (shop) does not answer: connection refused")
    out = labpage.render_section(s)
    assert 'data-status="down"' in out and 'class="service-down"' in out
    assert "Unavailable: Postgres (shop) does not answer: connection refused" in out
    assert "<table" not in out


def test_an_empty_section_says_how_to_fill_it():
    out = labpage.render_section(Section("perf", "Perf", ("a",), [], empty="trigger the 71_07_* DAGs"))
    assert '<p class="empty">trigger the 71_07_* DAGs</p>' in out


def test_the_page_lists_every_section_and_counts_the_unavailable_ones():
    sections = [
        Section("a", "Alpha (x)", ("k",), [(1,)]),
        Section("b", "Beta", error="Kafka does not answer"),
    ]
    page = labpage.render_page(sections, T0)
    assert page.startswith("<!DOCTYPE html>") and "<title>CDC lab</title>" in page
    assert '<a href="#a">Alpha</a>' in page and '<a href="#b">Beta (down)</a>' in page
    assert "1 of 2 sections unavailable: Beta" in page
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_guarded_turns_an_exception_into_a_down_section():
    def boom() -> Section:
        raise OSError("connection refused\nsecond line")

    s = labpage.guarded("k", "Title", "Kafka at 127.0.0.1:1", boom)
    assert s.down and s.error == "Kafka at 127.0.0.1:1 does not answer: connection refused"


def test_a_message_that_already_names_the_service_is_not_repeated():
    def boom() -> Section:
        raise RuntimeError(
            "GET http://c:1/connectors: HTTP 0: Kafka Connect at http://c:1 does not answer: refused"
        )

    s = labpage.guarded("k", "T", "Kafka Connect at http://c:1", boom)
    assert (
        s.error == "GET http://c:1/connectors: HTTP 0: Kafka Connect at http://c:1 does not answer: refused"
    )


def test_every_database_section_degrades_when_the_database_refuses():
    def refuse() -> object:
        raise OSError("could not connect to server: Connection refused")

    sources = labpage.Sources(shop=refuse, warehouse=refuse, connect_url=None, kafka_bootstrap=None)
    sections = labpage.gather_all(sources, T0)
    assert [s.key for s in sections] == [
        "connectors", "slots", "kafka-lag", "db-offsets", "watermarks", "gaps", "perf", "health"
    ]  # fmt: skip
    assert all(s.down for s in sections)
    assert "no kafka_connect Airflow connection" in (sections[0].error or "")
    assert (sections[1].error or "").startswith("Postgres (shop) does not answer")
    page = labpage.render_page(sections, T0)
    assert page.count('class="service-down"') == 8


def test_connect_down_is_a_down_section_naming_its_url():
    s = labpage.gather_connectors("http://127.0.0.1:9", timeout=1)  # nothing listens on port 9
    assert s.down and "Kafka Connect at http://127.0.0.1:9" in (s.error or "")


def test_interval_gaps_are_the_uncovered_stretches_between_first_and_last():
    assert labpage.interval_gaps(
        [(h(0), h(1)), (h(1), h(2)), (h(3), h(4)), (h(2), h(2) + dt.timedelta(minutes=30))]
    ) == [(h(2) + dt.timedelta(minutes=30), h(3))]
    assert labpage.interval_gaps([(h(0), h(5)), (h(1), h(2)), (h(4), h(6))]) == []  # overlaps are fine
    assert labpage.interval_gaps([]) == []


def test_gap_rows_count_gaps_and_failures_per_pipeline():
    rows = labpage.gap_rows("state.interval_ledger", {"p": [(h(0), h(1)), (h(2), h(3))]}, {"p": 1})
    assert rows == [
        ("state.interval_ledger", "p", 2, h(0), h(3), 1, 1, "[2026-01-01 01:00, 2026-01-01 02:00)")
    ]


def test_group_lag_sums_partitions_and_marks_unknown_ends():
    committed = [("g", "Stable", "t", 0, 10), ("g", "Stable", "t", 1, 5), ("g", "Stable", "u", 0, 3)]
    rows = labpage.group_lag_rows(committed, {("t", 0): 12, ("t", 1): 5})
    assert rows == [("g", "Stable", "t", 2, 15, 17, 2), ("g", "Stable", "u", 1, 3, "?", "?")]


def _svg_root(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def test_bar_chart_draws_one_bar_per_variant_scaled_to_the_largest():
    svg = labpage.bar_chart(
        [("exp<1>", "full", 200.0), ("exp<1>", "incremental", 50.0), ("e2", "full", 100.0)], "ms"
    )
    root = _svg_root(svg)
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in root.iter(f"{ns}rect") if r.get("class") == "bar"]
    assert [(b.get("data-group"), b.get("data-name")) for b in bars] == [
        ("exp<1>", "full"), ("exp<1>", "incremental"), ("e2", "full")
    ]  # fmt: skip
    widths = [float(b.get("width") or 0) for b in bars]
    assert widths[0] == max(widths) and widths[1] == pytest.approx(widths[0] / 4)
    assert bars[0].get("fill") == bars[2].get("fill") != bars[1].get("fill")  # a variant keeps its colour
    assert 'class="chart bar-chart"' in svg and "<script" not in svg


def test_stacked_chart_stacks_statuses_per_hour():
    series = labpage.health_series([(h(0), "ok", 3), (h(0), "alert", 1), (h(1), "ok", 2), (h(1), "warn", 2)])
    assert series == [("01-01 00:00", {"ok": 3, "alert": 1}), ("01-01 01:00", {"ok": 2, "warn": 2})]
    root = _svg_root(labpage.stacked_chart(series, "health"))
    ns = "{http://www.w3.org/2000/svg}"
    bars = [r for r in root.iter(f"{ns}rect") if (r.get("class") or "").startswith("bar ")]
    assert [(b.get("data-status"), b.get("data-count")) for b in bars] == [
        ("ok", "3"), ("alert", "1"), ("ok", "2"), ("warn", "2")
    ]  # fmt: skip
    heights = [float(b.get("height") or 0) for b in bars]
    assert heights[0] + heights[1] == pytest.approx(heights[2] + heights[3])  # both hours hold 4 checks


def test_charts_without_data_still_render_an_svg_that_says_so():
    for svg in (labpage.bar_chart([], "perf"), labpage.stacked_chart([], "health")):
        assert "no data yet" in svg and "no-data" in _svg_root(svg).get("class", "")


def test_formats():
    assert labpage.format_bytes(512) == "512 B" and labpage.format_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert labpage.format_age(42) == "42 s" and labpage.format_age(3600 * 30 + 60) == "30 h 1 min"
    assert labpage.format_age(86400 * 3 + 7200) == "3 d 2 h"


def test_the_app_serves_the_page_and_never_a_500_when_everything_is_down():
    from fastapi.testclient import TestClient

    def refuse() -> object:
        raise OSError("refused")

    def sources() -> labpage.Sources:
        return labpage.Sources(refuse, refuse, "http://127.0.0.1:9", "127.0.0.1:9", timeout=1)

    client = TestClient(labpage.create_app(sources, require_login=False))
    resp = client.get("/")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert len(re.findall(r'data-status="down"', resp.text)) == 8


def test_importing_the_plugin_imports_no_web_or_database_client():
    """Every Airflow process imports the plugin: beyond Airflow itself it loads only its own module."""
    code = (
        "import sys, airflow.sdk.plugins_manager; before = set(sys.modules);"
        "import cdclab.airflow_plugin as p;"
        "print(sorted(set(sys.modules) - before));"
        "print(p.CdcLabPlugin.name, p.CdcLabPlugin.external_views[0]['href'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["['cdclab', 'cdclab.airflow_plugin']", "cdclab /cdclab/"]


def test_the_plugin_builds_its_app_once_on_first_use():
    from cdclab.airflow_plugin import CdcLabPlugin

    plugin = CdcLabPlugin()
    first = plugin.fastapi_apps
    assert first[0]["url_prefix"] == labpage.MOUNT and plugin.fastapi_apps[0]["app"] is first[0]["app"]
