"""Half-open time windows: data intervals, partitions, event-time windows, lateness, batches.

Vocabulary:
- *window*: a half-open range of instants ``[start, end)`` (:class:`Window`). ``start`` belongs to it,
  ``end`` does not, so consecutive windows share a boundary without sharing a row: a row stamped
  exactly ``end`` belongs to the next window. The SQL form is ``col >= start AND col < end``
  (:meth:`Window.sql_predicate`); ``BETWEEN`` is closed on both sides and double-counts boundaries.
- *data interval*: the window Airflow hands a run as ``data_interval_start`` / ``data_interval_end``
  (:func:`from_context`, :func:`run_interval`). A run triggered without a logical date carries none; it
  gets the interval the UI's Trigger would have given it at ``run_after``: the last complete interval
  before the run started, derived from the DAG's timetable (:func:`infer_interval`). Only *interval* timetables produce a real window:
  ``CronDataIntervalTimetable`` / ``DeltaDataIntervalTimetable``. In Airflow 3 a cron string schedule is a
  ``CronTriggerTimetable`` whose runs have ``start == end``: an empty window that would load nothing,
  so :class:`EmptyIntervalError` is raised instead.
- *partition*: a fixed slot of a time-partitioned table (an hour or a day, optionally of a local
  time zone) named by its *partition key* (``2026-03-29`` / ``2026-03-29T05``).
  :func:`partitions_for` maps a window onto the partitions it covers; a window that does not start and
  end on partition boundaries is *unaligned* and handled by the *alignment policy*:
  ``"raise"`` (:class:`UnalignedIntervalError`), ``"split"`` (one clipped piece per partition, marked
  ``is_full=False`` at the edges) or ``"expand"`` (whole partitions, widening the window).
- *event time* vs *processing time*: when something happened (``ordered_at``, set by the client) vs
  when the pipeline saw it (``updated_at`` / ingest time, set by the database).
- *tumbling windows*: fixed-size, non-overlapping event-time windows (``size``); *sliding windows*:
  size ``size`` starting every ``slide`` (``slide < size``), so each instant is in ``size / slide``
  windows. Both are aligned to an *origin* (the Unix epoch by default): :class:`WindowSpec`.
- *allowed lateness*: how long after an event-time window has ended its result may still change.
  :func:`classify_arrival` sorts one event into ``"on_time"`` (seen before its window ended),
  ``"late"`` (seen after, but within the allowed lateness: the window is recomputed),
  ``"too_late"`` (after that: not applied, but recorded, never dropped silently) or
  ``"future"`` (event time ahead of processing time by more than the *skew tolerance*: a client clock
  is wrong; recorded as well).
- *batch*: a sub-window of a long interval (:meth:`Window.split`), e.g. a backfill of a month loaded
  one day at a time so each transaction stays small.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import pendulum
from pendulum import DateTime
from psycopg2 import sql

from cdclab.time.timezones import require_aware, zone

AlignPolicy = Literal["raise", "split", "expand"]
Grain = Literal["hour", "day"]
Arrival = Literal["on_time", "late", "too_late", "future"]
ALIGN_POLICIES: frozenset[str] = frozenset({"raise", "split", "expand"})
GRAINS: frozenset[str] = frozenset({"hour", "day"})
EPOCH = pendulum.datetime(1970, 1, 1, tz="UTC")


class EmptyIntervalError(ValueError):
    """``start == end``: the run got a point in time, not a window (cron *trigger* timetable)."""

    def __init__(self, at: dt.datetime) -> None:
        super().__init__(
            f"the data interval is empty: data_interval_start == data_interval_end == {at.isoformat()}. "
            f"In Airflow 3 a cron string schedule (e.g. schedule='@daily') is a CronTriggerTimetable, whose "
            f"runs have no data interval; an interval-bounded load would read nothing. Use "
            f"schedule=CronDataIntervalTimetable('0 0 * * *', timezone='UTC') or "
            f"DeltaDataIntervalTimetable(timedelta(hours=1)) from airflow.timetables.interval."
        )


class InvertedIntervalError(ValueError):
    """``start > end``."""

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        super().__init__(
            f"window start {start.isoformat()} is after its end {end.isoformat()}; "
            f"pass [start, end) with start < end."
        )


class UnalignedIntervalError(ValueError):
    """A window that does not start and end on partition boundaries, under the ``raise`` policy."""

    def __init__(self, window: Window, grain: str, tz: str) -> None:
        super().__init__(
            f"window {window} is not aligned to {grain} partitions in {tz}: it must start and end on "
            f"{grain} boundaries. Align the schedule to the partition grain (e.g. a daily "
            f"CronDataIntervalTimetable for daily partitions) or choose policy='split' (clipped pieces) "
            f"or policy='expand' (whole partitions)."
        )


class MissingIntervalError(ValueError):
    """The run has no data interval and none can be derived (no ``dag`` / ``dag_run`` in the context, or a
    timetable that cannot infer one)."""

    def __init__(self, start: object, end: object, why: str = "", dag_id: str = "<dag_id>") -> None:
        super().__init__(
            f"this run has no data interval (data_interval_start={start!r}, data_interval_end={end!r})"
            f"{': ' + why if why else ''}, and none could be derived from the DAG's interval timetable. "
            f"Trigger it with a logical date: in the UI press Trigger (the logical date defaults to now), or "
            f"`airflow dags trigger {dag_id} --logical-date 2026-03-29T05:00:00+00:00`, or POST "
            f'/api/v2/dags/{dag_id}/dagRuns with a "logical_date"; or pass explicit bounds.'
        )


class UnknownPolicyError(ValueError):
    def __init__(self, kind: str, value: str, allowed: Iterable[str]) -> None:
        super().__init__(f"unknown {kind} {value!r}; choose one of {sorted(allowed)}")


@dataclass(frozen=True, order=True)
class Window:
    """The half-open range ``[start, end)``; both ends aware, normalised to UTC, ``start < end``."""

    start: DateTime
    end: DateTime

    def __init__(self, start: dt.datetime, end: dt.datetime) -> None:
        s = require_aware(start, "window start").in_timezone("UTC")
        e = require_aware(end, "window end").in_timezone("UTC")
        if s == e:
            raise EmptyIntervalError(s)
        if s > e:
            raise InvertedIntervalError(s, e)
        object.__setattr__(self, "start", s)
        object.__setattr__(self, "end", e)

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    @property
    def duration(self) -> dt.timedelta:
        return self.end - self.start

    def contains(self, instant: dt.datetime) -> bool:
        ts = require_aware(instant, "instant")
        return self.start <= ts < self.end

    def overlaps(self, other: Window) -> bool:
        return self.start < other.end and other.start < self.end

    def intersection(self, other: Window) -> Window | None:
        lo, hi = max(self.start, other.start), min(self.end, other.end)
        return Window(lo, hi) if lo < hi else None

    def widen(self, before: dt.timedelta = dt.timedelta(0), after: dt.timedelta = dt.timedelta(0)) -> Window:
        """``[start - before, end + after)``: e.g. a lookback overlap for late-committing rows."""
        return Window(self.start - before, self.end + after)

    def split(self, step: dt.timedelta) -> list[Window]:
        """Consecutive batches of at most ``step`` that cover the window exactly (last one may be shorter)."""
        if step <= dt.timedelta(0):
            raise ValueError(f"batch step must be positive, got {step}")
        out: list[Window] = []
        cursor = self.start
        while cursor < self.end:
            nxt = min(cursor + step, self.end)
            out.append(Window(cursor, nxt))
            cursor = nxt
        return out

    def sql_predicate(self, column: str) -> tuple[sql.Composed, dict[str, DateTime]]:
        """``"col" >= %(window_start)s AND "col" < %(window_end)s`` and its bound parameters."""
        text = sql.SQL("{col} >= %(window_start)s AND {col} < %(window_end)s").format(
            col=sql.SQL(".").join(sql.Identifier(p) for p in column.split("."))
        )
        return text, {"window_start": self.start, "window_end": self.end}


NO_INTERVAL_BEHAVIOUR = (
    "A run without a logical date (REST API / CLI trigger without one) gets the interval the UI's Trigger "
    "would give it at the same moment: timetable.infer_manual_data_interval(run_after), i.e. the last "
    "complete interval before the run started (cdclab.time.intervals.run_interval)."
)


@dataclass(frozen=True)
class RunInterval:
    """A run's logical date and data interval ``[start, end)``, as the run carried them or, for a run without a
    logical date, as derived from the DAG's timetable (``derived=True``).

    ``start == end`` is possible here (a cron-string / ``schedule=None`` DAG: a point in time, not a window);
    :attr:`window` refuses that with :class:`EmptyIntervalError`."""

    logical_date: DateTime
    start: DateTime
    end: DateTime
    derived: bool = False

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)


def _utc(value: dt.datetime) -> DateTime:
    return pendulum.instance(require_aware(value, "run time")).in_timezone("UTC")


def infer_interval(
    timetable: Any, run_after: dt.datetime, dag_id: str = "<dag_id>"
) -> tuple[DateTime, DateTime]:
    """``[start, end)`` that Airflow gives a manual run at ``run_after`` (what the UI's Trigger does with its
    default logical date = now): ``infer_manual_data_interval`` of the core form of the DAG's timetable.

    - ``CronDataIntervalTimetable``: the last complete cron period that ends at or before ``run_after``
      (``@hourly``, run_after 05:17 -> ``[04:00, 05:00)``), in the timetable's time zone;
    - ``DeltaDataIntervalTimetable(d)``: ``[run_after - d, run_after)``;
    - cron string (``CronTriggerTimetable``), ``schedule=None``: the point ``[run_after, run_after]``."""
    from airflow.serialization.encoders import coerce_to_core_timetable  # worker-side, lazily

    core = coerce_to_core_timetable(timetable)
    infer = getattr(core, "infer_manual_data_interval", None)
    if infer is None:
        why = f"timetable {type(timetable).__name__} cannot infer one"
        raise MissingIntervalError(None, None, why, dag_id)
    interval = infer(run_after=_utc(run_after))
    return _utc(interval.start), _utc(interval.end)


def interval_for_run(dag: Any, dag_run: Any) -> RunInterval:
    """The run's logical date and interval from the Task SDK's ``dag`` and ``dag_run`` (usable from Jinja:
    ``{{ run_interval_of(dag, dag_run).start }}``): carried when the run has a logical date and an interval,
    derived from ``dag.timetable`` at ``dag_run.run_after`` when it has none."""
    logical = getattr(dag_run, "logical_date", None)
    start = getattr(dag_run, "data_interval_start", None)
    end = getattr(dag_run, "data_interval_end", None)
    dag_id = getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", None) or "<dag_id>"
    if start is not None and end is not None:
        return RunInterval(_utc(logical if logical is not None else end), _utc(start), _utc(end))
    run_after = getattr(dag_run, "run_after", None)
    timetable = getattr(dag, "timetable", None)
    if run_after is None or timetable is None:
        raise MissingIntervalError(
            start, end, "no dag_run.run_after / dag.timetable to derive it from", dag_id
        )
    d_start, d_end = infer_interval(timetable, run_after, dag_id)
    return RunInterval(_utc(logical if logical is not None else run_after), d_start, d_end, derived=True)


def run_interval(context: Mapping[str, Any]) -> RunInterval:
    """The run's logical date and data interval from a task context; the one rule for runs without one.

    A context with ``data_interval_start`` / ``data_interval_end`` (a run with a logical date) gives them
    unchanged. A run triggered without a logical date (REST API or ``airflow dags trigger`` without
    ``--logical-date``, asset-triggered runs) carries neither key: its interval is *derived* from the DAG's
    timetable at ``dag_run.run_after`` with :func:`infer_interval`, i.e. exactly what the UI's Trigger button
    would have given a run started at that moment (the last complete interval before the run started), and
    its logical date is ``run_after``. When there is nothing to derive from, :class:`MissingIntervalError`
    says how to trigger the DAG."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        logical = context.get("logical_date")
        return RunInterval(_utc(logical if logical is not None else end), _utc(start), _utc(end))
    dag, dag_run = context.get("dag"), context.get("dag_run")
    if dag is None or dag_run is None:
        raise MissingIntervalError(start, end, "the context has no dag / dag_run to derive it from")
    return interval_for_run(dag, dag_run)


