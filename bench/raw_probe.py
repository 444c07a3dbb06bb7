"""Feasibility probe of issue 14's SQL-unpack idea for the CDC sink (:mod:`bench.rawmerge`).

Drains an existing Debezium topic of the bench table (``bench/cdc_sink.py``'s ``bench_<run>``: id bigint
key, numeric, date, timestamptz, text columns) whose source table is gone, so the route is built by hand
from the bench's column list. Kinds, each a fresh process into its own scratch target
(``core.probe_<kind>_<id>``, dropped after) under a new consumer group (its offsets rows deleted after):

- ``bare``: the bare consume + orjson loop (``bench.drain bare``);
- ``python``: replicate's Python path (:func:`cdclab.cdc.pipeline._run` with the route, ``lean_path=False``);
- ``lean``: replicate as it runs by default, plain batches by :mod:`cdclab.cdc.lean`;
- ``sql``: the same consumer (offsets stored with the rows, the apply on a second thread) with
  :mod:`bench.rawmerge`'s one statement per batch: the raw key/value bytes as one jsonb array;
- ``slim``: as ``sql``, each value cut to its images plus lsn/op/ts_ms by byte search (the idea's
  ceiling: Postgres parses a third of the bytes; not exact, see :func:`bench.rawmerge.slim_element`).

Runs alternate (kinds in order, then again); prints each run (wall s, the process's CPU s, the CPU of
its Postgres sessions by ``application_name``, :class:`bench.cdc_sink.Sessions`), then compares every
fast kind's end state (target and delete ledger, every column) with ``python``'s, then the medians.
``--breakdown`` instead times the statements of one 2,000-record batch (offset 500,000) inside a
rolled-back transaction: where Postgres's time goes.

    CDCLAB_STATE=/work/main/.lab LAB_BACKEND=native .venv/bin/python -m bench.raw_probe \\
        --topic shop.public.bench_2727a7 --runs 2 --kinds bare,python,sql,slim

Measured 2026-12-02 04:19-04:41 UTC (session 11), topic ``shop.public.bench_2727a7`` (1,055,601 records:
886,301 upserts, 55,500 deletes, 55,500 tombstones; end state 500,601 rows, 55,500 ledger rows), batch
2,000, workload paused, the 2-core machine shared with other helpers' integration tests (load 2-5, so
wall times swing by 1.5x from run to run). 7 runs of python and sql, 5 of bare, 3 of slim, medians:

    kind     wall s   process CPU s   Postgres sessions CPU s   python wall / kind wall (paired runs)
    bare       9.05        5.68              -
    python    63.84       36.14            12.74
    sql       61.65        6.84            46.15                 0.85 (0.84, 0.84, 0.84, 0.85, 0.94, 0.97, 1.35)
    slim      53.90        8.24            36.70                 1.06 (0.85, 1.06, 1.60)

Every sql and slim end state equalled python's (0 differing rows in target and ledger). The Python work
is gone (36 -> 7 s) but the same CPU reappears in Postgres (13 -> 46 s): total 49 s vs 53 s. Breakdown
of one batch (2,000 records, 1,900 values, 1.43 MB; per record, medians of 5, paused workload):
parsing the jsonb array alone 19.5 us (the slim payload, 0.51 MB: 6.8 us); the whole statement 32.4 us,
26.5 without the checks, slim without checks 17.3; building the payload in Python 1.8 us (``python``'s
process CPU is ~34 us a record, its Postgres sessions ~12). Debezium's envelope is ~750 bytes a record,
two thirds of it the source/transaction blocks, and Postgres's jsonb input is slower per byte than
orjson: Postgres becomes the bottleneck, so the idea is not clearly faster (goal: >= 1.3x) and the
library does not use it. (The lab connector writes JSON without schemas: there are no schema bytes to
compare; the columns are checked in SQL.)

The lean path (:mod:`cdclab.cdc.lean`, kind ``lean``; ``python`` is the same run with it off), measured
2026-12-02 04:48-05:06 UTC on the same topic, batch 2,000, workload paused, other helpers' tests running
(load 2-5), 4 paired runs (``--kinds bare,python,lean --runs 2``, then ``--kinds python,lean --runs 2``):

    run   python wall s / CPU s / Postgres CPU s    lean wall s / CPU s / Postgres CPU s   lean/python CPU
    1         61.21 / 40.13 / 13.28                     56.59 / 26.56 / 13.71                  0.66
    2         71.50 / 43.46 / 14.43                     43.31 / 26.31 / 13.81                  0.61
    3         43.16 / 32.61 / 11.28                     35.80 / 23.89 / 12.67                  0.73
    4         58.71 / 43.05 / 13.81                     46.53 / 27.02 / 14.15                  0.63
    median    59.96 / 41.59 / 13.55                     44.92 / 26.44 / 13.76                  0.64

(bare: 8.0 / 7.17 and 13.21 / 6.72.) Every run's end state equalled python's (500,601 target rows,
55,500 ledger rows, 0 differing); every lean batch took the lean path (``paths``: lean 528). Process CPU
per record: ~39 -> ~25 us; Postgres's CPU is unchanged (the same statements and JSON).
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
    """One catch-up run of ``topic`` into ``target`` (the child process). ``python`` / ``lean``: the
    library's replicate (:func:`cdclab.cdc.pipeline._run` with the bench route) without / with the lean path; ``sql`` / ``slim``: the same
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
    if mode in ("python", "lean"):
        summary = pipeline._run(
            [route],
            pipeline.debezium_parser,
            group=group,
            delete_mode="hard",
            schema_policy="fail",
            target_conn_id="warehouse",
            lean_path=mode == "lean",
            batch_size=batch,
            max_seconds=max_seconds,
            who="probe",
        )
        return {k: summary[k] for k in ("records", "batches", "dead_letters", "skipped", "targets", "paths")}
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


