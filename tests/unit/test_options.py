"""Closed option sets are checked at run time: a typo in a mode fails before anything is read or
written (``None`` stands in for every connection and cursor: touching one would raise AttributeError)."""

from __future__ import annotations

from typing import Literal

import pytest

from cdclab.common.options import InvalidOptionError, one_of


def test_one_of_accepts_the_set_and_names_parameter_value_and_choices() -> None:
    assert one_of("delete_mode", "soft", Literal["hard", "soft"]) == "soft"
    assert one_of("x", 2, (1, 2)) == 2
    with pytest.raises(InvalidOptionError) as err:
        one_of("delete_mode", "sfot", Literal["hard", "soft"])
    assert str(err.value) == "delete_mode='sfot' is not one of 'hard', 'soft'"
    assert isinstance(err.value, ValueError)
    with pytest.raises(TypeError):
        one_of("x", 1, int)


def test_the_merge_refuses_a_delete_mode_or_schema_policy_typo() -> None:
    from cdclab.cdc import merge, merge_variants

    with pytest.raises(InvalidOptionError, match="delete_mode='sfot'"):
        merge.apply_changes(None, "core.t", ["id"], [], delete_mode="sfot")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="schema_policy='evolv'"):
        merge.apply_changes(None, "core.t", ["id"], [], schema_policy="evolv")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="delete_mode"):
        merge_variants.merge_statement("core.t", "s", ["id"], ["id"], "Hard")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="delete_mode"):
        merge_variants.merge_changes(None, "core.t", ["id"], [], delete_mode="soft ")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="delete_mode"):
        merge_variants.apply_variants(["merge"], delete_mode="hrad")  # type: ignore[arg-type]


def test_replication_refuses_a_typo_before_it_connects() -> None:
    from cdclab.cdc import ddl, pipeline

    with pytest.raises(InvalidOptionError, match="schema_policy='Evolve'"):
        pipeline.replicate(["public.t"], group="g", schema_policy="Evolve", source_conn_id="nope")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="schema_policy"):
        ddl.reconcile(None, None, "evolv")


def test_other_modes_are_checked_too() -> None:
    from cdclab.state import backup as statebackup
    from cdclab.streams import exactly_once

    with pytest.raises(InvalidOptionError, match="mode='exactly_once'"):
        exactly_once.SinkTables("s", "p_", "exactly_once")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="mode"):
        exactly_once.rewind("kafka", bootstrap="", topic="t", group="g", connect=lambda: None)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="mode='overwrite_all'"):
        statebackup.restore(None, None, scope="s", mode="overwrite_all")  # type: ignore[arg-type]
