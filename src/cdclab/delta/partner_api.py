"""A small partner HTTP API (stdlib only) and the client that syncs from it (71.9.3).

Vocabulary:
- *account*: one partner record ``{id, name, email, tier, modified_at, deleted}``. ``modified_at`` is
  set by the API on every write (or given explicitly by a test); a DELETE is a *soft delete*: the
  record stays, ``deleted`` becomes true and ``modified_at`` moves forward, so an incremental reader
  sees the deletion as one more change.
- *modified since*: ``GET /accounts?modified_since=<iso>`` returns records with
  ``modified_at >= modified_since`` (and ``< modified_before`` when given), ordered by
  ``(modified_at, id)``.
- *keyset cursor*: ``next_cursor`` is an opaque token, base64url of ``[modified_at, id]`` of the last
  record of the page (:func:`encode_cursor`). The next page reads ``(modified_at, id) > cursor``, so
  records sharing one ``modified_at`` across a page boundary are neither skipped nor repeated (an
  offset cursor would skip or repeat rows when records change between pages). ``next_cursor`` is null
  on the last page.
- *token bucket*: per client (header ``X-Client-Id``, else the peer address) a bucket of ``burst``
  tokens refilled at ``rate`` tokens per second (:class:`TokenBucket`); a read with an empty bucket gets
  ``429 Too Many Requests`` with ``Retry-After`` (whole seconds, at least 1).
- *fault injection*: ``POST /admin/faults {"fail_next": N, "status": 503}`` (or env
  ``PARTNER_API_FAIL_NEXT``) makes the next N reads fail with that status.
- *sync*: :func:`fetch_changes` follows cursors to the end, sleeps ``Retry-After`` on 429 and retries
  5xx / connection errors with bounded exponential backoff, counting pages, requests, retries and 429s
  (:class:`SyncStats`). :func:`upsert_accounts` writes them to a warehouse table with a guard on
  ``modified_at`` (an older or equal version never overwrites a newer one).

Endpoints: ``GET /accounts``, ``POST /accounts`` (create), ``PATCH /accounts/<id>``,
``DELETE /accounts/<id>`` (JSON body optional; ``modified_at`` in the body overrides the clock),
``GET /admin/snapshot`` (every record, unthrottled), ``GET /admin/stats``, ``POST /admin/faults``,
``POST /admin/reset``. Run as a service: ``python -m cdclab.delta.partner_api [--host H] [--port P]``
(env ``PARTNER_API_HOST``/``PARTNER_API_PORT``, default 127.0.0.1:8099, ``PARTNER_API_RATE``,
``PARTNER_API_BURST``, ``PARTNER_API_SEED_COUNT``).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8099
SEED_BASE = datetime(2026, 1, 1, tzinfo=UTC)
MAX_LIMIT = 1000
TIERS = ("bronze", "silver", "gold")
COLUMNS = ("id", "name", "email", "tier", "modified_at", "deleted")


class InvalidCursorError(ValueError):
    """The cursor token is not one this API issued; restart the sync without a cursor."""


class PartnerAPIError(RuntimeError):
    """The partner API answered with a client error (4xx other than 429): fix the request."""


class PartnerAPIUnavailableError(RuntimeError):
    """The partner API kept failing (5xx, 429 or no connection) after every allowed retry."""


# ---------------------------------------------------------------------------------------------------
# pure helpers


def iso(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}; attach a time zone")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def parse_ts(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}") from exc
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone; add +00:00 or Z")
    return ts.astimezone(UTC)


def encode_cursor(modified_at: datetime, record_id: int) -> str:
    """Opaque keyset cursor: base64url of ``[iso modified_at, id]`` of the last record of a page."""
    raw = json.dumps([iso(modified_at), int(record_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ts_text, record_id = json.loads(raw)
        if not isinstance(record_id, int) or isinstance(record_id, bool):
            raise TypeError("id is not an int")
        return parse_ts(ts_text), record_id
    except (ValueError, TypeError) as exc:
        raise InvalidCursorError(
            f"invalid cursor {token!r} ({exc}); restart the sync without a cursor"
        ) from exc


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` per second; one request takes one token."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket needs rate > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self) -> tuple[bool, float]:
        """``(True, 0)`` when a token was taken, else ``(False, seconds until one is available)``."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True, 0.0
            return False, (1 - self.tokens) / self.rate