def breakdown(topic: str, batch: int) -> None:
    """Time the fast path's statement and its parts on one batch, in a transaction rolled back."""
    import re
    import timeit

    import psycopg2
    from confluent_kafka import Consumer, TopicPartition

    from bench import rawmerge
    from cdclab.cdc import merge
    from cdclab.lab.config import LabConfig

    cfg = LabConfig.load()
    consumer = Consumer(
        {"bootstrap.servers": cfg.kafka_bootstrap, "group.id": "probe-breakdown", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, 500_000)])
    msgs: list[Any] = []
    while len(msgs) < batch:
        msgs += [m for m in consumer.consume(batch - len(msgs), 5) if m.error() is None]
    consumer.close()
    values = sum(1 for m in msgs if m.value())
    full = rawmerge.raw_batch(msgs, {topic: True})
    slim = rawmerge.raw_batch(msgs, {topic: True}, slim=True)
    assert full is not None and slim is not None
    build = min(timeit.repeat(lambda: rawmerge.raw_batch(msgs, {topic: True}), number=5, repeat=3)) / 5
    print(
        f"{len(msgs)} records, {values} values; Python builds the payload in {build / len(msgs) * 1e6:.1f} us/record"
    )
    print(f"payload bytes: full {len(full.payloads[topic]):,}, slim {len(slim.payloads[topic]):,}")
    conn = psycopg2.connect(cfg.pg_dsn("warehouse"))
    try:
        cur = conn.cursor()
        target = f"core.probe_breakdown_{uuid.uuid4().hex[:6]}"
        merge.ensure_target(cur, target, list(TYPES.items()), ["id"])  # rolled back at the end
        types, _ = merge._target_facts(cur, target)
        columns = [n for n in types if n not in merge.BOOKKEEPING]
        variants = {}
        for slim_ in (False, True):
            stmt, payload = rawmerge.merge_statement(target, ["id"], columns, types, CODECS, slim=slim_)
            text = stmt.as_string(cur)
            unchecked = re.sub(
                r"chk AS \(\n.*?\n\), w AS", "chk AS (SELECT 0::bigint AS bad), w AS", text, flags=re.S
            )
            variants[slim_] = (text, unchecked, payload)
        parse = "SELECT count(*) FROM jsonb_array_elements({}::jsonb)"

        def run(name: str, text: str, payload: Any, data: bytes) -> None:
            payload.data = data
            query = text.encode().replace(payload.token.encode(), payload.literal())
            times = []
            for _ in range(5):
                cur.execute("SAVEPOINT probe")
                t0 = time.perf_counter()
                cur.execute(query)
                cur.fetchall()
                times.append(time.perf_counter() - t0)
                cur.execute("ROLLBACK TO SAVEPOINT probe")
            median = statistics.median(times)
            print(f"{name}: {median * 1e3:.1f} ms = {median / len(msgs) * 1e6:.1f} us/record")

        for slim_, raw in ((False, full), (True, slim)):
            text, unchecked, payload = variants[slim_]
            label = "slim" if slim_ else "full"
            run(f"{label}: parse the jsonb array", parse.format(payload.token), payload, raw.payloads[topic])
            run(f"{label}: the statement", text, payload, raw.payloads[topic])
            run(f"{label}: the statement without checks", unchecked, payload, raw.payloads[topic])
    finally:
        conn.rollback()
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.raw_probe")
    p.add_argument("--topic", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--kinds", default="bare,python,sql")
    p.add_argument("--max-seconds", type=float, default=3600)
    p.add_argument("--breakdown", action="store_true")
    p.add_argument("--child", nargs=3, metavar=("TARGET", "GROUP", "MODE"))
    args = p.parse_args(argv)
    if args.breakdown:
        breakdown(args.topic, args.batch)
        return 0
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
