"""Feasibility probe of the CDC sink's fast path (:mod:`cdclab.cdc.rawmerge`), issue 14.

Drains an existing Debezium topic of the bench table (``bench/cdc_sink.py``'s ``bench_<run>``: id bigint
key, numeric, date, timestamptz, text columns) whose source table is gone, so the route is built by hand
from the bench's column list: (a) the bare consume + orjson loop (``bench.drain bare``), (b) today's
Python path (``CDCLAB_RAW_MERGE=0``), (c) the fast path, each as a fresh process into its own scratch
target (``core.probe_<kind>_<id>``, dropped after) under a new consumer group (its offsets rows deleted
after). Runs alternate (a, b, c, a, b, c, ...); prints each run and the medians: wall s, the process's
CPU s, and the CPU of its Postgres sessions (``bench.cdc_sink.Sessions``).

    CDCLAB_STATE=/work/main/.lab LAB_BACKEND=native .venv/bin/python -m bench.raw_probe \\
        --topic shop.public.bench_2727a7 --runs 3 --batch 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TYPES = {
    "id": "bigint",
    "customer_id": "bigint",
    "status": "text",
    "total": "numeric(12,2)",
    "currency": "character(3) DEFAULT 'EUR'::bpchar",
    "placed_on": "date",
    "note": "text",
    "updated_at": "timestamp with time zone DEFAULT clock_timestamp()",
    "version": "integer DEFAULT 1",
}
WRITTEN = ["_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"]
CODECS = {"total": "numeric", "placed_on": "date", "updated_at": "timestamptz"}


def drain(topic: str, target: str, group: str, batch: int, max_seconds: float, mode: str) -> dict[str, Any]:
    """One catch-up run of ``topic`` into ``target`` (the child process). ``python``: the library's
    replicate (:func:`cdclab.cdc.pipeline._run` with the bench route); ``sql`` / ``slim``: the same
    consumer (:func:`cdclab.cdc.pipeline.consume_routes`, offsets stored with the rows, the apply on a
    second thread) with :mod:`bench.rawmerge`'s batch statement as the handler. A batch the fast path
    refuses stops the probe (the bench topic has none)."""
    from bench import rawmerge
    from cdclab.cdc import merge, pipeline
    from cdclab.common.db import transaction

    source = topic.split(".", 1)[1]
    route = pipeline.TableRoute(
        source=source, topic=topic, target=target, key=("id",), types=TYPES, codecs=CODECS
    )
    if mode == "python":
        summary = pipeline._run(
            [route],
            pipeline.debezium_parser,
            group=group,
            delete_mode="hard",
            schema_policy="fail",
            target_conn_id="warehouse",
            batch_size=batch,
            max_seconds=max_seconds,
            who="probe",
        )
        return {k: summary[k] for k in ("records", "batches", "dead_letters", "skipped", "targets")}
    slim = mode == "slim"
    with transaction("warehouse") as cur:
        merge.ensure_target(cur, target, list(TYPES.items()), route.key)
    total = merge.MergeResult()
    tombstones = 0
    statements: dict[tuple[tuple[str, str], ...], tuple[str, Any, Any]] = {}

    def prepare(records: list[Any]) -> rawmerge.RawBatch:
        raw = rawmerge.raw_batch(records, {topic: True}, slim=slim)
        if raw is None:
            raise RuntimeError("probe: a batch the fast path does not take")
        return raw

    def handle(cur: Any, records: list[Any]) -> list[tuple[Any, str]]:
        nonlocal total, tombstones
        raw = getattr(records, "prepared", None) or prepare(records)

        def statement(t: str) -> tuple[str, Any, Any]:
            types, _ = merge._target_facts(cur, target)  # per batch, as the Python path
            facts = tuple(types.items())
            if facts not in statements:
                columns = [n for n in types if n not in merge.BOOKKEEPING]
                statements[facts] = (
                    target,
                    *rawmerge.merge_statement(target, route.key, columns, types, CODECS, slim=slim),
                )
            return statements[facts]

        done = rawmerge.apply_batch(cur, raw, statement)
        if done is None:
            raise RuntimeError("probe: the fast path's checks refused a batch")
        for result in done.values():
            total += result
        tombstones += raw.tombstones
        return []

    result = pipeline.consume_routes(
        [route],
        handle,
        group=group,
        target_conn_id="warehouse",
        prepare=prepare,
        batch_size=batch,
        max_seconds=max_seconds,
        who="probe",
    )
    summary = result.summary({"tombstone": tombstones}, targets={target: vars(total)})
    return {k: summary[k] for k in ("records", "batches", "dead_letters", "skipped", "targets")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raw_probe")
    p.add_argument("--topic", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--kinds", default="bare,python,sql")
    p.add_argument("--max-seconds", type=float, default=3600)
    p.add_argument("--child", nargs=3, metavar=("TARGET", "GROUP", "MODE"))
    args = p.parse_args(argv)
    if args.child:
        target, group, mode = args.child
        print(
            json.dumps(drain(args.topic, target, group, args.batch, args.max_seconds, mode), default=str),
            flush=True,
        )
        return 0

    import psycopg2
    from psycopg2 import sql

    from bench.cdc_sink import Sessions
    from cdclab.lab.config import LabConfig

    cfg = LabConfig.load()
    env = {**os.environ, **cfg.airflow_env(), "PYTHONPATH": str(ROOT)}
    run_id = uuid.uuid4().hex[:6]
    results: dict[str, list[dict[str, Any]]] = {}
    made: list[str] = []
    groups: list[str] = []
    try:
        for n in range(args.runs):
            for kind in args.kinds.split(","):
                if kind == "bare":
                    argv_ = [sys.executable, "-m", "bench.drain", "bare", "--topic", args.topic]
                    argv_ += ["--bootstrap", cfg.kafka_bootstrap, "--batch", str(args.batch)]
                    name = None
                else:
                    target = f"core.probe_{kind}_{run_id}"
                    group = f"probe-{run_id}-{kind}-r{n}"
                    made.append(target)
                    groups.append(group)
                    name = group[:63]
                    argv_ = [sys.executable, "-m", "bench.raw_probe", "--topic", args.topic]
                    argv_ += ["--batch", str(args.batch), "--child", target, group]
                    argv_ += [kind]
                    with psycopg2.connect(cfg.pg_dsn("warehouse")) as wh, wh.cursor() as cur:
                        for t in (target, target + "__deleted"):
                            cur.execute(
                                sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*t.split(".")))
                            )
                sessions = Sessions(cfg, name).start() if name else None
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.monotonic()
                proc = subprocess.run(
                    argv_,
                    env={**env, "CDCLAB_APPLICATION_NAME": name or "probe-bare"},
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                )
                wall = time.monotonic() - t0
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                pg = sessions.finish() if sessions else 0.0
                if proc.returncode != 0:
                    raise RuntimeError(f"{kind} failed: {proc.stderr[-3000:]}")
                cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                row = {"kind": kind, "run": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
                row |= {"pg_cpu_s": pg, **out}
                print(json.dumps(row, default=str), flush=True)
                results.setdefault(kind, []).append(row)
        with psycopg2.connect(cfg.pg_dsn("warehouse")) as wh, wh.cursor() as cur:
            for kind in results:
                if kind in ("bare", "python") or "python" not in results:
                    continue
                a, b = f"core.probe_python_{run_id}", f"core.probe_{kind}_{run_id}"
                diff = {}
                for suffix, cols in (("", [*TYPES, *WRITTEN]), ("__deleted", ["id", "_source_position"])):
                    c = sql.SQL(", ").join(map(sql.Identifier, cols))
                    ta = sql.Identifier(*(a + suffix).split("."))
                    tb = sql.Identifier(*(b + suffix).split("."))
                    cur.execute(
                        sql.SQL(
                            "SELECT (SELECT count(*) FROM {ta}), (SELECT count(*) FROM ((SELECT {c} FROM {ta} "
                            "EXCEPT ALL SELECT {c} FROM {tb}) UNION ALL (SELECT {c} FROM {tb} EXCEPT ALL "
                            "SELECT {c} FROM {ta})) x)"
                        ).format(c=c, ta=ta, tb=tb)
                    )
                    rows, differing = cur.fetchone()
                    diff[f"rows{suffix or '_target'}"] = rows
                    diff[f"differing{suffix or '_target'}"] = differing
                print(json.dumps({"compare": f"python vs {kind}", **diff}), flush=True)
        print("medians:")
        for kind, rows in results.items():
            med = {f: statistics.median(r[f] for r in rows) for f in ("wall_s", "cpu_s", "pg_cpu_s")}
            print(json.dumps({"kind": kind, "runs": len(rows), **med}), flush=True)
    finally:
        with psycopg2.connect(cfg.pg_dsn("warehouse")) as wh, wh.cursor() as cur:
            for t in dict.fromkeys(made):
                for s in ("", "__deleted"):
                    cur.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*(t + s).split(".")))
                    )
            cur.execute(
                "DELETE FROM state.kafka_offsets WHERE consumer_group LIKE %s", (f"probe-{run_id}-%",)
            )
            cur.execute(
                "DELETE FROM state.kafka_group_targets WHERE consumer_group LIKE %s", (f"probe-{run_id}-%",)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
