"""Pure logic of 71.10: strategy rules, health grading, poison-row classification, retry backoff,
DAG cards read without importing the file."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cdclab.lessons import opsdocs, strategy
from cdclab.ops import health, recovery


def prof(**over):
    base = dict(
        table="public.t",
        row_count=100,
        primary_key=["id"],
        cursor_column="updated_at",
        cursor_indexed=True,
        version_column=None,
        deletes_observed=0,
        replica_identity="full",
        in_publication=True,
    )
    return strategy.TableProfile(**{**base, **over})


REQ = strategy.Requirements(full_load_max_rows=10)


@pytest.mark.parametrize(
    ("over", "req", "expected"),
    [
        ({"primary_key": []}, REQ, "full"),
        ({"deletes_observed": 3}, REQ, "log_cdc"),
        ({"deletes_observed": 3, "replica_identity": "nothing"}, REQ, "hash"),
        ({"deletes_observed": 3, "in_publication": False, "row_count": 5}, REQ, "full"),
        ({}, strategy.Requirements(max_staleness_seconds=30, full_load_max_rows=10), "log_cdc"),
        ({"row_count": 10}, REQ, "full"),
        ({"version_column": "change_seq"}, REQ, "version"),
        ({}, REQ, "timestamp"),
        ({"cursor_indexed": False}, REQ, "hash"),
        ({"cursor_column": None}, REQ, "hash"),
        ({}, strategy.Requirements(hard_delete_tables=["public.t"], full_load_max_rows=10), "log_cdc"),
    ],
)
def test_the_first_decisive_rule_chooses_the_strategy(over, req, expected) -> None:
    rec = strategy.recommend(prof(**over), req)
    assert rec.strategy == expected
    assert rec.reasons


def test_default_replica_identity_without_a_key_cannot_stream_deletes() -> None:
    ok, why = strategy.cdc_capable(prof(primary_key=[], replica_identity="default"))
    assert not ok and "without a primary key" in why


@pytest.mark.parametrize(
    ("value", "status"), [(0, "ok"), (1.9, "ok"), (2, "warn"), (5, "alert"), (None, "alert")]
)
def test_grades_follow_the_thresholds(value, status) -> None:
    assert health.grade(value, 2, 5) == status


def test_alert_below_warn_is_a_configuration_error() -> None:
    with pytest.raises(health.HealthConfigError, match="swap"):
        health.grade(1, 5, 2)


class _Conn:
    """A connection whose cursor is a plain object; counts rollbacks."""

    def __init__(self) -> None:
        self.rollbacks = 0

    def cursor(self) -> _Cursor:
        return _Cursor()

    def rollback(self) -> None:
        self.rollbacks += 1


class _Cursor:
    def __enter__(self) -> _Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def test_per_subject_checks_come_in_subject_order_from_one_cursor_then_the_read_is_rolled_back() -> None:
    conn, cursors = _Conn(), set()

    def measure(cur: object, subject: str) -> list[health.Check]:
        cursors.add(id(cur))
        return [health._check("m", f"{subject}/{n}", n, 2, 5, "") for n in range(len(subject))]

    checks = health._per_subject(conn, ["ab", "", "c"], measure)
    assert [(c.subject, c.status) for c in checks] == [("ab/0", "ok"), ("ab/1", "ok"), ("c/0", "ok")]
    assert len(cursors) == 1 and conn.rollbacks == 1


@pytest.mark.parametrize(
    ("amount", "parsed", "reason"),
    [
        ("10.5", Decimal("10.5"), None),
        (None, None, "amount is NULL"),
        ("abc", None, "amount 'abc' is not a number"),
        ("-1", None, "amount -1 is negative"),
        ("NaN", None, "amount 'NaN' is not finite"),
    ],
)
def test_poison_rows_are_classified_with_a_reason(amount, parsed, reason) -> None:
    assert recovery.classify({"amount": amount}) == (parsed, reason)


def test_transient_errors_are_retried_with_exponential_backoff_then_reraised() -> None:
    slept: list[float] = []

    def flaky(attempt: int) -> str:
        if attempt < 3:
            raise recovery.TransientSourceError("timeout")
        return "ok"

    assert recovery.retry(flaky, attempts=3, base_delay=0.5, sleep=slept.append) == ("ok", 3)
    assert slept == [0.5, 1.0]
    with pytest.raises(recovery.TransientSourceError):
        recovery.retry(lambda n: flaky(0), attempts=2, base_delay=0, sleep=slept.append)
    with pytest.raises(ZeroDivisionError):  # not transient: no retry
        recovery.retry(lambda n: 1 // 0, attempts=5, sleep=slept.append)


def test_a_dag_card_is_read_from_the_file_without_importing_it(tmp_path: Path) -> None:
    f = tmp_path / "x.py"
    f.write_text(
        '"""\n# Title here\n\nFirst paragraph\nwraps.\n\nSecond.\n"""\nimport does_not_exist\nDAG_ID = "x_id"\n'
        "@dag(dag_id=DAG_ID, schedule=Timetable(1), tags=['a', 'b'])\ndef d():\n    pass\n"
    )
    assert opsdocs.read_dag_file(f) == opsdocs.DagCard(
        "x_id", "x.py", "Timetable(1)", ["a", "b"], "Title here", "First paragraph wraps."
    )
    (tmp_path / "broken.py").write_text("def (:\n")
    assert opsdocs.read_dag_file(tmp_path / "broken.py").title == "DOES NOT PARSE"


def test_headings_become_anchors() -> None:
    md = "# Top\n## State schema\n### state.kafka_offsets\ntext\n"
    assert list(opsdocs.headings(md)) == [(2, "State schema"), (3, "state.kafka_offsets")]
    assert opsdocs.anchor("state.kafka_offsets") == "state-kafka-offsets"
