"""71.8.3: over three rounds of changes (and one malformed record) the DAG traces one key from the topic
to the target row, reports the lag before and after catching up, counts and decodes the messages with the
dead letter and its reason, and proves a replay of an offset range reproduces the target."""

from __future__ import annotations

import pendulum

from tests.dagrun import run_dag
from tests.integration._cdc_helpers import COLUMNS, make_source_table, published, write_changes

LOG_SERVICES = ["connect", "kafka", "postgres"]
DAG_ID = "71_08_03_cdc_debug"


def test_a_key_is_traced_offsets_verified_messages_inspected_and_a_replay_matches(
    lab, names, shop_db, warehouse_db, assert_tables_equal
):
    from confluent_kafka import Producer

    table, group, findings = names("dbg"), names("dbggrp"), f"state.{names('dbgfind')}"
    topic = f"shop.public.{table}"
    make_source_table(shop_db, table)
    conf = {
        "source_table": f"public.{table}",
        "consumer_group": group,
        "target_schema": "core",
        "target_prefix": "dbg_",
        "trace_key": 1,
        "replay_from_offset": 0,
        "findings_table": findings,
        "kafka_conn_id": "kafka_default",
    }

    def of(dr, check):
        with warehouse_db.cursor() as cur:
            cur.execute(
                f"SELECT subject, verdict, detail FROM {findings} WHERE run_id = %s AND check_name = %s "
                "ORDER BY id",
                (dr.run_id, check),
            )
            return cur.fetchall()

    # round 1: five inserts, one update of key 1
    n = write_changes(shop_db, table, 1, 5, [1], [])
    published(lab, topic, n)
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 5, 1, tz="UTC"), conf)
    assert [(s, v) for s, v, _ in of(dr, "offsets_before")] == [(topic, "no_offsets")]
    trace = of(dr, "event_trace")
    assert [(v, det["version"]) for _, v, det in trace] == [("c", 1), ("u", 2)]
    seen = [int(s.rsplit("@", 1)[1]) for s, _, _ in trace]
    assert all(s.startswith(f"{topic}[0]@") for s, _, _ in trace) and seen == sorted(set(seen))
    assert [(v, det["target_version"]) for _, v, det in of(dr, "trace_result")] == [("match", 2)]
    # Connect writes transactionally: commit markers take offsets too, so positions are not record counts
    after = of(dr, "offsets_after")
    assert [(s, v, det["lag"]) for s, v, det in after] == [(f"{topic}[0]", "caught_up", 0)]
    position_1 = after[0][2]["next_offset"]
    assert position_1 == after[0][2]["end_offset"] >= n
    assert [(v, det) for _, v, det in of(dr, "message_inspection")] == [("ok", {"c": 5, "u": 1})]
    assert [v for _, v, _ in of(dr, "dead_letter")] == ["none"]
    assert [(v, det["changes"], det["keys"]) for _, v, det in of(dr, "replay_test")] == [("identical", 6, 5)]
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.dbg_{table}", key="id", columns=COLUMNS)

    # round 2: inserts, updates (key 1 again), a delete, and a record nobody can parse
    n2 = write_changes(shop_db, table, 6, 2, [1, 6], [2])
    producer = Producer({"bootstrap.servers": lab.kafka_bootstrap})
    delivered: list[int] = []
    producer.produce(
        topic,
        key=b'{"id": 999}',
        value=b"{not json",
        on_delivery=lambda err, msg: delivered.append(msg.offset()),
    )
    producer.flush(30)
    n += n2 + 1
    published(lab, topic, n)
    dr = run_dag(DAG_ID, pendulum.datetime(2026, 4, 5, 2, tz="UTC"), conf)
    before = of(dr, "offsets_before")
    assert [(v, det["next_offset"]) for _, v, det in before] == [("lagging", position_1)]
    assert before[0][2]["lag"] >= n2 + 1
    assert [(v, det["version"]) for _, v, det in of(dr, "event_trace")] == [("c", 1), ("u", 2), ("u", 3)]
    assert [(v, det["target_version"]) for _, v, det in of(dr, "trace_result")] == [("match", 3)]
    after = of(dr, "offsets_after")
    assert [(v, det["lag"]) for _, v, det in after] == [("caught_up", 0)]
    position_2 = after[0][2]["next_offset"]
    assert [(v, det) for _, v, det in of(dr, "message_inspection")] == [
        ("malformed_present", {"c": 7, "d": 1, "malformed": 1, "tombstone": 1, "u": 3})
    ]
    dead = of(dr, "dead_letter")
    assert [(s, v) for s, v, _ in dead] == [(f"{topic}[0]@{delivered[0]}", "dead_letter")]
    assert dead[0][2]["reason"].startswith("malformed:") and dead[0][2]["value_prefix"] == "{not json"
    assert [(v, det["changes"], det["keys"], det["malformed"]) for _, v, det in of(dr, "replay_test")] == [
        ("identical", 11, 7, 1)
    ]
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.dbg_{table}", key="id", columns=COLUMNS)

    # round 3: key 1 is deleted; replay only the new offsets
    n3 = write_changes(shop_db, table, 8, 1, [], [1])
    n += n3
    published(lab, topic, n)
    dr = run_dag(
        DAG_ID, pendulum.datetime(2026, 4, 5, 3, tz="UTC"), {**conf, "replay_from_offset": position_2}
    )
    before = of(dr, "offsets_before")
    assert [(v, det["next_offset"]) for _, v, det in before] == [("lagging", position_2)]
    assert before[0][2]["lag"] >= n3
    assert [v for _, v, _ in of(dr, "event_trace")] == ["c", "u", "u", "d", "tombstone"]
    assert [(v, det["target_version"]) for _, v, det in of(dr, "trace_result")] == [("deleted", None)]
    after = of(dr, "offsets_after")
    assert [(v, det["lag"]) for _, v, det in after] == [("caught_up", 0)]
    assert after[0][2]["next_offset"] > position_2
    assert [(v, det["changes"], det["keys"]) for _, v, det in of(dr, "replay_test")] == [("identical", 2, 2)]
    assert_tables_equal(f"shop:public.{table}", f"warehouse:core.dbg_{table}", key="id", columns=COLUMNS)
