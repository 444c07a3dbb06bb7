"""CDC sink benchmark: our exactly-once consumer vs Debezium's JDBC sink, each draining the same
pre-filled topic from offset 0 into identical target tables.

How a measurement is made (issue 14, item 1):
- *pre-fill*: a source table in ``shop`` (``bench_<run>.bench_<run>``: a schema of its own, so the lab
  connector, which captures the schema ``public``, does not stream it a second time) with an order-like shape (bigint key, text, numeric, char,
  date, timestamptz, integer) gets ``--events`` change events in transactions of 100-1000 rows: rounds
  of 1000 inserts, 500 updates spread over the previous round, 200 updates of 100 *hot keys* and 100
  deletes (each with its tombstone), then one *sentinel* row (id 0), the topic's last record. A
  Debezium source of the bench's own (own slot, publication and topic prefix; the lab connector's type
  settings; JSON with schemas, which the JDBC sink needs) writes the topic, and is removed once the
  topic holds every record, before any sink runs.
- *identical targets*: ``core.bench_ours_<t>`` is created by our merge from the source catalog;
  ``core.bench_jdbc_<t>`` is ``LIKE`` it (same columns, types, primary key, defaults); the JDBC sink
  leaves the bookkeeping columns (``_source_position`` ...) at their defaults: it has no LSN guard.
- *a run*: the target is emptied, then one sink drains the topic from offset 0 under a new consumer
  group: ours as a fresh process (``python -m bench.drain ours``: one catch-up run, exits when caught
  up; start-up and imports included); the JDBC sink as a new connector (``read_committed``, batch size
  and ``max.poll.records`` equal to ours) until the sentinel row is visible (polled every 0.1 s by
  key). Batch sizes are swept (500, 2000, 5000 by default), ``--runs`` runs each, the two sinks
  alternating which goes first.
- *the same start for every run*: the source is vacuumed once after the pre-fill; each target is
  emptied right after its run is checked; a ``CHECKPOINT`` precedes every timed run (:func:`quiesce`).
- *correct or not a figure*: after every run the target's rows (the source columns, ordered by key)
  must have the source's count and md5 (:func:`cdclab.cdc.replication.checksum`); a run that fails this
  is a failure, listed as such, and the benchmark exits non-zero.
- *CPU*: ours = the drain process's user+system CPU (``RUSAGE_CHILDREN``, its Kafka client threads
  included); the JDBC sink = the Connect worker's CPU delta from ``/proc``; Postgres = the CPU of the
  sink's own backends (found by ``application_name``, :class:`Sessions`), and, for reference, the whole
  cluster's delta (postmaster + live and reaped children), which on the shared lab also holds other
  clients' work. CPU-seconds per event = (sink process + its Postgres sessions) / events.
  The idle rate of both is measured before the runs and reported (the lab's own connector and services
  keep running; the lab workload is paused during the benchmark and restored after).
- *baseline*: a bare confluent-kafka consume + orjson decode of the same topic (``bench.drain bare``:
  every key and value parsed whole), run after each pair of sink runs, so as often as they are and
  under the same conditions; ours ÷ bare compares medians.

The machine is shared: figures are medians with their spread, with the machine's facts and load.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from cdclab.cdc.connect import ConnectClient, ConnectError
from cdclab.cdc.slots import release_slot
from cdclab.lab.config import LabConfig

RESULTS = Path(__file__).parent / "results"
JDBC_TEMPLATE = Path(__file__).parent / "connectors" / "jdbc-sink.json"
ROOT = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")
HOT_KEYS = 100
SENTINEL = 0
COLUMNS = ["id", "customer_id", "status", "total", "currency", "placed_on", "note", "updated_at", "version"]
SOURCE_COLUMNS = (
    "id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL, "
    "total numeric(12,2) NOT NULL, currency character(3) NOT NULL DEFAULT 'EUR', placed_on date NOT NULL, "
    "note text, updated_at timestamptz NOT NULL DEFAULT clock_timestamp(), version integer NOT NULL DEFAULT 1"
)


def say(msg: str) -> None:
    print(f"[bench cdc] {msg}", flush=True)


# ----------------------------------------------------------------------------- /proc CPU accounting


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / CLK


def tree_cpu(parent: int) -> float:
    """CPU seconds of ``parent``, its reaped children (cutime/cstime) and its live children: for the
    postmaster, every backend that ran or runs."""
    f = _stat(parent)
    total = sum(int(x) for x in f[11:15]) / CLK
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            g = _stat(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(g[1]) == parent:
            total += (int(g[11]) + int(g[12])) / CLK
    return total


class Meters:
    """CPU counters of the Connect worker and the Postgres cluster (None where unknown)."""

    def __init__(self, cfg: LabConfig, wh: Any) -> None:
        with wh.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backend = int(cur.fetchone()[0])
        self.postmaster = int(_stat(backend)[1])
        pid_file = cfg.state / "run" / "connect.pid"
        self.connect = int(pid_file.read_text().strip()) if pid_file.exists() else None

    def read(self) -> dict[str, float | None]:
        connect = None
        if self.connect is not None:
            try:
                connect = process_cpu(self.connect)
            except FileNotFoundError:
                connect = None
        return {"postgres": tree_cpu(self.postmaster), "connect": connect}

    @staticmethod
    def delta(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
        return {k: (None if a[k] is None or b[k] is None else round(b[k] - a[k], 3)) for k in a}  # type: ignore[operator]


class Sessions:
    """CPU of the Postgres backends of one sink's sessions (by ``application_name``), sampled every 0.2 s
    from ``/proc`` while the sink runs: the lab's Postgres is shared, so the whole cluster's delta also
    holds other clients' work. A backend's CPU counts from its start (the sink opened it); up to 0.2 s
    of a session that ends before the last sample is missed, and autovacuum is not included."""

    def __init__(self, cfg: LabConfig, application_name: str) -> None:
        self.cfg = cfg
        self.name = application_name
        self.seen: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self, cur: Any) -> None:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.name,))
        for (pid,) in cur.fetchall():
            try:
                self.seen[pid] = max(self.seen.get(pid, 0.0), process_cpu(pid))
            except (FileNotFoundError, ProcessLookupError):
                pass

    def _loop(self) -> None:
        conn = psycopg2.connect(self.cfg.pg_dsn("warehouse"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    self._sample(cur)
                    self.stop.wait(0.2)
                self._sample(cur)
        finally:
            conn.close()

    def start(self) -> Sessions:
        self.thread.start()
        return self

    def finish(self) -> float:
        self.stop.set()
        self.thread.join(10)
        return round(sum(self.seen.values()), 3)


# ----------------------------------------------------------------------------- facts


def machine_facts(cfg: LabConfig, wh: Any) -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        "0",
    )
    with wh.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = cur.fetchone()[0]
    connect = ConnectClient(cfg.connect_url)
    root, plugins = connect.worker(), connect.plugins()
    versions = {
        p["class"].rsplit(".", 1)[-1]: p.get("version")
        for p in (plugins or [])
        if isinstance(p, dict) and "debezium" in p.get("class", "")
    }
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "mem_total_kb": int(mem),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": pg_version,
        "kafka_connect": (root or {}).get("version") if isinstance(root, dict) else None,
        "debezium_plugins": versions,
        "git_commit": commit,
        "loadavg_at_start": os.getloadavg(),
        "shared_machine": True,
    }


# ----------------------------------------------------------------------------- the source and its topic


def prefill(shop: Any, table: str, events: int) -> dict[str, int]:
    """Write about ``events`` change events (inserts, spread updates, hot-key updates, deletes) in rounds
    into ``table`` (``schema.table``), then the sentinel row; returns the counts per kind."""
    t = sql.Identifier(*table.split("."))
    insert = sql.SQL(
        "INSERT INTO {t} (id, customer_id, status, total, placed_on, note) "
        "SELECT g, mod(g, 5000), 'new', mod(g, 100000) / 100.0, date '2026-01-01' + mod(g, 365)::int, "
        "repeat('n', 20 + mod(g, 50)::int) FROM generate_series(%s::bigint, %s::bigint) g"
    ).format(t=t)
    spread = sql.SQL(
        "UPDATE {t} SET status = 'paid', total = total + 1, version = version + 1, "
        "updated_at = clock_timestamp() WHERE id >= %s AND id < %s"
    ).format(t=t)
    hot = sql.SQL(
        "UPDATE {t} SET total = total + 0.01, version = version + 1, note = 'hot ' || version, "
        "updated_at = clock_timestamp() WHERE id BETWEEN 1 AND %s"
    ).format(t=t)
    delete = sql.SQL("DELETE FROM {t} WHERE id >= %s AND id < %s").format(t=t)
    counts = {"c": 0, "u": 0, "d": 0}

    def run(stmt: sql.Composable, args: tuple[Any, ...], kind: str) -> None:
        with shop.cursor() as cur:
            cur.execute(stmt, args)
            counts[kind] += cur.rowcount
        shop.commit()

    run(insert, (1, HOT_KEYS), "c")
    start = HOT_KEYS + 1
    while sum(counts.values()) < events:
        left = events - sum(counts.values())
        run(insert, (start, start + min(1000, left) - 1), "c")
        if start > HOT_KEYS + 1000:
            prev = start - 1000
            run(spread, (prev, prev + 500), "u")
            for _ in range(2):
                run(hot, (HOT_KEYS,), "u")
            run(delete, (prev + 900, prev + 1000), "d")
        start += 1000
        if (start // 1000) % 100 == 0:
            say(f"  source: {sum(counts.values())}/{events} events written")
    run(insert, (SENTINEL, SENTINEL), "c")
    return counts


def count_records(bootstrap: str, topic: str, expected: int, timeout: float) -> int:
    """Read the topic (``read_committed``) from the start until it holds ``expected`` records."""
    from confluent_kafka import Consumer, TopicPartition

    from cdclab.cdc.consumer import FETCH_KAFKA_CONFIG

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-count-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            **FETCH_KAFKA_CONFIG,
        }
    )
    deadline = time.monotonic() + timeout
    seen = 0
    try:
        while time.monotonic() < deadline:
            md = consumer.list_topics(topic, timeout=10)
            if topic in md.topics and md.topics[topic].error is None:
                break
            time.sleep(1)
        consumer.assign([TopicPartition(topic, 0, 0)])
        while seen < expected and time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(num_messages=10000, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    if seen < expected:
        raise TimeoutError(f"{topic} holds {seen} records after {timeout:.0f}s, expected {expected}")
    return seen


def source_config(base: dict[str, Any], *, prefix: str, slot: str, table: str) -> dict[str, Any]:
    """The bench's Debezium source of ``table`` (``schema.table``; a bare name is in ``public``): the lab
    connector's config (``base``) on its own slot, publication and topic prefix, with schemas in the JSON
    (the JDBC sink needs them). The type settings stay the lab connector's
    (tests/unit/test_cdc_type_settings.py)."""
    source = {
        **base,
        "topic.prefix": prefix,
        "slot.name": slot,
        "publication.name": slot,
        "table.include.list": table if "." in table else f"public.{table}",
        "snapshot.mode": "no_data",
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "heartbeat.interval.ms": "0",
        "signal.enabled.channels": "source",
        "provide.transaction.metadata": "false",
    }
    source.pop("heartbeat.action.query", None)
    source.pop("schema.include.list", None)
    return source


def jdbc_config(*, topic: str, target: str, batch: int) -> dict[str, str]:
    config = json.loads(JDBC_TEMPLATE.read_text())
    config.pop("_comment", None)
    config.update(
        {
            "topics": topic,
            "collection.name.format": target,
            "batch.size": str(batch),
            "consumer.override.max.poll.records": str(batch),
        }
    )
    return config


def create_source(su: Any, schema: str, table: str, columns: str, publication: str) -> None:
    """A bench's own source: ``schema`` (owned by ``shop``, usable by the CDC user; the lab connector, schema
    public, never sees it) with ``table`` of ``columns``, readable by the CDC user, in its own publication."""
    s, t = sql.Identifier(schema), sql.Identifier(schema, table)
    with su.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION shop").format(s))
        cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO cdc_replicator").format(s))
        cur.execute(sql.SQL("CREATE TABLE {} ({})").format(t, sql.SQL(columns)))
        cur.execute(sql.SQL("ALTER TABLE {} OWNER TO shop").format(t))
        cur.execute(sql.SQL("GRANT SELECT ON {} TO cdc_replicator").format(t))
        cur.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(sql.Identifier(publication), t))


def create_twin_targets(wh: Any, route: Any, ours: str, jdbc: str) -> None:
    """Both sinks' targets of ``route`` (a :class:`cdclab.cdc.pipeline.TableRoute`): ``ours`` as the library
    creates it, ``jdbc`` the same table with defaults for the ledger columns the JDBC sink does not write."""
    from cdclab.cdc.merge import ensure_target

    o, j = sql.Identifier(*ours.split(".")), sql.Identifier(*jdbc.split("."))
    with wh.cursor() as cur:
        ensure_target(cur, ours, list(route.types.items()), route.key)
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(j, o))
        cur.execute(
            sql.SQL(
                "ALTER TABLE {} ALTER _source_position SET DEFAULT 0, ALTER _source_op SET DEFAULT 'c'"
            ).format(j)
        )


def start_source(cfg: LabConfig, name: str, *, prefix: str, slot: str, table: str) -> None:
    """Register the bench's Debezium source ``name`` (:func:`source_config`) and wait until it runs."""
    from cdclab.lab.native import wait_connector_running

    base = json.loads((ROOT / "connectors" / "shop-postgres-source.json").read_text())["config"]
    put_connector(cfg, name, source_config(base, prefix=prefix, slot=slot, table=table))
    time.sleep(2)
    wait_connector_running(cfg, name, 120)


