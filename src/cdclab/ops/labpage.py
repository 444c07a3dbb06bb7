"""The "CDC lab" page: one look at what the lab's CDC and incremental pipelines are doing right now.

The api-server serves it through the Airflow plugin in :mod:`cdclab.airflow_plugin` at ``/cdclab/``
(:data:`MOUNT`), and the Airflow UI links it from its navigation ("CDC lab"). A request gathers every
section afresh; nothing is cached and nothing is written.

Vocabulary:
- *section*: one block of the page (:class:`Section`): a title, a table, optionally an inline SVG
  chart. A section whose service does not answer is *down*: it carries a message that names the
  service and the error instead of rows, and the rest of the page renders as usual — the page never
  answers 500 because Kafka, Connect or a database is stopped.
- *sources* (:class:`Sources`): where the sections read from, taken from the lab's Airflow connections
  (``shop``, ``warehouse``, ``kafka_default``, ``kafka_connect``); the page holds no address or login.
- *retained WAL*: bytes of write-ahead log that Postgres keeps for a replication slot,
  ``pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)``; it grows while a slot's consumer is stopped.
- *lag*: a partition's high watermark (end offset) minus the group's committed (Kafka) or stored
  (``state.kafka_offsets``) next offset: records written but not yet applied.
- *gap*: a stretch between a pipeline's first and last processed interval that no interval covers
  (``state.processed_intervals``), or an interval that ``state.interval_ledger`` records as failed.

Gathering (``gather_*``) talks to the services; rendering (``render_*``, ``*_chart``) is pure: it turns
:class:`Section` values into HTML text, so tests check it without any service. Importing this module
is cheap: FastAPI, psycopg2 and confluent-kafka are imported when a request needs them.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec

log = logging.getLogger(__name__)

MOUNT = "/cdclab"
TITLE = "CDC lab"
SERVICE_TIMEOUT_S = 5.0
SCROLL_ROWS = 12  # a table longer than this scrolls inside its section (CSS max-height)
HEALTH_DAYS = 7

Row = tuple[Any, ...]


# --------------------------------------------------------------------------------------------------
# the page's model
@dataclass(frozen=True)
class Section:
    """One block of the page. ``error`` set means its service is down (rows are then empty)."""

    key: str
    title: str
    columns: tuple[str, ...] = ()
    rows: Sequence[Row] = ()
    error: str | None = None
    note: str = ""
    empty: str = "nothing to show"
    chart: str = ""

    @property
    def down(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class Sources:
    """Where the sections read from: database connections are opened per request and closed after."""

    shop: Callable[[], Any]
    warehouse: Callable[[], Any]
    connect_url: str | None
    kafka_bootstrap: str | None
    timeout: float = SERVICE_TIMEOUT_S

    @classmethod
    def from_airflow(cls) -> Sources:
        """From the lab's Airflow connections (``AIRFLOW_CONN_*``, set by the launcher for every Airflow
        process); a connection that cannot be read leaves its sections down, not the page."""
        from cdclab.common import db

        def opener(conn_id: str) -> Callable[[], Any]:
            return lambda: db.connect(conn_id, application_name="cdclab-labpage")

        return cls(
            shop=opener(db.SHOP),
            warehouse=opener(db.WAREHOUSE),
            connect_url=_connect_url(),
            kafka_bootstrap=_kafka_bootstrap(),
        )


def _connect_url() -> str | None:
    try:
        from cdclab.cdc.connect import from_airflow

        return from_airflow("kafka_connect").url
    except Exception as exc:
        log.warning("CDC lab page: no kafka_connect connection: %s", exc)
        return None


def _kafka_bootstrap() -> str | None:
    try:
        from airflow.sdk import BaseHook

        extra = BaseHook.get_connection("kafka_default").extra_dejson
        return str(extra["bootstrap.servers"])
    except Exception as exc:
        log.warning("CDC lab page: no kafka_default connection with bootstrap.servers: %s", exc)
        return None


def _down(key: str, title: str, service: str, exc: BaseException) -> Section:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # a client's own message may already say who did not answer (the Connect client's does)
    message = first if "does not answer" in first else f"{service} does not answer: {first}"
    return Section(key, title, error=message[:400])


def guarded(key: str, title: str, service: str, gather: Callable[[], Section]) -> Section:
    """``gather()``, or a down section naming ``service`` when it raises (never propagates)."""
    try:
        return gather()
    except Exception as exc:
        log.warning("CDC lab page: section %s: %s unavailable: %s", key, service, exc)
        return _down(key, title, service, exc)


#: what a ``gather_*`` function gets as its first argument: ``Section`` with the section's key and title
#: already given, so that it builds its section as ``section(columns, rows, note=..., empty=...)``
SectionOf = Callable[..., Section]
P = ParamSpec("P")


def section_of(
    key: str, title: str, service: str
) -> Callable[[Callable[Concatenate[SectionOf, P], Section]], Callable[P, Section]]:
    """Make a ``gather_*`` function of the section ``key``, titled ``title``: called with its own arguments,
    it gathers under :func:`guarded`, so a service that does not answer gives a down section naming
    ``service`` (a template of the function's arguments: ``"Kafka at {bootstrap}"``)."""

    def decorate(gather: Callable[Concatenate[SectionOf, P], Section]) -> Callable[P, Section]:
        signature = inspect.signature(gather)

        @functools.wraps(gather)
        def gathered(*args: P.args, **kwargs: P.kwargs) -> Section:
            arguments = signature.bind(None, *args, **kwargs).arguments
            made = functools.partial(Section, key, title)
            return guarded(key, title, service.format(**arguments), lambda: gather(made, *args, **kwargs))

        return gathered

    return decorate


@contextmanager
def _cursor(opener: Callable[[], Any]) -> Iterator[Any]:
    conn = opener()
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            cur.execute("SET statement_timeout = 5000")
            yield cur
    finally:
        conn.close()


def _fetch(opener: Callable[[], Any], query: str) -> list[tuple[Any, ...]]:
    """The rows of one read-only query (:func:`_cursor`)."""
    with _cursor(opener) as cur:
        cur.execute(query)
        return list(cur.fetchall())


def _table_exists(cur: Any, name: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
    return bool(cur.fetchone()[0])


# --------------------------------------------------------------------------------------------------
# gathering: one function per section
@section_of("connectors", "Kafka Connect: connectors and tasks", "Kafka Connect at {connect_url}")
def gather_connectors(
    section: SectionOf, connect_url: str | None, timeout: float = SERVICE_TIMEOUT_S
) -> Section:
    from cdclab.cdc.connect import ConnectClient, state_of

    if not connect_url:
        return section(error="no kafka_connect Airflow connection: the launcher sets it")
    client = ConnectClient(connect_url, timeout=timeout)
    rows: list[Row] = []
    for name in sorted(client.connectors()):
        body = client.status(name)
        if body is None:  # deleted between the two calls
            continue
        state, tasks, trace = state_of(body)
        first = trace.strip().splitlines()[0] if trace.strip() else ""
        rows.append((name, state, " ".join(f"{i}:{t}" for i, t in enumerate(tasks)) or "no tasks", first))
    return section(
        ("connector", "state", "tasks", "first trace line"),
        rows,
        note=f"Kafka Connect at {connect_url}",
        empty="no connector registered — `make up` registers connectors/*.json",
    )


SLOTS_SQL = """
SELECT slot_name, plugin, slot_type, active, wal_status,
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint AS retained_bytes,
       restart_lsn::text, confirmed_flush_lsn::text
FROM pg_replication_slots ORDER BY slot_name
"""


@section_of("slots", "Replication slots (shop) and retained WAL", "Postgres (shop)")
def gather_slots(section: SectionOf, shop: Callable[[], Any]) -> Section:
    with _cursor(shop) as cur:
        cur.execute(SLOTS_SQL)
        raw = cur.fetchall()
    rows = [(*r[:5], format_bytes(r[5]), r[6], r[7]) for r in raw]
    return section(
        (
            "slot",
            "plugin",
            "type",
            "active",
            "wal status",
            "retained WAL",
            "restart LSN",
            "confirmed flush",
        ),
        rows,
        empty="no replication slot — Debezium creates cdclab_shop when its connector starts",
    )


def _end_offsets(
    bootstrap: str, partitions: Sequence[tuple[str, int]], timeout: float
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> high watermark, through the AdminClient; partitions Kafka does not know are left out."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    if not partitions:
        return {}
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    futures = admin.list_offsets(
        {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions},
        request_timeout=timeout,
    )
    out: dict[tuple[str, int], int] = {}
    for tp, fut in futures.items():
        try:
            out[(tp.topic, tp.partition)] = int(fut.result(timeout=timeout * 2).offset)
        except Exception as exc:  # an unknown topic or partition: no end offset for that one
            log.debug("no end offset for %s[%s]: %s", tp.topic, tp.partition, exc)
    return out


@section_of("kafka-lag", "Kafka consumer groups: committed offsets and lag", "Kafka at {bootstrap}")
def gather_kafka_groups(
    section: SectionOf, bootstrap: str | None, timeout: float = SERVICE_TIMEOUT_S
) -> Section:
    if not bootstrap:
        return section(error="no kafka_default Airflow connection with bootstrap.servers")
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000)})
    admin.list_topics(timeout=timeout)  # raises when no broker answers
    listed = admin.list_consumer_groups(request_timeout=timeout).result(timeout=timeout * 2)
    if listed.errors and not listed.valid:
        raise RuntimeError(f"listing consumer groups failed: {listed.errors[0]}")
    groups = sorted((g.group_id, str(g.state).rsplit(".", 1)[-1]) for g in listed.valid)
    committed: list[tuple[str, str, str, int, int]] = []
    for group, state in groups:
        fut = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=timeout
        )[group]
        for tp in fut.result(timeout=timeout * 2).topic_partitions or []:
            if tp.offset >= 0:
                committed.append((group, state, tp.topic, tp.partition, tp.offset))
    ends = _end_offsets(bootstrap, sorted({(c[2], c[3]) for c in committed}), timeout)
    rows = group_lag_rows(committed, ends)
    without = [g for g, _ in groups if g not in {c[0] for c in committed}]
    note = f"Kafka at {bootstrap}; {len(groups)} group(s)"
    if without:
        note += f"; no committed offsets: {', '.join(without[:10])}" + (" …" if len(without) > 10 else "")
    return section(
        ("group", "state", "topic", "partitions", "committed", "end", "lag"),
        rows,
        note=note,
        empty="no consumer group has committed offsets in Kafka",
    )


