"""The ``names`` fixture's teardown: what an inner pytest session made from its names is gone after it,
and what was not named from them stays.

The inner session (a user's test, run with the cdclab plugin against the same lab) creates a table in
``shop.public`` (captured by the lab's connector: topic ``shop.public.<name>``), one in the warehouse's
``staging`` schema, a derived ``core.<name>__deleted`` and a view on it, a topic and a consumer group,
and never drops anything. This test then checks the lab: all of it is gone, and the topic is not
re-created by the connector; a table this test made with a name of its own survives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

LOG_SERVICES = ["connect", "kafka", "postgres"]

INNER = """
import json, os
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def test_leaves_everything_behind(lab, names, shop_db, warehouse_db, cdc_fence):
    src, stg, tgt, topic, group = names("src"), names("stg"), names("tgt"), names("tp"), names("grp")
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE public.{src} (id int PRIMARY KEY, note text)")
        cur.execute(f"INSERT INTO public.{src} VALUES (1, 'a'), (2, 'b')")
    cdc_fence()  # the connector has made shop.public.<src>
    with warehouse_db.cursor() as cur:
        cur.execute(f"CREATE TABLE staging.{stg} (id int)")
        cur.execute(f"CREATE TABLE core.{tgt}__deleted (id int)")
        cur.execute(f"CREATE VIEW core.{tgt}_view AS SELECT * FROM core.{tgt}__deleted")
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": lab.kafka_bootstrap})
    p.produce(topic, b"x")
    p.flush(30)
    c = Consumer({"bootstrap.servers": lab.kafka_bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = None
    for _ in range(30):
        got = c.poll(1)
        if got is not None and not got.error():
            break
    c.commit(asynchronous=False)
    c.close()
    assert got is not None
    assert f"shop.public.{src}" in admin.list_topics(timeout=15).topics
    with open(os.environ["CDCLAB_TEARDOWN_OUT"], "w") as out:
        json.dump({"suffix": names.suffix, "src": src, "stg": stg, "tgt": tgt, "topic": topic, "group": group}, out)
"""


def relations(conn: Any, marker: str) -> list[str]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'v', 'm', 'p') AND strpos(c.relname, %s) > 0",
            (marker,),
        )
        return sorted(r[0] for r in cur.fetchall())


def test_names_teardown_drops_what_the_test_named_and_nothing_else(
    lab: Any, names: Any, shop_db: Any, warehouse_db: Any, cdc_fence: Any, tmp_path: Path
) -> None:
    keep = names("keep")  # this test's own suffix: the inner session's teardown must not touch it
    with shop_db.cursor() as cur:
        cur.execute(f"CREATE TABLE public.{keep} (id int)")
    (tmp_path / "test_inner.py").write_text(INNER)
    out = tmp_path / "made.json"
    env = {**os.environ, "CDCLAB_LAB_START": "never", "CDCLAB_TEARDOWN_OUT": str(out)}
    env.pop("CI", None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::cdclab.testing.cleanup.NamesTeardownWarning",
            "test_inner.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    made = json.loads(out.read_text())
    suffix = made["suffix"]
    assert suffix != names.suffix

    assert relations(shop_db, suffix) == []
    assert relations(warehouse_db, suffix) == []
    admin = AdminClient({"bootstrap.servers": lab.kafka_bootstrap})
    # a topic re-created by late change events: the connector publishes in commit order with one task,
    # so once a fence row committed now is on Kafka, every change of the inner test's table is too, and
    # a topic its late events re-created exists (this was a 20 s watch; the fence proves the same at once)
    cdc_fence()
    left = [t for t in admin.list_topics(timeout=15).topics if suffix in t]
    assert left == [], f"topics named from the inner test survive its teardown: {left}"
    groups = admin.list_consumer_groups(request_timeout=15).result(30).valid
    assert [g.group_id for g in groups if suffix in g.group_id] == []
    # not named from the inner test's names: still there (this test's own teardown drops it)
    assert relations(shop_db, names.suffix) == [f"public.{keep}"]
