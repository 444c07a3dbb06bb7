"""71.10 Best practices in operation: the steps of ``dags/71_10_01_strategy_selection.py`` (profile,
recommend, load with the recommendation), ``dags/71_10_03_error_recovery.py`` (demo source, interval loads
with retries and gap filling, validation), ``dags/71_10_04_monitoring.py`` (health checks, dashboard) and
``dags/71_10_05_documentation.py`` (operations document to MinIO). (71.10.2 has its own module,
:mod:`cdclab.lessons.state_management`.) Each step opens and closes its own connections.

Vocabulary:
- *recommendation*: a :class:`cdclab.lessons.strategy.Recommendation` per profiled table, recorded in
  ``state.strategy_recommendations`` under a *pipeline* name; the *strategy watermark key* is
  ``<pipeline>/<table>-><target>/<strategy>`` (:func:`strategy_watermark_key`).
- *injected fault*: ``transient_failures`` ``{"<interval start ISO>": n}`` fails the first ``n`` attempts of
  that interval, ``hard_failures`` ``["<interval start ISO>"]`` every attempt (:func:`injected_faults`).
- *monitor params*: the params of 71_10_04 (:func:`measure_health` names the keys it reads).
- *document location*: ``<prefix>/<document>`` in a bucket, ``s3://<bucket>/<key>`` (:func:`doc_location`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pendulum

from cdclab.common.db import SHOP, WAREHOUSE, connect, transaction
from cdclab.files.store import ObjectStore
from cdclab.lessons import demos, opsdocs, strategy
from cdclab.ops import health, recovery
from cdclab.state import watermarks as state

# --------------------------------------------------------------------------------------------------
# 71.10.1 strategy selection


def strategy_watermark_key(pipeline: str, table: str, target: str, chosen: str) -> str:
    """The watermark of one table loaded into ``target`` with one strategy: a new strategy starts afresh."""
    return f"{pipeline}/{table}->{target}/{chosen}"


def recommend(
    tables: Sequence[str], req: strategy.Requirements, *, pipeline: str, run_id: str
) -> list[strategy.Recommendation]:
    """Profile each source table, recommend a strategy for it and record the recommendation (one
    warehouse transaction for all). Returns the recommendations in the order of ``tables``."""
    out = []
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        strategy.ensure_schema(wh)
        with wh:
            for table in tables:
                prof = strategy.profile(shop, table)
                rec = strategy.recommend(prof, req)
                strategy.record(wh, pipeline, run_id, prof, rec)
                out.append(rec)
    return out


def load_recommended(
    table: str, chosen: Mapping[str, str], *, target: str, pipeline: str, dag_id: str, run_id: str
) -> tuple[str, str, strategy.LoadResult | None]:
    """Load ``table`` into ``target`` with the strategy ``chosen`` for it (keyed by the profile's table
    name). Returns that name, the strategy and the load result; the result is None for ``log_cdc``, which
    Kafka Connect streams continuously (71_03_02 merges it): nothing is loaded here."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        prof = strategy.profile(shop, table)
        chosen_strategy = chosen[prof.table]
        if chosen_strategy == "log_cdc":
            return prof.table, chosen_strategy, None
        result = strategy.load(
            shop,
            wh,
            prof,
            chosen_strategy,
            target,
            watermark_key=strategy_watermark_key(pipeline, prof.table, target, chosen_strategy),
            dag_id=dag_id,
            run_id=run_id,
        )
    return prof.table, chosen_strategy, result


# --------------------------------------------------------------------------------------------------
# 71.10.3 error recovery


def build_recovery_demo(source: str, start: datetime) -> None:
    """The demo source events of the interval starting at ``start`` (one poison row),
    :func:`cdclab.lessons.demos.build_recovery_source`."""
    with closing(connect(SHOP)) as shop:
        demos.build_recovery_source(shop, source, start)


def _instant(text: str) -> datetime:
    """An ISO 8601 instant (pendulum's parser, as Airflow's)."""
    value = pendulum.parse(text)
    if not isinstance(value, datetime):
        raise ValueError(
            f"{text!r} is not an instant (ISO 8601 date and time, e.g. 2026-01-01T10:00:00+00:00)"
        )
    return value


def injected_faults(
    transient_failures: Mapping[str, int], hard_failures: Sequence[str]
) -> Callable[[recovery.Interval, int], None]:
    """A ``fault`` hook for :func:`cdclab.ops.recovery.load_interval` that raises
    :class:`~cdclab.ops.recovery.TransientSourceError` for the first ``n`` attempts of each interval start in
    ``transient_failures`` and for every attempt of those in ``hard_failures`` (ISO 8601 instants)."""

    def utc(text: str) -> str:  # one spelling per instant: a +02:00 key names the same hour as its UTC one
        return pendulum.instance(_instant(text)).in_tz("UTC").isoformat()

    transient = {utc(k): int(v) for k, v in transient_failures.items()}
    hard = {utc(k) for k in hard_failures}

    def fault(interval: recovery.Interval, attempt: int) -> None:
        at = pendulum.instance(interval.start).in_tz("UTC").isoformat()
        if at in hard or attempt <= transient.get(at, 0):
            raise recovery.TransientSourceError(f"injected failure for {at}, attempt {attempt}")

    return fault


