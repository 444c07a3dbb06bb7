"""The lab's workload service: seed the shop once, then keep changing it at a gentle rate.

``make up`` starts it under both launchers (compose service ``workload``; the native launcher's
``workload`` service), so CDC topics, warehouse tables and the UI have something to show.

Vocabulary:
- *the lab's plan* (:func:`lab_workload`): one deterministic :class:`cdclab.workload.Workload` (seed
  :data:`LAB_SEED`, id range 1..1,000,000, the lab's own range) with a realistic mix: inserts, updates,
  deletes, soft deletes and restores, a few duplicate updates and customers/orders around DST changes.
- *seed*: its first :data:`SEED_OPS` operations, applied as fast as possible on the first start
  (about 1,050 customers, 580 products, 1,740 orders, 2,010 order items and 990 payments). The service
  reports healthy only once the seed is in, so ``make up`` returns with a loaded shop.
- *live*: the following operations of the same plan, at ``rate`` operations per second
  (:data:`DEFAULT_RATE` unless changed), forever (a million operations: eleven days at 1/s).
- *wall-clock anchor*: the plan's business clock (operation ``i`` at ``plan_start + i * STEP``) starts
  at ``lab.workload.plan_start``, fixed on the runner's first start (:func:`anchored_start`) so that the
  seed ends then: the shop has orders yesterday and today, whatever the day ``make up`` runs. Each
  operation's business times are clamped to the database's ``now()`` when it is written
  (:func:`clamp`): live operations come faster than one per ``STEP``, and no order lies in the future,
  so live orders carry ``ordered_at`` about now. Seeded inserts carry their *arrival* as ``updated_at``
  (:func:`with_history_arrival`: business time plus a deterministic delay, some hours late), so the
  shop's history arrived over the past week. ``plan_start`` is stored, so a restart runs the same
  plan and resumes exactly. (:class:`cdclab.workload.Workload` itself stays deterministic: tests use
  their own workloads with a fixed ``start``.)
- *partner files* (:mod:`cdclab.lab.partner_drops`): one drop at each start and then every
  ``--files-every`` seconds (not while paused) into the 71.4 lessons' default landing prefixes,
  counted in ``lab.workload.files_dropped``.
- *control row*: ``lab.workload`` in the ``shop`` database (infra/postgres/shop.sql), one row per
  runner (``shop`` for the lab's own). ``applied`` is the number of plan operations committed, updated
  **in the same transaction** as the rows it changed, so a restart (or a crash) resumes exactly where it
  stopped and seeding twice changes nothing. ``rate`` and ``paused`` are what ``make workload RATE=...``,
  ``make workload-pause`` and ``make workload-resume`` set; the running service reads them every tick.
- *lesson feed* (:mod:`cdclab.lab.lesson_feed`): the 71.6 anti-pattern lessons' own source tables get a
  seed of rows over the last day and then one item per :data:`FEED_EVERY` operations (late events,
  re-deliveries, out-of-order changes included), counted in ``lab.workload.feed_applied``.
- *divergence*: a row changed by someone else (a user deleting an order by hand) makes an operation
  miss (:class:`cdclab.workload.WorkloadDivergedError`); the service logs it, skips that operation and
  goes on (``skipped`` in its status).

Usage: ``python -m cdclab.lab.shop_workload serve|status|set|pause|resume`` (``-h`` for options).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from cdclab.lab import lesson_feed
from cdclab.lab.app_log import AppLog
from cdclab.lab.app_log import log_path as app_log_path
from cdclab.lab.lesson_feed import FeedTables
from cdclab.lab.partner_drops import PartnerDrops, every_from_env
from cdclab.workload import (
    DEFAULT_START,
    ID_SPAN,
    TABLES,
    Operation,
    OpMix,
    Workload,
    WorkloadDivergedError,
    apply_operation,
    iter_plan,
)

LAB_SEED = 71
SEED_OPS = 10_000
DEFAULT_RATE = 1.0
LAB_RUNNER = "shop"
BATCH = 500  # operations per transaction while seeding
FEED_EVERY = 10  # live: one lesson-feed item (lesson_feed) per this many shop operations
STEP = timedelta(minutes=1)  # the business clock's step between two operations of the lab's plan


def lab_workload(
    seed: int = LAB_SEED, tables: Mapping[str, str] | None = None, start: datetime | None = None
) -> Workload:
    """The lab's plan (``tables`` maps the five tables elsewhere, e.g. to a test's copies).

    ``start``: the business clock's start, the control row's ``plan_start`` (:func:`plan_of`); without
    it, :data:`cdclab.workload.DEFAULT_START` (the fixed plan the unit tests pin)."""
    return Workload(
        seed=seed,
        start=start or DEFAULT_START,
        step=STEP,
        dst_year=dst_year(start) if start else None,
        ops=ID_SPAN,
        tables=dict(tables or {}),
        mix=OpMix(insert=0.6, update=0.3, delete=0.1),
        soft_deletes=0.5,
        restores=0.1,
        duplicates=0.02,
        dst=0.05,
    )


def dst_year(start: datetime) -> int:
    """The year of the DST changes the plan's DST orders lie around: the last one whose changes (the
    latest in early November) are all before ``start``, so the anomalies are history, never clamped."""
    start = start.astimezone(UTC)
    return start.year if start >= datetime(start.year, 11, 10, tzinfo=UTC) else start.year - 1


def plan_of(ctl: Control, tables: Mapping[str, str] | None = None) -> Workload:
    """The plan a control row runs: its seed, its ``plan_start``."""
    if ctl.plan_start is None:
        raise ControlRowMissingError(f"lab.workload row {ctl.name!r} has no plan_start: call ensure_control")
    return lab_workload(ctl.seed, tables, ctl.plan_start)


def anchored_start(first_start: datetime, applied: int, seed_ops: int = SEED_OPS) -> datetime:
    """The plan's start for a runner first started at ``first_start`` with ``applied`` operations in:
    the seed's business time (or what is applied already, when more) ends at ``first_start``."""
    return first_start - STEP * max(applied, seed_ops)