def drop_source(su: Any, schema: str, publication: str, slot: str) -> None:
    """Undo :func:`create_source` once the source connector is deleted: its slot (once the connector has
    let go of it, :func:`cdclab.cdc.slots.release_slot`), the publication and the schema."""
    with su.cursor() as cur:
        release_slot(cur, slot)
        cur.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(publication)))
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def put_connector(cfg: LabConfig, name: str, config: dict[str, Any]) -> None:
    ConnectClient(cfg.connect_url).put_config(name, config)  # ConnectError (a RuntimeError) if refused


def connector_state(cfg: LabConfig, name: str) -> str:
    """``FAILED`` if the connector or a task failed, else its state; ``UNKNOWN`` when unreadable."""
    state = ConnectClient(cfg.connect_url).overall(name)
    return "UNKNOWN" if state == "MISSING" else state


def delete_connector(cfg: LabConfig, name: str) -> None:
    connect = ConnectClient(cfg.connect_url)
    connect.delete(name)
    with contextlib.suppress(ConnectError):  # as before: give up waiting after 10 s, quietly
        connect.wait_deleted(name, timeout=10)


# ----------------------------------------------------------------------------- one run of each sink


class Bench:
    def __init__(self, cfg: LabConfig, events: int, runs: int, sizes: list[int]) -> None:
        self.cfg = cfg
        self.events_wanted = events
        self.runs = runs
        self.sizes = sizes
        self.run_id = uuid.uuid4().hex[:6]
        self.table = f"bench_{self.run_id}"
        self.slot = self.table
        self.prefix = f"bench{self.run_id}"
        # its own schema: the lab connector (schema public) does not capture it as well
        self.schema = self.table
        self.source = f"{self.schema}.{self.table}"
        self.topic = f"{self.prefix}.{self.source}"
        self.ours = f"core.bench_ours_{self.table}"
        self.jdbc = f"core.bench_jdbc_{self.table}"
        self.source_name = f"bench-source-{self.run_id}"
        self.connectors: list[str] = []
        self.groups: list[str] = []
        self.env = {**os.environ, **cfg.airflow_env(), "PYTHONPATH": str(ROOT)}

    def checksum(self, table: str) -> tuple[int, str | None]:
        from cdclab.cdc.replication import checksum

        dsn = self.cfg.pg_dsn("shop" if table == self.source else "warehouse")
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            return checksum(cur, table, COLUMNS, ["id"])

    def empty(self, wh: Any, *tables: str) -> None:
        with wh.cursor() as cur:
            for t in tables:
                cur.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(*t.split("."))))

    def run_ours(self, wh: Any, meters: Meters, batch: int, n: int) -> dict[str, Any]:
        self.empty(wh, self.ours, self.ours + "__deleted")
        group = f"bench-{self.run_id}-ours-b{batch}-r{n}"
        self.groups.append(group)
        argv = [sys.executable, "-m", "bench.drain", "ours", "--table", self.source]
        argv += ["--group", group, "--topic-prefix", self.prefix, "--batch", str(batch)]
        env = {**self.env, "CDCLAB_APPLICATION_NAME": group[:63]}
        before, ru0 = meters.read(), resource.getrusage(resource.RUSAGE_CHILDREN)
        sessions = Sessions(self.cfg, group[:63]).start()
        t0 = time.monotonic()
        proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        pg = sessions.finish()
        after, ru1 = meters.read(), resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"our drain failed ({proc.returncode}): {proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return {
            "sink": "ours",
            "seconds": round(seconds, 3),
            "process_cpu_s": round(cpu, 3),
            "postgres_sessions_cpu_s": pg,
            "cpu_delta_s": Meters.delta(before, after),
            "records": summary["records"],
            "batches": summary["batches"],
            "dead_letters": summary["dead_letters"],
            "paths": summary.get("paths", {}),  # topic batches by path: lean (cdclab.cdc.lean) or python
        }

    def run_jdbc(self, wh: Any, meters: Meters, batch: int, n: int) -> dict[str, Any]:
        self.empty(wh, self.jdbc)
        name = f"bench-jdbc-{self.run_id}-b{batch}-r{n}"
        self.connectors.append(name)
        self.groups.append(f"connect-{name}")
        config = jdbc_config(topic=self.topic, target=self.jdbc, batch=batch)
        config["connection.url"] += f"&ApplicationName={name[:63]}"
        probe = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(sql.Identifier(*self.jdbc.split(".")))
        before = meters.read()
        sessions = Sessions(self.cfg, name[:63]).start()
        t0 = time.monotonic()
        put_connector(self.cfg, name, config)
        deadline = t0 + max(600.0, self.events_wanted / 200)
        checked = t0
        while True:
            with wh.cursor() as cur:
                cur.execute(probe, (SENTINEL,))
                if cur.fetchone():
                    break
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"{name}: the sentinel row did not arrive within {deadline - t0:.0f}s")
            if now - checked > 5:
                checked = now
                if connector_state(self.cfg, name) == "FAILED":
                    body = ConnectClient(self.cfg.connect_url).status(name)
                    raise RuntimeError(f"{name} FAILED: {json.dumps(body)[:3000]}")
            time.sleep(0.1)
        seconds = time.monotonic() - t0
        after = meters.read()
        pg = sessions.finish()
        delete_connector(self.cfg, name)
        delta = Meters.delta(before, after)
        return {
            "sink": "jdbc",
            "seconds": round(seconds, 3),
            "process_cpu_s": delta["connect"],
            "postgres_sessions_cpu_s": pg,
            "cpu_delta_s": delta,
        }

    def run_bare(self, meters: Meters, batch: int) -> dict[str, Any]:
        argv = [sys.executable, "-m", "bench.drain", "bare", "--topic", self.topic]
        argv += ["--bootstrap", self.cfg.kafka_bootstrap, "--batch", str(batch)]
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.run(argv, env=self.env, cwd=ROOT, capture_output=True, text=True)
        seconds = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"bare consume failed: {proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return {"sink": "bare", "seconds": round(seconds, 3), "process_cpu_s": round(cpu, 3), **summary}

    # ------------------------------------------------------------------------- the whole benchmark

    def main(self) -> bool:
        cfg = self.cfg
        os.environ.update(cfg.airflow_env())
        su = psycopg2.connect(cfg.pg_dsn("shop", "postgres"))
        su.autocommit = True
        wh = psycopg2.connect(cfg.pg_dsn("warehouse"))
        wh.autocommit = True
        paused_before = pause_workload(cfg, True)
        result: dict[str, Any] = {
            "benchmark": "cdc_sink",
            "run": self.run_id,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": {
                "events_requested": self.events_wanted,
                "runs_per_size": self.runs,
                "batch_sizes": self.sizes,
                "hot_keys": HOT_KEYS,
                "jdbc_sink": jdbc_config(topic=self.topic, target=self.jdbc, batch=0),
                "ours": {"delete_mode": "hard", "schema_policy": "fail", "isolation": "read_committed"},
                "topic_partitions": 1,
            },
            "runs": [],
            "failures": [],
        }
        try:
            result["machine"] = machine_facts(cfg, wh)
            self.setup(su, wh)
            shop = psycopg2.connect(cfg.pg_dsn("shop"))
            t0 = time.monotonic()
            counts = prefill(shop, self.source, self.events_wanted)
            shop.close()
            events = sum(counts.values())
            records = events + counts["d"]  # each delete is followed by its tombstone
            say(f"source written in {time.monotonic() - t0:.1f}s: {counts}; waiting for {records} records")
            count_records(cfg.kafka_bootstrap, self.topic, records, timeout=max(600.0, records / 500))
            say(f"topic {self.topic} holds {records} records after {time.monotonic() - t0:.1f}s")
            delete_connector(cfg, self.source_name)
            self.connectors.remove(self.source_name)
            result["events"] = {"changes": events, "by_op": counts, "kafka_records": records}
            expected = self.checksum(self.source)
            with su.cursor() as cur:  # its autovacuum would otherwise land in the first runs
                cur.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(*self.source.split("."))))
            result["source_rows"] = expected[0]
            meters = Meters(cfg, wh)
            idle0 = meters.read()
            time.sleep(5)
            idle = Meters.delta(idle0, meters.read())
            result["idle_cpu_per_s"] = {k: None if v is None else round(v / 5, 4) for k, v in idle.items()}
            for batch in self.sizes:
                for n in range(1, self.runs + 1):
                    order = ("ours", "jdbc") if n % 2 else ("jdbc", "ours")
                    for sink in order:
                        quiesce(su)
                        try:
                            if sink == "ours":
                                run = self.run_ours(wh, meters, batch, n)
                                target = self.ours
                            else:
                                run = self.run_jdbc(wh, meters, batch, n)
                                target = self.jdbc
                        except (RuntimeError, TimeoutError) as exc:
                            result["failures"].append(
                                {"sink": sink, "batch": batch, "run": n, "error": str(exc)}
                            )
                            say(f"FAILED {sink} batch={batch} run={n}: {exc}")
                            continue
                        got = self.checksum(target)
                        # emptied now: its dead rows are not vacuumed during the next run
                        self.empty(wh, *((target, target + "__deleted") if sink == "ours" else (target,)))
                        run.update(batch=batch, run=n, events=events, equal_to_source=got == expected)
                        run["events_per_s"] = round(events / run["seconds"], 1)
                        pg = run["postgres_sessions_cpu_s"]
                        if run["process_cpu_s"] is not None:
                            run["cpu_s_per_event"] = (run["process_cpu_s"] + pg) / events
                        if got != expected:
                            result["failures"].append(
                                {
                                    "sink": sink,
                                    "batch": batch,
                                    "run": n,
                                    "error": f"target {got} != source {expected}",
                                }
                            )
                            say(f"FAILED {sink} batch={batch} run={n}: target {got} != source {expected}")
                        else:
                            say(
                                f"{sink:5} batch={batch:5} run={n}: {run['seconds']:7.2f}s "
                                f"{run['events_per_s']:9.1f} ev/s, sink CPU {run['process_cpu_s']}s, "
                                f"its postgres sessions {pg}s (cluster {run['cpu_delta_s']['postgres']}s)"
                            )
                        result["runs"].append(run)
                    # the ceiling, measured as often as the sinks and between their runs (same conditions)
                    quiesce(su)
                    bare = self.run_bare(meters, batch)
                    bare.update(
                        batch=batch, run=n, events=events, events_per_s=round(events / bare["seconds"], 1)
                    )
                    result["runs"].append(bare)
                    say(
                        f"bare  batch={batch:5} run={n}: {bare['seconds']:7.2f}s {bare['events_per_s']:9.1f} ev/s"
                    )
            result["summary"] = summarize(result["runs"], self.sizes)
            result["machine"]["loadavg_at_end"] = os.getloadavg()
        finally:
            self.cleanup(su, wh)
            pause_workload(cfg, paused_before)
            su.close()
            wh.close()
        write(result)
        print_table(result)
        return not result["failures"] and bool(result.get("summary"))

    def setup(self, su: Any, wh: Any) -> None:
        from cdclab.cdc.pipeline import routes_for

        create_source(su, self.schema, self.table, SOURCE_COLUMNS, publication=self.slot)
        (route,) = routes_for(
            [self.source],
            topic_prefix=self.prefix,
            target_schema="core",
            target_prefix="bench_ours_",
        )
        create_twin_targets(wh, route, self.ours, self.jdbc)
        self.connectors.append(self.source_name)
        start_source(self.cfg, self.source_name, prefix=self.prefix, slot=self.slot, table=self.source)

    def cleanup(self, su: Any, wh: Any) -> None:
        for name in self.connectors:
            delete_connector(self.cfg, name)
        time.sleep(1)
        drop_source(su, self.schema, publication=self.slot, slot=self.slot)
        with wh.cursor() as cur:
            for t in (self.jdbc, self.ours, self.ours + "__deleted"):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*t.split("."))))
            pattern = f"bench-{self.run_id}-%"
            cur.execute("DELETE FROM state.kafka_offsets WHERE consumer_group LIKE %s", (pattern,))
            cur.execute("DELETE FROM state.kafka_group_targets WHERE consumer_group LIKE %s", (pattern,))
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.cfg.kafka_bootstrap})
        futures = list(admin.delete_topics([self.topic]).values())
        if self.groups:
            futures += list(admin.delete_consumer_groups(self.groups).values())
        for f in futures:
            try:
                f.result(30)
            except Exception as exc:  # cleanup reports and goes on
                say(f"cleanup: {exc}")