def retry_after_header(wait: float) -> str:
    """``Retry-After`` carries whole seconds: round up, at least 1."""
    return str(max(1, math.ceil(wait)))


# ---------------------------------------------------------------------------------------------------
# the store


def seed_accounts(count: int, base: datetime = SEED_BASE) -> list[dict[str, Any]]:
    """Deterministic seed: ``count`` accounts, one per minute from ``base``."""
    return [
        {
            "id": i,
            "name": f"account {i}",
            "email": f"acct{i}@partner.example",
            "tier": TIERS[i % len(TIERS)],
            "modified_at": base + timedelta(minutes=i - 1),
            "deleted": False,
        }
        for i in range(1, count + 1)
    ]


class AccountStore:
    """In-memory accounts (thread-safe)."""

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.lock = threading.Lock()
        self.records: dict[int, dict[str, Any]] = {r["id"]: dict(r) for r in records or []}

    def _stamp(self, body: dict[str, Any]) -> datetime:
        return parse_ts(body["modified_at"]) if body.get("modified_at") else datetime.now(UTC)

    def page(
        self,
        since: datetime | None,
        before: datetime | None,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> tuple[list[dict[str, Any]], str | None]:
        with self.lock:
            rows = sorted(self.records.values(), key=lambda r: (r["modified_at"], r["id"]))
        picked = [
            r
            for r in rows
            if (since is None or r["modified_at"] >= since)
            and (before is None or r["modified_at"] < before)
            and (after is None or (r["modified_at"], r["id"]) > after)
        ]
        page = picked[:limit]
        nxt = encode_cursor(page[-1]["modified_at"], page[-1]["id"]) if len(picked) > limit else None
        return [public(r) for r in page], nxt

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            rid = int(body.get("id") or max(self.records, default=0) + 1)
            if rid in self.records:
                raise KeyError(f"account {rid} exists")
            rec = {
                "id": rid,
                "name": body.get("name", f"account {rid}"),
                "email": body.get("email", f"acct{rid}@partner.example"),
                "tier": body.get("tier", "bronze"),
                "modified_at": self._stamp(body),
                "deleted": False,
            }
            self.records[rid] = rec
            return public(rec)

    def update(self, rid: int, body: dict[str, Any], delete: bool = False) -> dict[str, Any]:
        with self.lock:
            rec = self.records[rid]
            for k in ("name", "email", "tier"):
                if k in body:
                    rec[k] = body[k]
            if delete:
                rec["deleted"] = True
            rec["modified_at"] = self._stamp(body)
            return public(rec)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [public(r) for r in sorted(self.records.values(), key=lambda r: r["id"])]


def public(rec: dict[str, Any]) -> dict[str, Any]:
    return {**rec, "modified_at": iso(rec["modified_at"])}


# ---------------------------------------------------------------------------------------------------
# the server


class PartnerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, addr: tuple[str, int], *, rate: float, burst: int, seed_count: int, fail_next: int = 0
    ) -> None:
        super().__init__(addr, PartnerHandler)
        self.rate, self.burst, self.seed_count = rate, burst, seed_count
        self.store = AccountStore(seed_accounts(seed_count))
        self.buckets: dict[str, TokenBucket] = {}
        self.state_lock = threading.Lock()
        self.fail_next, self.fail_status = fail_next, 503
        self.counters = {"reads": 0, "served": 0, "throttled": 0, "faults": 0}

    def bucket(self, client: str) -> TokenBucket:
        with self.state_lock:
            if client not in self.buckets:
                self.buckets[client] = TokenBucket(self.rate, self.burst)
            return self.buckets[client]

    def take_fault(self) -> int | None:
        with self.state_lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status
            return None

    def count(self, name: str) -> None:
        with self.state_lock:
            self.counters[name] += 1


