"""Partner API pieces: the keyset cursor is opaque and exact, the token bucket throttles and refills."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cdclab.delta.partner_api import (
    AccountStore,
    InvalidCursorError,
    TokenBucket,
    decode_cursor,
    encode_cursor,
    retry_after_header,
    seed_accounts,
)

T = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)


def test_cursor_round_trips_timestamp_and_id():
    token = encode_cursor(T + timedelta(microseconds=7), 42)
    assert "=" not in token and "2026" not in token  # opaque, url-safe
    assert decode_cursor(token) == (T + timedelta(microseconds=7), 42)


@pytest.mark.parametrize("token", ["not-a-cursor", "", "W10", encode_cursor(T, 1)[:-3] + "!!!"])
def test_a_foreign_cursor_is_refused(token):
    with pytest.raises(InvalidCursorError, match="restart the sync"):
        decode_cursor(token)


def test_equal_timestamps_across_a_page_boundary_are_neither_skipped_nor_repeated():
    recs = seed_accounts(8)
    for r in recs[2:7]:
        r["modified_at"] = T  # five records share one timestamp
    store = AccountStore(recs)
    seen, after = [], None
    while True:
        page, nxt = store.page(None, None, after, 2)
        seen += [r["id"] for r in page]
        if nxt is None:
            break
        after = decode_cursor(nxt)
    assert sorted(seen) == list(range(1, 9)) and len(seen) == 8


def test_modified_since_is_inclusive_and_modified_before_exclusive():
    store = AccountStore(seed_accounts(5))  # one per minute from 2026-01-01 00:00
    base = datetime(2026, 1, 1, tzinfo=UTC)
    page, nxt = store.page(base + timedelta(minutes=1), base + timedelta(minutes=3), None, 10)
    assert [r["id"] for r in page] == [2, 3] and nxt is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_throttles_until_refilled():
    clock = FakeClock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take()[0] for _ in range(3)] == [True, True, True]
    ok, wait = bucket.take()
    assert not ok and wait == pytest.approx(0.5)
    assert retry_after_header(wait) == "1"
    clock.now += 0.5
    assert bucket.take() == (True, 0.0)
    clock.now += 100  # refills to the burst, never beyond
    assert [bucket.take()[0] for _ in range(4)] == [True, True, True, False]


def test_token_bucket_rejects_nonsense_settings():
    with pytest.raises(ValueError, match="rate > 0"):
        TokenBucket(rate=0, burst=1)


def test_base_url_comes_from_the_http_connection():
    from types import SimpleNamespace as C

    from cdclab.delta.partner_api import base_url_of

    assert base_url_of(C(host="127.0.0.1", port=8099, schema="")) == "http://127.0.0.1:8099"
    assert base_url_of(C(host="127.0.0.1", port=8099, schema="accounts")) == "http://127.0.0.1:8099"
    assert base_url_of(C(host="https://partner.example/", port=None, schema="")) == "https://partner.example"
