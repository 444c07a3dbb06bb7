"""UTC storage, business-time-zone reporting, and DST change days.

Vocabulary:
- *instant*: a point on the UTC time line. Stored as ``timestamptz`` in Postgres and handled as an
  aware :class:`pendulum.DateTime`; storage is always UTC, a zone is applied only when reporting.
- *naive datetime*: a datetime without ``tzinfo``. It names no instant (is ``2026-03-29 02:30`` Berlin
  or UTC? in Berlin that wall time does not even exist), so :func:`require_aware` rejects it with
  :class:`NaiveDatetimeError` instead of guessing.
- *business time zone*: the IANA zone in which a day is "a day" for a report: the company's zone
  (``Europe/Berlin``) or a customer's home zone (``customers.home_tz``).
- *local day*: a calendar date in a business time zone. :func:`local_day_bounds` turns it into the
  half-open UTC range ``[start, end)`` of instants that belong to it. That range is 24 hours long on
  most days, **23 hours** on the spring-forward day and **25 hours** on the fall-back day
  (Berlin 2026-03-29 / 2026-10-25, New York 2026-03-08 / 2026-11-01). Adding ``timedelta(days=1)`` to a
  UTC midnight, or grouping by ``date(ts AT TIME ZONE 'UTC')``, gets those days wrong.
- *local hour bucket*: one wall-clock hour of a local day (:func:`local_hour_buckets`). A 23-hour day
  has 23 buckets (02:00-03:00 is skipped in Berlin), a 25-hour day has 25: the repeated hour appears
  twice, told apart by its UTC offset.
- *cross-timezone*: the same instant belongs to different local days in different zones
  (``2026-03-08T03:30Z`` is Mar 8 in Berlin and Mar 7 in New York), so per-zone daily totals must
  each be computed with their own bounds, never by shifting one zone's totals.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pendulum
from pendulum import DateTime
from pendulum.tz.timezone import Timezone


class NaiveDatetimeError(ValueError):
    """A datetime without a time zone where an instant is required."""

    def __init__(self, what: str, value: object) -> None:
        super().__init__(
            f"{what} is a naive datetime ({value!r}): it names no instant. Pass an aware value, e.g. "
            f"pendulum.datetime(..., tz='UTC') or datetime(..., tzinfo=ZoneInfo('Europe/Berlin')); "
            f"store instants as timestamptz in UTC."
        )


class UnknownTimeZoneError(ValueError):
    """A business time zone name that is not an IANA zone."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or "
            f"'America/New_York' (not an abbreviation like 'CET' or 'EST', and not a fixed offset)."
        )


def zone(name: str) -> Timezone:
    """The IANA zone ``name``; :class:`UnknownTimeZoneError` for anything else."""
    try:
        tz = pendulum.timezone(name)
    except Exception as exc:  # pendulum raises InvalidTimezone / ZoneInfoNotFoundError
        raise UnknownTimeZoneError(name) from exc
    if not isinstance(tz, Timezone):  # a FixedTimezone has no DST rules; a business zone needs them
        raise UnknownTimeZoneError(name)
    return tz