def group_lag_rows(
    committed: Sequence[tuple[str, str, str, int, int]], ends: dict[tuple[str, int], int]
) -> list[Row]:
    """Per (group, topic): partitions, summed committed and end offsets, summed lag (``?`` when Kafka
    has no end offset for a partition). ``committed`` rows are (group, state, topic, partition, offset)."""
    agg: dict[tuple[str, str, str], list[Any]] = {}
    for group, state, topic, partition, offset in committed:
        a = agg.setdefault((group, state, topic), [0, 0, 0, 0, False])
        end = ends.get((topic, partition))
        a[0] += 1
        a[1] += offset
        if end is None:
            a[4] = True
        else:
            a[2] += end
            a[3] += max(end - offset, 0)
    return [
        (g, s, t, a[0], a[1], "?" if a[4] else a[2], "?" if a[4] else a[3])
        for (g, s, t), a in sorted(agg.items())
    ]


@section_of("db-offsets", "Offsets stored with the data (state.kafka_offsets)", "Postgres (warehouse)")
def gather_db_offsets(
    section: SectionOf,
    warehouse: Callable[[], Any],
    bootstrap: str | None,
    timeout: float = SERVICE_TIMEOUT_S,
) -> Section:
    raw = _fetch(
        warehouse,
        "SELECT consumer_group, topic, kafka_partition, next_offset, updated_at, updated_by "
        "FROM state.kafka_offsets ORDER BY consumer_group, topic, kafka_partition LIMIT 500",
    )
    note = ""
    ends: dict[tuple[str, int], int] = {}
    if raw and bootstrap:
        try:
            ends = _end_offsets(bootstrap, sorted({(r[1], r[2]) for r in raw}), timeout)
        except Exception as exc:
            note = f"Kafka at {bootstrap} does not answer ({exc}): end offsets and lag unknown"
        if not ends and not note:
            note = f"Kafka at {bootstrap} gave no end offset (down, or the topics are gone): lag unknown"
    rows = []
    for group, topic, partition, nxt, updated_at, updated_by in raw:
        end = ends.get((topic, partition))
        lag = "?" if end is None else max(end - nxt, 0)
        rows.append((group, topic, partition, nxt, "?" if end is None else end, lag, updated_at, updated_by))
    return section(
        ("group", "topic", "partition", "next offset", "end", "lag", "updated at", "updated by"),
        rows,
        note=note,
        empty="no offsets stored — the exactly-once consumers (71_03_02, 71_05_01, ...) write them",
    )


