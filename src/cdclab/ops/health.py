"""Pipeline health metrics with thresholds: progress, lag, gaps and drift as rows a dashboard can read.

Vocabulary:
- *check*: one measurement of one *subject* (a watermark key, a consumer group's topic partition, a
  ledger pipeline, a source/target pair) for one *metric*:
  ``watermark_age_seconds`` (progress tracking: how far the stored watermark is behind the run's
  ``data_interval_end``, never the wall clock), ``kafka_lag`` (lag detection: topic end offset - the
  group's next offset in ``state.kafka_offsets``), ``missing_intervals`` (gap alerting: intervals
  missing from or failed in ``state.interval_ledger`` between its first interval and the run's interval
  start), ``row_count_drift`` (|source rows - target rows| / source rows), ``connector_state``
  (how many of a Kafka Connect connector's parts, the connector and its tasks, are not ``RUNNING``),
  ``slot_retained_wal_bytes`` (per replication slot: ``pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)``,
  the WAL the slot keeps on the source's disk; :func:`replication_slots`) and ``files_exhausted`` (per file
  pipeline: files in ``state.file_manifest`` that used up their attempts and are no longer retried;
  :func:`files_exhausted`).
- *status*: ``ok`` below ``warn``, ``warn`` from ``warn``, ``alert`` from ``alert``; a subject that cannot
  be measured (no watermark, no offsets, unknown topic) is an ``alert`` with the reason in ``detail``.
  ``alert`` is the highest status: a replication slot that is expected but missing, or invalidated
  (``wal_status = 'lost'``), is an ``alert`` whose detail starts with ``CRITICAL`` and names the remedy
  (changes are already lost; see :mod:`cdclab.cdc.slots`).
- *future watermark*: a negative ``watermark_age_seconds`` (the watermark is after the measurement time:
  the load read past its interval, a backfill runs behind a newer watermark, clocks disagree or the value
  was set by hand) is never ``ok``: it is an ``alert`` whose ``detail`` starts with ``future_watermark``.
  ``future_tolerance`` seconds of it are allowed (a load that reads up to *now* runs a little after its
  interval's end); within it the age counts as 0.
- *scope*: the monitoring run's name; every check row carries it, so several dashboards share a table.
- ``marts.pipeline_health`` keeps every check (history); the view ``marts.pipeline_health_dashboard``
  shows the latest check per (scope, metric, subject), worst status first: the dashboard's source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg2 import sql

from cdclab.cdc import offsets, slots
from cdclab.common.db import ident
from cdclab.common.ddl import require
from cdclab.state import backup as statebackup
from cdclab.state import watermarks as state

Status = Literal["ok", "warn", "alert"]


class HealthConfigError(ValueError):
    """Thresholds are inconsistent (alert below warn); fix the DAG params."""


@dataclass(frozen=True)
class Check:
    metric: str
    subject: str
    value: float | None
    warn: float
    alert: float
    status: Status
    detail: str


def grade(value: float | None, warn: float, alert: float) -> Status:
    if alert < warn:
        raise HealthConfigError(f"alert threshold {alert} is below warn threshold {warn}; swap them")
    if value is None or value >= alert:
        return "alert"
    return "warn" if value >= warn else "ok"


def _check(metric: str, subject: str, value: float | None, warn: float, alert: float, detail: str) -> Check:
    return Check(metric, subject, value, warn, alert, grade(value, warn, alert), detail)


def _per_subject(
    conn: Any, subjects: Sequence[str], measure: Callable[[Any, str], Iterable[Check]]
) -> list[Check]:
    """The checks ``measure(cur, subject)`` gives for each subject in turn, read with one cursor of
    ``conn``; the reading transaction is rolled back afterwards."""
    with conn.cursor() as cur:
        out = [c for subject in subjects for c in measure(cur, subject)]
    conn.rollback()
    return out


def ensure_schema(conn: Any) -> None:
    """Check ``marts.pipeline_health`` and its view ``marts.pipeline_health_dashboard`` (declared by
    infra/postgres/warehouse/V003__marts.sql); creates nothing."""
    require(conn, "marts.pipeline_health")
    conn.commit()  # as when it created them: callers may rely on it


FUTURE_WATERMARK = "future_watermark"


def watermark_ages(
    conn: Any,
    keys: Sequence[str],
    at: datetime,
    warn: float,
    alert: float,
    *,
    future_tolerance: float = 0.0,
) -> list[Check]:
    store = state.TableWatermarkStore(conn)
    out = []
    for key in keys:
        wm = store.get(key)
        if wm is None:
            out.append(_check("watermark_age_seconds", key, None, warn, alert, "no watermark stored"))
            continue
        # a timestamp watermark ages with its value; any other type with its last update
        since: datetime | None = wm.value if wm.value_type == "timestamptz" else wm.updated_at
        if since is None:
            out.append(_check("watermark_age_seconds", key, None, warn, alert, "watermark has no timestamp"))
            continue
        age = (at - since).total_seconds()
        if age < -future_tolerance:
            detail = (
                f"{FUTURE_WATERMARK}: watermark {since.isoformat()} is {-age:.0f}s after the measurement time "
                f"{at.isoformat()} (tolerance {future_tolerance:.0f}s): the load read past its interval, a "
                "backfill runs behind a newer watermark, or the value was set by hand"
            )
            out.append(Check("watermark_age_seconds", key, age, warn, alert, "alert", detail))
            continue
        age = max(age, 0.0)
        out.append(_check("watermark_age_seconds", key, age, warn, alert, f"watermark {since.isoformat()}"))
    conn.rollback()
    return out


def backup_age(conn: Any, scope: str, at: datetime, warn: float, alert: float) -> Check:
    """Seconds from the newest state backup of ``scope`` (:mod:`cdclab.state.backup`) to ``at``; no backup
    at all is an alert."""
    taken = statebackup.latest_taken_at(conn, scope)
    age = None if taken is None else max((at - taken).total_seconds(), 0.0)
    return _check("backup_age_seconds", scope, age, warn, alert, f"latest backup {taken}")


def kafka_lags(conn: Any, bootstrap: str, groups: Sequence[str], warn: float, alert: float) -> list[Check]:
    def measure(cur: Any, group: str) -> list[Check]:
        rows = offsets.report(cur, bootstrap, group)
        if not rows:
            return [_check("kafka_lag", group, None, warn, alert, "no offsets stored for the group")]
        out = []
        for r in rows:
            subject = f"{group}/{r.topic}[{r.partition}]"
            detail = f"next {r.next_offset}, end {r.end_offset}"
            if r.end_offset is None:
                detail = f"topic {r.topic} partition {r.partition} not found in Kafka"
            out.append(_check("kafka_lag", subject, r.lag, warn, alert, detail))
        return out

    return _per_subject(conn, groups, measure)


def missing_intervals(
    conn: Any, pipelines: Sequence[str], until: datetime, step: timedelta, warn: float, alert: float
) -> list[Check]:
    def measure(cur: Any, pipeline: str) -> list[Check]:
        cur.execute(
            "SELECT interval_start, status FROM state.interval_ledger WHERE pipeline = %s "
            "AND interval_start < %s ORDER BY interval_start",
            (pipeline, until),
        )
        ledger = dict(cur.fetchall())
        if not ledger:
            return [_check("missing_intervals", pipeline, None, warn, alert, "no ledger rows")]
        gaps, failed = [], []
        at = min(ledger)
        while at < until:
            if at not in ledger:
                gaps.append(at)
            elif ledger[at] == "failed":
                failed.append(at)
            at += step
        detail = (
            f"missing {[g.isoformat() for g in gaps]}, failed {[f.isoformat() for f in failed]}"
            if gaps or failed
            else f"{len(ledger)} intervals, none missing"
        )
        return [_check("missing_intervals", pipeline, len(gaps) + len(failed), warn, alert, detail)]

    return _per_subject(conn, pipelines, measure)


def connector_states(client: Any, names: Sequence[str]) -> list[Check]:
    """One check per Kafka Connect connector: the value counts its parts (connector, tasks) that are not
    ``RUNNING``, so any of them down is an alert (thresholds 1/1); a connector that is not registered, or a
    Connect that does not answer, cannot be measured: an alert with the reason. ``client`` is a
    :class:`cdclab.cdc.connect.ConnectClient`."""
    out = []
    for name in names:
        connector, tasks, trace = client.state(name)
        if connector == "MISSING":
            out.append(_check("connector_state", name, None, 1, 1, trace))
            continue
        down = int(connector != "RUNNING") + sum(t != "RUNNING" for t in tasks) + int(not tasks)
        detail = f"connector {connector}, tasks {tasks or 'none'}"
        if down and trace:
            detail += f": {trace.splitlines()[0][:300]}"
        out.append(_check("connector_state", name, down, 1, 1, detail))
    return out


def row_count_drift(
    shop: Any, wh: Any, pairs: Sequence[dict[str, str]], warn: float, alert: float
) -> list[Check]:
    out = []
    for pair in pairs:
        counts = []
        for conn, table in ((shop, pair["source"]), (wh, pair["target"])):
            with conn.cursor() as cur:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(ident(table)))
                counts.append(int(cur.fetchone()[0]))
            conn.rollback()
        src, tgt = counts
        drift = abs(src - tgt) / max(src, 1)
        subject = f"{pair['source']}->{pair['target']}"
        out.append(
            _check("row_count_drift", subject, round(drift, 6), warn, alert, f"source {src}, target {tgt}")
        )
    return out


def replication_slots(
    conn: Any, expected: Sequence[str], warn: float, alert: float, all_slots: bool = True
) -> list[Check]:
    """Retained WAL per replication slot of the server (every slot, plus the ``expected`` ones; only the
    expected ones when ``all_slots`` is false), graded against ``warn``/``alert`` bytes. An expected slot that is missing, or any slot that is invalidated
    (``wal_status = 'lost'``), is an ``alert`` with a ``CRITICAL`` detail: its connector has lost changes."""
    with conn.cursor() as cur:
        states = slots.slot_states(cur)
    conn.rollback()
    out = []
    for name in sorted(set(expected) | (set(states) if all_slots else set())):
        state = states.get(name)
        reason = slots.lost_reason(name, state)
        if reason is not None:
            out.append(
                Check(
                    "slot_retained_wal_bytes",
                    name,
                    None,
                    warn,
                    alert,
                    "alert",
                    f"CRITICAL: {reason}; changes since its connector's last position are lost. "
                    + slots.remedy("its connector"),
                )
            )
            continue
        assert state is not None
        detail = (
            f"{'active' if state.active else 'INACTIVE'}, wal_status {state.wal_status}, "
            f"restart_lsn {state.restart_lsn}, confirmed_flush_lsn {state.confirmed_flush_lsn}"
        )
        retained = state.retained_bytes
        if retained is None:  # created but never used: it holds nothing yet
            retained, detail = 0, f"{detail} (no restart_lsn yet)"
        out.append(_check("slot_retained_wal_bytes", name, retained, warn, alert, detail))
    return out


def files_exhausted(conn: Any, pipelines: Sequence[str], warn: float, alert: float) -> list[Check]:
    """Exhausted files per file pipeline (``state.file_manifest``, status ``exhausted``): each one is a
    file nobody loads any more until someone acts; the detail names them with their last error."""

    def measure(cur: Any, pipeline: str) -> list[Check]:
        cur.execute(
            "SELECT bucket, key, attempts, error FROM state.file_manifest "
            "WHERE pipeline = %s AND status = 'exhausted' ORDER BY last_modified, key",
            (pipeline,),
        )
        rows = cur.fetchall()
        detail = (
            "; ".join(f"s3://{b}/{k} after {a} attempt(s): {(e or '')[:200]}" for b, k, a, e in rows[:10])
            + (f"; and {len(rows) - 10} more" if len(rows) > 10 else "")
            if rows
            else "no exhausted files"
        )
        return [_check("files_exhausted", pipeline, len(rows), warn, alert, detail)]

    return _per_subject(conn, pipelines, measure)


def record(
    conn: Any, scope: str, run_id: str | None, measured_for: datetime, checks: Sequence[Check]
) -> None:
    """Append the checks to ``marts.pipeline_health`` in one transaction."""
    with conn, conn.cursor() as cur:
        for c in checks:
            cur.execute(
                "INSERT INTO marts.pipeline_health (scope, run_id, measured_for, metric, subject, value, "
                "warn_threshold, alert_threshold, status, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    scope,
                    run_id,
                    measured_for,
                    c.metric,
                    c.subject,
                    c.value,
                    c.warn,
                    c.alert,
                    c.status,
                    c.detail,
                ),
            )