def clamp(op: Operation, now: datetime) -> Operation:
    """``op`` with every business time ``min(plan time, now)``: the plan may run ahead of the wall
    clock (live operations come faster than one per :data:`STEP`), the shop's rows never lie in the
    future, so live orders are stamped about ``now``."""
    if op.at <= now and not any(isinstance(v, datetime) and v > now for v in op.values.values()):
        return op
    values = {k: min(v, now) if isinstance(v, datetime) else v for k, v in op.values.items()}
    return replace(op, values=values, at=min(op.at, now))


def history_delay(seq: int) -> timedelta:
    """How long after its business time a seeded row reached the shop (deterministic per operation):
    90% within 10 minutes, 7% 15 to 110 minutes late, 3% 2.5 to 6.5 hours late (a phone offline, a
    partner batch upload), so the seed carries late arrivals the event-time lessons can classify."""
    u = (seq * 2654435761 % 1000) / 1000
    if u < 0.90:
        return timedelta(minutes=10 * u / 0.90)
    if u < 0.97:
        return timedelta(minutes=15 + 95 * (u - 0.90) / 0.07)
    return timedelta(minutes=150 + 240 * (u - 0.97) / 0.03)


def with_history_arrival(op: Operation, now: datetime) -> Operation:
    """A seeded insert with ``updated_at`` = its arrival, ``min(op.at + history_delay, now)``, so the
    seed looks like a shop that has been running (the rows arrived over the past week), not one loaded
    at once: an interval-bounded lesson (71_02_03) triggered on a lab started minutes ago finds the
    arrivals of its interval. Only inserts: an update's ``updated_at`` is the trigger's ``now()``."""
    if op.kind != "insert":
        return op
    return replace(op, values={**op.values, "updated_at": min(op.at + history_delay(op.seq), now)})


@dataclass(frozen=True)
class Control:
    name: str
    seed: int
    applied: int
    rate: float
    paused: bool
    feed_applied: int = 0
    plan_start: datetime | None = None
    files_dropped: int = 0


class ControlRowMissingError(RuntimeError):
    """No ``lab.workload`` row for this runner."""


class SeedMismatchError(RuntimeError):
    """The control row was written by a plan with another seed."""


class PlanStartMismatchError(RuntimeError):
    """The runner's plan does not start where the control row says its operations were applied."""


def _control(cur: Any, name: str, lock: bool = False) -> Control | None:
    query = (
        "SELECT name, seed, applied, rate, paused, feed_applied, plan_start, files_dropped "
        "FROM lab.workload WHERE name = %s"
    )
    cur.execute(f"{query} FOR UPDATE" if lock else query, (name,))
    row = cur.fetchone()
    if not row:
        return None
    return Control(
        row[0], int(row[1]), int(row[2]), float(row[3]), bool(row[4]), int(row[5]), row[6], int(row[7])
    )


