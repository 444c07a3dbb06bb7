"""Clickstream events with event and ingest times: late, out-of-order and duplicated ones (see
:mod:`cdclab.workload`)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal, TypedDict, get_args

from cdclab.workload.model import DEFAULT_START, InvalidWorkloadError

# --------------------------------------------------------------------------------------------------
# clickstream events (pure; producing them to Kafka is the DAGs' job)

EventType = Literal["page_view", "product_view", "add_to_cart", "checkout", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
_EVENT_WEIGHTS = (0.6, 0.2, 0.12, 0.05, 0.03)


class ClickEvent(TypedDict):
    event_id: str
    user_id: int
    event_type: EventType
    event_time: str
    ingest_time: str


def utc_iso(value: datetime) -> str:
    """``2026-03-01T00:00:01.250Z``: UTC, milliseconds, a ``Z`` suffix."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clickstream_events(
    seed: int,
    n: int,
    late_fraction: float = 0.0,
    duplicate_fraction: float = 0.0,
    out_of_order_fraction: float = 0.0,
    start: datetime = DEFAULT_START,
    *,
    users: int = 100,
    id_base: int = 0,
    step: timedelta = timedelta(seconds=1),
    lateness: timedelta = timedelta(minutes=10),
) -> list[ClickEvent]:
    """``n`` distinct events (plus duplicates) in ingest order; deterministic in all arguments.

    Event ``i`` happens at ``start + i * step``. Normally it is ingested 50-900 ms later, so ingest
    order is event-time order. Exactly ``round(n * late_fraction)`` events are *late*: ingested
    ``lateness`` to ``2 * lateness`` after they happened. Exactly ``round(n * out_of_order_fraction)``
    other events are delayed 2-4 steps: they arrive after later events but are not late. Exactly
    ``round(n * duplicate_fraction)`` events are delivered a second time (same ``event_id``, a later
    ``ingest_time``: a producer retry). ``user_id`` is in ``id_base + 1 .. id_base + users``.
    """
    for name, value in (
        ("late_fraction", late_fraction),
        ("duplicate_fraction", duplicate_fraction),
        ("out_of_order_fraction", out_of_order_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise InvalidWorkloadError(f"{name} is a fraction between 0 and 1, got {value}")
    if late_fraction + out_of_order_fraction > 1.0:
        raise InvalidWorkloadError(
            "late_fraction + out_of_order_fraction must be <= 1 (an event is one or the other)"
        )
    if n < 0 or users < 1:
        raise InvalidWorkloadError(f"need n >= 0 and users >= 1, got n={n} users={users}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise InvalidWorkloadError(f"start is a naive datetime ({start!r}); pass an aware one")
    if step <= timedelta(0) or lateness <= step * 4:
        raise InvalidWorkloadError(
            f"need step > 0 and lateness > 4 * step, got step={step} lateness={lateness}"
        )
    rng = random.Random(seed)
    indices = list(range(n))
    late = set(rng.sample(indices, round(n * late_fraction)))
    rest = [i for i in indices if i not in late]
    disordered = set(rng.sample(rest, round(n * out_of_order_fraction)))
    duplicated = set(rng.sample(indices, round(n * duplicate_fraction)))
    deliveries: list[tuple[datetime, int, int, ClickEvent]] = []
    for i in indices:
        event_time = start + step * i
        if i in late:
            delay = lateness + lateness * rng.random()
        elif i in disordered:
            delay = step * (2 + 2 * rng.random())
        else:
            delay = timedelta(milliseconds=rng.randint(50, 900)) * (step / timedelta(seconds=1))
        ingest = event_time + delay
        event: ClickEvent = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": id_base + rng.randint(1, users),
            "event_type": rng.choices(EVENT_TYPES, weights=_EVENT_WEIGHTS)[0],
            "event_time": utc_iso(event_time),
            "ingest_time": utc_iso(ingest),
        }
        deliveries.append((ingest, i, 0, event))
        if i in duplicated:
            again = ingest + timedelta(milliseconds=rng.randint(1_000, 3_000))
            deliveries.append((again, i, 1, {**event, "ingest_time": utc_iso(again)}))
    deliveries.sort(key=lambda d: (d[0], d[1], d[2]))
    return [d[3] for d in deliveries]
