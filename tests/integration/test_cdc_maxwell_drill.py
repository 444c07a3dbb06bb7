"""The Maxwell-format producer's checkpoint (cdclab.cdc.maxwell) against the real MariaDB and Kafka.

Each test runs its OWN producer process (own checkpoint topic, output topic prefix, table, server id
and transactional id), never the lab's ``maxwell`` service.

- the checkpoint topic is compacted, and a non-compacted one is altered;
- the checkpoint read waits for the end offset (an in-flight checkpoint transaction is not skipped);
- without a checkpoint the producer refuses to start unless told where;
- drill: SIGKILL mid-stream, ``FLUSH BINARY LOGS`` while down, more writes, restart: every change in
  the topic exactly once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter

import pymysql
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from cdclab.cdc import maxwell
from cdclab.cdc.inspect import read_topic, wait_for_records

LOG_SERVICES = ["mariadb", "kafka"]


def _mariadb(lab, user="shop"):
    password = lab["SHOP_PASSWORD"] if user == "shop" else lab["MARIADB_ROOT_PASSWORD"]
    return pymysql.connect(
        host=lab.host_of("mariadb"),
        port=lab.port("mariadb"),
        user=user,
        password=password,
        database="shop",
        autocommit=True,
    )


def _delete_topics(lab, *topics):
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    for fut in admin.delete_topics(list(topics), operation_timeout=30).values():
        try:
            fut.result(30)
        except Exception:  # a topic the test never created
            pass


def _cleanup_policy(lab, topic):
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res])[res].result(30)["cleanup.policy"].value


def _high_watermark(lab, topic):
    c = Consumer(
        {"bootstrap.servers": lab.kafka_bootstrap, "group.id": f"cdclab-drill-{uuid.uuid4().hex[:8]}"}
    )
    try:
        md = c.list_topics(topic, timeout=5)
        if topic not in md.topics or md.topics[topic].error is not None:
            return 0
        return sum(
            c.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
            for p in md.topics[topic].partitions
        )
    finally:
        c.close()


class OwnProducer:
    """``python -m cdclab.cdc.maxwell`` for one test table, with its own topics and ids."""

    def __init__(self, lab, names, table, tmp_path):
        self.lab = lab
        self.table = table
        self.positions = names("_mxpos")
        self.prefix = names("mxd")
        self.topic = f"{self.prefix}.shop.{table}"
        self.server_id = random.randint(20000, 2**31 - 1)
        self.log = tmp_path / "producer.log"
        self.status = tmp_path / "status.json"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self, *start):
        return [
            sys.executable,
            "-m",
            "cdclab.cdc.maxwell",
            "--table",
            self.table,
            "--topic-prefix",
            self.prefix,
            "--positions-topic",
            self.positions,
            "--server-id",
            str(self.server_id),
            "--status-file",
            str(self.status),
            *start,
        ]

    def start(self, *start):
        env = {k: v for k, v in os.environ.items() if k != maxwell.START_ENV}
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv(*start), stdout=fh, stderr=subprocess.STDOUT, env=env)

    def kill(self):
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def output(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def own_table(lab, names):
    table = names("mxd")
    conn = _mariadb(lab)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE `{table}` (id INT PRIMARY KEY, v INT NOT NULL) ENGINE=InnoDB")
    yield table, conn
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{table}`")
    conn.close()


def _gtid_binlog_pos(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT @@gtid_binlog_pos")
        return cur.fetchone()[0]


def test_checkpoint_topic_is_created_compacted_and_a_delete_policy_one_is_altered(lab, names):
    fresh, existing = names("_mxpos_new"), names("_mxpos_old")
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    admin.create_topics([NewTopic(existing, 1, 1, config={"cleanup.policy": "delete"})])[existing].result(30)
    try:
        assert _cleanup_policy(lab, existing) == "delete"
        maxwell.ensure_positions_topic(lab.kafka_bootstrap, fresh)
        maxwell.ensure_positions_topic(lab.kafka_bootstrap, existing)
        assert _cleanup_policy(lab, fresh) == "compact"
        assert _cleanup_policy(lab, existing) == "compact"
    finally:
        _delete_topics(lab, fresh, existing)


def test_checkpoint_read_waits_for_the_end_offset(lab, names):
    """A checkpoint whose transaction is still open at the read is not skipped: the read goes on to the
    end offset, and returns it once committed (the old read stopped after two empty polls)."""
    topic, server = names("_mxpos_end"), "drill:3306"
    maxwell.ensure_positions_topic(lab.kafka_bootstrap, topic)
    try:
        first = Producer({"bootstrap.servers": lab.kafka_bootstrap, "transactional.id": names("txa")})
        first.init_transactions(30)
        first.begin_transaction()
        first.produce(topic, key=server.encode(), value=json.dumps({"n": 1}).encode())
        first.commit_transaction(30)
        second = Producer({"bootstrap.servers": lab.kafka_bootstrap, "transactional.id": names("txb")})
        second.init_transactions(30)
        second.begin_transaction()
        second.produce(topic, key=server.encode(), value=json.dumps({"n": 2}).encode())
        second.flush(10)
        timer = threading.Timer(4.0, lambda: second.commit_transaction(30))
        timer.start()
        started = time.monotonic()
        try:
            found = maxwell._last_checkpoint(lab.kafka_bootstrap, server, topic, timeout=60)
        finally:
            timer.join()
        assert found == {"n": 2}, "the checkpoint committed while reading must be the one resumed from"
        assert time.monotonic() - started >= 3.5
        # and a plain read of a committed topic ends (past the trailing commit marker) without waiting
        started = time.monotonic()
        assert maxwell._last_checkpoint(lab.kafka_bootstrap, server, topic, timeout=60) == {"n": 2}
        assert time.monotonic() - started < 20
    finally:
        _delete_topics(lab, topic)


def test_producer_refuses_to_start_without_checkpoint_or_start_position(lab, names, own_table, tmp_path):
    table, _ = own_table
    p = OwnProducer(lab, names, table, tmp_path)
    try:
        p.start()
        assert p.proc is not None
        rc = p.proc.wait(90)
        assert rc != 0, p.output()
        out = p.output()
        assert "no checkpoint" in out and "--from-start" in out and "--from-gtid" in out, out
        assert maxwell.START_ENV in out
        assert _high_watermark(lab, p.topic) == 0
    finally:
        p.stop()
        _delete_topics(lab, p.positions, p.topic)


def test_from_start_reads_from_the_oldest_binlog_still_present(lab, names, own_table, tmp_path):
    table, conn = own_table
    with conn.cursor() as cur:
        for i in range(1, 6):
            cur.execute(f"INSERT INTO `{table}` (id, v) VALUES (%s, 0)", (i,))
    p = OwnProducer(lab, names, table, tmp_path)
    try:
        p.start("--from-start")
        records = wait_for_records(lab.kafka_bootstrap, p.topic, 5, timeout=180)
        assert sorted(json.loads(r.value())["data"]["id"] for r in records) == [1, 2, 3, 4, 5]
        assert json.loads(p.status.read_text())["resumed_from"] == "oldest"
    finally:
        p.stop()
        _delete_topics(lab, p.positions, p.topic)


SENTINEL = 999_999


def _wait_for_change(lab, topic, row_id, timeout):
    """Every record of ``topic`` once the change of row ``row_id`` is among them."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_topic(lab.kafka_bootstrap, topic)
        if any(r.value() and json.loads(r.value())["data"]["id"] == row_id for r in records):
            return records
        assert time.monotonic() < deadline, f"the change of row {row_id} is not on {topic} after {timeout}s"
        time.sleep(0.2)