def ensure_columns(conn: Any) -> None:
    """Add ``plan_start``/``files_dropped`` to a ``lab.workload`` made before them (a lab started
    with an older infra/postgres/shop.sql, which adds them on its next start too); commits."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'lab' "
            "AND table_name = 'workload' AND column_name IN ('plan_start', 'files_dropped')"
        )
        if cur.fetchone()[0] < 2:
            cur.execute("ALTER TABLE lab.workload ADD COLUMN IF NOT EXISTS plan_start timestamptz")
            cur.execute(
                "ALTER TABLE lab.workload ADD COLUMN IF NOT EXISTS files_dropped bigint NOT NULL DEFAULT 0 "
                "CHECK (files_dropped >= 0)"
            )
    conn.commit()


def ensure_control(conn: Any, name: str, seed: int, rate: float, seed_ops: int = SEED_OPS) -> Control:
    """The runner's control row, created (``applied`` 0, ``rate``) if missing; commits.

    On the runner's first start it gets its ``plan_start`` (:func:`anchored_start` of the database's
    ``now()``): the seed's operations lie in the ``seed_ops`` minutes before it, so the shop has orders
    yesterday and today. A row from before ``plan_start`` existed is anchored so that the operations it
    applied end now. Stored, so a restart runs the same plan and resumes exactly."""
    ensure_columns(conn)
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO lab.workload (name, seed, rate) VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (name, seed, rate),
        )
        ctl = _control(cur, name, lock=True)
        assert ctl is not None
        if ctl.plan_start is None:
            cur.execute("SELECT now()")
            start = anchored_start(cur.fetchone()[0], ctl.applied, seed_ops)
            cur.execute("UPDATE lab.workload SET plan_start = %s WHERE name = %s", (start, name))
            ctl = _control(cur, name)
    conn.commit()
    assert ctl is not None
    if ctl.seed != seed:
        raise SeedMismatchError(
            f"lab.workload row {name!r} was written by a plan with seed {ctl.seed}, this one has seed {seed}: "
            f"its rows are not this plan's. Delete the row (and the shop rows) or use another name."
        )
    return ctl


def read_control(conn: Any, name: str = LAB_RUNNER) -> Control:
    with conn.cursor() as cur:
        ctl = _control(cur, name)
    conn.rollback()
    if ctl is None:
        raise ControlRowMissingError(
            f"no lab.workload row {name!r}: the workload service has not started yet (make up starts it)"
        )
    return ctl


def set_control(
    conn: Any, name: str = LAB_RUNNER, *, rate: float | None = None, paused: bool | None = None
) -> Control:
    """Change the running service's rate or pause flag; it picks them up within a second; commits."""
    if rate is not None and rate < 0:
        raise ValueError(f"rate is operations per second, >= 0; got {rate}")
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE lab.workload SET rate = coalesce(%s, rate), paused = coalesce(%s, paused), "
            "updated_at = now() WHERE name = %s",
            (rate, paused, name),
        )
        found = cur.rowcount == 1
    conn.commit()
    if not found:
        raise ControlRowMissingError(
            f"no lab.workload row {name!r}: the workload service has not started yet (make up starts it)"
        )
    return read_control(conn, name)