@section_of("watermarks", "Watermarks and their age (state.watermarks)", "Postgres (warehouse)")
def gather_watermarks(section: SectionOf, warehouse: Callable[[], Any], now: dt.datetime) -> Section:
    raw = _fetch(
        warehouse,
        "SELECT key, value, value_type, updated_at, updated_by_dag_id FROM state.watermarks "
        "ORDER BY updated_at DESC LIMIT 200",
    )
    rows = [(k, v, t, u, format_age((now - u).total_seconds()), d) for k, v, t, u, d in raw]
    return section(
        ("key", "value", "type", "updated at", "age", "by DAG"),
        rows,
        empty="no watermark yet — trigger 71_01_01 and it sets one",
    )


def interval_gaps(
    intervals: Sequence[tuple[dt.datetime, dt.datetime]],
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Stretches between the first and the last interval that no interval covers (half-open ``[s, e)``)."""
    holes: list[tuple[dt.datetime, dt.datetime]] = []
    covered_to: dt.datetime | None = None
    for start, end in sorted(intervals):
        if covered_to is not None and start > covered_to:
            holes.append((covered_to, start))
        covered_to = end if covered_to is None else max(covered_to, end)
    return holes


def gap_rows(
    ledger: str,
    by_pipeline: dict[str, list[tuple[dt.datetime, dt.datetime]]],
    failed: dict[str, int] | None = None,
) -> list[Row]:
    """One row per pipeline: intervals, covered span, gaps (count and the first three), failed intervals."""
    rows: list[Row] = []
    for pipeline, intervals in sorted(by_pipeline.items()):
        holes = interval_gaps(intervals)
        shown = ", ".join(f"[{s:%Y-%m-%d %H:%M}, {e:%Y-%m-%d %H:%M})" for s, e in holes[:3])
        if len(holes) > 3:
            shown += f" … (+{len(holes) - 3})"
        rows.append(
            (
                ledger,
                pipeline,
                len(intervals),
                min(s for s, _ in intervals),
                max(e for _, e in intervals),
                len(holes),
                (failed or {}).get(pipeline, 0),
                shown or "none",
            )
        )
    return rows


@section_of("gaps", "Processed intervals and their gaps", "Postgres (warehouse)")
def gather_gaps(section: SectionOf, warehouse: Callable[[], Any]) -> Section:
    processed: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    ledger: dict[str, list[tuple[dt.datetime, dt.datetime]]] = {}
    failed: dict[str, int] = {}
    with _cursor(warehouse) as cur:
        cur.execute(
            "SELECT pipeline, interval_start, interval_end FROM state.processed_intervals "
            "ORDER BY pipeline, interval_start LIMIT 20000"
        )
        for pipeline, s, e in cur.fetchall():
            processed.setdefault(pipeline, []).append((s, e))
        cur.execute(
            "SELECT pipeline, interval_start, interval_end, status FROM state.interval_ledger "
            "ORDER BY pipeline, interval_start LIMIT 20000"
        )
        for pipeline, s, e, status in cur.fetchall():
            ledger.setdefault(pipeline, []).append((s, e))
            failed[pipeline] = failed.get(pipeline, 0) + (status == "failed")
    rows = gap_rows("state.processed_intervals", processed) + gap_rows(
        "state.interval_ledger", ledger, failed
    )
    return section(
        ("ledger", "pipeline", "intervals", "from", "to", "gaps", "failed", "gaps (first three)"),
        rows,
        empty="no processed interval recorded yet — 71_08_01 and 71_10_03 record them",
    )


PERF_SQL = """
SELECT experiment, variant, count(*) AS runs,
       (array_agg(duration_ms ORDER BY id DESC))[1] AS last_ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS median_ms,
       (array_agg(rows_read ORDER BY id DESC))[1] AS last_rows_read,
       max(recorded_at) AS last_at
FROM state.perf_runs
WHERE experiment IN (SELECT experiment FROM state.perf_runs GROUP BY experiment ORDER BY max(id) DESC LIMIT 12)
GROUP BY experiment, variant
ORDER BY experiment, variant
"""


@section_of("perf", "71.7 performance comparisons (state.perf_runs)", "Postgres (warehouse)")
def gather_perf(section: SectionOf, warehouse: Callable[[], Any]) -> Section:
    raw = _fetch(warehouse, PERF_SQL)
    rows = [
        (e, v, n, _num(last), _num(med), lr, at)
        for e, v, n, last, med, lr, at in raw  # durations rounded for the table
    ]
    bars = [(str(e), str(v), float(med or 0.0)) for e, v, _n, _l, med, _r, _a in raw]
    return section(
        ("experiment", "variant", "runs", "last ms", "median ms", "last rows read", "last run"),
        rows,
        empty="no measurement yet — trigger the 71_07_* DAGs",
        chart=bar_chart(bars, "median duration per variant (ms)", unit="ms"),
        note="the 12 most recently measured experiments; durations are wall clock on a shared machine: "
        "compare variants within one experiment",
    )


HEALTH_SQL = """
SELECT date_trunc('hour', checked_at) AS hour, status, count(*)
FROM marts.pipeline_health
WHERE checked_at >= now() - make_interval(days => %s)
GROUP BY 1, 2 ORDER BY 1
"""

HEALTH_NOW_SQL = """
SELECT scope, metric, subject, status, value, detail, checked_at
FROM marts.pipeline_health_dashboard
ORDER BY severity DESC, checked_at DESC LIMIT 50
"""


@section_of("health", "Pipeline health over time (marts.pipeline_health)", "Postgres (warehouse)")
def gather_health(section: SectionOf, warehouse: Callable[[], Any], days: int = HEALTH_DAYS) -> Section:
    with _cursor(warehouse) as cur:
        if not _table_exists(cur, "marts.pipeline_health"):
            return section(empty="marts.pipeline_health does not exist (V003__marts.sql)")
        cur.execute(HEALTH_SQL, (days,))
        series = health_series(cur.fetchall())
        cur.execute(HEALTH_NOW_SQL)
        latest = cur.fetchall()
    rows = [(sc, m, su, st, _num(v), d, at) for sc, m, su, st, v, d, at in latest]
    return section(
        ("scope", "metric", "subject", "latest status", "value", "detail", "checked at"),
        rows,
        empty="no health check recorded yet — trigger 71_10_04 (monitoring) or 71_10_02",
        chart=stacked_chart(series, f"checks per hour by status, last {days} days"),
        note="the table lists each check's latest result, alerts first",
    )


def health_series(rows: Sequence[tuple[dt.datetime, str, int]]) -> list[tuple[str, dict[str, int]]]:
    """(hour, status, count) rows -> [(hour label, {status: count})] in time order."""
    out: dict[dt.datetime, dict[str, int]] = {}
    for hour, status, n in rows:
        out.setdefault(hour, {})[status] = out.get(hour, {}).get(status, 0) + int(n)
    return [(f"{h:%m-%d %H:00}", out[h]) for h in sorted(out)]


def gather_all(sources: Sources, now: dt.datetime | None = None) -> list[Section]:
    """Every section, in page order; each one degrades on its own."""
    now = now or dt.datetime.now(dt.UTC)
    return [
        gather_connectors(sources.connect_url, sources.timeout),
        gather_slots(sources.shop),
        gather_kafka_groups(sources.kafka_bootstrap, sources.timeout),
        gather_db_offsets(sources.warehouse, sources.kafka_bootstrap, sources.timeout),
        gather_watermarks(sources.warehouse, now),
        gather_gaps(sources.warehouse),
        gather_perf(sources.warehouse),
        gather_health(sources.warehouse),
    ]


# --------------------------------------------------------------------------------------------------
# rendering (pure)
def _num(value: Any) -> Any:
    return round(float(value), 1) if isinstance(value, int | float) or hasattr(value, "__float__") else value


def format_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def format_age(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _cell(value: Any) -> str:
    if value is None:
        return '<td class="null">—</td>'
    if isinstance(value, dt.datetime):
        text = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if value.tzinfo else str(value)
        return f'<td class="time">{html.escape(text)}</td>'
    text = str(value)
    cls = f' class="state-{text.lower()}"' if text in STATE_CLASSES else ""
    return f"<td{cls}>{html.escape(text)}</td>"


STATE_CLASSES = frozenset(
    {"RUNNING", "FAILED", "PAUSED", "UNASSIGNED", "RESTARTING", "STOPPED", "MISSING", "ok", "warn", "alert"}
)

_ESC = html.escape


def render_section(section: Section) -> str:
    status = "down" if section.down else "up"
    parts = [
        f'<section id="{_ESC(section.key)}" class="section {status}" data-status="{status}">',
        f"<h2>{_ESC(section.title)}</h2>",
    ]
    if section.error is not None:
        parts.append(f'<p class="service-down" role="alert">Unavailable: {_ESC(section.error)}</p>')
        parts.append("</section>")
        return "\n".join(parts)
    if section.note:
        parts.append(f'<p class="note">{_ESC(section.note)}</p>')
    if section.chart:
        parts.append(f'<figure class="chart">{section.chart}</figure>')
    if section.rows:
        head = "".join(f"<th>{_ESC(c)}</th>" for c in section.columns)
        body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in section.rows)
        parts.append(
            f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>'
        )
        if len(section.rows) > SCROLL_ROWS:
            parts.append(f'<p class="meta">{len(section.rows)} rows (scroll the table)</p>')
    else:
        parts.append(f'<p class="empty">{_ESC(section.empty)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1a202c;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}
nav a{margin-right:.8rem}
.section{border:1px solid #cbd5e0;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.section.down{border-color:#e53e3e;background:#fff5f5}
h2{font-size:1.1rem;margin:.2rem 0 .5rem}
table{border-collapse:collapse;font-size:.85rem}
th,td{border-bottom:1px solid #e2e8f0;padding:.2rem .6rem;text-align:left;vertical-align:top}
th{background:#edf2f7;position:sticky;top:0}
.table-wrap{max-height:22rem;overflow:auto;display:inline-block;max-width:100%}
td.time{white-space:nowrap}
.note,.empty,.meta{color:#4a5568;font-size:.85rem}
.service-down{color:#c53030;font-weight:600}
.state-running,.state-ok{color:#276749;font-weight:600}
.state-failed,.state-alert,.state-missing{color:#c53030;font-weight:600}
.state-paused,.state-warn,.state-unassigned,.state-restarting{color:#b7791f;font-weight:600}
figure.chart{margin:.5rem 0}
svg.chart text{font-family:system-ui,sans-serif;font-size:11px;fill:#2d3748}
@media (prefers-color-scheme: dark){body{background:#1a202c;color:#e2e8f0}
th{background:#2d3748}.section.down{background:#3b1d1d}svg.chart text{fill:#e2e8f0}}
"""


def render_page(sections: Sequence[Section], generated_at: dt.datetime) -> str:
    """The whole page: a table of contents, then every section in order."""
    nav = " ".join(
        f'<a href="#{_ESC(s.key)}">{_ESC(s.title.split(" (")[0])}{" (down)" if s.down else ""}</a>'
        for s in sections
    )
    down = [s.title for s in sections if s.down]
    summary = (
        f'<p class="meta">{len(down)} of {len(sections)} sections unavailable: {_ESC("; ".join(down))}</p>'
        if down
        else f'<p class="meta">all {len(sections)} sections answered</p>'
    )
    body = "\n".join(render_section(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_ESC(TITLE)}</title><style>{CSS}</style></head>
<body>
<h1 id="cdclab-title">{_ESC(TITLE)}</h1>
<p class="meta">generated {generated_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC (all times UTC) — reload for fresh numbers</p>
{summary}
<nav>{nav}</nav>
{body}
</body></html>
"""


def render_error_page(exc: BaseException, generated_at: dt.datetime) -> str:
    """The last resort: a page that says what broke (gathering itself never raises)."""
    section = Section("page", "CDC lab", error=f"the page could not be built: {type(exc).__name__}: {exc}")
    return render_page([section], generated_at)


# --------------------------------------------------------------------------------------------------
# charts: server-rendered inline SVG, no script, no external resource
PALETTE = ("#3182ce", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#718096", "#b7791f")
STATUS_COLOURS = {"ok": "#38a169", "warn": "#d69e2e", "alert": "#e53e3e"}


def _svg(width: int, height: int, label: str, inner: Sequence[str], cls: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {cls}" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" aria-label="{_ESC(label)}">'
        f"<title>{_ESC(label)}</title>" + "".join(inner) + "</svg>"
    )


def _empty_svg(label: str, message: str, cls: str) -> str:
    return _svg(
        520, 60, label, [f'<text x="10" y="34" class="no-data">{_ESC(message)}</text>'], cls + " no-data"
    )


def bar_chart(bars: Sequence[tuple[str, str, float]], label: str, unit: str = "") -> str:
    """Horizontal bars grouped by their first field (e.g. experiment), one bar per (group, name, value);
    bars of one name share a colour across groups. Scaled to the largest value."""
    if not bars:
        return _empty_svg(label, "no data yet", "bar-chart")
    names = list(dict.fromkeys(n for _, n, _ in bars))
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    left, right, bar_h, gap = 230, 90, 14, 4
    width = 760
    top = 24
    vmax = max((v for *_, v in bars), default=0.0) or 1.0
    inner = [f'<text x="{left}" y="14" class="chart-title">{_ESC(label)}</text>']
    y = top
    group = None
    for g, n, v in bars:
        if g != group:
            if group is not None:
                y += 8
            inner.append(
                f'<text x="4" y="{y + 11}" class="group-label" font-weight="600">{_ESC(_short(g, 36))}</text>'
            )
            y += bar_h + gap
            group = g
        w = max(v / vmax * (width - left - right), 1.0 if v > 0 else 0.0)
        inner.append(f'<text x="16" y="{y + 11}" class="bar-label">{_ESC(_short(n, 32))}</text>')
        inner.append(
            f'<rect class="bar" x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{colour[n]}"'
            f' data-group="{_ESC(g)}" data-name="{_ESC(n)}" data-value="{v:.3f}">'
            f"<title>{_ESC(g)} / {_ESC(n)}: {v:,.1f} {_ESC(unit)}</title></rect>"
        )
        inner.append(
            f'<text x="{left + w + 4:.1f}" y="{y + 11}" class="bar-value">{v:,.1f} {_ESC(unit)}</text>'
        )
        y += bar_h + gap
    return _svg(width, y + 6, label, inner, "bar-chart")


def stacked_chart(series: Sequence[tuple[str, dict[str, int]]], label: str) -> str:
    """Vertical columns over time, each stacked ok/warn/alert (bottom to top), with a legend."""
    if not series:
        return _empty_svg(label, "no data yet", "stacked-chart")
    width, height, left, bottom, top = 760, 200, 40, 40, 24
    plot_w, plot_h = width - left - 10, height - top - bottom
    vmax = max(sum(c.values()) for _, c in series) or 1
    step = plot_w / len(series)
    col_w = max(min(step * 0.8, 40.0), 1.0)
    inner = [
        f'<text x="{left}" y="14" class="chart-title">{_ESC(label)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#a0aec0"/>',
        f'<text x="4" y="{top + 10}" class="axis">{vmax}</text>',
        f'<text x="4" y="{top + plot_h}" class="axis">0</text>',
    ]
    for i, (when, counts) in enumerate(series):
        x = left + i * step + (step - col_w) / 2
        y = float(top + plot_h)
        for status in ("ok", "warn", "alert"):
            n = counts.get(status, 0)
            if not n:
                continue
            h = n / vmax * plot_h
            y -= h
            inner.append(
                f'<rect class="bar status-{status}" x="{x:.1f}" y="{y:.1f}" width="{col_w:.1f}" height="{h:.1f}"'
                f' fill="{STATUS_COLOURS[status]}" data-status="{status}" data-count="{n}">'
                f"<title>{_ESC(when)}: {n} {status}</title></rect>"
            )
    every = max(len(series) // 6, 1)
    for i in range(0, len(series), every):
        x = left + i * step + step / 2
        inner.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 14}" class="axis" text-anchor="middle">{_ESC(series[i][0])}</text>'
        )
    for j, status in enumerate(("ok", "warn", "alert")):
        lx = left + j * 70
        inner.append(
            f'<rect x="{lx}" y="{height - 14}" width="10" height="10" fill="{STATUS_COLOURS[status]}"/>'
        )
        inner.append(f'<text x="{lx + 14}" y="{height - 5}" class="legend">{status}</text>')
    return _svg(width, height, label, inner, "stacked-chart")


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------------------------------
# the web app
def build_page(sources: Sources | None = None, now: dt.datetime | None = None) -> str:
    """Gather and render; never raises (an unexpected error becomes a page that names it)."""
    now = now or dt.datetime.now(dt.UTC)
    try:
        return render_page(gather_all(sources or Sources.from_airflow(), now), now)
    except Exception as exc:
        log.exception("CDC lab page failed")
        return render_error_page(exc, now)


def create_app(sources: Callable[[], Sources] | None = None, require_login: bool = True) -> Any:
    """The FastAPI app the api-server mounts at :data:`MOUNT`.

    ``require_login``: only users logged into Airflow see the page (the api-server's auth manager
    checks the UI's JWT cookie, as for Airflow's own UI API); without it, anybody who reaches the port
    does. A browser that is not logged in is sent to Airflow's login page and back.
    """
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response

    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None)

    async def login_redirect(request: Request) -> Response | None:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.core_api.security import get_user

        try:
            await get_user(request, None, None)
            return None
        except HTTPException as exc:
            if exc.status_code not in (401, 403):
                raise
            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), 302)

    # plain Starlette routes: the handlers take the request itself (no FastAPI parameter parsing)
    async def page(request: Request) -> Response:
        if require_login:
            denied = await login_redirect(request)
            if denied is not None:
                return denied
        text = await run_in_threadpool(build_page, sources() if sources else None)
        return HTMLResponse(text, headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app.add_route("/", page, methods=["GET"])
    app.add_route("/health", health, methods=["GET"])
    return app
