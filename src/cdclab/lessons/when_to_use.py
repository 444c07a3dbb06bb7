"""71.1.1 "When to use each": full reload, timestamp incremental and CDC run over the *same* source
changes, what each caught, missed and read recorded, and a decision table derived from those results,
for ``dags/71_01_01_basics.py``.

Vocabulary:
- *demo source*: a session-private (``TEMP``) copy of a customers table in ``shop``: ``BASELINE_ROWS``
  rows, loaded by all three strategies, then one change of each kind (:data:`SCENARIOS`) inside one
  interval. Being a temp table it is invisible to other runs and to the lab's connector, and vanishes
  with the session: two runs started together cannot interfere.
- *full*: ``SELECT *`` — the target becomes the source. *incremental*: ``WHERE updated_at > watermark``
  (watermark = the highest ``updated_at`` of the baseline), upserted. *cdc*: every row change captured
  by an ``AFTER`` row trigger into an audit table (the same change stream a log reader such as Debezium
  delivers, see ``71_01_02_cdc_concepts``), applied in order.
- *scenarios*: ``insert``, ``update``, ``hard_delete``, ``reverted`` (a row changed and changed back
  inside the interval: caught = the intermediate state was seen), ``no_updated_at`` (a writer that
  changes a row without touching ``updated_at``). Caught = the strategy's target/observation shows it.
- *rows read*: source rows (full, incremental) or change events (cdc) each strategy read for the interval.

Results: ``<table>`` one row per run and strategy (rows read, caught, missed, state kept) and
``<table>_decisions`` one row per run and need (the curriculum's criteria) with the strategies that meet it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from cdclab.common import ddl
from cdclab.common.db import SHOP, WAREHOUSE, connect, ident, insert_rows, transaction

STRATEGIES = ("full", "incremental", "cdc")
SCENARIOS = ("insert", "update", "hard_delete", "reverted", "no_updated_at")
BASELINE_ROWS = 20
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # baseline rows: updated_at = T0 + id seconds
T1 = T0 + dt.timedelta(hours=1)  # the interval's changes

# What each strategy keeps between runs: the cost of the strategy that is not a row count.
STATE_KEPT = {
    "full": "none",
    "incremental": "watermark (max updated_at)",
    "cdc": "log position + capture setup",
}

RESULTS_DDL = """CREATE TABLE IF NOT EXISTS {} (
    run_id      text NOT NULL,
    strategy    text NOT NULL CHECK (strategy IN ('full', 'incremental', 'cdc')),
    rows_read   integer NOT NULL,
    caught      text[] NOT NULL,
    missed      text[] NOT NULL,
    state_kept  text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, strategy)
)"""

DECISIONS_DDL = """CREATE TABLE IF NOT EXISTS {} (
    run_id      text NOT NULL,
    need        text NOT NULL,
    strategies  text[] NOT NULL,
    evidence    text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, need)
)"""

Row = dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """One strategy's result over the interval."""

    strategy: str
    rows_read: int
    caught: tuple[str, ...]
    missed: tuple[str, ...]


def evaluate(
    strategy: str,
    source: Mapping[int, Row],
    target: Mapping[int, Row],
    seen_tiers_of_reverted: Sequence[str],
    rows_read: int,
) -> Outcome:
    """Which scenarios ``target`` (the strategy's copy after the interval) and its observations show.
    ``source`` is the demo source after the interval, keyed by id."""
    inserted, updated, deleted, reverted, silent = BASELINE_ROWS + 1, 2, 3, 4, 5
    shows = {
        "insert": target.get(inserted) == source[inserted],
        "update": target.get(updated) == source[updated],
        "hard_delete": deleted not in target,
        "reverted": "gold" in seen_tiers_of_reverted and target.get(reverted) == source[reverted],
        "no_updated_at": target.get(silent) == source[silent],
    }
    return Outcome(
        strategy,
        rows_read,
        tuple(s for s in SCENARIOS if shows[s]),
        tuple(s for s in SCENARIOS if not shows[s]),
    )


def decisions(outcomes: Sequence[Outcome]) -> list[tuple[str, list[str], str]]:
    """The curriculum's "when to use each" criteria, each answered from the recorded outcomes:
    ``(need, strategies that meet it, evidence)``."""
    by = {o.strategy: o for o in outcomes}
    full_read = by["full"].rows_read

    def catching(scenario: str) -> list[str]:
        return [o.strategy for o in outcomes if scenario in o.caught]

    return [
        ("target must mirror hard deletes", catching("hard_delete"), "caught hard_delete"),
        ("source has no reliable updated_at", catching("no_updated_at"), "caught no_updated_at"),
        ("every intermediate change needed (audit, history)", catching("reverted"), "saw the reverted state"),
        (
            "large table, frequent runs: read only the changes",
            [o.strategy for o in outcomes if o.rows_read < full_read],
            f"read fewer rows than the full reload ({full_read})",
        ),
        (
            "small table, first load or repair: no state to keep",
            [o.strategy for o in outcomes if STATE_KEPT[o.strategy] == "none"],
            "keeps no state between runs",
        ),
    ]


def _rows(cur: Any, query: str, args: Any = None) -> dict[int, Row]:
    cur.execute(query, args)
    return {r[0]: {"tier": r[1], "updated_at": r[2]} for r in cur.fetchall()}