def require_aware(value: dt.datetime, what: str = "datetime") -> DateTime:
    """``value`` as an aware pendulum DateTime (same instant); raise on a naive datetime."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}: {value!r}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise NaiveDatetimeError(what, value)
    return pendulum.instance(value)


def to_utc(value: dt.datetime, what: str = "datetime") -> DateTime:
    """The instant ``value`` expressed in UTC (what Postgres stores in a timestamptz)."""
    return require_aware(value, what).in_timezone("UTC")


@dataclass(frozen=True)
class LocalDay:
    """A calendar date in a business time zone with its UTC bounds ``[utc_start, utc_end)``."""

    tz: str
    date: dt.date
    utc_start: DateTime
    utc_end: DateTime

    @property
    def hours(self) -> int:
        """23, 24 or 25 (other values only in zones that changed their offset by other amounts)."""
        return int((self.utc_end - self.utc_start).total_seconds() // 3600)

    def contains(self, instant: dt.datetime) -> bool:
        ts = require_aware(instant, "instant")
        return self.utc_start <= ts < self.utc_end


def local_midnight(day: dt.date, tz: str) -> DateTime:
    """The first instant of ``day`` in ``tz`` (midnight; in zones that skip midnight, the first valid time)."""
    return pendulum.datetime(day.year, day.month, day.day, tz=zone(tz))


def local_day_bounds(day: dt.date, tz: str) -> LocalDay:
    """The UTC range ``[start, end)`` of local day ``day`` in ``tz``.

    Computed from the two local midnights, so DST days come out 23 or 25 hours long.
    """
    if isinstance(day, dt.datetime):
        raise TypeError(f"local_day_bounds takes a date, not a datetime ({day!r}); use .date()")
    start = local_midnight(day, tz)
    end = local_midnight(day + dt.timedelta(days=1), tz)
    return LocalDay(tz=tz, date=day, utc_start=start.in_timezone("UTC"), utc_end=end.in_timezone("UTC"))


def local_date_of(instant: dt.datetime, tz: str) -> dt.date:
    """The local calendar date of ``instant`` in ``tz``."""
    return require_aware(instant, "instant").in_timezone(zone(tz)).date()


@dataclass(frozen=True)
class HourBucket:
    """One wall-clock hour of a local day: its local label, UTC offset and UTC bounds."""

    local_start: DateTime
    utc_start: DateTime
    utc_end: DateTime

    @property
    def label(self) -> str:
        """``HH:MM+HH:MM``: the local start with its offset (tells the repeated fall-back hour apart)."""
        return self.local_start.strftime("%H:%M%z")


def local_hour_buckets(day: dt.date, tz: str) -> list[HourBucket]:
    """The hour buckets of local day ``day`` in ``tz``: 23, 24 or 25 of them, stepping in UTC."""
    bounds = local_day_bounds(day, tz)
    tzinfo = zone(tz)
    buckets: list[HourBucket] = []
    cursor = bounds.utc_start
    while cursor < bounds.utc_end:
        nxt = cursor.add(hours=1)
        buckets.append(HourBucket(local_start=cursor.in_timezone(tzinfo), utc_start=cursor, utc_end=nxt))
        cursor = nxt
    return buckets


def local_days_ending_in(start: dt.datetime, end: dt.datetime, tz: str) -> list[LocalDay]:
    """The local days in ``tz`` whose UTC end lies in ``(start, end]``.

    A run over the data interval ``[start, end)`` has seen every instant of exactly these days for the
    first time, so it is the run that can (re)compute them: each local day is reported by exactly one
    run of a gap-free sequence of intervals, whatever the zone.
    """
    lo = require_aware(start, "start")
    hi = require_aware(end, "end")
    tzinfo = zone(tz)
    day = lo.in_timezone(tzinfo).date() - dt.timedelta(days=1)
    last = hi.in_timezone(tzinfo).date()
    days: list[LocalDay] = []
    while day <= last:
        bounds = local_day_bounds(day, tz)
        if lo < bounds.utc_end <= hi:
            days.append(bounds)
        day += dt.timedelta(days=1)
    return days


def day_totals_sql(orders: str, customers: str | None = None) -> Any:
    """Order count and revenue of one local day, by UTC bounds (``utc_start``, ``utc_end``).

    With ``customers``: only orders of customers whose ``home_tz`` is ``%(tz)s`` (per-home-zone reporting).
    The predicate compares the stored UTC instants with the day's UTC bounds, so it uses an index on
    ``ordered_at`` and is right on 23- and 25-hour days; ``date(ordered_at AT TIME ZONE tz) = day`` gives the
    same rows but cannot use the index.
    """
    from psycopg2 import sql

    from cdclab.common.db import ident

    if customers is None:
        return sql.SQL(
            "SELECT count(*), coalesce(sum(o.total), 0) FROM {o} o "
            "WHERE o.ordered_at >= %(utc_start)s AND o.ordered_at < %(utc_end)s"
        ).format(o=ident(orders))
    return sql.SQL(
        "SELECT count(*), coalesce(sum(o.total), 0) FROM {o} o JOIN {c} c ON c.id = o.customer_id "
        "WHERE c.home_tz = %(tz)s AND o.ordered_at >= %(utc_start)s AND o.ordered_at < %(utc_end)s"
    ).format(o=ident(orders), c=ident(customers))
