"""``cdclab workload run|expected|plan`` (see :mod:`cdclab.workload`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cdclab.workload.apply import run_workload
from cdclab.workload.model import DEFAULT_START, ID_SPAN, TABLES, Workload, WorkloadError
from cdclab.workload.planner import expected_state, iter_plan

# --------------------------------------------------------------------------------------------------
# CLI


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: datetimes as ISO 8601, decimals as strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _table_map(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(
            f"expected LOGICAL=PHYSICAL (customers=public.customers_x), got {text!r}"
        )
    logical, physical = text.split("=", 1)
    return logical.strip(), physical.strip()


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; write e.g. 2026-03-01T00:00:00Z")
    return value


def _workload_from(args: argparse.Namespace) -> Workload:
    return Workload(
        seed=args.seed,
        ops=args.ops,
        id_base=args.id_base,
        tables=dict(args.table_map or []),
        only=tuple(args.only) if args.only else None,
        soft_deletes=args.soft_deletes,
        restores=args.restores,
        duplicates=args.duplicates,
        long_tx=args.long_tx,
        long_tx_seconds=args.long_tx_seconds,
        dst=args.dst,
        start=args.start,
        step=timedelta(seconds=args.step_seconds),
    )


def _connect_shop() -> Any:
    import psycopg2

    from cdclab.lab.config import LabConfig

    return psycopg2.connect(LabConfig.load().pg_dsn("shop"), application_name="cdclab-workload")


def _cmd_run(args: argparse.Namespace) -> int:
    wl = _workload_from(args)
    first, last = wl.id_range
    pace = f"{args.rate:g} ops/s" if args.rate else "as fast as possible"
    print(
        f"workload seed={wl.seed} ops={wl.ops} ids {first}..{last}, {pace}; tables: "
        + ", ".join(f"{t}->{wl.physical(t)}" for t in wl.touched)
    )
    last_print = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last_print[0] >= 1.0:
            last_print[0] = now
            print(f"  {done}/{total} operations ({100 * done // max(total, 1)}%)", flush=True)

    conn = _connect_shop()
    try:
        report = run_workload(
            conn,
            wl,
            start=args.from_op,
            stop=args.to_op,
            rate=args.rate,
            batch_size=args.batch_size,
            reset=args.reset,
            on_progress=progress,
        )
    except WorkloadError as exc:
        print(f"cdclab workload: {exc}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(report.summary())
    return 0


def _cmd_expected(args: argparse.Namespace) -> int:
    wl = _workload_from(args)
    if args.table not in wl.touched:
        print(
            f"cdclab workload: {args.table} is not changed by this workload (tables: {wl.touched})",
            file=sys.stderr,
        )
        return 1
    for row in expected_state(wl, args.upto)[args.table]:
        print(json.dumps(row, default=json_default))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    wl = _workload_from(args)
    for op in iter_plan(wl):
        print(json.dumps(op.as_dict(), default=json_default))
    return 0


def _add_workload_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, required=True, help="the seed; same seed + parameters = same changes")
    p.add_argument("--ops", type=int, required=True, help="number of operations in the plan")
    p.add_argument(
        "--id-base", type=int, default=0, help=f"the id range is ID_BASE+1..ID_BASE+{ID_SPAN} (default 0)"
    )
    p.add_argument(
        "--table-map",
        action="append",
        type=_table_map,
        metavar="LOGICAL=PHYSICAL",
        help="write a logical table to another table, e.g. customers=public.customers_copy (repeatable)",
    )
    p.add_argument("--only", nargs="+", choices=TABLES, help="change only these tables (parents included)")
    p.add_argument(
        "--soft-deletes",
        type=float,
        nargs="?",
        const=1.0,
        default=0.0,
        metavar="FRACTION",
        help="soft-delete customers/products instead of deleting them (alone: always; or a fraction)",
    )
    p.add_argument(
        "--restores", type=float, default=0.0, help="fraction of deletes that restore a soft-deleted row"
    )
    p.add_argument("--duplicates", type=float, default=0.0, help="fraction of updates applied twice")
    p.add_argument("--long-tx", type=float, default=0.0, help="fraction of updates in a long transaction")
    p.add_argument(
        "--long-tx-seconds", type=float, default=2.0, help="how long a long transaction stays open"
    )
    p.add_argument(
        "--dst",
        type=float,
        default=0.0,
        help="fraction of customers in DST zones and of orders placed around a DST change",
    )
    p.add_argument(
        "--start", type=_aware, default=DEFAULT_START, help="business clock start (ISO 8601 with offset)"
    )
    p.add_argument("--step-seconds", type=float, default=60.0, help="business clock step per operation")


def add_cli(subparsers: Any) -> None:
    """Register ``cdclab workload run|expected|plan`` on the ``cdclab`` subparsers."""
    from cdclab import workload as package  # its docstring is the vocabulary the help shows

    workload = subparsers.add_parser(
        "workload",
        help="drive deterministic changes into the shop database",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = workload.add_subparsers(dest="workload_action", required=True)
    run = actions.add_parser(
        "run", help="apply a workload to the shop database, printing progress and a summary"
    )
    _add_workload_args(run)
    run.add_argument(
        "--rate", type=float, default=None, help="operations per second (default: as fast as possible)"
    )
    run.add_argument("--batch-size", type=int, default=1, help="operations per transaction (default 1)")
    run.add_argument("--reset", action="store_true", help="delete existing rows in the id range first")
    run.add_argument(
        "--from-op", type=int, default=0, help="resume: skip the first N operations (already applied)"
    )
    run.add_argument("--to-op", type=int, default=None, help="stop before operation N")
    run.set_defaults(func=_cmd_run)
    expected = actions.add_parser(
        "expected", help="print the rows a table must hold afterwards, as JSON lines"
    )
    _add_workload_args(expected)
    expected.add_argument("--table", choices=TABLES, required=True)
    expected.add_argument(
        "--upto", type=int, default=None, help="after the first N operations (default: all)"
    )
    expected.set_defaults(func=_cmd_expected)
    plan_p = actions.add_parser("plan", help="print the operations as JSON lines (no database)")
    _add_workload_args(plan_p)
    plan_p.set_defaults(func=_cmd_plan)