def quiesce(su: Any) -> None:
    """Before each timed run: a ``CHECKPOINT``, so that no run pays for the one the run before it started
    (its I/O, and the full-page images every first change of a page writes to the WAL after it). The
    run before has emptied its target already (no autovacuum of a million dead rows during this run)."""
    with su.cursor() as cur:
        cur.execute("CHECKPOINT")


def pause_workload(cfg: LabConfig, paused: bool | None) -> bool | None:
    """Set the lab workload's pause flag (as tests do); returns what it was (None: no workload row)."""
    from cdclab.lab import shop_workload as sw

    if paused is None:
        return None
    conn = psycopg2.connect(cfg.pg_dsn("shop"))
    try:
        try:
            was: bool | None = sw.read_control(conn).paused
        except (sw.ControlRowMissingError, psycopg2.errors.UndefinedTable):
            return None
        if was != paused:
            sw.set_control(conn, paused=paused)
        return was
    finally:
        conn.close()


# ----------------------------------------------------------------------------- summary and output


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    med = statistics.median(values)
    return {
        "median": round(med, 6),
        "min": round(min(values), 6),
        "max": round(max(values), 6),
        "spread_pct": round(100 * (max(values) - min(values)) / med, 1) if med else 0.0,
        "n": len(values),
    }


