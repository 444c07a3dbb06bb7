"""Incremental self-checks: a small test suite of the incremental load that runs inside the lab.

Vocabulary:
- *load step*: :func:`load_step`, the incremental logic under test: a watermarked pull (``cdclab.delta.pull``)
  upserted into a target guarded by ``version`` (``cdclab.merge.upsert``), rows and watermark in one transaction.
- *scratch*: each check owns a source table ``public.<scratch>_<check>`` in ``shop``, a target
  ``staging.<scratch>_<check>`` in ``warehouse`` and the watermark key ``<scratch>/<check>``, created fresh
  and dropped afterwards, so checks never see each other's state.
- *state simulation*: a check presets the watermark with an audited ``reset`` instead of replaying history.
- *edge cases*: an empty interval, many rows with one equal timestamp across pages, a NULL cursor.
- *integration check*: one load step of a real source into a real target, then a full comparison
  (``cdclab.delta.detection.compare_tables``).
- *defect*: a deliberate bug in the load step (:data:`DEFECTS`), to see the suite catch it: a test suite
  that never fails proves nothing. ``drop_rows`` loses the last row of every read while the watermark
  still moves past it (a silent gap); ``duplicate_rows`` applies every row twice with the version guard
  off (a redelivery or a re-read boundary row is written again); ``corrupt_values`` truncates text values
  to three characters (a wrong column width or mapping). ``none`` is the correct load.
- *result*: one row per check and run in the results table (``check``, ``passed``, ``detail``); a failed
  check is recorded, and :class:`SelfCheckFailedError` is raised by the DAG's verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from psycopg2 import sql

from cdclab.common.db import ident
from cdclab.common.ddl import ensure as ensure_ddl
from cdclab.delta import detection as delta
from cdclab.delta import pull
from cdclab.merge import upsert
from cdclab.state import watermarks as state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHECKS = [
    "logic_reload_is_idempotent",
    "state_preset_watermark",
    "edge_empty_interval",
    "edge_equal_timestamps",
    "edge_null_cursor",
]


Defect = Literal["none", "drop_rows", "duplicate_rows", "corrupt_values"]
DEFECTS: tuple[str, ...] = get_args(Defect)


class UnknownDefectError(ValueError):
    """The ``defect`` is not one of :data:`DEFECTS`; pick one of them (``none`` for the correct load)."""


def check_defect(defect: str) -> Defect:
    if defect not in DEFECTS:
        raise UnknownDefectError(f"unknown defect {defect!r}; choose one of {list(DEFECTS)}")
    return defect  # type: ignore[return-value]


class SelfCheckFailedError(AssertionError):
    """At least one self-check failed; the results table names it and says why."""


@dataclass
class Scratch:
    shop: Any
    wh: Any
    source: str
    target: str
    key: str
    defect: Defect = "none"

    def insert(self, rows: list[tuple[int, str, datetime | None]]) -> None:
        with self.shop, self.shop.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} (id, name, updated_at) VALUES (%s, %s, %s)").format(
                    ident(self.source)
                ),
                rows,
            )

    def load(self, batch_size: int = 1000, null_policy: delta.NullPolicy = "raise") -> dict[str, int]:
        try:
            return self._load(batch_size, null_policy)
        except Exception:
            self.shop.rollback()
            self.wh.rollback()
            raise

    def _load(self, batch_size: int, null_policy: delta.NullPolicy) -> dict[str, int]:
        return load_step(
            self.shop,
            self.wh,
            self.source,
            self.target,
            self.key,
            ["id"],
            batch_size=batch_size,
            null_policy=null_policy,
            dag_id="selfcheck",
            defect=self.defect,
        )

    def target_rows(self) -> list[tuple[Any, ...]]:
        with self.wh.cursor() as cur:
            cur.execute(sql.SQL("SELECT id, name, version FROM {} ORDER BY id").format(ident(self.target)))
            out = cur.fetchall()
        self.wh.rollback()
        return out

    def watermark(self) -> Any:
        value = state.TableWatermarkStore(self.wh).get_value(self.key)
        self.wh.rollback()
        return value


def load_step(
    shop: Any,
    wh: Any,
    source: str,
    target: str,
    key: str,
    key_columns: list[str],
    *,
    batch_size: int = 1000,
    null_policy: delta.NullPolicy = "raise",
    dag_id: str,
    run_id: str | None = None,
    defect: Defect = "none",
) -> dict[str, int]:
    """Pull ``source`` since the watermark and upsert it into ``target``; rows and watermark commit together.
    ``defect`` other than ``none`` breaks the step on purpose (module doc)."""
    check_defect(defect)
    p = pull.pull(
        shop, wh, source, key, key_columns=tuple(key_columns), batch_size=batch_size, null_policy=null_policy
    )
    rows, guard = list(p.rows), "version"
    if defect == "drop_rows":
        rows = rows[:-1]  # the watermark below still moves past the dropped row
    elif defect == "corrupt_values":
        rows = [
            {c: v[:3] if isinstance(v, str) and c not in key_columns else v for c, v in r.items()}
            for r in rows
        ]
    with wh:
        written = upsert.upsert_rows(wh, target, rows, key_columns, guard)
        if defect == "duplicate_rows":  # applied a second time, unguarded
            again = upsert.upsert_rows(wh, target, rows, key_columns, None)
            written = upsert.UpsertResult(written.inserted, written.updated + again.updated, written.skipped)
        pull.advance(wh, p, dag_id=dag_id, run_id=run_id)
    return {
        "read": len(p.rows),
        "inserted": written.inserted,
        "updated": written.updated,
        "skipped": written.skipped,
    }


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def _check_reload(s: Scratch) -> str:
    s.insert([(1, "a", T0), (2, "b", T0 + timedelta(seconds=1)), (3, "c", T0 + timedelta(seconds=2))])
    first, second = s.load(), s.load()
    _expect(first["inserted"] == 3, f"first load inserted {first['inserted']} rows, expected 3")
    _expect(second["inserted"] + second["updated"] == 0, f"a reload wrote rows again: {second}")
    _expect(len(s.target_rows()) == 3, f"target has {s.target_rows()}")
    return f"first {first}, reload {second}"


def _check_preset(s: Scratch) -> str:
    s.insert([(1, "old", T0), (2, "old", T0 + timedelta(hours=1)), (3, "new", T0 + timedelta(hours=3))])
    state.TableWatermarkStore(s.wh).reset(
        s.key, T0 + timedelta(hours=2), "simulated state", value_type="timestamptz"
    )
    s.wh.commit()
    got = s.load()
    _expect([r[0] for r in s.target_rows()] == [3], f"loaded {s.target_rows()}, expected only id 3")
    _expect(s.watermark() == T0 + timedelta(hours=3), f"watermark {s.watermark()}")
    return f"watermark preset to T0+2h: {got}"


def _check_empty(s: Scratch) -> str:
    s.insert([(1, "a", T0)])
    s.load()
    store = state.TableWatermarkStore(s.wh)
    before = store.get(s.key)
    s.wh.rollback()
    got = s.load()
    after = store.get(s.key)
    s.wh.rollback()
    _expect(got["inserted"] + got["updated"] == 0, f"an empty interval wrote {got}")
    _expect(
        before is not None
        and after is not None
        and (before.value, before.updated_at) == (after.value, after.updated_at),
        f"an empty interval wrote the watermark: {before} -> {after}",
    )
    return f"empty interval: {got}, watermark stays {after.value if after else None} (not rewritten)"


def _check_equal_timestamps(s: Scratch) -> str:
    s.insert([(i, f"r{i}", T0) for i in range(1, 6)])
    first = s.load(batch_size=2)
    s.insert([(6, "same instant, committed later", T0)])
    second = s.load(batch_size=2)
    ids = [r[0] for r in s.target_rows()]
    _expect(ids == [1, 2, 3, 4, 5, 6], f"target ids {ids}, expected 1..6 (pages of 2 on one timestamp)")
    _expect(second["inserted"] == 1, f"the row at the watermark's instant was not picked up: {second}")
    return f"5 rows on one timestamp in pages of 2: {first}; a 6th on the same instant: {second}"


def _check_null_cursor(s: Scratch) -> str:
    s.insert([(1, "a", T0), (2, "no cursor", None)])
    try:
        s.load(null_policy="raise")
    except delta.NullCursorError:
        pass
    else:
        raise AssertionError("a NULL cursor under null_policy='raise' did not raise NullCursorError")
    _expect(s.target_rows() == [] and s.watermark() is None, "a refused load left rows or a watermark behind")
    got = s.load(null_policy="exclude")
    _expect([r[0] for r in s.target_rows()] == [1], f"exclude loaded {s.target_rows()}")
    return f"raise refused the load; exclude loaded {got}"


CHECK_FUNCTIONS: dict[str, Callable[[Scratch], str]] = {
    "logic_reload_is_idempotent": _check_reload,
    "state_preset_watermark": _check_preset,
    "edge_empty_interval": _check_empty,
    "edge_equal_timestamps": _check_equal_timestamps,
    "edge_null_cursor": _check_null_cursor,
}


def ensure_results(wh: Any, results: str) -> None:
    with wh, wh.cursor() as cur:
        ensure_ddl(
            cur,
            results,
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, run_id text NOT NULL, "
                "check_name text NOT NULL, passed boolean NOT NULL, detail text NOT NULL, "
                "checked_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident(results)),
        )


def record(wh: Any, results: str, run_id: str, check: str, passed: bool, detail: str) -> None:
    with wh, wh.cursor() as cur:
        cur.execute(
            sql.SQL("INSERT INTO {} (run_id, check_name, passed, detail) VALUES (%s, %s, %s, %s)").format(
                ident(results)
            ),
            (run_id, check, passed, detail),
        )


def _drop(shop: Any, wh: Any, s: Scratch) -> None:
    with shop, shop.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(s.source)))
    with wh, wh.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident(s.target)))
        state.TableWatermarkStore(wh).delete(s.key, "self-check scratch")


def run_check(shop: Any, wh: Any, check: str, scratch: str, defect: str = "none") -> tuple[bool, str]:
    """Run one check on fresh scratch tables against the load step with ``defect``; returns (passed,
    detail) and always drops the scratch."""
    fn = CHECK_FUNCTIONS[check]
    s = Scratch(
        shop,
        wh,
        f"public.{scratch}_{check}",
        f"staging.{scratch}_{check}",
        f"{scratch}/{check}",
        check_defect(defect),
    )
    _drop(shop, wh, s)
    for conn, table, version_default in ((shop, s.source, " DEFAULT 1"), (wh, s.target, "")):
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint PRIMARY KEY, name text NOT NULL, updated_at timestamptz, "
                    "version integer NOT NULL" + version_default + ")"
                ).format(ident(table))
            )
    try:
        return True, fn(s)
    except Exception as exc:  # a failed check is a result, recorded with its reason
        shop.rollback()
        wh.rollback()
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        _drop(shop, wh, s)
