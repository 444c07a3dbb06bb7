"""Commit-to-warehouse latency of the streaming path (issue 14, item 2): source rows written at a fixed
rate, captured by Debezium, applied concurrently by a follow run of our exactly-once consumer
(:func:`cdclab.cdc.pipeline.stream`) and by Debezium's JDBC sink, each into its own identical target;
p50/p99 of both over the same N events, in the same run.

How a measurement is made:
- *source*: ``bench_lat_<run>.bench_lat_<run>`` in ``shop`` (``id bigint`` key, a payload,
  ``written_at`` = ``clock_timestamp()`` at insert; its own schema, so the lab connector, which captures
  the schema ``public``, never sees it), captured by the bench's own Debezium source
  ``bench-latsrc-<run>``: the lab connector's settings on its own slot, publication and topic prefix
  (``benchlat<run>``), with JSON schemas (the JDBC sink needs them; the lab connector writes none), as
  in :mod:`bench.cdc_sink`.
  The lab workload keeps running by default; ``BENCH_LATENCY_PAUSE_WORKLOAD=1`` pauses it for the run
  and restores it after. Which it was is in the result.
- *our follower*: ``stream`` in a thread of this process (its own consumer group ``bench-lat-<run>``),
  started before the first row; one warm-up row (id 0) must reach the warehouse before timing starts,
  so start-up, topic creation and discovery are not in the figures.
- *the JDBC sink*: connector ``bench-latj-<run>`` (:data:`bench.cdc_sink.JDBC_TEMPLATE`:
  ``read_committed``, upsert, deletes), ``batch.size`` = ``max.poll.records`` = the follower's batch,
  ``fetch.max.wait.ms`` = the follower's ``fetch.wait.max.ms``; started once the warm-up row made the
  topic, from offset 0, into ``core.bench_latj_<run>`` (``LIKE`` our target ``INCLUDING ALL``); the
  warm-up row must reach it too before timing starts.
- *the writer*: N single-row transactions (``INSERT``, autocommit), one every ``1/rate`` seconds on a
  fixed schedule (a late writer does not catch up in a burst; how late it fell is reported).
- *source commit time*: the Debezium event's ``source.ts_ms``, the commit time of the source transaction
  as Postgres recorded it, which our merge stores as ``_source_ts`` (millisecond precision, truncated:
  a latency is over-stated by < 1 ms). Both sinks consume the same events, so each event's time (read
  from our target after the run) serves both. ``track_commit_timestamp`` is off on the lab, so this is
  the only exact commit time available.
- *warehouse visibility time*: one *observer* session per target polls it every ``poll_s`` seconds for
  rows it has not seen (``WHERE id > last``, the writer's order is the commit order) and stamps each
  with ``clock_timestamp()`` taken after the query's snapshot: an **upper bound** of the moment the row
  became visible, late by at most ``poll_s`` plus one query. The **lower bound** is the row's
  ``_loaded_at`` (``DEFAULT now()``: the start of the warehouse transaction that wrote it, on both
  sides). Both figures are reported; the headline is the upper bound.
- *one clock*: ``shop`` and ``warehouse`` are databases of one Postgres server, so both times come from
  that server's clock (no cross-host skew).
- *breakdown* (indicative): a third Kafka consumer reads the topic (``read_committed``) and stamps each
  record on arrival with the host's clock (the lab's Postgres runs on the same host, same system clock):
  commit -> readable on Kafka (Debezium, its Kafka transaction) and readable on Kafka -> visible (each
  sink, plus the observer's poll).
- *correct or not a figure*: on both sides every one of the N rows must be observed exactly once and the
  target must equal the source (count and md5 of every row); our follower must report no dead letter,
  the JDBC connector must still be ``RUNNING``.

Knobs: ``BENCH_LATENCY_EVENTS`` (10,000; quick 1,000), ``BENCH_LATENCY_RATE`` (events/s, 200; quick
100) — the issue asks for half the sustainable rate; set it from a measured sustainable rate —,
``BENCH_LATENCY_POLL_S`` (observer period, 0.02), ``BENCH_LATENCY_BATCH`` (batch size of both sinks,
500), ``BENCH_LATENCY_POLL_TIMEOUT`` (follower poll timeout, 0.1), ``BENCH_LATENCY_PAUSE_WORKLOAD`` (0),
``BENCH_LATENCY_JDBC`` (1; 0: ours alone). Run: ``python -m bench latency [--quick]``.
The lab's machine is shared: a figure holds for the load it was taken under (reported with it).
"""

