"""71.4.3 Trigger strategies compared on the same file drops, for ``dags/71_04_03_streaming.py``.

One task replays the five ways a file pipeline can be triggered against the real MinIO and warehouse, on
one shared clock of *ticks* (``tick_seconds`` of real time each), so that every strategy sees exactly the
same drops at the same moments:

- ``schedule``: a cron run every ``schedule_ticks`` lists the prefix once and loads what is new;
- ``in_run_polling``: one long run lists every tick (this DAG's own strategy, ``ingest_continuously``);
- ``sensor``: a sensor in poke mode lists every ``poke_ticks``; on a hit the run loads what it found;
- ``deferrable``: the same pokes made by a trigger in the triggerer; a worker is used only to load;
- ``event``: an ``AssetWatcher`` on bucket notifications: no listing at all, each drop is announced (here by
  the dropper itself, the message MinIO's bucket notification would send) and loaded at the next tick.

Vocabulary:
- *check*: one ``ListObjectsV2`` call on the demo prefix (the cost every polling strategy pays, files or
  not); the event strategy makes none.
- *worker ticks*: ticks in which the strategy occupies a worker slot (a poke-mode sensor or a polling run
  holds one all the time; a deferrable sensor only when it resumes to load; cron and events only to load).
- *detection delay*: ``pick_tick - drop_tick`` (deterministic) and ``picked_at - dropped_at`` in seconds
  from the lab's own clocks (MinIO ``LastModified`` in ms, read once by the dropper for every strategy, the
  warehouse's ``clock_timestamp()`` at the pick-up).

Within a tick, the drops land first, then every strategy whose cadence says so checks. Counts and ticks
are therefore a pure function of the plan (:func:`checks_at`, :func:`predicted_pick_tick`); only the seconds
depend on the machine. Results: ``<table>`` one row per run, strategy and file (the primary key makes a
second load of a file fail: exactly once) and ``<table>_summary`` one row per run and strategy.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from cdclab.common import ddl
from cdclab.common.db import WAREHOUSE, connect, ident, insert_rows, transaction
from cdclab.files.store import ObjectStore

log = logging.getLogger(__name__)

STRATEGIES = ("schedule", "in_run_polling", "sensor", "deferrable", "event")

PICKS_DDL = """CREATE TABLE IF NOT EXISTS {} (
    run_id      text NOT NULL,
    strategy    text NOT NULL,
    key         text NOT NULL,
    drop_tick   integer NOT NULL,
    pick_tick   integer NOT NULL,
    check_no    integer NOT NULL,
    dropped_at  timestamptz NOT NULL,
    picked_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run_id, strategy, key)
)"""

SUMMARY_DDL = """CREATE TABLE IF NOT EXISTS {} (
    run_id          text NOT NULL,
    strategy        text NOT NULL,
    checks          integer NOT NULL,
    worker_ticks    integer NOT NULL,
    files           integer NOT NULL,
    max_delay_ticks integer,
    max_delay_s     double precision,
    PRIMARY KEY (run_id, strategy)
)"""


@dataclass(frozen=True)
class Plan:
    """The drops (tick of each file) and every strategy's cadence, in ticks."""

    drop_ticks: tuple[int, ...]
    ticks: int
    schedule_ticks: int
    poke_ticks: int

    def __post_init__(self) -> None:
        if min(self.schedule_ticks, self.poke_ticks, self.ticks) < 1:
            raise ValueError(f"ticks and cadences must be >= 1: {self}")
        late = [t for t in self.drop_ticks if not 0 <= t < self.ticks]
        if late:
            raise ValueError(f"drop ticks {late} outside [0, {self.ticks}); raise trigger_ticks")
        missed = {
            s: t for s in STRATEGIES for t in self.drop_ticks if predicted_pick_tick(s, t, self) is None
        }
        if missed:
            raise ValueError(
                f"with {self.ticks} ticks these strategies would not check again after a drop: {missed}; "
                "raise trigger_ticks or drop earlier"
            )


def checks_at(strategy: str, tick: int, plan: Plan) -> bool:
    """Does ``strategy`` list the prefix at ``tick``?"""
    if strategy == "schedule":
        return tick % plan.schedule_ticks == 0
    if strategy == "in_run_polling":
        return True
    if strategy in ("sensor", "deferrable"):
        return tick % plan.poke_ticks == 0
    if strategy == "event":
        return False
    raise ValueError(f"strategy {strategy!r} is not one of {STRATEGIES}")


def holds_worker(strategy: str, tick: int, plan: Plan, loads: bool) -> bool:
    """Does ``strategy`` occupy a worker slot during ``tick`` (``loads``: it loads files in this tick)?
    A polling run and a poke-mode sensor hold one throughout; a cron run for its check; a deferrable
    sensor and an event-driven run only when they load."""
    if strategy in ("in_run_polling", "sensor"):
        return True
    if strategy == "schedule":
        return checks_at(strategy, tick, plan)
    return loads