def _apply_changes(cur: Any) -> None:
    """One change of each scenario, in the order a busy hour might see them."""
    minute = dt.timedelta(minutes=1)
    cur.execute(
        "INSERT INTO demo_customers VALUES (%s, 'basic', %s)", (BASELINE_ROWS + 1, T1 + minute)
    )  # insert
    cur.execute("UPDATE demo_customers SET tier = 'silver', updated_at = %s WHERE id = 2", (T1 + 2 * minute,))
    cur.execute("DELETE FROM demo_customers WHERE id = 3")  # hard delete
    cur.execute("UPDATE demo_customers SET tier = 'gold', updated_at = %s WHERE id = 4", (T1 + 3 * minute,))
    cur.execute("UPDATE demo_customers SET tier = 'basic', updated_at = %s WHERE id = 4", (T1 + 4 * minute,))
    cur.execute("UPDATE demo_customers SET tier = 'platinum' WHERE id = 5")  # forgets updated_at


def run_strategies() -> list[Outcome]:
    """Build the demo source (temp tables, one shop session, rolled back at the end), load it with all
    three strategies, apply the interval's changes, run each strategy again and evaluate it."""
    shop = connect(SHOP)
    try:
        with shop.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE demo_customers (id integer PRIMARY KEY, tier text NOT NULL, "
                "updated_at timestamptz NOT NULL) ON COMMIT DROP"
            )
            cur.execute(
                "CREATE TEMP TABLE demo_changes (seq bigserial PRIMARY KEY, op text NOT NULL, "
                "id integer NOT NULL, tier text, updated_at timestamptz) ON COMMIT DROP"
            )
            cur.execute(
                """CREATE FUNCTION pg_temp.demo_capture() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF TG_OP = 'DELETE' THEN
                        INSERT INTO demo_changes (op, id) VALUES ('d', OLD.id);
                    ELSE
                        INSERT INTO demo_changes (op, id, tier, updated_at)
                        VALUES (lower(left(TG_OP, 1)), NEW.id, NEW.tier, NEW.updated_at);
                    END IF;
                    RETURN NULL;
                END $$"""
            )
            cur.execute(
                "CREATE TRIGGER demo_capture AFTER INSERT OR UPDATE OR DELETE ON demo_customers "
                "FOR EACH ROW EXECUTE FUNCTION pg_temp.demo_capture()"
            )
            cur.execute(
                "INSERT INTO demo_customers SELECT i, 'basic', %s + i * interval '1 second' "
                "FROM generate_series(1, %s) i",
                (T0, BASELINE_ROWS),
            )
            # the baseline: every strategy starts from the same copy
            baseline = _rows(cur, "SELECT id, tier, updated_at FROM demo_customers")
            watermark = max(r["updated_at"] for r in baseline.values())
            cur.execute("SELECT coalesce(max(seq), 0) FROM demo_changes")
            position = cur.fetchone()[0]

            _apply_changes(cur)
            source = _rows(cur, "SELECT id, tier, updated_at FROM demo_customers")

            full = _rows(cur, "SELECT id, tier, updated_at FROM demo_customers")
            delta = _rows(
                cur, "SELECT id, tier, updated_at FROM demo_customers WHERE updated_at > %s", (watermark,)
            )
            incremental = {**baseline, **delta}
            cur.execute(
                "SELECT op, id, tier, updated_at FROM demo_changes WHERE seq > %s ORDER BY seq", (position,)
            )
            events = cur.fetchall()
        shop.rollback()
    finally:
        shop.close()

    cdc = dict(baseline)
    for op, key, tier, updated_at in events:
        if op == "d":
            cdc.pop(key, None)
        else:
            cdc[key] = {"tier": tier, "updated_at": updated_at}

    def seen(rows: Sequence[Row]) -> list[str]:
        return [r["tier"] for r in rows]

    return [
        evaluate("full", source, full, seen([full[4]] if 4 in full else []), len(full)),
        evaluate(
            "incremental", source, incremental, seen([d for k, d in delta.items() if k == 4]), len(delta)
        ),
        evaluate("cdc", source, cdc, [e[2] for e in events if e[1] == 4 and e[0] != "d"], len(events)),
    ]


def record(table: str, run_id: str, outcomes: Sequence[Outcome]) -> list[tuple[str, list[str], str]]:
    """Write the outcomes to ``table`` and the derived decision table to ``<table>_decisions`` for this
    run (a rerun replaces its own rows). Returns the decisions."""
    table_decisions = f"{table}_decisions"
    derived = decisions(outcomes)
    wh = connect(WAREHOUSE)
    try:
        ddl.ensure(wh, table, sql.SQL(RESULTS_DDL).format(ident(table)))
        ddl.ensure(wh, table_decisions, sql.SQL(DECISIONS_DDL).format(ident(table_decisions)))
    finally:
        wh.close()
    with transaction(WAREHOUSE) as cur:
        for name in (table, table_decisions):
            cur.execute(sql.SQL("DELETE FROM {} WHERE run_id = %s").format(ident(name)), (run_id,))
        insert_rows(
            cur,
            table,
            ("run_id", "strategy", "rows_read", "caught", "missed", "state_kept"),
            [
                (run_id, o.strategy, o.rows_read, list(o.caught), list(o.missed), STATE_KEPT[o.strategy])
                for o in outcomes
            ],
        )
        insert_rows(
            cur,
            table_decisions,
            ("run_id", "need", "strategies", "evidence"),
            [(run_id, need, strategies, evidence) for need, strategies, evidence in derived],
        )
    return derived
