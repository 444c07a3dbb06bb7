"""Commit-to-warehouse latency of the streaming path (issue 14, item 2): source rows written at a fixed
rate, captured by the lab's Debezium connector, applied by a follow run of our exactly-once consumer
(:func:`cdclab.cdc.pipeline.stream`); p50/p99 over N events.

How a measurement is made:
- *source*: ``public.bench_lat_<run>`` in ``shop`` (``id bigint`` key, a payload, ``written_at`` =
  ``clock_timestamp()`` at insert). The lab connector captures every table of ``public``, so its topic
  is ``shop.public.bench_lat_<run>``. The lab workload keeps running by default (Debezium streams its
  changes alongside, as a production connector would); ``BENCH_LATENCY_PAUSE_WORKLOAD=1`` pauses it for
  the run and restores it after. Which it was is in the result.
- *the follower*: ``stream`` in a thread of this process (its own consumer group ``bench-lat-<run>``),
  started before the first row; one warm-up row (id 0) must reach the warehouse before timing starts,
  so start-up, topic creation and discovery are not in the figures.
- *the writer*: N single-row transactions (``INSERT``, autocommit), one every ``1/rate`` seconds on a
  fixed schedule (a late writer does not catch up in a burst; how late it fell is reported).
- *source commit time*: the Debezium event's ``source.ts_ms``, the commit time of the source transaction
  as Postgres recorded it, which the merge stores as ``_source_ts`` (millisecond precision, truncated:
  a latency is over-stated by < 1 ms). ``track_commit_timestamp`` is off on the lab, so this is the
  only exact commit time available.
- *warehouse visibility time*: an *observer* session polls the target every ``poll_s`` seconds for
  rows it has not seen (``WHERE id > last``, the writer's order is the commit order) and stamps each
  with ``clock_timestamp()`` taken after the query's snapshot: an **upper bound** of the moment the row
  became visible, late by at most ``poll_s`` plus one query. The **lower bound** is the row's
  ``_loaded_at`` (``now()``: the start of the warehouse transaction that committed it). Both figures
  are reported; the headline is the upper bound.
- *one clock*: ``shop`` and ``warehouse`` are databases of one Postgres server, so both times come from
  that server's clock (no cross-host skew).
- *breakdown* (indicative): a second Kafka consumer of the bench reads the topic (``read_committed``)
  and stamps each record on arrival with the host's clock (the lab's Postgres runs on the same host,
  same system clock): commit -> readable on Kafka (Debezium, its Kafka transaction) and readable on
  Kafka -> visible (our follower, plus the observer's poll).
- *correct or not a figure*: every one of the N rows must be observed exactly once, the follower must
  report no dead letter, and the target must equal the source (count and md5 of every row).

Knobs: ``BENCH_LATENCY_EVENTS`` (10,000; quick 1,000), ``BENCH_LATENCY_RATE`` (events/s, 200; quick
100) — the issue asks for half the sustainable rate; set it from a measured sustainable rate —,
``BENCH_LATENCY_POLL_S`` (observer period, 0.02), ``BENCH_LATENCY_BATCH`` (follower batch size, 500),
``BENCH_LATENCY_POLL_TIMEOUT`` (follower poll timeout, 0.1), ``BENCH_LATENCY_PAUSE_WORKLOAD`` (0).
Run: ``python -m bench latency [--quick]``.
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
    """Polls the target for new rows; ``seen[id] = (source_ts, loaded_at, visible_at, written_at)`` as
    epoch seconds, all from the Postgres server's clock."""

    def __init__(self, dsn: str, target: str, period: float, last: int) -> None:
        super().__init__(daemon=True)
        self.dsn, self.target, self.period, self.last = dsn, target, period, last
        self.seen: dict[int, tuple[float, float, float, float]] = {}
        self.repeats = 0  # a row returned twice (must stay 0: ids become visible in order)
        self.polls = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        schema, table = self.target.split(".")
        query = sql.SQL(
            "SELECT id, extract(epoch FROM _source_ts), extract(epoch FROM _loaded_at), "
            "extract(epoch FROM clock_timestamp()), extract(epoch FROM written_at) "
            "FROM {}.{} WHERE id > %s ORDER BY id"
        ).format(sql.Identifier(schema), sql.Identifier(table))
        try:
            conn = psycopg2.connect(self.dsn, application_name=f"{APP}_observer")
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    while not self.halt.is_set():
                        cur.execute(query, (self.last,))
                        self.polls += 1
                        for rid, src, loaded, visible, written in cur.fetchall():
                            if rid in self.seen:
                                self.repeats += 1
                                continue
                            self.seen[rid] = (float(src), float(loaded), float(visible), float(written))
                            self.last = max(self.last, rid)
                        self.halt.wait(self.period)
            finally:
                conn.close()
        except BaseException as exc:  # reported by the bench
            self.error = exc


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
        self.run_id = uuid.uuid4().hex[:8]
        self.table = f"bench_lat_{self.run_id}"
        self.target = f"core.{self.table}"
        self.topic = f"shop.public.{self.table}"
        self.group = f"bench-lat-{self.run_id}"
        self.follower: Any = None  # cdclab.cdc.pipeline.Follower, once started
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
        if self.follower is None:
            raise RuntimeError("the follower was not started")
        self.follower.check()

    def _wait_visible(self, wh: Any, rid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        query = sql.SQL("SELECT 1 FROM core.{} WHERE id = %s").format(sql.Identifier(self.table))
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
        raise TimeoutError(f"row {rid} did not reach {self.target} in {timeout:.0f}s")

    def write_at_rate(self, shop: Any) -> dict[str, float]:
        """Insert ids 1..N, one transaction each, the i-th at ``start + (i-1)/rate``."""
        insert = sql.SQL("INSERT INTO public.{} (id, payload) VALUES (%s, %s)").format(
            sql.Identifier(self.table)
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
                    self._alive()
        seconds = time.perf_counter() - start
        return {
            "seconds": round(seconds, 3),
            "achieved_rate": round(self.events / seconds, 1),
            "writer_max_behind_s": round(behind, 3),
        }

    # ------------------------------------------------------------------------- the run

    def main(self) -> dict[str, Any]:
        from bench.cdc_sink import pause_workload
        from cdclab.cdc.consumer import FOLLOW_KAFKA_CONFIG
        from cdclab.cdc.replication import checksum

        cfg = self.cfg
        if self.pause:
            self.paused_before = pause_workload(cfg, True)
        workload_paused = self._workload_paused()
        shop = psycopg2.connect(cfg.pg_dsn("shop"), application_name=f"{APP}_writer")
        shop.autocommit = True
        wh = psycopg2.connect(cfg.pg_dsn("warehouse"), application_name=f"{APP}_check")
        wh.autocommit = True
        try:
            t = sql.Identifier(self.table)
            with shop.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "CREATE TABLE public.{} (id bigint PRIMARY KEY, payload text NOT NULL, "
                        "written_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                    ).format(t)
                )
            from cdclab.cdc.pipeline import Follower

            self.follower = Follower(
                [f"public.{self.table}"],
                group=self.group,
                target_schema="core",
                batch_size=self.batch,
                poll_timeout=self.poll_timeout,
                who="bench-latency",
            )
            self.follower.start()
            with shop.cursor() as cur:  # warm-up: creates the topic; the follower picks it up
                cur.execute(sql.SQL("INSERT INTO public.{} (id, payload) VALUES (0, 'warm-up')").format(t))
            self._wait_visible(wh, 0, timeout=180)
            say(f"follower caught the warm-up row; writing {self.events:,} events at {self.rate:g}/s")
            observer = Observer(cfg.pg_dsn("warehouse"), self.target, self.poll_s, last=0)
            observer.start()
            watch = KafkaWatch(cfg.kafka_bootstrap, self.topic)  # the topic exists: the warm-up made it
            watch.start()
            load0 = os.getloadavg()
            writer = self.write_at_rate(shop)
            deadline = time.monotonic() + max(120.0, self.events / self.rate)
            while len(observer.seen) < self.events and time.monotonic() < deadline:
                self._alive()
                if observer.error is not None:
                    raise observer.error
                time.sleep(0.1)
            observer.halt.set()
            observer.join(30)
            watch.halt.set()
            watch.join(30)
            self.summary = self.follower.stop()
            cols, key = ["id", "payload", "written_at"], ["id"]
            with shop.cursor() as cur:
                source = checksum(cur, f"public.{self.table}", cols, key)
            with wh.cursor() as cur:
                target = checksum(cur, self.target, cols, key)
            rows = [observer.seen[i] for i in range(1, self.events + 1) if i in observer.seen]
            upper = [visible - src for src, _loaded, visible, _w in rows]
            lower = [loaded - src for src, loaded, _v, _w in rows]
            commit = [src - written for src, _l, _v, written in rows]
            on_kafka = [
                (watch.arrived[i] - observer.seen[i][0], observer.seen[i][2] - watch.arrived[i])
                for i in range(1, self.events + 1)
                if i in observer.seen and i in watch.arrived
            ]
            checks = {
                "all_events_observed": len(rows) == self.events,
                "no_row_observed_twice": observer.repeats == 0,
                "no_dead_letters": self.summary.get("dead_letters") == 0,
                "target_equals_source": source == target,
            }
            for name, ok in checks.items():
                if not ok:
                    say(f"CHECK FAILED: {name}")
            return {
                "benchmark": "latency",
                "settings": {
                    "events": self.events,
                    "rate_per_s": self.rate,
                    "observer_poll_s": self.poll_s,
                    "follower_batch_size": self.batch,
                    "follower_poll_timeout_s": self.poll_timeout,
                    "follower_kafka_config": FOLLOW_KAFKA_CONFIG,
                    "source": f"public.{self.table} via the lab connector shop-postgres-source",
                    "workload_paused": workload_paused,
                    "shared_machine": True,
                },
                "writer": writer,
                "loadavg_during": load0,
                "latency_visible_upper_bound": summarize(upper),
                "latency_txn_start_lower_bound": summarize(lower),
                "source_insert_to_commit": summarize(commit),
                "breakdown_host_clock": {
                    "commit_to_readable_on_kafka": summarize([a for a, _b in on_kafka]),
                    "readable_on_kafka_to_visible": summarize([b for _a, b in on_kafka]),
                    "watch_error": repr(watch.error) if watch.error else None,
                },
                "observer_polls": observer.polls,
                "follower": {
                    k: self.summary.get(k) for k in ("records", "batches", "dead_letters", "seconds")
                },
                "checks": checks,
                "goal_p99_ms": 2000,
                "latencies_s": [round(x, 4) for x in upper],  # for the CDF chart
                "outputs_equal": all(checks.values()),
            }
        finally:
            shop.close()
            wh.close()

    def cleanup(self) -> None:
        from confluent_kafka.admin import AdminClient

        from bench.cdc_sink import pause_workload

        if self.follower is not None:  # already stopped after a complete run; stop() is idempotent
            self.follower.halt.set()
            self.follower.join(60)
        cfg = self.cfg
        for database, stmt in (
            ("shop", sql.SQL("DROP TABLE IF EXISTS public.{}").format(sql.Identifier(self.table))),
            (
                "warehouse",
                sql.SQL("DROP TABLE IF EXISTS core.{}, core.{}").format(
                    sql.Identifier(self.table), sql.Identifier(f"{self.table}__deleted")
                ),
            ),
        ):
            conn = psycopg2.connect(cfg.pg_dsn(database))
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(stmt)
                    if database == "warehouse":
                        for state in ("state.kafka_offsets", "state.kafka_group_targets"):
                            cur.execute(
                                sql.SQL("DELETE FROM {} WHERE consumer_group = %s").format(sql.SQL(state)),
                                (self.group,),
                            )
            finally:
                conn.close()
        admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap})
        for f in [
            *admin.delete_topics([self.topic]).values(),
            *admin.delete_consumer_groups([self.group]).values(),
        ]:
            try:
                f.result(30)
            except Exception as exc:  # cleanup reports and goes on (a topic or group that never came)
                say(f"cleanup: {exc}")
        if self.pause:
            pause_workload(cfg, self.paused_before)


