"""The shop change generator: deterministic inserts, updates and deletes, and the state they leave.

Every curriculum DAG reads changes from the ``shop`` database; this module makes those changes, and
tells a test exactly which rows the source must hold afterwards, so the test can compare a target
table to the source row by row.

Vocabulary:
- *operation* (:class:`Operation`): one row change in one logical table: ``insert``, ``update``,
  ``delete`` (hard: the row is gone), ``soft_delete`` (``is_deleted = true`` plus ``deleted_at``; the
  row stays) or ``restore`` (undo a soft delete). Soft deletes and restores are updates to Postgres.
  Deleting an order first deletes its order items and payments, as explicit statements, so a copy of
  a table (which has no foreign keys) gets the same changes as the shop's own tables.
- *workload* (:class:`Workload`): the parameters of a run: seed, number of operations, id range,
  tables and anomaly fractions. Rate and transaction size are *how* a run is applied, not *what*
  it does, so they are arguments of :func:`run_workload` and never change the end state.
- *seed*: the only source of randomness. The same seed and parameters give the same *plan* (the
  list of operations, :func:`plan`) and therefore the same end state; operation ``i`` never depends
  on how many operations come after it, so a plan of 200 starts with the plan of 100.
- *business clock*: the deterministic time of operation ``i``, ``start + i * step``. It fills the
  business columns (``created_at``, ``ordered_at``, ``paid_at``, ``deleted_at``); it is not the wall
  clock. ``updated_at`` *is* the wall clock: the ``touch_row`` trigger sets it to the transaction's
  start (``now()``), so no model can predict it and :data:`COLUMNS` leaves it out. ``version`` is
  the predictable change counter instead: 1 on insert, +1 on every update.
- *id range*: a workload owns the ids ``id_base + 1 .. id_base + ID_SPAN`` in every table
  (``order_items`` by ``order_id``) and touches no other row, so many tests can share one database.
  :func:`id_base_for` derives a base from a test's unique name.
- *physical table*: where a logical table (``customers``) really lives; ``public.<logical>`` unless
  :attr:`Workload.tables` maps it elsewhere, e.g. to a copy made by :func:`create_table_copy`.
- *expected state* (:func:`expected_state`): the rows per logical table, in key order, that a pure
  in-memory model (:class:`ShopModel`) holds after applying the plan; :func:`actual_state` reads the
  same columns of the same id range from Postgres, so a test asserts ``actual == expected``.
- *anomalies* (all off by default): *duplicates* (an update applied a second time, as its own
  transaction: the same values, one more version); *long transactions* (an update whose transaction
  stays open ``long_tx_seconds`` on a second connection while later operations commit, so the row
  commits after rows whose ``updated_at`` is later than its own: the watermark trap); *DST* (customers
  in zones with daylight saving time and orders whose ``ordered_at`` lies within 90 minutes of a DST
  change of the customer's zone); *soft deletes* vs hard deletes, and *restores* of soft-deleted rows.
- *clickstream event* (:class:`ClickEvent`, :func:`clickstream_events`): a web event with an
  ``event_time`` (when it happened) and an ``ingest_time`` (when the pipeline got it); some are *late*
  (ingested at least ``lateness`` after they happened), *out of order* (ingested after events that
  happened later, but not late) or *duplicated* (delivered twice with the same ``event_id``).

Modules: :mod:`~cdclab.workload.model` (tables, row types, errors, :class:`Workload`, :class:`Operation`,
:class:`ShopModel`), :mod:`~cdclab.workload.planner` (:func:`plan`, :func:`expected_state`),
:mod:`~cdclab.workload.apply` (:func:`run_workload`, :func:`actual_state`, table copies),
:mod:`~cdclab.workload.clickstream` and :mod:`~cdclab.workload.cli` (``cdclab workload``). Everything
public is importable from ``cdclab.workload``.
"""

from __future__ import annotations

from cdclab.workload.apply import (
    LongTransaction,
    RunReport,
    actual_state,
    apply_operation,
    create_table_copy,
    drop_table_copy,
    reset_range,
    run_workload,
    second_connection,
    statement,
)
from cdclab.workload.cli import (
    add_cli,
    json_default,
)
from cdclab.workload.clickstream import (
    EVENT_TYPES,
    ClickEvent,
    EventType,
    clickstream_events,
    utc_iso,
)
from cdclab.workload.model import (
    COLUMNS,
    DEFAULT_START,
    DST_WINDOW,
    DST_ZONES,
    ID_SPAN,
    KEY_COLUMNS,
    MAX_BIGINT,
    OP_KINDS,
    ORDER_FLOW,
    PARENTS,
    PAYMENT_METHODS,
    RANGE_COLUMN,
    SOFT_DELETE_TABLES,
    TABLE_WEIGHTS,
    TABLES,
    TIERS,
    ZONES,
    CustomerRow,
    IdRangeInUseError,
    InvalidWorkloadError,
    Key,
    ModelError,
    OpenTransactionError,
    Operation,
    OpKind,
    OpMix,
    OrderItemRow,
    OrderRow,
    PaymentRow,
    ProductRow,
    ProtectedTableError,
    Row,
    ShopModel,
    TableMappingError,
    TableName,
    Workload,
    WorkloadDivergedError,
    WorkloadError,
    dst_changes,
    id_base_for,
)
from cdclab.workload.planner import (
    expected_state,
    iter_plan,
    model_after,
    plan,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_START",
    "DST_WINDOW",
    "DST_ZONES",
    "EVENT_TYPES",
    "ID_SPAN",
    "KEY_COLUMNS",
    "MAX_BIGINT",
    "OP_KINDS",
    "ORDER_FLOW",
    "PARENTS",
    "PAYMENT_METHODS",
    "RANGE_COLUMN",
    "SOFT_DELETE_TABLES",
    "TABLES",
    "TABLE_WEIGHTS",
    "TIERS",
    "ZONES",
    "ClickEvent",
    "CustomerRow",
    "EventType",
    "IdRangeInUseError",
    "InvalidWorkloadError",
    "Key",
    "LongTransaction",
    "ModelError",
    "OpKind",
    "OpMix",
    "OpenTransactionError",
    "Operation",
    "OrderItemRow",
    "OrderRow",
    "PaymentRow",
    "ProductRow",
    "ProtectedTableError",
    "Row",
    "RunReport",
    "ShopModel",
    "TableMappingError",
    "TableName",
    "Workload",
    "WorkloadDivergedError",
    "WorkloadError",
    "actual_state",
    "add_cli",
    "apply_operation",
    "clickstream_events",
    "create_table_copy",
    "drop_table_copy",
    "dst_changes",
    "expected_state",
    "id_base_for",
    "iter_plan",
    "json_default",
    "model_after",
    "plan",
    "reset_range",
    "run_workload",
    "second_connection",
    "statement",
    "utc_iso",
]