def _write_phase1(conn, table, n):
    """n transactions, each inserting one row (ids 1..n)."""
    with conn.cursor() as cur:
        for i in range(1, n + 1):
            cur.execute(f"INSERT INTO `{table}` (id, v) VALUES (%s, 0)", (i,))
    return [(i, "insert") for i in range(1, n + 1)]


def _write_phase2(conn, table, n):
    """Updates, deletes and new inserts: one transaction each."""
    expected = []
    with conn.cursor() as cur:
        for i in range(1, n + 1):
            cur.execute(f"UPDATE `{table}` SET v = v + 1 WHERE id = %s", (i,))
            expected.append((i, "update"))
        for i in range(n + 1, 2 * n + 1):
            cur.execute(f"DELETE FROM `{table}` WHERE id = %s", (i,))
            expected.append((i, "delete"))
        base = 100_000
        for i in range(base, base + n):
            cur.execute(f"INSERT INTO `{table}` (id, v) VALUES (%s, 0)", (i,))
            expected.append((i, "insert"))
    return expected


def test_drill_sigkill_mid_stream_and_flush_binary_logs_lose_and_double_nothing(
    lab, names, own_table, tmp_path
):
    table, conn = own_table
    root = _mariadb(lab, "root")
    p = OwnProducer(lab, names, table, tmp_path)
    # the position before the table's first row: the producer starts after it (no checkpoint yet)
    start_gtid = _gtid_binlog_pos(conn)
    try:
        # a bounded backlog first, then the producer: it is publishing that backlog, transaction by
        # transaction, when it is killed, whatever the machine's speed
        phase1 = _write_phase1(conn, table, 800)
        p.start("--from-gtid", start_gtid)
        deadline = time.monotonic() + 120
        # each transaction is one record + its commit marker: 20 offsets are a few committed transactions
        while _high_watermark(lab, p.topic) < 20:
            assert p.proc is not None and p.proc.poll() is None, p.output()
            assert time.monotonic() < deadline, "the producer published nothing in 120s\n" + p.output()
            time.sleep(0.02)
        p.kill()
        published_before_kill = len(read_topic(lab.kafka_bootstrap, p.topic))
        assert 0 < published_before_kill < len(phase1), (
            f"the kill must land mid-stream: {published_before_kill} of {len(phase1)} published"
        )

        print(f"drill: SIGKILL after {published_before_kill} of {len(phase1)} changes were published")
        # while it is down: a new binlog file, and more changes in it
        with root.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")
        phase2 = _write_phase2(conn, table, 100)
        with root.cursor() as cur:
            cur.execute("FLUSH BINARY LOGS")

        p.start("--from-gtid", start_gtid)  # has a checkpoint now: the start position is ignored
        expected = phase1 + phase2
        wait_for_records(lab.kafka_bootstrap, p.topic, len(expected), timeout=240)
        # a sentinel change written now: the producer publishes in binlog order, so whatever it re-reads
        # from its checkpoint (a re-sent change, a duplicate) is on the topic before the sentinel is
        # (this was a fixed 5 s wait after the last expected record)
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO `{table}` (id, v) VALUES (%s, 0)", (SENTINEL,))
        expected.append((SENTINEL, "insert"))
        records = _wait_for_change(lab, p.topic, SENTINEL, timeout=120)
        assert p.proc is not None and p.proc.poll() is None, p.output()
        status = json.loads(p.status.read_text())
        assert status.get("resumed_from") == "checkpoint", status
    finally:
        p.stop()
        root.close()

    docs = [json.loads(r.value()) for r in records]
    by_change = Counter((d["table"], d["data"]["id"], d["type"], d["gtid"]) for d in docs)
    doubled = {k: n for k, n in by_change.items() if n > 1}
    assert doubled == {}, f"changes published twice: {list(doubled)[:5]}"
    assert all(d["gtid"] and d["position"] for d in docs)
    assert Counter((d["data"]["id"], d["type"]) for d in docs) == Counter(expected), "a change was lost"
    assert len(docs) == len(expected)
    files = {d["position"].rsplit(":", 1)[0] for d in docs}
    assert len(files) >= 2, f"the changes after FLUSH BINARY LOGS come from a new binlog file: {files}"
    _delete_topics(lab, p.positions, p.topic)