def predicted_pick_tick(strategy: str, drop_tick: int, plan: Plan) -> int | None:
    """The tick at which ``strategy`` loads a file dropped at ``drop_tick`` (None: not within the plan)."""
    if strategy == "event":
        return drop_tick
    return next((t for t in range(drop_tick, plan.ticks) if checks_at(strategy, t, plan)), None)


@dataclass
class _Tally:
    checks: int = 0
    worker_ticks: int = 0
    loaded: set[str] = field(default_factory=set)
    check_no: int = 0


def _load(
    cur: Any, table: str, run_id: str, strategy: str, obj: Any, drop_tick: int, tick: int, n: int
) -> None:
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (run_id, strategy, key, drop_tick, pick_tick, check_no, dropped_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)"
        ).format(ident(table)),
        (run_id, strategy, obj.key, drop_tick, tick, n, obj.last_modified),
    )


def compare(
    bucket: str, prefix: str, table: str, run_id: str, plan: Plan, tick_seconds: float
) -> list[dict[str, Any]]:
    """Replay ``plan`` under every strategy (files under ``<prefix><unique>/``, removed afterwards), record
    every pick-up in ``table`` and each strategy's totals in ``<table>_summary``. Returns the totals."""
    summary = f"{table}_summary"
    wh = connect(WAREHOUSE)
    try:
        ddl.ensure(wh, table, sql.SQL(PICKS_DDL).format(ident(table)))
        ddl.ensure(wh, summary, sql.SQL(SUMMARY_DDL).format(ident(summary)))
        with wh, wh.cursor() as cur:
            for name in (table, summary):
                cur.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(ident(name)), (run_id,))
    finally:
        wh.close()
    store = ObjectStore()
    base = f"{prefix}{uuid.uuid4().hex[:12]}/"
    tally = {s: _Tally() for s in STRATEGIES}
    drop_tick_of: dict[str, int] = {}
    dropped: dict[str, Any] = {}
    notifications: list[Any] = []
    started = time.monotonic()
    wh = connect(WAREHOUSE)
    try:
        for tick in range(plan.ticks):
            for i, t in enumerate(plan.drop_ticks):
                if t == tick:
                    key = f"{base}drop-{i:03d}.jsonl"
                    store.put(bucket, key, f'{{"file": {i}, "tick": {t}}}\n'.encode())
                    drop_tick_of[key] = t
                    # the dropper's own record of the drop (not a strategy's check): MinIO's LastModified in
                    # ms, as a bucket notification's eventTime carries it (HEAD would round to seconds)
                    (obj,) = store.list_objects(bucket, key)
                    dropped[key] = obj
                    notifications.append(obj)  # what a bucket notification would announce
            with wh, wh.cursor() as cur:
                for strategy in STRATEGIES:
                    tl = tally[strategy]
                    if strategy == "event":
                        seen = list(notifications)
                    elif checks_at(strategy, tick, plan):
                        tl.checks += 1
                        seen = store.list_objects(bucket, base)
                    else:
                        seen = []
                    new = [o for o in seen if o.key not in tl.loaded]
                    if new:
                        tl.check_no += 1
                    for obj in new:
                        store.get(
                            bucket, obj.key, obj.etag
                        )  # the load reads exactly the version announced/listed
                        _load(
                            cur,
                            table,
                            run_id,
                            strategy,
                            dropped[obj.key],
                            drop_tick_of[obj.key],
                            tick,
                            tl.check_no,
                        )
                        tl.loaded.add(obj.key)
                    tl.worker_ticks += holds_worker(strategy, tick, plan, bool(new))
                notifications.clear()
            time.sleep(max(0.0, started + (tick + 1) * tick_seconds - time.monotonic()))
    finally:
        wh.close()
        store.delete(bucket, [o.key for o in store.list_objects(bucket, base)])
    totals = []
    with transaction(WAREHOUSE) as cur:
        for strategy in STRATEGIES:
            cur.execute(
                sql.SQL(
                    "SELECT count(*), max(pick_tick - drop_tick), "
                    "max(extract(epoch FROM picked_at - dropped_at)) FROM {} WHERE run_id = %s AND strategy = %s"
                ).format(ident(table)),
                (run_id, strategy),
            )
            files, max_ticks, max_s = cur.fetchone()
            row = {
                "strategy": strategy,
                "checks": tally[strategy].checks,
                "worker_ticks": tally[strategy].worker_ticks,
                "files": int(files),
                "max_delay_ticks": max_ticks,
                "max_delay_s": None if max_s is None else float(max_s),
            }
            insert_rows(cur, summary, ("run_id", *row), [(run_id, *row.values())])
            totals.append(row)
    log.info("trigger strategies over %d drops: %s", len(plan.drop_ticks), totals)
    return totals


def plan_from_params(params: dict[str, Any]) -> Plan:
    """The :class:`Plan` of the DAG's ``trigger_*`` params."""
    drops: Sequence[Any] = params["trigger_drop_ticks"]
    return Plan(
        drop_ticks=tuple(int(t) for t in drops),
        ticks=int(params["trigger_ticks"]),
        schedule_ticks=int(params["trigger_schedule_ticks"]),
        poke_ticks=int(params["trigger_poke_ticks"]),
    )