class PartnerHandler(BaseHTTPRequestHandler):
    server: PartnerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get("PARTNER_API_LOG"):
            super().log_message(format, *args)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        if not n:
            return {}
        data = json.loads(self.rfile.read(n) or b"{}")
        if not isinstance(data, dict):
            raise ValueError("the body must be a JSON object")
        return data

    def _route(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            if method == "GET" and parts == ["accounts"]:
                return self._list(urllib.parse.parse_qs(url.query))
            if method == "GET" and parts == ["admin", "snapshot"]:
                return self._send(200, {"data": self.server.store.snapshot()})
            if method == "GET" and parts == ["admin", "stats"]:
                return self._send(200, dict(self.server.counters))
            body = self._body()
            if method == "POST" and parts == ["admin", "faults"]:
                with self.server.state_lock:
                    self.server.fail_next = int(body.get("fail_next", 1))
                    self.server.fail_status = int(body.get("status", 503))
                return self._send(200, {"fail_next": self.server.fail_next})
            if method == "POST" and parts == ["admin", "reset"]:
                self.server.store = AccountStore(seed_accounts(int(body.get("seed_count", 0))))
                return self._send(200, {"reset": True})
            if method == "POST" and parts == ["accounts"]:
                return self._send(201, self.server.store.create(body))
            if method in ("PATCH", "DELETE") and len(parts) == 2 and parts[0] == "accounts":
                rec = self.server.store.update(int(parts[1]), body, delete=method == "DELETE")
                return self._send(200, rec)
            return self._send(404, {"error": f"no route {method} {url.path}"})
        except KeyError as exc:
            return self._send(404 if method != "POST" else 409, {"error": str(exc)})
        except (ValueError, TypeError) as exc:
            return self._send(400, {"error": str(exc)})

    def _list(self, q: dict[str, list[str]]) -> None:
        srv = self.server
        srv.count("reads")
        ok, wait = srv.bucket(self.headers.get("X-Client-Id") or self.client_address[0]).take()
        if not ok:
            srv.count("throttled")
            return self._send(429, {"error": "rate limited"}, {"Retry-After": retry_after_header(wait)})
        fault = srv.take_fault()
        if fault is not None:
            srv.count("faults")
            return self._send(fault, {"error": "injected fault"})
        one = {k: v[-1] for k, v in q.items()}
        limit = int(one.get("limit", 100))
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be within 1..{MAX_LIMIT}, got {limit}")
        since = parse_ts(one["modified_since"]) if one.get("modified_since") else None
        before = parse_ts(one["modified_before"]) if one.get("modified_before") else None
        after = decode_cursor(one["cursor"]) if one.get("cursor") else None
        data, nxt = srv.store.page(since, before, after, limit)
        srv.count("served")
        return self._send(200, {"data": data, "next_cursor": nxt})

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_DELETE(self) -> None:
        self._route("DELETE")


def make_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    rate: float = 20.0,
    burst: int = 20,
    seed_count: int = 25,
    fail_next: int = 0,
) -> PartnerServer:
    return PartnerServer((host, port), rate=rate, burst=burst, seed_count=seed_count, fail_next=fail_next)