def load_with_recovery(
    current: recovery.Interval,
    *,
    pipeline: str,
    source: str,
    target: str,
    run_id: str,
    fault: Callable[[recovery.Interval, int], None] | None,
    attempts: int,
    base_delay: float,
) -> list[recovery.IntervalResult]:
    """Re-run the pipeline's failed and missing intervals, oldest first, then ``current``
    (:func:`cdclab.ops.recovery.plan`); each with retries, its outcome in the ledger."""
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        recovery.ensure_schema(wh, target)
        return [
            recovery.load_interval(
                shop,
                wh,
                pipeline=pipeline,
                source=source,
                target=target,
                interval=interval,
                run_id=run_id,
                fault=fault,
                attempts=attempts,
                base_delay=base_delay,
            )
            for interval in recovery.plan(wh, pipeline, current)
        ]


def validate_loaded(
    loaded: Sequence[Mapping[str, Any]], *, pipeline: str, source: str, target: str
) -> list[str]:
    """Validate each loaded interval (``start``/``end`` as ISO 8601 strings, the load's results) against
    the source; results in ``state.validation_results``. Returns the ``start`` of each interval whose target
    differs."""
    bad = []
    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        for r in loaded:
            interval = recovery.Interval(_instant(r["start"]), _instant(r["end"]))
            if not recovery.validate(
                shop, wh, pipeline=pipeline, source=source, target=target, interval=interval
            ):
                bad.append(r["start"])
    return bad


# --------------------------------------------------------------------------------------------------
# 71.10.4 monitoring


def measure_health(
    p: Mapping[str, Any], *, interval_start: datetime, interval_end: datetime, run_id: str
) -> list[health.Check]:
    """Every check of a monitoring run, graded, recorded in ``marts.pipeline_health`` under ``p["scope"]``.

    ``p``: the 71_10_04 params ``watermark_keys``, ``watermark_age_{warn,alert}_seconds``,
    ``consumer_groups``, ``lag_{warn,alert}``, ``ledger_pipelines``, ``ledger_step_seconds``,
    ``gap_{warn,alert}``, ``row_count_pairs``, ``drift_{warn,alert}``, ``connectors``,
    ``replication_slots``, ``slot_wal_{warn,alert}_bytes``, ``slots_report_all``, ``file_pipelines``,
    ``files_exhausted_{warn,alert}``. Ages are measured against ``interval_end``, gaps up to
    ``interval_start``."""
    from cdclab.cdc.connect import from_airflow
    from cdclab.cdc.pipeline import kafka_bootstrap

    with closing(connect(SHOP)) as shop, closing(connect(WAREHOUSE)) as wh:
        state.ensure_schema(wh)
        recovery.ensure_schema(wh)
        health.ensure_schema(wh)
        checks = [
            *health.watermark_ages(
                wh,
                p["watermark_keys"],
                interval_end,
                p["watermark_age_warn_seconds"],
                p["watermark_age_alert_seconds"],
            ),
            *health.kafka_lags(
                wh, kafka_bootstrap("kafka_default"), p["consumer_groups"], p["lag_warn"], p["lag_alert"]
            ),
            *health.missing_intervals(
                wh,
                p["ledger_pipelines"],
                interval_start,
                timedelta(seconds=p["ledger_step_seconds"]),
                p["gap_warn"],
                p["gap_alert"],
            ),
            *health.row_count_drift(shop, wh, p["row_count_pairs"], p["drift_warn"], p["drift_alert"]),
            *health.connector_states(from_airflow("kafka_connect"), p["connectors"]),
            *health.replication_slots(
                shop,
                p["replication_slots"],
                p["slot_wal_warn_bytes"],
                p["slot_wal_alert_bytes"],
                p["slots_report_all"],
            ),
            *health.files_exhausted(
                wh, p["file_pipelines"], p["files_exhausted_warn"], p["files_exhausted_alert"]
            ),
        ]
        health.record(wh, p["scope"], run_id, interval_end, checks)
    return checks


def status_counts(checks: Sequence[health.Check]) -> dict[str, int]:
    """How many checks are ``ok``, ``warn`` and ``alert``."""
    return {s: sum(c.status == s for c in checks) for s in ("ok", "warn", "alert")}


def dashboard(scope: str) -> list[tuple[Any, ...]]:
    """``(metric, subject, status, value)`` of ``scope`` in ``marts.pipeline_health_dashboard``, most
    severe first."""
    with transaction(WAREHOUSE) as cur:
        cur.execute(
            "SELECT severity, metric, subject, status, value FROM marts.pipeline_health_dashboard "
            "WHERE scope = %s ORDER BY severity DESC, metric, subject",
            (scope,),
        )
        return [tuple(row[1:]) for row in cur.fetchall()]


# --------------------------------------------------------------------------------------------------
# 71.10.5 documentation


def doc_location(bucket: str, prefix: str, document: str) -> tuple[str, str]:
    """The object key (``<prefix>/<document>``, the prefix's slashes stripped) and its ``s3://`` URI."""
    key = f"{prefix.strip('/')}/{document}"
    return key, f"s3://{bucket}/{key}"


@dataclass(frozen=True)
class Published:
    uri: str
    characters: int
    headings: int
    state_tables: int


def publish_docs(
    cards: Sequence[opsdocs.DagCard], *, bucket: str, prefix: str, document: str, run_id: str
) -> Published:
    """Render the operations document (the cards and the live ``state`` schema), put it to
    :func:`doc_location` and replace its table of contents in ``state.docs_index``."""
    key, uri = doc_location(bucket, prefix, document)
    with closing(connect(WAREHOUSE)) as wh:
        opsdocs.ensure_schema(wh)
        schema = opsdocs.state_schema(wh)
        markdown = opsdocs.render(cards, schema, run_id)
        ObjectStore().put(bucket, key, markdown.encode())
        entries = opsdocs.write_index(wh, uri, markdown, run_id)
    return Published(uri, len(markdown), entries, len(schema))
