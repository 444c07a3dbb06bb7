"""
# 71.8.3 CDC debugging — follow one row from the WAL to the warehouse, check positions, read, replay

A CDC pipeline (Debezium -> Kafka -> ``cdclab.cdc.pipeline.replicate`` -> warehouse) hides its state in
three places: the topic, the stored offsets and the target. Each run of this DAG first replicates
(the pipeline under investigation), then looks at all three and writes what it saw into a findings table.

**Event tracing.** ``trace`` reads the table's topic ``shop.public.<table>`` from the beginning without
moving any offset (``cdclab.cdc.inspect.read_topic``), picks the records of one key (``trace_key``) and
lists them in order (partition, offset, op, version, LSN, transaction), then compares the last event
with the target row: ``match`` / ``deleted`` (last event a delete and the row is gone) / ``mismatch``.

**Offset verification.** ``offsets_before`` and ``offsets_after`` compare the group's stored next offsets
(``state.kafka_offsets``, written in the same transaction as the rows) with the topic's end offsets
(``cdclab.cdc.offsets.report``): the lag before is the records written since the last run, the lag
after must be 0; an offset beyond the end or below retention is reported as such.

**Message inspection.** ``inspect`` decodes every record and counts creates, updates, deletes,
snapshot reads, tombstones and malformed records, and lists the group's dead letters
(``dlq.kafka_records``) with their reason and the first bytes of the value.

**Replay testing.** ``replay`` re-applies the offsets ``[replay_from_offset, stored next offset)`` into a
scratch target (``<target>__replay``, created fresh) with the same merge, and compares every key the
range touched with the real target: a replay must reproduce it (``ReplayMismatchError`` otherwise).

Observe: ``SELECT check_name, subject, verdict, detail FROM state.findings_71_08_03 ORDER BY id``;
``cdclab offsets show --group <group>``; ``SELECT * FROM dlq.kafka_records WHERE consumer_group = '<group>'``;
the topic in any Kafka client.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Param, dag, task
from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "71_08_03_cdc_debug"


def _names(params: dict[str, Any]) -> tuple[str, str, str]:
    table = params["source_table"].split(".")[-1]
    return (
        f"shop.{params['source_table']}",
        f"{params['target_schema']}.{params['target_prefix']}{table}",
        f"{params['target_schema']}.{params['target_prefix']}{table}__replay",
    )


def _finding(cur: Any, params: dict[str, Any], run_id: str, **kw: Any) -> None:
    from cdclab.diagnostics import record_finding

    record_finding(cur, params["findings_table"], dag_id=DAG_ID, run_id=run_id, **kw)


def _rows_by_key(cur: Any, table: str, key: str) -> dict[Any, dict[str, Any]]:
    from psycopg2 import sql

    from cdclab.cdc.merge import target_columns
    from cdclab.db import ident

    cols = target_columns(cur, table)
    cur.execute(
        sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, cols)), ident(table))
    )
    return {r[cols.index(key)]: dict(zip(cols, r, strict=True)) for r in cur.fetchall()}


def _offsets(check: str, params: dict[str, Any], run_id: str) -> int:
    from cdclab.cdc import offsets
    from cdclab.cdc.pipeline import kafka_bootstrap
    from cdclab.db import WAREHOUSE, transaction
    from cdclab.diagnostics import ensure_findings

    topic = _names(params)[0]
    bootstrap = kafka_bootstrap(params["kafka_conn_id"])
    total = 0
    with transaction(WAREHOUSE) as cur:
        ensure_findings(cur, params["findings_table"])
        ends = offsets.end_offsets(bootstrap, topic)
        rows = [r for r in offsets.report(cur, bootstrap, params["consumer_group"]) if r.topic == topic]
        if not rows:
            _finding(cur, params, run_id, check=check, subject=topic, verdict="no_offsets")
        for r in rows:
            low = ends.get(r.partition, (0, 0))[0]
            if r.end_offset is not None and r.next_offset > r.end_offset:
                verdict = "ahead_of_topic"
            elif r.next_offset < low:
                verdict = "below_retention"
            else:
                verdict = "caught_up" if r.lag == 0 else "lagging"
            total += r.lag or 0
            _finding(
                cur,
                params,
                run_id,
                check=check,
                subject=f"{topic}[{r.partition}]",
                verdict=verdict,
                detail={
                    "next_offset": r.next_offset,
                    "end_offset": r.end_offset,
                    "lag": r.lag,
                    "updated_by": r.updated_by,
                },
            )
    return total


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["71.8", "debugging", "reference", "advanced", "success"],
    doc_md=__doc__,
    params={
        "source_table": Param("public.customers", type="string"),
        "consumer_group": Param("cdclab-71_08_03", type="string"),
        "target_schema": Param("core", type="string"),
        "target_prefix": Param("dbg_", type="string"),
        "trace_key": Param(1, type="integer"),
        "replay_from_offset": Param(0, type="integer", minimum=0),
        "findings_table": Param("state.findings_71_08_03", type="string"),
        "kafka_conn_id": Param("kafka_default", type="string"),
    },
)
def cdc_debug() -> None:
    @task
    def offsets_before(params: dict[str, Any], dag_run: Any = None) -> int:
        return _offsets("offsets_before", params, dag_run.run_id)

    @task
    def replicate(lag: int, params: dict[str, Any], dag_run: Any = None) -> dict[str, Any]:
        from cdclab.cdc.pipeline import replicate as run

        return run(
            [params["source_table"]],
            group=params["consumer_group"],
            target_schema=params["target_schema"],
            target_prefix=params["target_prefix"],
            kafka_conn_id=params["kafka_conn_id"],
            who=f"{DAG_ID}/{dag_run.run_id}",
            max_seconds=60,
        )

    @task
    def trace(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> str:
        from cdclab import diagnostics as d
        from cdclab.cdc.inspect import read_topic
        from cdclab.cdc.merge import primary_key
        from cdclab.cdc.pipeline import kafka_bootstrap
        from cdclab.db import SHOP, WAREHOUSE, connect, transaction

        topic, target, _ = _names(params)
        records = read_topic(kafka_bootstrap(params["kafka_conn_id"]), topic)
        shop = connect(SHOP)
        try:
            with shop.cursor() as cur:
                (key,) = primary_key(cur, params["source_table"])
        finally:
            shop.close()
        last_kind, last_event = None, None
        with transaction(WAREHOUSE) as cur:
            for msg in records:
                k = d.record_key(msg)
                if k is None or k.get(key) != params["trace_key"]:
                    continue
                kind, event = d.classify_record(msg)
                detail: dict[str, Any] = {}
                if kind in ("c", "u", "r", "d"):
                    row = event.after or event.before or {}
                    detail = {"version": row.get("version"), "position": event.position, "tx_id": event.tx_id}
                    last_kind, last_event = kind, event
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="event_trace",
                    subject=f"{topic}[{msg.partition()}]@{msg.offset()}",
                    verdict=kind,
                    detail=detail,
                )
            row = _rows_by_key(cur, target, key).get(params["trace_key"])
            target_version = None if row is None else row.get("version")
            if last_kind is None:
                verdict = "no_events"
            elif last_kind == "d":
                verdict = "deleted" if row is None else "mismatch"
            else:
                event_version = (last_event.after or {}).get("version")
                verdict = "match" if row is not None and target_version == event_version else "mismatch"
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="trace_result",
                subject=str(params["trace_key"]),
                verdict=verdict,
                detail={"last_op": last_kind, "target_version": target_version},
            )
        return verdict

    @task
    def offsets_after(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> int:
        return _offsets("offsets_after", params, dag_run.run_id)

    @task
    def inspect(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> dict[str, int]:
        from collections import Counter

        from cdclab import diagnostics as d
        from cdclab.cdc.inspect import read_topic
        from cdclab.cdc.pipeline import kafka_bootstrap
        from cdclab.db import WAREHOUSE, transaction

        topic = _names(params)[0]
        counts = Counter(
            d.classify_record(m)[0] for m in read_topic(kafka_bootstrap(params["kafka_conn_id"]), topic)
        )
        with transaction(WAREHOUSE) as cur:
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="message_inspection",
                subject=topic,
                verdict="malformed_present" if counts["malformed"] else "ok",
                detail=dict(sorted(counts.items())),
            )
            cur.execute(
                "SELECT kafka_partition, kafka_offset, reason, left(record_value, 60) FROM dlq.kafka_records "
                "WHERE consumer_group = %s AND topic = %s ORDER BY kafka_partition, kafka_offset",
                (params["consumer_group"], topic),
            )
            dead = cur.fetchall()
            for partition, offset, reason, value in dead:
                _finding(
                    cur,
                    params,
                    dag_run.run_id,
                    check="dead_letter",
                    subject=f"{topic}[{partition}]@{offset}",
                    verdict="dead_letter",
                    detail={"reason": reason, "value_prefix": value},
                )
            if not dead:
                _finding(cur, params, dag_run.run_id, check="dead_letter", subject=topic, verdict="none")
        return dict(counts)

    @task
    def replay(done: dict[str, Any], params: dict[str, Any], dag_run: Any = None) -> None:
        from psycopg2 import sql

        from cdclab import diagnostics as d
        from cdclab.cdc.consumer import stored_offsets
        from cdclab.cdc.inspect import read_topic
        from cdclab.cdc.merge import apply_changes, ensure_target
        from cdclab.cdc.pipeline import kafka_bootstrap, routes_for
        from cdclab.db import WAREHOUSE, ident, transaction

        topic, target, scratch = _names(params)
        (route,) = routes_for(
            [params["source_table"]],
            topic_prefix="shop",
            target_schema=params["target_schema"],
            target_prefix=params["target_prefix"],
        )
        key = route.key[0]
        records = read_topic(kafka_bootstrap(params["kafka_conn_id"]), topic)
        with transaction(WAREHOUSE) as cur:
            upto = stored_offsets(cur, params["consumer_group"], topic)
            for t in (scratch, scratch + "__deleted"):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(t)))
            ensure_target(cur, scratch, list(route.types.items()), route.key)
            changes, touched, rejected = [], set(), 0
            for msg in records:
                if not params["replay_from_offset"] <= msg.offset() < upto.get(msg.partition(), 0):
                    continue
                kind, event = d.classify_record(msg)
                if kind == "malformed":
                    rejected += 1
                    continue
                k = d.record_key(msg)
                if k is not None and key in k:
                    touched.add(k[key])
                if kind in ("c", "u", "r", "d"):
                    changes.append(event)
            if changes:
                apply_changes(cur, scratch, route.key, changes, source_types=route.types)
            replayed, real = _rows_by_key(cur, scratch, key), _rows_by_key(cur, target, key)
            differ = sorted(k for k in touched if replayed.get(k) != real.get(k))
            _finding(
                cur,
                params,
                dag_run.run_id,
                check="replay_test",
                subject=f"{topic}[{params['replay_from_offset']}, {sorted(upto.values())})",
                verdict="mismatch" if differ else "identical",
                detail={
                    "changes": len(changes),
                    "keys": len(touched),
                    "malformed": rejected,
                    "differ": differ,
                },
            )
        if differ:
            raise d.ReplayMismatchError(
                f"replaying {topic} from offset {params['replay_from_offset']} into {scratch} differs from {target} "
                f"for keys {differ}; compare both tables and the events of those keys (event_trace)"
            )

    done = replicate(offsets_before())
    trace(done)
    offsets_after(done)
    inspect(done)
    replay(done)


cdc_debug()