from __future__ import annotations

import math
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import sql

from bench.report import run_then_clean_up

APP = "bench_latency"
SOURCE_COLUMNS = (
    "id bigint PRIMARY KEY, payload text NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp()"
)


def say(msg: str) -> None:
    print(f"[bench latency] {msg}", flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linear between the closest ranks (numpy's
    default): ``percentile([1, 2, 3, 4], 50) == 2.5``."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p90/p99/min/max/mean of latencies given in seconds, in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(sum(ms) / len(ms), 1),
    }


class KafkaWatch(threading.Thread):
    """Reads the topic (``read_committed``, its own throw-away group, never committing) and stamps each
    record with the host's clock when it arrives: when the change became *readable on Kafka*. The lab's
    Postgres runs on this host, so this is the same system clock Postgres reads (a breakdown only: the
    headline figures use Postgres's clock alone)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.arrived: dict[int, float] = {}
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        import json

        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"bench-lat-watch-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
            }
        )
        try:
            consumer.assign([TopicPartition(self.topic, 0, 0)])
            while not self.halt.is_set():
                msg = consumer.poll(0.1)
                if msg is None or msg.error() is not None or msg.key() is None or msg.value() is None:
                    continue
                now = time.time()
                key = json.loads(msg.key())
                key = key.get("payload", key) if isinstance(key, dict) else key
                self.arrived.setdefault(int(key["id"]), now)
        except BaseException as exc:  # reported by the bench
            self.error = exc
        finally:
            consumer.close()


class Observer(threading.Thread):
    """Polls one target for new rows; ``seen[id] = (loaded_at, visible_at)`` as epoch seconds from the
    Postgres server's clock: ``_loaded_at`` (the start of the warehouse transaction that wrote the row)
    and ``clock_timestamp()`` taken after the poll's snapshot (the row was visible by then)."""

    def __init__(self, dsn: str, target: str, period: float, last: int, name: str = "observer") -> None:
        super().__init__(daemon=True)
        self.dsn, self.target, self.period, self.last, self.name_ = dsn, target, period, last, name
        self.seen: dict[int, tuple[float, float]] = {}
        self.repeats = 0  # a row returned twice (must stay 0: ids become visible in order)
        self.polls = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        schema, table = self.target.split(".")
        query = sql.SQL(
            "SELECT id, extract(epoch FROM _loaded_at), extract(epoch FROM clock_timestamp()) "
            "FROM {}.{} WHERE id > %s ORDER BY id"
        ).format(sql.Identifier(schema), sql.Identifier(table))
        try:
            conn = psycopg2.connect(self.dsn, application_name=f"{APP}_{self.name_}")
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    while not self.halt.is_set():
                        cur.execute(query, (self.last,))
                        self.polls += 1
                        for rid, loaded, visible in cur.fetchall():
                            if rid in self.seen:
                                self.repeats += 1
                                continue
                            self.seen[rid] = (float(loaded), float(visible))
                            self.last = max(self.last, rid)
                        self.halt.wait(self.period)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the bench
            self.error = exc


def latencies(
    seen: dict[int, tuple[float, float]], source_ts: dict[int, float], events: int
) -> tuple[list[float], list[float]]:
    """(upper, lower) latencies in seconds of events 1..N that were observed and have a source commit
    time: visible - commit, and warehouse transaction start - commit."""
    upper, lower = [], []
    for i in range(1, events + 1):
        if i in seen and i in source_ts:
            loaded, visible = seen[i]
            upper.append(visible - source_ts[i])
            lower.append(loaded - source_ts[i])
    return upper, lower