class Runner:
    """Applies the plan's operations in order, each batch committed with ``applied`` in ``lab.workload``."""

    def __init__(
        self,
        conn: Any,
        workload: Workload,
        name: str = LAB_RUNNER,
        log: Callable[[str], None] = print,
        feed: tuple[Any, FeedTables] | None = None,
        drops: tuple[PartnerDrops, float] | None = None,
    ):
        """``feed``: (warehouse connection, tables) to also write the 71.6 lessons' rows (lesson_feed);
        ``drops``: (dropper, seconds) to drop partner files on start and then every so many seconds."""
        self.conn, self.workload, self.name, self.log, self.feed = conn, workload, name, log, feed
        self.drops = drops
        self.position = -1
        self.ops: Iterator[Operation] = iter(())
        self.skipped = 0

    def _seek(self, applied: int) -> None:
        if applied != self.position:
            self.ops = islice(iter_plan(self.workload), applied, None)
            self.position = applied

    def step(self, n: int, seeding: bool = False) -> int:
        """Apply the next ``n`` operations in one transaction; returns how many were applied.

        Outside the seed, a paused runner applies none: the flag is read under the control row's lock,
        so once :func:`set_control` ``(paused=True)`` has returned, nothing more changes."""
        try:
            return self._step(n, seeding)
        except BaseException:
            self.position = -1  # the plan iterator ran ahead of what was committed: seek again
            if not self.conn.closed:
                self.conn.rollback()
            raise

    def _control_unless_paused(self, cur: Any, seeding: bool) -> Control | None:
        """The control row, locked for this transaction; None (rolled back) when the runner is paused
        outside the seed."""
        ctl = _control(cur, self.name, lock=True)
        if ctl is None:
            raise ControlRowMissingError(f"lab.workload row {self.name!r} disappeared")
        if ctl.paused and not seeding:
            self.conn.rollback()
            return None
        return ctl

    def _step(self, n: int, seeding: bool) -> int:
        with self.conn.cursor() as cur:
            ctl = self._control_unless_paused(cur, seeding)
            if ctl is None:
                return 0
            self._check_plan(ctl)
            self._seek(ctl.applied)
            batch = list(islice(self.ops, max(0, min(n, self.workload.ops - ctl.applied))))
            if not batch:
                self.conn.rollback()
                return 0
            cur.execute("SELECT now()")
            now = cur.fetchone()[0]
            batch = [clamp(op, now) for op in batch]
            if seeding:
                batch = [with_history_arrival(op, now) for op in batch]
            try:
                for op in batch:
                    apply_operation(cur, self.workload, op)
            except WorkloadDivergedError:
                self.conn.rollback()
                return self._careful(batch)
            self._advance(cur, ctl.applied + len(batch))
        self.conn.commit()
        self.position += len(batch)
        return len(batch)

    def _check_plan(self, ctl: Control) -> None:
        if ctl.plan_start is not None and ctl.plan_start != self.workload.start:
            raise PlanStartMismatchError(
                f"lab.workload row {self.name!r} runs a plan starting {ctl.plan_start.isoformat()}, this "
                f"runner's starts {self.workload.start.isoformat()}: build it with plan_of(control row)"
            )

    def _careful(self, batch: list[Operation]) -> int:
        """The batch again, one savepoint per operation, skipping those whose row is not there."""
        with self.conn.cursor() as cur:
            ctl = _control(cur, self.name, lock=True)
            assert ctl is not None and ctl.applied == self.position
            for op in batch:
                cur.execute("SAVEPOINT op")
                try:
                    apply_operation(cur, self.workload, op)
                except WorkloadDivergedError as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT op")
                    self.skipped += 1
                    self.log(f"workload: skipped operation {op.seq}: {exc}")
            self._advance(cur, ctl.applied + len(batch))
        self.conn.commit()
        self.position += len(batch)
        return len(batch)

    def _advance(self, cur: Any, applied: int) -> None:
        cur.execute(
            "UPDATE lab.workload SET applied = %s, updated_at = now() WHERE name = %s", (applied, self.name)
        )

    def feed_step(self, seeding: bool) -> int:
        """Write the next lesson-feed items (seed: up to 100 of them, dated over the last day; live: one,
        dated now); warehouse first (idempotent), then the shop with ``feed_applied``. Returns how many."""
        if self.feed is None:
            return 0
        wh, tables = self.feed
        try:
            with self.conn.cursor() as cur, wh.cursor() as wcur:
                ctl = self._control_unless_paused(cur, seeding)
                if ctl is None:
                    return 0
                cur.execute("SELECT now()")
                now = cur.fetchone()[0]
                done = ctl.feed_applied
                items = (
                    lesson_feed.seed_times(now, done, done + 100)
                    if seeding
                    else [(max(done, lesson_feed.SEED_ITEMS), now)]
                )
                if not items:
                    self.conn.rollback()
                    return 0
                lesson_feed.write_items(cur, wcur, tables, items)
                wh.commit()
                cur.execute(
                    "UPDATE lab.workload SET feed_applied = %s WHERE name = %s", (items[-1][0] + 1, self.name)
                )
            self.conn.commit()
        except BaseException:
            for c in (self.conn, wh):
                if not c.closed:
                    c.rollback()
            raise
        return len(items)

    def seed_feed(self) -> int:
        """The lesson feed's seed (:data:`lesson_feed.SEED_ITEMS` items), none when it is in already."""
        done = 0
        while n := self.feed_step(seeding=True):
            done += n
        return done

    def seed(self, seed_ops: int = SEED_OPS, stop: threading.Event | None = None) -> int:
        """Apply operations until ``seed_ops`` are in (none when they already are); returns how many.

        ``stop`` set: return after the current batch (the next start goes on from there)."""
        done = 0
        while stop is None or not stop.is_set():
            ctl = read_control(self.conn, self.name)
            if ctl.applied >= seed_ops:
                return done
            done += self.step(min(BATCH, seed_ops - ctl.applied), seeding=True)
        return done

    def serve(
        self,
        stop: threading.Event,
        seed_ops: int = SEED_OPS,
        report: Callable[[dict[str, Any]], None] | None = None,
        tick: float = 1.0,
    ) -> None:
        """Seed, then apply operations at the control row's rate until ``stop`` is set."""
        report = report or (lambda status: None)
        report(self._status(read_control(self.conn, self.name), seeded=False))
        seeded = self.seed(seed_ops, stop)
        if stop.is_set():
            return
        if self.feed is not None:
            lesson_feed.ensure_tables(self.conn, self.feed[0], self.feed[1])
        fed = self.seed_feed()
        ctl = read_control(self.conn, self.name)
        self.log(
            f"workload: seed in place ({ctl.applied} operations, {seeded} applied now; "
            f"{ctl.feed_applied} lesson items, {fed} now)"
        )
        credit, last, since_feed = 0.0, time.monotonic(), 0
        last_drop: float | None = None
        while not stop.is_set():
            ctl = read_control(self.conn, self.name)
            now = time.monotonic()
            if self.drops and not ctl.paused and (last_drop is None or now - last_drop >= self.drops[1]):
                last_drop = now
                self.drop_files()
            if ctl.paused or ctl.rate <= 0:
                credit = 0.0
            else:
                credit = min(credit + ctl.rate * (now - last), max(1.0, ctl.rate * 5))
                due = int(credit)
                if due:
                    applied = self.step(due)
                    self._log_applied(applied)
                    credit -= applied
                    since_feed += applied
                    if since_feed >= FEED_EVERY:
                        since_feed = 0
                        self.feed_step(seeding=False)
            last = now
            report(self._status(read_control(self.conn, self.name), seeded=True))
            stop.wait(tick if ctl.paused or ctl.rate <= 0 else min(tick, max(0.05, (1 - credit) / ctl.rate)))

    app_log: AppLog | None = None
    """Where applied live operations are logged, one line each (:mod:`cdclab.lab.app_log`)."""

    def _log_applied(self, applied: int) -> None:
        if self.app_log is None or applied <= 0:
            return
        try:
            self.app_log.write(applied)
        except OSError as exc:  # a full or read-only disk must not stop the shop's changes
            self.log(f"workload: application log not written ({exc}); going on")

    def drop_files(self) -> int | None:
        """The next partner-file drop (:mod:`cdclab.lab.partner_drops`); an object store that fails is
        logged and tried again at the next drop time (the shop's changes go on)."""
        import psycopg2

        if self.drops is None:
            return None
        try:
            n = self.drops[0].drop_next(self.conn, self.name)
        except psycopg2.Error:
            raise
        except Exception as exc:  # botocore/network errors: MinIO down or restarting
            if not self.conn.closed:
                self.conn.rollback()
            self.log(f"workload: partner file drop failed ({type(exc).__name__}: {exc}); next try later")
            return None
        if n is not None:
            self.log(f"workload: partner file drop {n} in place")
        return n

    def _status(self, ctl: Control, seeded: bool) -> dict[str, Any]:
        return {
            **asdict(ctl),
            "plan_start": ctl.plan_start.isoformat() if ctl.plan_start else None,
            "seeded": seeded,
            "skipped": self.skipped,
            "pid": os.getpid(),
            "at": time.time(),
        }