def from_context(context: Mapping[str, Any]) -> Window:
    """The run's data interval as a :class:`Window` (:func:`run_interval`; raises :class:`EmptyIntervalError`
    for ``start == end``)."""
    return run_interval(context).window


# --- partitions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One slot of a time-partitioned table and the piece of a window that falls into it."""

    key: str
    bounds: Window
    piece: Window

    @property
    def is_full(self) -> bool:
        return self.piece == self.bounds

    @property
    def suffix(self) -> str:
        """``p20260329`` / ``p20260329t05``: a safe table-name suffix for the partition."""
        return "p" + self.key.replace("-", "").replace(":", "").lower()


def _floor(instant: DateTime, grain: str, tz: str) -> DateTime:
    local = instant.in_timezone(zone(tz))
    floored = local.start_of("day") if grain == "day" else local.start_of("hour")
    return floored.in_timezone("UTC")


def _next_boundary(boundary: DateTime, grain: str, tz: str) -> DateTime:
    if grain == "hour":
        return boundary.add(hours=1)  # absolute hour: DST-safe
    local = boundary.in_timezone(zone(tz))
    nxt = pendulum.datetime(local.year, local.month, local.day, tz=zone(tz)).add(days=1)
    return nxt.in_timezone("UTC")


def _key(boundary: DateTime, grain: str, tz: str) -> str:
    local = boundary.in_timezone(zone(tz))
    return local.strftime("%Y-%m-%d") if grain == "day" else local.strftime("%Y-%m-%dT%H")