def ratios(ours: dict[str, Any], jdbc: dict[str, Any]) -> dict[str, float | None]:
    """ours ÷ JDBC for p50/p90/p99/max of two :func:`summarize` results (lower is better for ours)."""
    out: dict[str, float | None] = {}
    for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        a, b = ours.get(k), jdbc.get(k)
        out[f"{k[:-3]}_ours_over_jdbc"] = round(a / b, 3) if a is not None and b else None
    return out


class Bench:
    def __init__(self, quick: bool) -> None:
        from cdclab.lab.config import LabConfig

        self.cfg = LabConfig.load()
        self.quick = quick
        self.events = int(os.environ.get("BENCH_LATENCY_EVENTS", "1000" if quick else "10000"))
        self.rate = float(os.environ.get("BENCH_LATENCY_RATE", "100" if quick else "200"))
        self.poll_s = float(os.environ.get("BENCH_LATENCY_POLL_S", "0.02"))
        self.batch = int(os.environ.get("BENCH_LATENCY_BATCH", "500"))
        self.poll_timeout = float(os.environ.get("BENCH_LATENCY_POLL_TIMEOUT", "0.1"))
        self.with_jdbc = os.environ.get("BENCH_LATENCY_JDBC", "1") == "1"
        self.run_id = uuid.uuid4().hex[:8]
        self.table = f"bench_lat_{self.run_id}"
        self.prefix = f"benchlat{self.run_id}"
        self.slot = self.table
        self.schema = self.table  # its own schema: the lab connector (schema public) never sees it
        self.source = f"{self.schema}.{self.table}"
        self.topic = f"{self.prefix}.{self.source}"
        self.target = f"core.{self.table}"
        self.jdbc_target = f"core.bench_latj_{self.run_id}"
        self.source_name = f"bench-latsrc-{self.run_id}"
        self.jdbc_name = f"bench-latj-{self.run_id}"
        self.connectors: list[str] = []
        self.group = f"bench-lat-{self.run_id}"
        self.follower: Any = None  # cdclab.cdc.pipeline.Follower, once started
        self._connector_checked = 0.0
        self.summary: dict[str, Any] = {}
        self.paused_before: bool | None = None
        self.pause = os.environ.get("BENCH_LATENCY_PAUSE_WORKLOAD", "0") == "1"

    # ------------------------------------------------------------------------- pieces

    def _workload_paused(self) -> bool | None:
        """Whether the lab workload is paused now (None: the lab has no workload service)."""
        from cdclab.lab import shop_workload as sw

        conn = psycopg2.connect(self.cfg.pg_dsn("shop"))
        try:
            return bool(sw.read_control(conn).paused)
        except (sw.ControlRowMissingError, psycopg2.errors.UndefinedTable):
            return None
        finally:
            conn.close()

    def _alive(self) -> None:
        from bench.cdc_sink import connector_state

        if self.follower is None:
            raise RuntimeError("the follower was not started")
        self.follower.check()
        if time.monotonic() - self._connector_checked < 2:
            return
        self._connector_checked = time.monotonic()
        if self.jdbc_name in self.connectors and connector_state(self.cfg, self.jdbc_name) == "FAILED":
            from cdclab.cdc.connect import ConnectClient

            body = ConnectClient(self.cfg.connect_url).status(self.jdbc_name)
            raise RuntimeError(f"{self.jdbc_name} FAILED: {str(body)[:3000]}")

    def _wait_visible(self, wh: Any, target: str, rid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        query = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(sql.Identifier(*target.split(".")))
        while time.monotonic() < deadline:
            self._alive()
            with wh.cursor() as cur:
                try:
                    cur.execute(query, (rid,))
                    if cur.fetchone():
                        return
                except psycopg2.errors.UndefinedTable:
                    pass  # the follower has not created the target yet
            time.sleep(0.1)
        raise TimeoutError(f"row {rid} did not reach {target} in {timeout:.0f}s")

    def write_at_rate(self, shop: Any) -> dict[str, float]:
        """Insert ids 1..N, one transaction each, the i-th at ``start + (i-1)/rate``."""
        insert = sql.SQL("INSERT INTO {} (id, payload) VALUES (%s, %s)").format(
            sql.Identifier(self.schema, self.table)
        )
        behind = 0.0
        start = time.perf_counter()
        with shop.cursor() as cur:
            for i in range(1, self.events + 1):
                due = start + (i - 1) / self.rate
                now = time.perf_counter()
                if due > now:
                    time.sleep(due - now)
                else:
                    behind = max(behind, now - due)
                cur.execute(insert, (i, f"event {i}"))
                if i % 1000 == 0:
                    self.follower.check()
        seconds = time.perf_counter() - start
        return {
            "seconds": round(seconds, 3),
            "achieved_rate": round(self.events / seconds, 1),
            "writer_max_behind_s": round(behind, 3),
        }

    def jdbc_config(self) -> dict[str, str]:
        """The CDC sink benchmark's JDBC sink config (``read_committed``, batch and ``max.poll.records`` =
        the follower's batch) with the follower's fetch wait (``fetch.max.wait.ms`` =
        ``fetch.wait.max.ms`` of ``FOLLOW_KAFKA_CONFIG``; the Java client's default is 500 ms)."""
        from bench.cdc_sink import jdbc_config
        from cdclab.cdc.consumer import FOLLOW_KAFKA_CONFIG

        config = jdbc_config(topic=self.topic, target=self.jdbc_target, batch=self.batch)
        config["connection.url"] += f"&ApplicationName={self.jdbc_name}"
        wait = FOLLOW_KAFKA_CONFIG.get("fetch.wait.max.ms")
        if wait is not None:
            config["consumer.override.fetch.max.wait.ms"] = str(wait)
        return config

    def setup(self, su: Any, wh: Any) -> None:
        """The source table (owned by ``shop``, readable by the CDC user, its own publication), both
        identical targets, and the bench's Debezium source (the lab connector's settings on its own
        slot and prefix, JSON with schemas: the JDBC sink needs them)."""
        from bench.cdc_sink import create_source, create_twin_targets, start_source
        from cdclab.cdc.pipeline import routes_for

        create_source(su, self.schema, self.table, SOURCE_COLUMNS, publication=self.slot)
        (route,) = routes_for([self.source], topic_prefix=self.prefix, target_schema="core")
        create_twin_targets(wh, route, self.target, self.jdbc_target)
        self.connectors.append(self.source_name)
        start_source(self.cfg, self.source_name, prefix=self.prefix, slot=self.slot, table=self.source)

    # ------------------------------------------------------------------------- the run

    def main(self) -> dict[str, Any]:
        from bench.cdc_sink import pause_workload, put_connector
        from cdclab.cdc.consumer import FOLLOW_KAFKA_CONFIG
        from cdclab.cdc.pipeline import Follower
        from cdclab.cdc.replication import checksum

        cfg = self.cfg
        if self.pause:
            self.paused_before = pause_workload(cfg, True)
        workload_paused = self._workload_paused()
        su = psycopg2.connect(cfg.pg_dsn("shop", "postgres"), application_name=f"{APP}_setup")
        su.autocommit = True
        shop = psycopg2.connect(cfg.pg_dsn("shop"), application_name=f"{APP}_writer")
        shop.autocommit = True
        wh = psycopg2.connect(cfg.pg_dsn("warehouse"), application_name=f"{APP}_check")
        wh.autocommit = True
        try:
            self.setup(su, wh)
            t = sql.Identifier(self.schema, self.table)
            self.follower = Follower(
                [self.source],
                group=self.group,
                topic_prefix=self.prefix,
                target_schema="core",
                batch_size=self.batch,
                poll_timeout=self.poll_timeout,
                who="bench-latency",
            )
            self.follower.start()
            with shop.cursor() as cur:  # warm-up: creates the topic; the follower picks it up
                cur.execute(sql.SQL("INSERT INTO {} (id, payload) VALUES (0, 'warm-up')").format(t))
            self._wait_visible(wh, self.target, 0, timeout=180)
            jdbc_config = self.jdbc_config() if self.with_jdbc else None
            if jdbc_config is not None:  # the topic exists now: the sink starts from offset 0
                self.connectors.append(self.jdbc_name)
                put_connector(cfg, self.jdbc_name, jdbc_config)
                self._wait_visible(wh, self.jdbc_target, 0, timeout=180)
            say(
                f"{'both sinks' if self.with_jdbc else 'the follower'} caught the warm-up row; "
                f"writing {self.events:,} events at {self.rate:g}/s"
            )
            observers = {"ours": Observer(cfg.pg_dsn("warehouse"), self.target, self.poll_s, 0, "obs_ours")}
            if self.with_jdbc:
                observers["jdbc"] = Observer(
                    cfg.pg_dsn("warehouse"), self.jdbc_target, self.poll_s, 0, "obs_jdbc"
                )
            for o in observers.values():
                o.start()
            watch = KafkaWatch(cfg.kafka_bootstrap, self.topic)  # the topic exists: the warm-up made it
            watch.start()
            load0 = os.getloadavg()
            writer = self.write_at_rate(shop)
            deadline = time.monotonic() + max(120.0, self.events / self.rate)
            while any(len(o.seen) < self.events for o in observers.values()) and time.monotonic() < deadline:
                self._alive()
                for o in observers.values():
                    if o.error is not None:
                        raise o.error
                time.sleep(0.2)
            for o in observers.values():
                o.halt.set()
                o.join(30)
            watch.halt.set()
            watch.join(30)
            jdbc_state = None
            if self.with_jdbc:
                from bench.cdc_sink import connector_state

                jdbc_state = connector_state(cfg, self.jdbc_name)
            self.summary = self.follower.stop()
            cols, key = ["id", "payload", "written_at"], ["id"]
            with shop.cursor() as cur:
                source = checksum(cur, self.source, cols, key)
            targets = {"ours": self.target, "jdbc": self.jdbc_target}
            equal = {}
            with wh.cursor() as cur:
                for side in observers:
                    equal[side] = checksum(cur, targets[side], cols, key) == source
                # source commit time: the Debezium event's source.ts_ms, which our merge stores as
                # _source_ts; both sinks consumed the same events, so one time per event for both
                cur.execute(
                    sql.SQL(
                        "SELECT id, extract(epoch FROM _source_ts), extract(epoch FROM written_at) FROM {}"
                    ).format(sql.Identifier(*self.target.split(".")))
                )
                fetched = cur.fetchall()
            source_ts = {int(i): float(s) for i, s, _w in fetched if s is not None}
            written = {int(i): float(w) for i, _s, w in fetched}
            ours = observers["ours"]
            upper, lower = latencies(ours.seen, source_ts, self.events)
            commit = [source_ts[i] - written[i] for i in range(1, self.events + 1) if i in source_ts]
            on_kafka = [
                (watch.arrived[i] - source_ts[i], ours.seen[i][1] - watch.arrived[i])
                for i in range(1, self.events + 1)
                if i in ours.seen and i in watch.arrived and i in source_ts
            ]
            checks = {
                "all_events_observed": len(upper) == self.events,
                "no_row_observed_twice": ours.repeats == 0,
                "no_dead_letters": self.summary.get("dead_letters") == 0,
                "target_equals_source": equal["ours"],
            }
            result: dict[str, Any] = {}
            if self.with_jdbc:
                j = observers["jdbc"]
                j_upper, j_lower = latencies(j.seen, source_ts, self.events)
                checks.update(
                    jdbc_all_events_observed=len(j_upper) == self.events,
                    jdbc_no_row_observed_twice=j.repeats == 0,
                    jdbc_target_equals_source=equal["jdbc"],
                    jdbc_connector_running=jdbc_state == "RUNNING",
                )
                j_on_kafka = [
                    j.seen[i][1] - watch.arrived[i]
                    for i in range(1, self.events + 1)
                    if i in j.seen and i in watch.arrived
                ]
                result["jdbc"] = {
                    "latency_visible_upper_bound": summarize(j_upper),
                    "latency_txn_start_lower_bound": summarize(j_lower),
                    "readable_on_kafka_to_visible": summarize(j_on_kafka),
                    "observer_polls": j.polls,
                    "connector": jdbc_config,
                }
                result["latencies_jdbc_s"] = [round(x, 4) for x in j_upper]
            for name, ok in checks.items():
                if not ok:
                    say(f"CHECK FAILED: {name}")
            ours_upper = summarize(upper)
            if self.with_jdbc:
                result["ratios"] = {
                    "visible_upper_bound": ratios(ours_upper, result["jdbc"]["latency_visible_upper_bound"]),
                    "txn_start_lower_bound": ratios(
                        summarize(lower), result["jdbc"]["latency_txn_start_lower_bound"]
                    ),
                }
            return {
                "benchmark": "latency",
                "settings": {
                    "events": self.events,
                    "rate_per_s": self.rate,
                    "observer_poll_s": self.poll_s,
                    "follower_batch_size": self.batch,
                    "follower_poll_timeout_s": self.poll_timeout,
                    "follower_kafka_config": FOLLOW_KAFKA_CONFIG,
                    "jdbc_sink": self.with_jdbc,
                    "source": f"{self.source} via the bench's Debezium source {self.source_name} "
                    "(the lab connector's settings, own slot and topic prefix, JSON with schemas)",
                    "topic": self.topic,
                    "workload_paused": workload_paused,
                    "shared_machine": True,
                },
                "writer": writer,
                "loadavg_during": load0,
                "latency_visible_upper_bound": ours_upper,
                "latency_txn_start_lower_bound": summarize(lower),
                "source_insert_to_commit": summarize(commit),
                "breakdown_host_clock": {
                    "commit_to_readable_on_kafka": summarize([a for a, _b in on_kafka]),
                    "readable_on_kafka_to_visible": summarize([b for _a, b in on_kafka]),
                    "watch_error": repr(watch.error) if watch.error else None,
                },
                "observer_polls": ours.polls,
                "follower": {
                    k: self.summary.get(k) for k in ("records", "batches", "dead_letters", "seconds")
                },
                **result,
                "checks": checks,
                "goal_p99_ms": 2000,
                "latencies_s": [round(x, 4) for x in upper],  # for the CDF chart
                "outputs_equal": all(checks.values()),
            }
        finally:
            su.close()
            shop.close()
            wh.close()

    def cleanup(self) -> None:
        from confluent_kafka.admin import AdminClient

        from bench.cdc_sink import delete_connector, drop_source, pause_workload

        cfg = self.cfg
        for name in self.connectors:
            delete_connector(cfg, name)
        if self.follower is not None:  # already stopped after a complete run; stop() is idempotent
            self.follower.halt.set()
            self.follower.join(60)
        su = psycopg2.connect(cfg.pg_dsn("shop", "postgres"))
        su.autocommit = True
        try:
            drop_source(su, self.schema, publication=self.slot, slot=self.slot)
        finally:
            su.close()
        wh = psycopg2.connect(cfg.pg_dsn("warehouse"))
        wh.autocommit = True
        try:
            with wh.cursor() as cur:
                for target in (self.target, self.target + "__deleted", self.jdbc_target):
                    cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*target.split("."))))
                for state in ("state.kafka_offsets", "state.kafka_group_targets"):
                    cur.execute(
                        sql.SQL("DELETE FROM {} WHERE consumer_group = %s").format(sql.SQL(state)),
                        (self.group,),
                    )
        finally:
            wh.close()
        admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
        existing = set(admin.list_topics(timeout=10).topics)
        topics = [t for t in (self.topic,) if t in existing]
        for f in list(admin.delete_topics(topics).values()) if topics else []:
            try:
                f.result(30)
            except Exception as exc:  # cleanup reports and goes on
                say(f"cleanup: {exc}")
        groups = [self.group] + ([f"connect-{self.jdbc_name}"] if self.jdbc_name in self.connectors else [])
        for group in groups:
            for attempt in range(5):  # a deleted connector's consumer leaves its group within seconds
                try:
                    admin.delete_consumer_groups([group])[group].result(30)
                    break
                except Exception as exc:  # cleanup reports and goes on (a group that never came)
                    if "NOT_EMPTY" not in str(exc) or attempt == 4:
                        say(f"cleanup: group {group}: {exc}")
                        break
                    time.sleep(2)
        if self.pause:
            pause_workload(cfg, self.paused_before)


