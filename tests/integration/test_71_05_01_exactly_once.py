"""71_05_01_exactly_once: a consumer killed mid-stream in each mode. At-least-once redelivers the crashed
batch (counted in the delivery log), transactional redelivers nothing, and idempotent writes keep the
events table equal to the distinct events in both; a replay from the start changes no event row."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pendulum
import pytest
from psycopg2 import sql

from cdclab.streams.windows import produce_events
from cdclab.workload import clickstream_events
from tests.dagrun import run_dag

LOG_SERVICES = ["kafka", "postgres"]
DAG_ID = "71_05_01_exactly_once"
PART, DUPLICATES, BATCH = 80, 0.1, 10
DATES = [pendulum.datetime(2026, 3, 3, 8, 5 * k, tz="UTC") for k in range(4)]


def part(k: int) -> list[dict]:
    """What the DAG's producer writes for ``produce_seed=500+k`` in a run at ``DATES[k]``."""
    return clickstream_events(
        500 + k, PART, duplicate_fraction=DUPLICATES, start=DATES[k], step=dt.timedelta(seconds=1)
    )


def distinct_rows(events: list[dict]) -> list[tuple]:
    """The expected events table: the first delivery of every event id, in id order."""
    first: dict[str, dict] = {}
    for e in events:
        first.setdefault(e["event_id"], e)
    return [
        (i, e["user_id"], e["event_type"], dt.datetime.fromisoformat(e["event_time"]))
        for i, e in sorted(first.items())
    ]


def table(prefix: str, mode: str, what: str) -> sql.Identifier:
    return sql.Identifier("marts", f"{prefix}{mode}_{what}")


def event_rows(db, prefix: str, mode: str) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            sql.SQL(
                "SELECT event_id, user_id, event_type, event_time, xmin::text FROM {} ORDER BY event_id"
            ).format(table(prefix, mode, "events"))
        )
        return [tuple(r) for r in cur.fetchall()]


def offsets_delivered_twice(db, prefix: str, mode: str) -> set[int]:
    with db.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT kafka_offset FROM {} GROUP BY kafka_offset HAVING count(*) > 1").format(
                table(prefix, mode, "deliveries")
            )
        )
        return {r[0] for r in cur.fetchall()}


KILL_SCRIPT = """
import sys
from cdclab.streams.exactly_once import SinkTables, run
bootstrap, mode, topic, group, prefix, batch = sys.argv[1:7]
run(mode, bootstrap=bootstrap, topic=topic, group=group, conn_id="warehouse",
    tables=SinkTables("marts", prefix, mode), batch_size=int(batch), who="killed")
"""


def crash_and_recover(lab, names, warehouse_db, mode: str) -> dict:
    """Run 1 (DAG, produces part 0) -> part 1 produced -> a consumer killed in batch 3 -> run 2 (DAG,
    produces part 2) -> run 3 (DAG, replay from the start). Returns what the test asserts on."""
    topic, group, prefix = names("eo"), names("grp"), names("eo") + "_"
    # every param, every run: dag.test() in one process keeps the previous run's conf in the DAG's Params
    conf = {
        "mode": mode,
        "topic": topic,
        "consumer_group": group,
        "schema": "marts",
        "table_prefix": prefix,
        "batch_size": BATCH,
        "replay_from_start": False,
        "produce_events": 0,
        "produce_seed": None,
        "produce_duplicate_fraction": DUPLICATES,
    }
    produced = lambda k: {"produce_events": PART, "produce_seed": 500 + k}  # noqa: E731
    try:
        run_dag(DAG_ID, DATES[0], {**conf, **produced(0)})
        assert event_rows(warehouse_db, prefix, mode)[0][:4] == distinct_rows(part(0))[0]

        produce_events(topic, part(1), bootstrap=lab.kafka_bootstrap)
        env = {**os.environ, "CDCLAB_FAIL_AFTER_BATCHES": "2"}
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                KILL_SCRIPT,
                lab.kafka_bootstrap,
                mode,
                topic,
                f"{group}.{mode}",
                prefix,
                str(BATCH),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert killed.returncode == -9, killed.stderr[-2000:]

        run_dag(DAG_ID, DATES[2], {**conf, **produced(2)})
        everything = part(0) + part(1) + part(2)
        rows = event_rows(warehouse_db, prefix, mode)
        with warehouse_db.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT kafka_offset FROM {} WHERE run = 'killed' AND batch_no = "
                    "(SELECT max(batch_no) FROM {} WHERE run = 'killed')"
                ).format(table(prefix, mode, "deliveries"), table(prefix, mode, "deliveries"))
            )
            killed_batch = {r[0] for r in cur.fetchall()}
            cur.execute(
                sql.SQL(
                    "SELECT count(*), count(DISTINCT kafka_offset), count(*) FILTER (WHERE new_event) FROM {}"
                ).format(table(prefix, mode, "deliveries"))
            )
            deliveries, offsets, new_events = cur.fetchone()
        state = {
            "everything": everything,
            "rows": rows,
            "twice": offsets_delivered_twice(warehouse_db, prefix, mode),
            "killed_batch": killed_batch,
            "deliveries": deliveries,
            "offsets": offsets,
            "new": new_events,
        }

        # replay from the start: every record delivered once more, no event row touched (same xmin)
        run_dag(DAG_ID, DATES[3], {**conf, "replay_from_start": True})
        state["after_replay"] = event_rows(warehouse_db, prefix, mode)
        with warehouse_db.cursor() as cur:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table(prefix, mode, "deliveries")))
            state["deliveries_after_replay"] = cur.fetchone()[0]
        return state
    finally:
        with warehouse_db.cursor() as cur:
            for what in ("events", "deliveries"):
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table(prefix, mode, what)))


def assert_events_are_exact(state: dict) -> None:
    everything = state["everything"]
    assert [r[:4] for r in state["rows"]] == distinct_rows(everything)
    assert state["offsets"] == len(everything), "every record on the topic was delivered"
    assert state["new"] == len(distinct_rows(everything)), "each event id counted new exactly once"
    assert len(everything) - len(distinct_rows(everything)) == 3 * round(PART * DUPLICATES)
    assert state["after_replay"] == state["rows"], "a replay with idempotent writes changes no row"
    assert state["deliveries_after_replay"] == state["deliveries"] + len(everything)


def test_at_least_once_redelivers_the_crashed_batch_and_idempotent_writes_absorb_it(lab, names, warehouse_db):
    state = crash_and_recover(lab, names, warehouse_db, "at_least_once")
    assert state["killed_batch"], "the killed consumer committed its last batch's rows"
    assert state["twice"] == state["killed_batch"], (
        "exactly the batch written but not checkpointed came again"
    )
    assert state["deliveries"] == len(state["everything"]) + len(state["killed_batch"])
    assert_events_are_exact(state)


def test_transactional_mode_never_redelivers_a_record_after_a_crash(lab, names, warehouse_db):
    state = crash_and_recover(lab, names, warehouse_db, "transactional")
    assert state["killed_batch"], "the killed consumer committed two batches before it died"
    assert state["twice"] == set()
    assert state["deliveries"] == len(state["everything"])
    assert_events_are_exact(state)


@pytest.mark.parametrize("mode", ["exactly_twice", ""])
def test_an_unknown_mode_is_refused_with_the_choices(mode: str) -> None:
    from cdclab.streams.exactly_once import UnknownModeError, check_mode

    with pytest.raises(UnknownModeError, match="transactional"):
        check_mode(mode)