def partition_of(instant: dt.datetime, grain: Grain = "day", tz: str = "UTC") -> Partition:
    """The partition that holds ``instant``."""
    if grain not in GRAINS:
        raise UnknownPolicyError("grain", grain, GRAINS)
    start = _floor(require_aware(instant, "instant"), grain, tz)
    bounds = Window(start, _next_boundary(start, grain, tz))
    return Partition(key=_key(start, grain, tz), bounds=bounds, piece=bounds)


def is_aligned(window: Window, grain: Grain = "day", tz: str = "UTC") -> bool:
    return _floor(window.start, grain, tz) == window.start and _floor(window.end, grain, tz) == window.end


def partitions_for(
    window: Window, grain: Grain = "day", policy: AlignPolicy = "raise", tz: str = "UTC"
) -> list[Partition]:
    """The partitions that ``window`` covers, in order, under an alignment policy (see module doc)."""
    if grain not in GRAINS:
        raise UnknownPolicyError("grain", grain, GRAINS)
    if policy not in ALIGN_POLICIES:
        raise UnknownPolicyError("alignment policy", policy, ALIGN_POLICIES)
    if policy == "raise" and not is_aligned(window, grain, tz):
        raise UnalignedIntervalError(window, grain, tz)
    out: list[Partition] = []
    boundary = _floor(window.start, grain, tz)
    while boundary < window.end:
        nxt = _next_boundary(boundary, grain, tz)
        bounds = Window(boundary, nxt)
        piece = bounds if policy == "expand" else bounds.intersection(window)
        assert piece is not None
        out.append(Partition(key=_key(boundary, grain, tz), bounds=bounds, piece=piece))
        boundary = nxt
    return out