def main(quick: bool = False) -> dict[str, Any]:
    return run_then_clean_up(Bench(quick))


def table(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"latency: {s['events']:,} events at {s['rate_per_s']:g}/s (achieved {r['writer']['achieved_rate']}/s), "
        f"source commit -> visible in the warehouse; our follow run (batch {s['follower_batch_size']}, "
        f"poll {s['follower_poll_timeout_s']} s)"
        + (
            " and Debezium's JDBC sink (same batch, read_committed) on the same topic in the same run"
            if "jdbc" in r
            else ""
        )
        + f"; shared machine, load {r['loadavg_during']}",
        f"  {'':<48}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]

    def line(label: str, m: dict[str, Any]) -> None:
        if m.get("n"):
            lines.append(f"  {label:<48}{m['p50_ms']:>9}{m['p90_ms']:>9}{m['p99_ms']:>9}{m['max_ms']:>9}")

    poll = f"+{s['observer_poll_s']} s poll"
    line(f"ours: visible (upper bound, {poll})", r["latency_visible_upper_bound"])
    line("ours: txn start (lower bound)", r["latency_txn_start_lower_bound"])
    line("  of which commit -> on Kafka", r["breakdown_host_clock"]["commit_to_readable_on_kafka"])
    line("  of which on Kafka -> visible", r["breakdown_host_clock"]["readable_on_kafka_to_visible"])
    if "jdbc" in r:
        j = r["jdbc"]
        line(f"JDBC sink: visible (upper bound, {poll})", j["latency_visible_upper_bound"])
        line("JDBC sink: txn start (lower bound)", j["latency_txn_start_lower_bound"])
        line("  of which on Kafka -> visible", j["readable_on_kafka_to_visible"])
        rv = r["ratios"]["visible_upper_bound"]
        lines.append(
            "  ours / JDBC sink (visible, lower is better): "
            + ", ".join(f"{k.split('_')[0]} {v}" for k, v in rv.items())
        )
    lines.append(f"  goal p99 <= {r['goal_p99_ms']} ms; follower {r['follower']}; checks {r['checks']}")
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Any) -> None:
    """The latency CDF: share of events visible within x ms of their source commit, both sinks."""
    import matplotlib.pyplot as plt

    series = [
        ("ours (follow run)", r["latencies_s"]),
        ("Debezium JDBC sink", r.get("latencies_jdbc_s") or []),
    ]
    if not r["latencies_s"]:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in series:
        xs = sorted(x * 1000 for x in values)
        if xs:
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=f"{label}, upper bound")
    ax.axvline(r["goal_p99_ms"], color="grey", linestyle="--", label="goal: p99 <= 2 s")
    ax.set_xlabel("source commit -> visible in the warehouse, ms")
    ax.set_ylabel("share of events")
    ax.set_title(
        f"latency CDF, {len(r['latencies_s']):,} events at {r['settings']['rate_per_s']:g}/s ({r.get('measured_at', '')})"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
