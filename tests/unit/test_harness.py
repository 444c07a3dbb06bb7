"""The harness plugin's pure parts: the table diff and its message, row filters, DAG references that do
not parse."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cdclab.testing import dags, tables
from cdclab.testing.tables import DuplicateKeyError, TablesDiffer, diff_rows, format_diff
from tests.unit._sql_text import text


def _rows(*specs: tuple[int, str, str]) -> list[dict[str, object]]:
    return [{"id": i, "tier": tier, "email": email} for i, tier, email in specs]


def test_equal_tables_give_an_empty_diff_whatever_the_row_order() -> None:
    source = _rows((1, "basic", "a@x"), (2, "gold", "b@x"))
    diff = diff_rows(source, list(reversed(source)), key="id")
    assert diff.equal
    assert (diff.source_count, diff.target_count) == (2, 2)


def test_the_diff_counts_missing_extra_and_changed_rows_and_lists_changed_columns() -> None:
    source = _rows((1, "basic", "a@x"), (2, "gold", "b@x"), (3, "basic", "c@x"), (4, "basic", "d@x"))
    target = _rows((1, "basic", "a@x"), (2, "basic", "b@x"), (4, "basic", "D@x"), (9, "gold", "z@x"))
    diff = diff_rows(source, target, key="id")
    assert diff.missing == [(3,)]
    assert diff.extra == [(9,)]
    assert diff.changed == [((2,), {"tier": ("gold", "basic")}), ((4,), {"email": ("d@x", "D@x")})]

    message = format_diff(diff, "shop:public.c", "warehouse:core.c")
    assert message.splitlines() == [
        "shop:public.c and warehouse:core.c differ (key id; compared 2 column(s): tier, email)",
        "  4 source row(s), 4 target row(s): 1 missing, 1 extra, 2 changed",
        "  missing in the target: id=3",
        "  extra in the target: id=9",
        "  changed (source -> target):",
        "    id=2:",
        "      tier  'gold' -> 'basic'",
        "    id=4:",
        "      email  'd@x' -> 'D@x'",
    ]


def test_only_the_given_columns_are_compared_and_composite_keys_are_named_column_by_column() -> None:
    source = [{"order_id": 1, "line": 2, "qty": 1, "price": Decimal("9.50")}]
    target = [{"order_id": 1, "line": 2, "qty": 5, "price": Decimal("9.5")}]
    assert diff_rows(source, target, key=("order_id", "line"), columns=["price"]).equal
    diff = diff_rows(source, target, key=("order_id", "line"))
    assert "    order_id=1, line=2:\n      qty  1 -> 5" in format_diff(diff)


def test_a_long_diff_shows_the_first_keys_and_how_many_more() -> None:
    source = [{"id": i, "v": i} for i in range(1, 31)]
    target = [{"id": i, "v": -i} for i in range(1, 31)]
    message = format_diff(diff_rows(source, target, key="id"))
    assert "0 missing, 0 extra, 30 changed" in message
    assert "id=10:" in message and "id=11:" not in message
    assert "(and 20 more changed rows)" in message


def test_a_duplicated_key_or_a_missing_column_is_an_error_not_a_diff() -> None:
    with pytest.raises(DuplicateKeyError, match="target: key id=1 occurs more than once"):
        diff_rows(_rows((1, "a", "x")), _rows((1, "a", "x"), (1, "b", "y")), key="id")
    with pytest.raises(KeyError, match=r"no column\(s\) \['tier'\]"):
        diff_rows(_rows((1, "a", "x")), [{"id": 1, "email": "x"}], key="id")


def test_assert_tables_equal_on_rows_raises_the_formatted_diff() -> None:
    with pytest.raises(TablesDiffer, match=r"1 missing, 0 extra, 0 changed") as info:
        tables.assert_tables_equal(_rows((1, "a", "x")), [], key="id")
    assert info.value.diff.missing == [(1,)]
    with pytest.raises(ValueError, match=r"database:schema\.table"):
        tables.assert_tables_equal("public.customers", [], key="id")


def test_a_filter_selects_rows_with_bound_parameters_and_several_filters_are_joined_with_and() -> None:
    query, params = tables.select_statement("public.c", ["id", "tier"], "id <> 5")
    assert (text(query), params) == ('SELECT "id", "tier" FROM "public"."c" WHERE id <> 5', [])
    query, params = tables.select_statement("core.c", None, ("id BETWEEN %s AND %s", [10, 19]))
    assert (text(query), params) == ('SELECT * FROM "core"."c" WHERE id BETWEEN %s AND %s', [10, 19])
    assert text(tables.select_statement("core.c")[0]) == 'SELECT * FROM "core"."c"'

    # where= (both sides) AND the side's own filter, parameters in the order of the placeholders
    both = tables._side_filter(("id >= %s", [10]), ("tier = %s", ["gold"]))
    query, params = tables.select_statement("core.c", ["id"], both)
    assert text(query) == 'SELECT "id" FROM "core"."c" WHERE (id >= %s) AND (tier = %s)'
    assert params == [10, "gold"]
    assert tables._side_filter("id > 1", None) == "id > 1"
    assert tables._side_filter(None, "id > 2") == "id > 2"
    assert tables._side_filter(None, None) is None


def test_a_filtered_side_is_named_with_its_filter_in_the_diff() -> None:
    source = _rows((1, "basic", "a@x"), (2, "gold", "b@x"))  # what "... WHERE id <> 5" read
    target = _rows((1, "basic", "a@x"), (2, "gold", "b@x"), (5, "gold", "p@x"))
    diff = diff_rows(source, target, key="id")
    message = format_diff(diff, tables.filtered_name("shop:public.c", "id <> 5"), "warehouse:core.c")
    assert message.splitlines() == [
        "shop:public.c (WHERE id <> 5) and warehouse:core.c differ (key id; compared 2 column(s): tier, email)",
        "  2 source row(s), 3 target row(s): 0 missing, 1 extra, 0 changed",
        "  extra in the target: id=5",
    ]
    assert tables.filtered_name("warehouse:core.c", None) == "warehouse:core.c"


def test_a_filter_on_rows_that_were_not_read_from_a_table_is_an_error() -> None:
    with pytest.raises(tables.FilterError, match="the source is a list of rows"):
        tables.assert_tables_equal(_rows((1, "a", "x")), _rows((1, "a", "x")), key="id", where="id > 0")
    with pytest.raises(tables.FilterError, match="the target is a list of rows"):
        tables.assert_tables_equal(_rows((1, "a", "x")), _rows((1, "a", "x")), target_where="id > 0")


def test_a_dag_file_that_does_not_parse_fails_with_the_file_and_the_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken_dag.py"
    broken.write_text("from airflow.sdk import DAG\nraise RuntimeError('the DAG file is broken')\n")
    with pytest.raises(dags.DagImportError) as info:
        dags.load_dag(broken)
    assert str(broken) in str(info.value)
    assert "the DAG file is broken" in str(info.value)
    with pytest.raises(dags.DagImportError, match="does not exist"):
        dags.load_dag(tmp_path / "missing.py")


@pytest.mark.parametrize("via", dags.VIA)
def test_run_dag_on_a_file_that_does_not_parse_fails_before_any_run(tmp_path: Path, via: dags.Via) -> None:
    from cdclab.lab.config import LabConfig

    broken = tmp_path / "syntax_dag.py"
    broken.write_text("from airflow.sdk import DAG\nwith DAG('x') as dag:\n    pass)\n")
    with pytest.raises(dags.DagImportError) as info:
        dags.run_dag(LabConfig.load(), broken, via=via)
    assert f"{broken}:" in str(info.value)  # the file, then its error
    assert "SyntaxError: unmatched ')'" in str(info.value)


def test_the_default_lab_sets_no_dag_bundles_and_a_user_folder_adds_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from cdclab.lab.config import LabConfig

    for name in ("CDCLAB_USER_DAGS", "CDCLAB_USER_PYTHONPATH", "CDCLAB_BUNDLED_DAGS"):
        monkeypatch.delenv(name, raising=False)
    env = LabConfig.load().airflow_env()
    assert "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST" not in env, "the default lab is unchanged"

    (tmp_path / "dags").mkdir()
    monkeypatch.setenv("CDCLAB_USER_DAGS", str(tmp_path / "dags"))
    monkeypatch.setenv("CDCLAB_USER_PYTHONPATH", str(tmp_path / "src"))
    env = LabConfig.load().airflow_env()
    bundles = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert [b["name"] for b in bundles] == ["dags-folder", "user-dags"]
    assert bundles[1]["kwargs"] == {"path": str(tmp_path / "dags")}
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path / "src")

    monkeypatch.setenv("CDCLAB_BUNDLED_DAGS", "false")
    bundles = json.loads(LabConfig.load().airflow_env()["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert [b["name"] for b in bundles] == ["user-dags"]


def test_bad_user_dag_settings_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdclab.lab.config import LabConfig

    monkeypatch.delenv("CDCLAB_USER_DAGS", raising=False)
    monkeypatch.setenv("CDCLAB_BUNDLED_DAGS", "false")
    with pytest.raises(ValueError, match="CDCLAB_BUNDLED_DAGS=false needs CDCLAB_USER_DAGS"):
        LabConfig.load().airflow_env()
    monkeypatch.setenv("CDCLAB_BUNDLED_DAGS", "maybe")
    with pytest.raises(ValueError, match="must be true or false"):
        LabConfig.load().airflow_env()
    monkeypatch.setenv("CDCLAB_BUNDLED_DAGS", "true")
    monkeypatch.setenv("CDCLAB_USER_DAGS", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        LabConfig.load().airflow_env()


def test_a_failed_tasks_log_line_shows_the_exception_the_api_returns_apart_from_the_event() -> None:
    from cdclab.testing.dags import log_line

    line = {
        "event": "Task failed with exception",
        "error_detail": [
            {
                "exc_type": "VariantsDiverged",
                "exc_value": "targets differ for keys [(1140,)]",
                "frames": [
                    {"filename": "task_runner.py", "lineno": 1},
                    {"filename": "dags/x.py", "lineno": 171},
                ],
            }
        ],
    }
    assert log_line(line) == (
        "Task failed with exception\nVariantsDiverged: targets differ for keys [(1140,)] (dags/x.py:171)"
    )
    assert log_line({"event": "hello"}) == "hello"
    assert log_line("plain") == "plain"


def test_an_unhealthy_lab_names_each_service_and_connector_with_its_log_tail() -> None:
    from cdclab.testing.plugin import unhealthy_report

    rows = [
        ("postgres", "127.0.0.1:5432", "healthy (pid 10)"),
        ("kafka", "127.0.0.1:9092", "stopped"),
        ("connect", "http://127.0.0.1:8083", "healthy (pid 12)"),
        ("  connector shop-postgres-source", "", "FAILED (tasks FAILED)"),
        ("  connector shop-mysql-source", "", "RUNNING (tasks RUNNING)"),
        ("minio", "http://127.0.0.1:9000", "unhealthy (pid 13)"),
    ]
    logs = {
        "kafka": "\n".join(f"kafka line {i}" for i in range(1, 6)),
        "connect": "ERROR WorkerSourceTask{id=shop-postgres-source-0} Task threw an uncaught exception",
    }

    def read(service: str, lines: int) -> str:
        if service == "minio":
            raise OSError("no such file: minio.log")
        return "\n".join(logs.get(service, "").splitlines()[-lines:])

    message = unhealthy_report("native", rows, read, lines=3)
    head, *rest = message.splitlines()
    assert head == (
        "the lab (native) is not healthy: kafka is stopped; connector shop-postgres-source is "
        "FAILED (tasks FAILED); minio is unhealthy (pid 13)"
    )
    assert rest[0].split() == ["SERVICE", "ADDRESS", "STATE"]  # the status table, every row
    assert "kafka line 2" not in message
    assert "==> last lines of kafka (native) <==\nkafka line 3\nkafka line 4\nkafka line 5" in message
    assert "==> last lines of connect (native) <==\nERROR WorkerSourceTask" in message  # the connector's
    assert (
        "==> last lines of minio (native) <==\n(could not read the log: no such file: minio.log)" in message
    )
    assert "last lines of postgres" not in message  # healthy services stay out of the report


def test_with_lab_start_never_an_unhealthy_lab_fails_at_once_and_nothing_is_started(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "test_user.py").write_text("def test_uses_the_lab(lab):\n    pass\n")
    state = tmp_path / "state"
    env = {
        **os.environ,
        "CDCLAB_LAB_START": "never",
        "LAB_BACKEND": "native",
        "CDCLAB_STATE": str(state),
        # ports nothing listens on: this lab is down
        **{
            k: str(40000 + i)
            for i, k in enumerate(("POSTGRES_PORT", "KAFKA_PORT", "CONNECT_PORT", "AIRFLOW_PORT"))
        },
    }
    env.pop("CI", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_user.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "CDCLAB_LAB_START=never" in out and "make up" in out, out
    assert not (state / "run").exists() or not any((state / "run").glob("*.pid")), "a service was started"


def test_an_unknown_lab_start_policy_is_refused(monkeypatch) -> None:
    from cdclab.common.options import InvalidOptionError
    from cdclab.testing.plugin import lab_start_policy

    monkeypatch.setenv("CDCLAB_LAB_START", "sometimes")
    with pytest.raises(InvalidOptionError, match="CDCLAB_LAB_START='sometimes'"):
        lab_start_policy()
    monkeypatch.delenv("CDCLAB_LAB_START")
    assert lab_start_policy() == "auto"
