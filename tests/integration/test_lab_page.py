"""The "CDC lab" page in a real browser: headless Chromium logs into the Airflow UI, finds the page in
the UI's navigation, opens it, and reads every section and the charts off the rendered page.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` (``make test-tools``
installs them); the test fails, never skips, when they are missing.

The api-server under test is the lab's (``LabConfig.airflow_public_url``); ``CDCLAB_AIRFLOW_UI_URL``
points the test at another one (for example an api-server started from a branch's virtual
environment against the same lab).

The test writes its own measurements, watermark and processed intervals (names of its own, deleted
afterwards) and checks that the page shows them: a perf chart bar per variant, the watermark with its
age, the pipeline's one gap.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

LOG_SERVICES = ["airflow-api-server", "connect"]
CHROMIUM = os.environ.get("CDCLAB_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CDCLAB_CHROMEDRIVER", "/usr/bin/chromedriver")
MOUNT = "/cdclab"
SECTIONS = ["connectors", "slots", "kafka-lag", "db-offsets", "watermarks", "gaps", "perf", "health"]
LAB_CONNECTOR = "shop-postgres-source"
LAB_SLOT = "cdclab_shop"
WAIT_S = 60


@pytest.fixture
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    if missing:
        pytest.fail(
            f"the browser test needs Debian's chromium and chromium-driver; missing: {missing}. "
            "Install them with `make test-tools` (apt-get install chromium chromium-driver)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,3200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page_data(warehouse_db: Any, names: Any) -> Iterator[dict[str, Any]]:
    """A 71.7-style experiment with two variants, a watermark, and a pipeline with one gap."""
    experiment, key, pipeline = names("labpage_perf"), names("labpage_wm"), names("labpage_gap")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    with warehouse_db.cursor() as cur:
        cur.executemany(
            "INSERT INTO state.perf_runs (experiment, variant, rows_read, rows_written, duration_ms) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(experiment, "full", 1000, 1000, 400.0), (experiment, "incremental", 10, 10, 25.0)],
        )
        cur.execute(
            "INSERT INTO state.watermarks (key, value, value_type, updated_at, updated_by_dag_id) "
            "VALUES (%s, %s, 'timestamptz', now() - interval '2 hours', 'test_lab_page')",
            (key, t0.isoformat()),
        )
        cur.executemany(
            "INSERT INTO state.processed_intervals (pipeline, interval_start, interval_end, rows_loaded) "
            "VALUES (%s, %s, %s, 1)",
            [
                (pipeline, t0, t0 + hour),
                (pipeline, t0 + hour, t0 + 2 * hour),
                (pipeline, t0 + 3 * hour, t0 + 4 * hour),
            ],
        )
    try:
        yield {"experiment": experiment, "key": key, "pipeline": pipeline}
    finally:
        with warehouse_db.cursor() as cur:
            cur.execute("DELETE FROM state.perf_runs WHERE experiment = %s", (experiment,))
            cur.execute("DELETE FROM state.watermarks WHERE key = %s", (key,))
            cur.execute("DELETE FROM state.processed_intervals WHERE pipeline = %s", (pipeline,))


def _login(driver: Any, base: str, user: str, password: str) -> None:
    """Open the page; not logged in, the page sends the browser to Airflow's login form and back."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}{MOUNT}/")
    wait = WebDriverWait(driver, WAIT_S)
    wait.until(ec.presence_of_element_located((By.NAME, "username")))
    assert "/auth/login" in driver.current_url, driver.current_url
    driver.find_element(By.NAME, "username").send_keys(user)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "cdclab-title")))


def test_the_lab_page_shows_every_section_and_the_charts(lab, browser, page_data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base = (os.environ.get("CDCLAB_AIRFLOW_UI_URL") or lab.airflow_public_url).rstrip("/")
    _login(browser, base, lab["AIRFLOW_ADMIN_USER"], lab["AIRFLOW_ADMIN_PASSWORD"])
    assert browser.current_url.rstrip("/").endswith(MOUNT)
    shot = tmp_path / "cdclab_page.png"
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(1400, min(height + 120, 10000))  # the whole page in one screenshot
    browser.save_screenshot(str(shot))
    print(f"\nscreenshot of the CDC lab page: {shot}")

    # every section is there and answered: the lab is healthy, so none may be "unavailable"
    sections = {s.get_attribute("id"): s for s in browser.find_elements(By.CSS_SELECTOR, "section.section")}
    assert list(sections) == SECTIONS
    down = {k: s.text for k, s in sections.items() if s.get_attribute("data-status") != "up"}
    assert not down, f"sections unavailable on a healthy lab: {down}"

    # Kafka Connect: the lab's Debezium connector and its task run; the slot it reads keeps WAL
    connector_rows = [r.text for r in sections["connectors"].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert any(r.startswith(LAB_CONNECTOR) and "RUNNING" in r for r in connector_rows), connector_rows
    slot_rows = [r.text for r in sections["slots"].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert any(r.startswith(LAB_SLOT) and "pgoutput" in r for r in slot_rows), slot_rows
    assert any(u in slot_rows[0] for u in (" B", "KiB", "MiB", "GiB")), slot_rows

    # the watermark written two hours ago, with its age
    wm = [r.text for r in sections["watermarks"].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert any(r.startswith(page_data["key"]) and "2 h 0 min" in r for r in wm), wm

    # the pipeline's intervals: 3 of them, one gap [02:00, 03:00)
    gap_cells = [
        [c.text for c in r.find_elements(By.TAG_NAME, "td")]
        for r in sections["gaps"].find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    mine = [c for c in gap_cells if c[1] == page_data["pipeline"]]
    assert mine and mine[0][2] == "3" and mine[0][5] == "1", mine
    assert "[2026-01-01 02:00, 2026-01-01 03:00)" in mine[0][7]

    # the 71.7 chart: an inline SVG with one bar per variant, the full load 16 times as long
    chart = sections["perf"].find_element(By.CSS_SELECTOR, "svg.chart.bar-chart")
    bars = {
        b.get_attribute("data-name"): float(b.get_attribute("width"))
        for b in chart.find_elements(By.CSS_SELECTOR, "rect.bar")
        if b.get_attribute("data-group") == page_data["experiment"]
    }
    assert set(bars) == {"full", "incremental"}, bars
    assert bars["full"] == pytest.approx(16 * bars["incremental"], rel=0.02)
    assert chart.is_displayed() and chart.size["height"] > 0
    assert sections["health"].find_elements(By.CSS_SELECTOR, "svg.chart.stacked-chart")

    # the UI's navigation links the page ("CDC lab") and shows it inside Airflow at /plugin/cdclab
    browser.get(f"{base}/plugin/cdclab")
    frame = WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
    assert (frame.get_attribute("src") or "").rstrip("/").endswith(MOUNT)
    browser.switch_to.frame(frame)
    WebDriverWait(browser, WAIT_S).until(ec.presence_of_element_located((By.ID, "cdclab-title")))
    browser.switch_to.default_content()
    browser.save_screenshot(str(tmp_path / "cdclab_in_airflow_ui.png"))
    print(f"screenshot of the page inside the Airflow UI: {tmp_path / 'cdclab_in_airflow_ui.png'}")