def status_file(state_dir: Path) -> Path:
    return state_dir / "workload" / "status.json"


def _write_status(path: Path, status: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(status))
    tmp.replace(path)


def _connect(args: argparse.Namespace) -> Any:
    import psycopg2

    from cdclab.lab.config import LabConfig

    return psycopg2.connect(args.dsn or LabConfig.load().pg_dsn("shop"))


def _serve(args: argparse.Namespace) -> int:
    """The service: (re)connects and serves until SIGTERM; a lost connection is retried, not fatal."""
    import psycopg2

    from cdclab.lab.config import LabConfig

    tables: dict[str, str] = {t: f"{args.schema}.{t}" for t in TABLES} if args.schema != "public" else {}
    feed_tables = FeedTables() if args.schema == "public" else FeedTables.in_schemas(args.schema, args.schema)
    rate = args.rate if args.rate is not None else float(os.environ.get("CDCLAB_WORKLOAD_RATE", DEFAULT_RATE))
    files_every = args.files_every if args.files_every is not None else every_from_env()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    state = Path(args.state_dir) if args.state_dir else LabConfig.load().state
    path = status_file(state)

    def log(msg: str) -> None:
        print(msg, flush=True)

    log(
        f"workload: runner {args.name!r}, seed {LAB_SEED}, {args.seed_ops} seed operations, "
        f"tables {tables or 'public.*'}, lesson feed {'off' if args.no_lesson_feed else 'on'}, "
        f"partner files {'off' if files_every <= 0 else f'every {files_every:g} s'}"
    )
    while not stop.is_set():
        conns: list[Any] = []
        try:
            conn = _connect(args)
            conns.append(conn)
            feed = None
            if not args.no_lesson_feed:
                wh = psycopg2.connect(args.warehouse_dsn or LabConfig.load().pg_dsn("warehouse"))
                conns.append(wh)
                feed = (wh, feed_tables)
            ctl = ensure_control(conn, args.name, LAB_SEED, rate, args.seed_ops)
            drops = (
                (PartnerDrops(root="" if args.schema == "public" else f"{args.schema}/"), files_every)
                if files_every > 0
                else None
            )
            runner = Runner(conn, plan_of(ctl, tables), args.name, log, feed, drops)
            if args.schema == "public":  # the lab's own runner is the application 71_09_02 reads
                runner.app_log = AppLog(app_log_path(state))
            runner.serve(stop, args.seed_ops, lambda status: _write_status(path, status))
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            log(f"workload: lost the database ({str(exc).strip()}); reconnecting in 5 s")
            stop.wait(5)
        finally:
            for c in conns:
                if not c.closed:
                    c.close()
    log("workload: stopped")
    return 0