def serve_in_thread(
    port: int = 0, *, rate: float = 20.0, burst: int = 20, seed_count: int = 0
) -> tuple[PartnerServer, str]:
    """Start a server on 127.0.0.1 in a daemon thread; ``server.shutdown()`` stops it."""
    server = make_server(DEFAULT_HOST, port, rate=rate, burst=burst, seed_count=seed_count)
    threading.Thread(target=server.serve_forever, name="partner-api", daemon=True).start()
    return server, f"http://{DEFAULT_HOST}:{server.server_address[1]}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m cdclab.delta.partner_api", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--host", default=os.environ.get("PARTNER_API_HOST", DEFAULT_HOST))
    ap.add_argument("--port", type=int, default=int(os.environ.get("PARTNER_API_PORT", DEFAULT_PORT)))
    ap.add_argument("--rate", type=float, default=float(os.environ.get("PARTNER_API_RATE", 20)))
    ap.add_argument("--burst", type=int, default=int(os.environ.get("PARTNER_API_BURST", 20)))
    ap.add_argument("--seed-count", type=int, default=int(os.environ.get("PARTNER_API_SEED_COUNT", 25)))
    ap.add_argument("--fail-next", type=int, default=int(os.environ.get("PARTNER_API_FAIL_NEXT", 0)))
    a = ap.parse_args(argv)
    server = make_server(
        a.host, a.port, rate=a.rate, burst=a.burst, seed_count=a.seed_count, fail_next=a.fail_next
    )
    print(f"partner API on http://{a.host}:{server.server_address[1]}/accounts", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------------------------------------------
# the client (sync)


@dataclass
class SyncStats:
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    records: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class RetryPolicy:
    max_attempts: int = 8  # per page
    backoff_seconds: float = 0.2
    max_backoff_seconds: float = 5.0
    max_retry_after_seconds: float = 30.0
    timeout_seconds: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)


