"""The position-guarded upsert of the CDC merge, as text: one builder serves the staged (COPY) rows and the
row-by-row ``VALUES`` rows, for upserts and for soft-delete tombstones. Its behaviour against Postgres is
pinned by tests/integration/test_cdc_staged_merge.py and test_cdc_end_to_end.py."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from cdclab.cdc.merge import (
    _row_columns,
    _selected,
    _values,
    _values_template,
    clear_ledger,
    guarded_insert,
    keys_match,
)
from cdclab.common.options import InvalidOptionError
from tests.unit._sql_text import text

COLS = _row_columns(["id", "region", "total"])
KEY = ["id", "region"]
COL_LIST = (
    '"id", "region", "total", "_source_position", "_source_op", "_source_ts", "_deleted", "_deleted_at"'
)
GUARD = (
    'WHERE ((SELECT d._source_position FROM "core"."orders__deleted" d WHERE "d"."id" = "v"."id" AND '
    '"d"."region" = "v"."region") >= v._source_position) IS NOT TRUE ON CONFLICT ("id", "region") '
)


def test_an_upsert_updates_a_held_key_only_from_a_later_position_and_never_resurrects_a_deleted_key():
    stmt = text(guarded_insert("core.orders", KEY, COLS, _values(COLS)))
    assert stmt == (
        f'INSERT INTO "core"."orders" AS t ({COL_LIST}) SELECT {COL_LIST} FROM (VALUES %s) AS v ({COL_LIST}) '
        + GUARD
        + 'DO UPDATE SET "total" = EXCLUDED."total", "_source_position" = EXCLUDED."_source_position", '
        '"_source_op" = EXCLUDED."_source_op", "_source_ts" = EXCLUDED."_source_ts", '
        '"_deleted" = EXCLUDED."_deleted", "_deleted_at" = EXCLUDED."_deleted_at", _loaded_at = now() '
        "WHERE t._source_position < EXCLUDED._source_position"
    )


def test_the_staged_rows_and_the_values_rows_get_the_same_guard():
    staged = text(guarded_insert("core.orders", KEY, COLS, _selected(sql.SQL("SELECT * FROM st"))))
    values = text(guarded_insert("core.orders", KEY, COLS, _values(COLS)))
    assert staged.replace("(SELECT * FROM st) AS v", f"(VALUES %s) AS v ({COL_LIST})") == values


def test_a_tombstone_leaves_a_held_key_alone():
    stmt = text(guarded_insert("core.orders", KEY, COLS, _values(COLS), "nothing"))
    assert stmt.endswith(GUARD + "DO NOTHING")
    assert "DO UPDATE" not in stmt


def test_a_misspelt_conflict_action_is_refused():
    with pytest.raises(InvalidOptionError, match="on_conflict='updte'"):
        guarded_insert("core.orders", KEY, COLS, _values(COLS), "updte")  # type: ignore[arg-type]


def test_rewritten_keys_leave_the_delete_ledger_only_when_written_later():
    stmt = text(clear_ledger("core.orders", KEY, _values([*KEY, "_source_position"])))
    assert stmt == (
        'DELETE FROM "core"."orders__deleted" d WHERE d.ctid = ANY (ARRAY(SELECT x.ctid FROM '
        '(VALUES %s) AS v ("id", "region", "_source_position") CROSS JOIN LATERAL '
        '(SELECT l.ctid FROM "core"."orders__deleted" l WHERE "l"."id" = "v"."id" AND "l"."region" = "v"."region" '
        "AND l._source_position < v._source_position OFFSET 0) x))"
    )


def test_values_are_cast_to_their_columns_types():
    template = _values_template(["id", "_source_position"], {"id": "bigint", "_source_position": "bigint"})
    assert template == "((%s)::bigint, (%s)::bigint)"


def test_rows_of_two_aliases_match_on_every_key_column():
    assert (
        text(keys_match("t", "s", ["id", "region"])) == '"t"."id" = "s"."id" AND "t"."region" = "s"."region"'
    )
