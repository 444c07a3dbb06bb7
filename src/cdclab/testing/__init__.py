"""cdclab as an integration-test harness: the pytest plugin (:mod:`cdclab.testing.plugin`) and the
helpers behind its fixtures, usable without pytest too. docs/harness.md is the guide."""

from cdclab.testing.dags import (
    DagImportError,
    DagRunFailed,
    DagRunResult,
    TaskResult,
    load_dag,
    run_dag,
)
from cdclab.testing.fence import FenceTimeout, cdc_fence
from cdclab.testing.tables import (
    FilterError,
    TableDiff,
    TableNotFoundError,
    TablesDiffer,
    assert_tables_equal,
    diff_rows,
    format_diff,
    read_table,
)

__all__ = [
    "DagImportError",
    "DagRunFailed",
    "DagRunResult",
    "FenceTimeout",
    "FilterError",
    "TableDiff",
    "TableNotFoundError",
    "TablesDiffer",
    "TaskResult",
    "assert_tables_equal",
    "cdc_fence",
    "diff_rows",
    "format_diff",
    "load_dag",
    "read_table",
    "run_dag",
]