def _get_json(url: str, policy: RetryPolicy, stats: SyncStats, client_id: str) -> dict[str, Any]:
    last = ""
    for attempt in range(policy.max_attempts):
        if attempt:
            stats.retries += 1
        stats.requests += 1
        req = urllib.request.Request(url, headers={"X-Client-Id": client_id, "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=policy.timeout_seconds) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            exc.read()
            if exc.code == 429:
                stats.throttled += 1
                wait = float(exc.headers.get("Retry-After") or 1)
                policy.sleep(min(wait, policy.max_retry_after_seconds))
                last = f"429 (Retry-After {wait}s)"
                continue
            if exc.code >= 500:
                stats.server_errors += 1
                last = f"{exc.code} {exc.reason}"
            else:
                raise PartnerAPIError(f"GET {url} -> {exc.code}: {exc.reason}; fix the request") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            stats.server_errors += 1
            last = f"connection error {exc}"
        policy.sleep(min(policy.max_backoff_seconds, policy.backoff_seconds * 2**attempt))
    raise PartnerAPIUnavailableError(
        f"GET {url} failed {policy.max_attempts} times (last: {last}); the run fails without moving the "
        "watermark — rerun when the partner API is back"
    )


def base_url_of(conn: Any) -> str:
    """Base URL from an Airflow ``http`` connection (``host``, ``port``; ``schema`` http/https or empty).

    ``AIRFLOW_CONN_PARTNER_API='http://127.0.0.1:8099'`` gives ``http://127.0.0.1:8099``; a host that is
    already a URL is used as is.
    """
    host = (conn.host or "").rstrip("/")
    if not host:
        raise PartnerAPIError("the partner_api connection has no host; set it to the API's address")
    if host.startswith(("http://", "https://")):
        return host
    scheme = conn.schema if conn.schema in ("http", "https") else "http"
    return f"{scheme}://{host}:{conn.port}" if conn.port else f"{scheme}://{host}"


def fetch_changes(
    base_url: str,
    modified_since: datetime | None,
    modified_before: datetime | None = None,
    *,
    page_size: int = 100,
    policy: RetryPolicy | None = None,
    client_id: str = "cdclab",
) -> tuple[list[dict[str, Any]], SyncStats]:
    """Every account with ``modified_since <= modified_at < modified_before``, following cursors."""
    policy = policy or RetryPolicy()
    stats = SyncStats()
    rows: list[dict[str, Any]] = []
    for page in iter_pages(base_url, modified_since, modified_before, page_size, policy, stats, client_id):
        rows.extend(page)
    stats.records = len(rows)
    return rows, stats


def iter_pages(
    base_url: str,
    since: datetime | None,
    before: datetime | None,
    page_size: int,
    policy: RetryPolicy,
    stats: SyncStats,
    client_id: str,
) -> Iterator[list[dict[str, Any]]]:
    params: dict[str, str] = {"limit": str(page_size)}
    if since is not None:
        params["modified_since"] = iso(since)
    if before is not None:
        params["modified_before"] = iso(before)
    cursor: str | None = None
    while True:
        q = dict(params, **({"cursor": cursor} if cursor else {}))
        doc = _get_json(
            f"{base_url.rstrip('/')}/accounts?{urllib.parse.urlencode(q)}", policy, stats, client_id
        )
        stats.pages += 1
        yield doc["data"]
        cursor = doc.get("next_cursor")
        if not cursor:
            return


def ensure_tables(cur: Any, target: str, stats_table: str) -> None:
    schema = target.split(".")[0] if "." in target else "public"
    ensure_ddl(cur, target, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    ensure_ddl(
        cur,
        target,
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, name text, email text, tier text, "
            "modified_at timestamptz NOT NULL, deleted boolean NOT NULL DEFAULT false, "
            "synced_at timestamptz NOT NULL DEFAULT now())"
        ).format(ident(target)),
    )
    ensure_ddl(
        cur,
        target,
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, run_id text NOT NULL, "
            "interval_start timestamptz, interval_end timestamptz, modified_since timestamptz, "
            "pages int NOT NULL, requests int NOT NULL, retries int NOT NULL, throttled int NOT NULL, "
            "server_errors int NOT NULL, records int NOT NULL, written int NOT NULL, "
            "watermark_before timestamptz, watermark_after timestamptz, "
            "finished_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, run_id))"
        ).format(ident(stats_table)),
    )


def upsert_accounts(cur: Any, target: str, rows: list[dict[str, Any]]) -> int:
    """Upsert guarded by ``modified_at``: a row only replaces an older version. Returns rows written."""
    q = sql.SQL(
        "INSERT INTO {t} (id, name, email, tier, modified_at, deleted) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, tier = EXCLUDED.tier, "
        "modified_at = EXCLUDED.modified_at, deleted = EXCLUDED.deleted, synced_at = now() "
        "WHERE {t}.modified_at < EXCLUDED.modified_at"
    ).format(t=ident(target))
    written = 0
    for r in rows:
        cur.execute(q, (r["id"], r["name"], r["email"], r["tier"], parse_ts(r["modified_at"]), r["deleted"]))
        written += cur.rowcount
    return written


def record_run(
    cur: Any,
    stats_table: str,
    pipeline: str,
    run_id: str,
    interval: tuple[datetime | None, datetime | None],
    since: datetime | None,
    stats: SyncStats,
    written: int,
    watermark_before: datetime | None,
    watermark_after: datetime | None,
) -> None:
    """One row per run in ``stats_table``: pages, requests, retries, 429s, 5xx, records, watermarks."""
    s = stats.as_dict()
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (pipeline, run_id, interval_start, interval_end, modified_since, pages, requests, "
            "retries, throttled, server_errors, records, written, watermark_before, watermark_after) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (pipeline, run_id) DO UPDATE SET "
            "pages = EXCLUDED.pages, requests = EXCLUDED.requests, retries = EXCLUDED.retries, "
            "throttled = EXCLUDED.throttled, server_errors = EXCLUDED.server_errors, "
            "records = EXCLUDED.records, written = EXCLUDED.written, "
            "watermark_after = EXCLUDED.watermark_after, finished_at = now()"
        ).format(ident(stats_table)),
        (
            pipeline,
            run_id,
            interval[0],
            interval[1],
            since,
            s["pages"],
            s["requests"],
            s["retries"],
            s["throttled"],
            s["server_errors"],
            s["records"],
            written,
            watermark_before,
            watermark_after,
        ),
    )


def max_modified(rows: list[dict[str, Any]]) -> datetime | None:
    return max((parse_ts(r["modified_at"]) for r in rows), default=None)


if __name__ == "__main__":
    main()