def main(quick: bool = False) -> dict[str, Any]:
    return run_then_clean_up(Bench(quick))


def table(r: dict[str, Any]) -> str:
    s = r["settings"]
    lines = [
        f"latency: {s['events']:,} events at {s['rate_per_s']:g}/s (achieved {r['writer']['achieved_rate']}/s), "
        f"source commit -> visible in the warehouse, our follow run (batch {s['follower_batch_size']}, "
        f"poll {s['follower_poll_timeout_s']} s); shared machine, load {r['loadavg_during']}",
        f"  {'':<34}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}",
    ]
    for label, key in (
        (f"visible (upper bound, +{s['observer_poll_s']} s poll)", "latency_visible_upper_bound"),
        ("txn start (lower bound)", "latency_txn_start_lower_bound"),
    ):
        m = r[key]
        if m.get("n"):
            lines.append(f"  {label:<34}{m['p50_ms']:>9}{m['p90_ms']:>9}{m['p99_ms']:>9}{m['max_ms']:>9}")
    for label, m in (
        ("  of which commit -> on Kafka", r["breakdown_host_clock"]["commit_to_readable_on_kafka"]),
        ("  of which on Kafka -> visible", r["breakdown_host_clock"]["readable_on_kafka_to_visible"]),
    ):
        if m.get("n"):
            lines.append(f"  {label:<34}{m['p50_ms']:>9}{m['p90_ms']:>9}{m['p99_ms']:>9}{m['max_ms']:>9}")
    lines.append(f"  goal p99 <= {r['goal_p99_ms']} ms; follower {r['follower']}; checks {r['checks']}")
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Any) -> None:
    """The latency CDF: share of events visible within x ms of their source commit."""
    import matplotlib.pyplot as plt

    xs = sorted(x * 1000 for x in r["latencies_s"])
    if not xs:
        return
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(xs, ys, label="ours (follow run), upper bound")
    ax.axvline(r["goal_p99_ms"], color="grey", linestyle="--", label="goal: p99 <= 2 s")
    ax.set_xlabel("source commit -> visible in the warehouse, ms")
    ax.set_ylabel("share of events")
    ax.set_title(
        f"latency CDF, {len(xs):,} events at {r['settings']['rate_per_s']:g}/s ({r.get('measured_at', '')})"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