# --- event-time windows -------------------------------------------------------------------------


def _micros(delta: dt.timedelta) -> int:
    """Whole microseconds of a timedelta (pendulum's Interval does not floor-divide by a timedelta)."""
    return round(delta.total_seconds() * 1_000_000)


@dataclass(frozen=True)
class WindowSpec:
    """Tumbling (``slide == size``) or sliding (``slide < size``) windows aligned to ``origin``."""

    size: dt.timedelta
    slide: dt.timedelta
    origin: DateTime = EPOCH

    def __post_init__(self) -> None:
        if self.size <= dt.timedelta(0) or self.slide <= dt.timedelta(0):
            raise ValueError(
                f"window size and slide must be positive, got size={self.size} slide={self.slide}"
            )
        if self.slide > self.size:
            raise ValueError(
                f"slide {self.slide} > size {self.size} leaves gaps between windows (hopping with holes); "
                f"use slide <= size"
            )
        if self.size % self.slide:
            raise ValueError(f"size {self.size} must be a whole multiple of slide {self.slide}")
        require_aware(self.origin, "window origin")

    @classmethod
    def tumbling(cls, size: dt.timedelta, origin: DateTime = EPOCH) -> WindowSpec:
        return cls(size=size, slide=size, origin=origin)

    @classmethod
    def sliding(cls, size: dt.timedelta, slide: dt.timedelta, origin: DateTime = EPOCH) -> WindowSpec:
        return cls(size=size, slide=slide, origin=origin)

    @property
    def windows_per_event(self) -> int:
        """How many windows each instant belongs to (1 for tumbling)."""
        return self.size // self.slide

    def _slot_floor(self, instant: DateTime) -> DateTime:
        """The latest window start at or before ``instant``."""
        steps = _micros(instant - self.origin) // _micros(self.slide)
        return self.origin + self.slide * steps

    def windows_for(self, instant: dt.datetime) -> list[Window]:
        """Every window that contains ``instant``, oldest first."""
        ts = require_aware(instant, "event time")
        last_start = self._slot_floor(ts)
        n = self.windows_per_event
        return [Window(s, s + self.size) for s in (last_start - self.slide * k for k in range(n - 1, -1, -1))]

    def window_for(self, instant: dt.datetime) -> Window:
        """The window of ``instant`` (tumbling windows only: there is exactly one)."""
        if self.slide != self.size:
            raise ValueError("window_for() needs tumbling windows; sliding windows: use windows_for()")
        return self.windows_for(instant)[0]

    def windows_ending_in(self, span: Window) -> list[Window]:
        """Windows whose end lies in ``(span.start, span.end]``: the ones that close during ``span``."""
        k = _micros(span.start - self.origin - self.size) // _micros(self.slide) + 1
        end = self.origin + self.size + self.slide * k  # the first window end after span.start
        out: list[Window] = []
        while end <= span.end:
            out.append(Window(end - self.size, end))
            end += self.slide
        return out

    def windows_touching(self, instants: Iterable[dt.datetime]) -> list[Window]:
        """The distinct windows that contain any of ``instants`` (what a change forces to recompute)."""
        seen: set[Window] = set()
        for ts in instants:
            seen.update(self.windows_for(ts))
        return sorted(seen)


def classify_arrival(
    event_time: dt.datetime,
    processing_time: dt.datetime,
    window: Window,
    allowed_lateness: dt.timedelta,
    skew_tolerance: dt.timedelta,
) -> Arrival:
    """Whether an event seen at ``processing_time`` is on time, late (accepted), too late, or from the future.

    - ``future``: ``event_time > processing_time + skew_tolerance`` (a clock is wrong; not applied);
    - ``on_time``: seen before ``window.end``;
    - ``late``: seen in ``[window.end, window.end + allowed_lateness)``: applied, the window recomputed;
    - ``too_late``: seen at or after ``window.end + allowed_lateness``: not applied, recorded.
    """
    et = require_aware(event_time, "event time")
    pt = require_aware(processing_time, "processing time")
    if allowed_lateness < dt.timedelta(0) or skew_tolerance < dt.timedelta(0):
        raise ValueError("allowed_lateness and skew_tolerance must not be negative")
    if et > pt + skew_tolerance:
        return "future"
    if pt < window.end:
        return "on_time"
    if pt < window.end + allowed_lateness:
        return "late"
    return "too_late"