def summarize(runs: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for batch in sizes:
        row: dict[str, Any] = {}
        for sink in ("ours", "jdbc", "bare"):
            good = [
                r
                for r in runs
                if r["sink"] == sink and r["batch"] == batch and r.get("equal_to_source", True)
            ]
            row[sink] = {
                "events_per_s": _stats([r["events_per_s"] for r in good]),
                "cpu_s_per_event": _stats([r["cpu_s_per_event"] for r in good if "cpu_s_per_event" in r]),
                "sink_cpu_s": _stats(
                    [r["process_cpu_s"] for r in good if r.get("process_cpu_s") is not None]
                ),
                "postgres_sessions_cpu_s": _stats(
                    [
                        r["postgres_sessions_cpu_s"]
                        for r in good
                        if r.get("postgres_sessions_cpu_s") is not None
                    ]
                ),
                "postgres_cluster_cpu_s": _stats(
                    [
                        r["cpu_delta_s"]["postgres"]
                        for r in good
                        if r.get("cpu_delta_s", {}).get("postgres") is not None
                    ]
                ),
            }

        def ratio(row: dict[str, Any], a: str, b: str, what: str) -> float | None:
            x, y = row[a][what], row[b][what]
            return round(x["median"] / y["median"], 3) if x and y and y["median"] else None

        row["ratio_events_per_s_ours_over_jdbc"] = ratio(row, "ours", "jdbc", "events_per_s")
        row["ratio_cpu_per_event_ours_over_jdbc"] = ratio(row, "ours", "jdbc", "cpu_s_per_event")
        row["ratio_events_per_s_ours_over_bare"] = ratio(row, "ours", "bare", "events_per_s")
        out[str(batch)] = row
    return out


def write(result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"cdc_sink-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    text = json.dumps(result, indent=2, default=str) + "\n"
    out.write_text(text)
    (RESULTS / "cdc_sink-latest.json").write_text(text)
    say(f"results: {out}")
    from bench.report import write_outputs

    write_outputs("cdc_sink", json.loads(text), out.name.removeprefix("cdc_sink-").removesuffix(".json"))
    return out


def chart(result: dict[str, Any], path: Any) -> None:
    """Throughput bars: median events/s (min..max) of ours, the JDBC sink and the bare consume per batch size."""
    from bench.report import grouped_bars

    summary = result.get("summary") or {}
    sizes = list(summary)
    if not sizes:
        return
    series = []
    for sink, label, color in (
        ("ours", "ours", "#2a7"),
        ("jdbc", "Debezium JDBC sink", "#c63"),
        ("bare", "bare consume + decode", "#888"),
    ):
        stats = [summary[s][sink]["events_per_s"] for s in sizes]
        med = [st["median"] if st else 0.0 for st in stats]
        err = [[m - st["min"] if st else 0.0 for m, st in zip(med, stats, strict=True)],
               [st["max"] - m if st else 0.0 for m, st in zip(med, stats, strict=True)]]  # fmt: skip
        series.append((label, color, med, err))
    events = (result.get("events") or {}).get("changes")
    grouped_bars(
        path,
        [f"batch {s}" for s in sizes],
        series,
        width=0.27,
        ylabel="events/s (higher is better)",
        title=f"CDC sink throughput, {events:,} events ({result.get('measured_at', '')})"
        if events
        else "CDC sink throughput",
    )


def print_table(result: dict[str, Any]) -> None:
    summary = result.get("summary") or {}
    head = (
        f"{'batch':>6} | {'ours ev/s':>10} {'±%':>5} | {'jdbc ev/s':>10} {'±%':>5} | {'ours/jdbc':>9} | "
        f"{'ours µs CPU/ev':>14} | {'jdbc µs CPU/ev':>14} | {'CPU ratio':>9} | {'ours/bare':>9}"
    )
    print(head)
    print("-" * len(head))

    def cell(s: dict[str, float] | None, scale: float = 1.0) -> tuple[str, str]:
        return ("-", "-") if not s else (f"{s['median'] * scale:.1f}", f"{s['spread_pct']:.0f}")

    for batch, row in summary.items():
        o, os_ = cell(row["ours"]["events_per_s"])
        j, js = cell(row["jdbc"]["events_per_s"])
        oc, _ = cell(row["ours"]["cpu_s_per_event"], 1e6)
        jc, _ = cell(row["jdbc"]["cpu_s_per_event"], 1e6)
        print(
            f"{batch:>6} | {o:>10} {os_:>5} | {j:>10} {js:>5} | "
            f"{row['ratio_events_per_s_ours_over_jdbc'] or '-':>9} | {oc:>14} | {jc:>14} | "
            f"{row['ratio_cpu_per_event_ours_over_jdbc'] or '-':>9} | {row['ratio_events_per_s_ours_over_bare'] or '-':>9}"
        )
    events = result.get("events", {})
    print(
        f"events: {events.get('changes')} changes ({events.get('by_op')}), {events.get('kafka_records')} Kafka records; "
        f"CPU/event = (sink process + its Postgres sessions) CPU; failures: {len(result['failures'])}"
    )


def main(argv: list[str] | None = None) -> bool:
    p = argparse.ArgumentParser(prog="python -m bench cdc_sink")
    p.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", "1000000")))
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch-sizes", default="500,2000,5000")
    args, _ = p.parse_known_args(argv)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    return Bench(LabConfig.load(), args.events, args.runs, sizes).main()


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
