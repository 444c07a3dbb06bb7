"""71_09_03: syncing a partner API through cursors, modified_since, 429s and 503s ends with the warehouse
table equal to the API's records, deletes flagged, and every retry and 429 counted per run."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pendulum
import pytest

from cdclab.delta.partner_api import parse_ts, serve_in_thread
from tests.dagrun import run_dag
from tests.integration._71_09_helpers import warehouse_rows

DAG = "71_09_03_api_sync"


class Api:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def create(self, rid: int, at: str, **fields: Any) -> None:
        self.call("POST", "/accounts", {"id": rid, "modified_at": at, **fields})

    def patch(self, rid: int, at: str, **fields: Any) -> None:
        self.call("PATCH", f"/accounts/{rid}", {"modified_at": at, **fields})

    def delete(self, rid: int, at: str) -> None:
        self.call("DELETE", f"/accounts/{rid}", {"modified_at": at})

    def fail_next(self, n: int) -> None:
        self.call("POST", "/admin/faults", {"fail_next": n, "status": 503})

    def snapshot(self) -> list[tuple[Any, ...]]:
        rows = self.call("GET", "/admin/snapshot")["data"]
        return [
            (r["id"], r["name"], r["email"], r["tier"], parse_ts(r["modified_at"]), r["deleted"])
            for r in rows
        ]


@pytest.fixture
def api():
    server, base = serve_in_thread(rate=2, burst=3)  # a low rate limit: the sync meets 429s
    yield server, Api(base)
    server.shutdown()
    server.server_close()


@pytest.fixture
def conf(api, names, warehouse_db):
    c = {
        "pipeline": names("p"),
        "base_url": api[1].base,
        "target": f"staging.{names('acc')}",
        "stats_table": f"state.{names('runs')}",
        "page_size": 3,
        "overlap_seconds": 60,
        "max_attempts": 6,
        "backoff_seconds": 0.05,
        "max_retry_after_seconds": 2,
    }
    yield c
    with warehouse_db.cursor() as cur:
        cur.execute(f'DROP TABLE IF EXISTS staging."{names("acc")}", state."{names("runs")}"')
        cur.execute("DELETE FROM state.watermarks WHERE key = %s", (f"71_09_03/{c['pipeline']}",))


def run_stats(db, conf) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute(
            f"SELECT pages, requests, retries, throttled, server_errors, records "
            f'FROM state."{conf["stats_table"][6:]}" WHERE pipeline = %s ORDER BY interval_start',
            (conf["pipeline"],),
        )
        return cur.fetchall()


def hour(h: int) -> pendulum.DateTime:
    return pendulum.datetime(2026, 3, 1, h, tz="UTC")


def test_api_sync_mirrors_the_partner_records_through_pages_throttling_and_faults(api, conf, warehouse_db):
    server, partner = api
    # interval [10:00, 11:00): four accounts share 10:30 exactly, so they straddle the 3-row page boundary
    partner.create(1, "2026-03-01T10:05:00+00:00", name="alpha")
    partner.create(2, "2026-03-01T10:10:00+00:00", name="bravo")
    for rid in (3, 4, 5, 6):
        partner.create(rid, "2026-03-01T10:30:00+00:00", tier="silver")
    partner.create(7, "2026-03-01T10:59:59.999999+00:00")
    partner.create(8, "2026-03-01T11:30:00+00:00")  # after the first interval: not read by run 1
    partner.fail_next(2)
    run_dag(DAG, hour(11), conf)
    assert warehouse_rows(warehouse_db, conf["target"]) == [
        r for r in partner.snapshot() if r[4] < datetime(2026, 3, 1, 11, tzinfo=UTC)
    ]

    # interval [11:00, 12:00): updates, inserts, another tie across a page boundary, more faults
    partner.patch(2, "2026-03-01T11:05:00+00:00", tier="gold")
    for rid in (9, 10, 11, 12):
        partner.create(rid, "2026-03-01T11:20:00+00:00", tier="gold")
    partner.patch(5, "2026-03-01T11:20:00+00:00", name="echo renamed")
    partner.fail_next(3)
    run_dag(DAG, hour(12), conf)
    assert warehouse_rows(warehouse_db, conf["target"]) == partner.snapshot()

    # interval [12:00, 13:00): a soft delete, an update, a new account; a stale re-read never wins
    partner.delete(3, "2026-03-01T12:15:00+00:00")
    partner.patch(8, "2026-03-01T12:20:00+00:00", email="new@partner.example")
    partner.create(13, "2026-03-01T12:40:00+00:00")
    run_dag(DAG, hour(13), conf)
    expected = partner.snapshot()
    assert warehouse_rows(warehouse_db, conf["target"]) == expected
    assert [r[0] for r in expected if r[5]] == [3]  # the delete is a flagged row, not a missing one

    stats = run_stats(warehouse_db, conf)
    assert len(stats) == 3
    pages, requests, retries, throttled, server_errors, records = map(sum, zip(*stats, strict=True))
    assert server_errors == 5, "every injected 503 is counted"
    assert throttled == server.counters["throttled"] > 0, "the low rate limit produced 429s, all counted"
    assert retries == server_errors + throttled
    assert requests == server.counters["reads"] == pages + retries
    # pages of 3: 7 rows; 8 rows (7 re-read by the overlap, 2, five at 11:20, 8); 3 rows
    assert records == 18
    assert [(s[0], s[5]) for s in stats] == [(3, 7), (3, 8), (1, 3)]
