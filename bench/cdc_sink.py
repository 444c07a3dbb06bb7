"""CDC sink benchmark: our exactly-once consumer vs Debezium's JDBC sink connector, same topic, same run.

One source table in ``shop`` gets N inserts (multi-row transactions) while both sinks drain the same
Debezium topic (JSON with schemas, which the JDBC sink needs and our parser unwraps) into two tables of
the same shape in ``warehouse``:
- *ours*: ``cdclab.cdc.pipeline.replicate`` in catch-up runs (offsets stored with the rows);
- *jdbc*: ``io.debezium.connector.jdbc.JdbcSinkConnector`` (upsert by primary key).
Reported per sink: end-to-end events/s (N / time from the first write to the last row visible) and the
commit-to-warehouse latency p50/p99 (target row's load time - source row's commit time). The headline
figures are ratios ours ÷ jdbc, measured side by side on the same machine at the same time.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql

from cdclab.lab.config import LabConfig
from cdclab.lab.native import http_json, wait_connector_running

N = int(os.environ.get("BENCH_ROWS", "20000"))
BATCH = int(os.environ.get("BENCH_TX_ROWS", "100"))
RESULTS = Path(__file__).parent / "results"


def say(msg: str) -> None:
    print(f"[bench cdc] {msg}", flush=True)


def source_config(base: dict[str, Any], *, prefix: str, slot: str, table: str) -> dict[str, Any]:
    """The bench's Debezium source: the lab connector's config (``base``) on its own slot, publication and
    topic prefix, with schemas in the JSON (the JDBC sink needs them). The type settings (time precision,
    decimal, interval, binary, hstore handling) stay the lab connector's, so both sinks decode what the
    lab's DAGs decode (tests/unit/test_cdc_type_settings.py)."""
    source = {
        **base,
        "topic.prefix": prefix,
        "slot.name": slot,
        "publication.name": slot,
        "table.include.list": f"public.{table}",
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


def main() -> bool:
    os.environ.update(LabConfig.load().airflow_env())
    cfg = LabConfig.load()
    run = uuid.uuid4().hex[:6]
    table, slot, prefix = f"bench_{run}", f"bench_{run}", f"bench{run}"
    topic = f"{prefix}.public.{table}"
    jdbc = f"bench_jdbc_{run}"
    su = psycopg2.connect(cfg.pg_dsn("shop", "postgres"))
    su.autocommit = True
    wh = psycopg2.connect(cfg.pg_dsn("warehouse"))
    wh.autocommit = True
    source_name, sink_name = f"bench-source-{run}", f"bench-jdbc-{run}"
    try:
        with su.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE public.{t} (id bigint PRIMARY KEY, payload text NOT NULL, "
                    "amount numeric(12,2) NOT NULL, committed_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ).format(t=sql.Identifier(table))
            )
            cur.execute(sql.SQL("ALTER TABLE public.{t} OWNER TO shop").format(t=sql.Identifier(table)))
            cur.execute(
                sql.SQL("GRANT SELECT ON public.{t} TO cdc_replicator").format(t=sql.Identifier(table))
            )
            cur.execute(
                sql.SQL("CREATE PUBLICATION {p} FOR TABLE public.{t}").format(
                    p=sql.Identifier(slot), t=sql.Identifier(table)
                )
            )
        with wh.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE core.{t} (id bigint PRIMARY KEY, payload text NOT NULL, "
                    "amount numeric(12,2) NOT NULL, committed_at timestamptz NOT NULL, "
                    "_loaded_at timestamptz NOT NULL DEFAULT clock_timestamp())"
                ).format(t=sql.Identifier(jdbc))
            )
        base = json.loads((cfg.root / "connectors" / "shop-postgres-source.json").read_text())["config"]
        source = source_config(base, prefix=prefix, slot=slot, table=table)
        sink = {
            "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
            "tasks.max": "1",
            # resolved by the Connect worker: postgres:5432 inside compose, 127.0.0.1:15432 natively
            # stringtype=unspecified: decimals arrive as strings (the lab's decimal.handling.mode=string) and
            # the server, not the driver, types them for the numeric column
            "connection.url": "jdbc:postgresql://${env:POSTGRES_HOST}:${env:POSTGRES_PORT}/warehouse"
            "?stringtype=unspecified",
            "connection.username": "${env:WAREHOUSE_USER}",
            "connection.password": "${env:WAREHOUSE_PASSWORD}",
            "topics": topic,
            "insert.mode": "upsert",
            "delete.enabled": "true",
            "primary.key.mode": "record_key",
            "schema.evolution": "none",
            "collection.name.format": f"core.{jdbc}",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "true",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter.schemas.enable": "true",
            "batch.size": "500",
            "consumer.override.max.poll.records": "500",
        }
        for name, config in ((source_name, source), (sink_name, sink)):
            status, body = http_json("PUT", f"{cfg.connect_url}/connectors/{name}/config", config)
            if status not in (200, 201):
                raise RuntimeError(f"{name} refused: {status} {body}")
            time.sleep(2)
            wait_connector_running(cfg, name, 120)
        say(f"connectors running; writing {N} rows in transactions of {BATCH}")

        shop = psycopg2.connect(cfg.pg_dsn("shop"))
        shop.autocommit = False
        done: dict[str, float] = {}
        stop = threading.Event()

        def our_sink() -> None:
            from cdclab.cdc.pipeline import replicate

            while not stop.is_set():
                replicate(
                    [f"public.{table}"],
                    group=f"bench-{run}",
                    topic_prefix=prefix,
                    target_schema="core",
                    target_prefix="bench_ours_",
                    batch_size=2000,
                    max_seconds=600,
                )
                with psycopg2.connect(cfg.pg_dsn("warehouse")) as c, c.cursor() as cur:
                    cur.execute(
                        sql.SQL("SELECT count(*) FROM core.{t}").format(
                            t=sql.Identifier(f"bench_ours_{table}")
                        )
                    )
                    if cur.fetchone()[0] >= N:
                        done["ours"] = time.monotonic()
                        return
                time.sleep(0.2)

        t0 = time.monotonic()
        consumer = threading.Thread(target=our_sink)
        consumer.start()
        with shop.cursor() as cur:
            for start in range(1, N + 1, BATCH):
                rows = [
                    (i, f"payload-{i}-" + "x" * 64, i % 1000 + 0.99)
                    for i in range(start, min(start + BATCH, N + 1))
                ]
                args = ",".join(cur.mogrify("(%s,%s,%s)", r).decode() for r in rows)
                cur.execute(
                    sql.SQL("INSERT INTO public.{t} (id, payload, amount) VALUES ")
                    .format(t=sql.Identifier(table))
                    .as_string(cur)
                    + args
                )
                shop.commit()
                if start % 5000 == 1:
                    say(f"  written {start + BATCH - 1}/{N}")
        t_written = time.monotonic()
        say(f"source writes done in {t_written - t0:.1f}s")
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and ("jdbc" not in done or consumer.is_alive()):
            if "jdbc" not in done:
                with wh.cursor() as cur:
                    cur.execute(sql.SQL("SELECT count(*) FROM core.{t}").format(t=sql.Identifier(jdbc)))
                    if cur.fetchone()[0] >= N:
                        done["jdbc"] = time.monotonic()
            time.sleep(0.2)
        stop.set()
        consumer.join(60)
        if set(done) != {"ours", "jdbc"}:
            raise RuntimeError(f"a sink did not finish within 15 minutes: {sorted(done)}")

        def latency(target: str) -> dict[str, float]:
            with wh.cursor() as cur:
                cur.execute(
                    sql.SQL(
                        "SELECT extract(epoch FROM _loaded_at - committed_at) * 1000 FROM core.{t}"
                    ).format(t=sql.Identifier(target))
                )
                ms = sorted(float(r[0]) for r in cur.fetchall())
            return {
                "p50_ms": round(statistics.median(ms), 1),
                "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 1),
            }

        result: dict[str, Any] = {
            "benchmark": "cdc_sink",
            "rows": N,
            "rows_per_source_tx": BATCH,
            "run": run,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "cores": os.cpu_count(),
            "source_write_seconds": round(t_written - t0, 2),
            "ours": {
                "seconds": round(done["ours"] - t0, 2),
                "events_per_s": round(N / (done["ours"] - t0), 1),
                **latency(f"bench_ours_{table}"),
            },
            "jdbc_sink": {
                "seconds": round(done["jdbc"] - t0, 2),
                "events_per_s": round(N / (done["jdbc"] - t0), 1),
                **latency(jdbc),
            },
        }
        result["ratio_events_per_s_ours_over_jdbc"] = round(
            result["ours"]["events_per_s"] / result["jdbc_sink"]["events_per_s"], 3
        )
        result["ratio_p50_latency_ours_over_jdbc"] = round(
            result["ours"]["p50_ms"] / max(result["jdbc_sink"]["p50_ms"], 0.1), 3
        )
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"cdc_sink-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / "cdc_sink-latest.json").write_text(json.dumps(result, indent=2) + "\n")
        say(json.dumps(result, indent=2))
        say(f"results: {out}")
        return True
    finally:
        for name in (sink_name, source_name):
            http_json("DELETE", f"{cfg.connect_url}/connectors/{name}")
        time.sleep(3)
        with su.cursor() as cur:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (slot,),
            )
            cur.execute(sql.SQL("DROP PUBLICATION IF EXISTS {p}").format(p=sql.Identifier(slot)))
            cur.execute(sql.SQL("DROP TABLE IF EXISTS public.{t}").format(t=sql.Identifier(table)))
        with wh.cursor() as cur:
            for t in (jdbc, f"bench_ours_{table}", f"bench_ours_{table}__deleted"):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS core.{t}").format(t=sql.Identifier(t)))
        su.close()
        wh.close()


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