def _show(ctl: Control) -> int:
    state = "paused" if ctl.paused else f"running at {ctl.rate:g} operations/s"
    clock = f"business clock from {ctl.plan_start.isoformat()}" if ctl.plan_start else "not started yet"
    print(
        f"workload {ctl.name!r}: {state}; {ctl.applied} operations applied (seed {ctl.seed}, {SEED_OPS} in the "
        f"initial shop; {clock}); {ctl.files_dropped} partner file drops"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cdclab.lab.shop_workload",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", default=LAB_RUNNER, help="the runner's lab.workload row (default: shop)")
    parser.add_argument("--dsn", default=None, help="libpq DSN of the shop database (default: the lab's)")
    actions = parser.add_subparsers(dest="action", required=True)
    serve = actions.add_parser("serve", help="seed the shop, then keep changing it (the lab service)")
    serve.add_argument("--schema", default="public", help="where the five tables are (default: public)")
    serve.add_argument("--rate", type=float, default=None, help="initial operations/s for a new runner")
    serve.add_argument("--seed-ops", type=int, default=SEED_OPS, help=f"operations in the seed ({SEED_OPS})")
    serve.add_argument(
        "--state-dir", default=None, help="where status.json goes (default: the lab's state dir)"
    )
    serve.add_argument(
        "--warehouse-dsn", default=None, help="libpq DSN of the warehouse (default: the lab's)"
    )
    serve.add_argument(
        "--no-lesson-feed", action="store_true", help="do not write the 71.6 lessons' source tables"
    )
    serve.add_argument(
        "--files-every",
        type=float,
        default=None,
        help="seconds between two partner-file drops into the landing bucket (default: "
        "$CDCLAB_WORKLOAD_FILES_EVERY or 120; 0: none); with --schema, under landing/<schema>/",
    )
    actions.add_parser("status", help="print the rate, pause flag and operations applied")
    set_p = actions.add_parser("set", help="change the rate (and resume)")
    set_p.add_argument("--rate", type=float, required=True, help="operations per second (0 stops changes)")
    actions.add_parser("pause", help="stop changing the shop (the service keeps running)")
    actions.add_parser("resume", help="start changing it again")
    args = parser.parse_args(argv)
    if args.action == "serve":
        return _serve(args)
    conn = _connect(args)
    try:
        if args.action == "status":
            return _show(read_control(conn, args.name))
        if args.action == "set":
            return _show(set_control(conn, args.name, rate=args.rate, paused=False))
        return _show(set_control(conn, args.name, paused=args.action == "pause"))
    except ControlRowMissingError as exc:
        print(f"cdclab: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
